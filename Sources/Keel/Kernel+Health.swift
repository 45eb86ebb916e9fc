// Keel — a microkernel plugin host. Licensed under Apache-2.0.

extension Kernel {
    /// The generation of `id` now serving, or nil when it is not active.
    public func activeGeneration(_ id: String) -> Int? {
        active[id]?.generation
    }
}
