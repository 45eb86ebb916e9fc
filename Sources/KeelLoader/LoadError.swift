// Keel — a microkernel plugin host. Licensed under Apache-2.0.

/// Why a plugin library could not be loaded or activated.
///
/// `description` is one line naming the plugin (when known), the file and the reason, in the style of PostgreSQL's
/// loader: `incompatible plugin "hello" (Plugins/hello/libhello.so): ABI 2.0, this host supports 1.0–1.3`.
public struct LoadError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What went wrong, as a stable code. New codes may be added.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        enum Base: String, Sendable {
            case fileUnreadable = "file-unreadable"
            case notSharedObject = "not-shared-object"
            case truncated
            case wrongArchitecture = "wrong-architecture"
            case dependencyMissing = "dependency-missing"
            case dlopenFailed = "dlopen-failed"
            case missingEntry = "missing-entry"
            case entryReturnedNull = "entry-returned-null"
            case incompatibleABI = "incompatible-abi"
            case descriptorTooSmall = "descriptor-too-small"
            case invalidDescriptor = "invalid-descriptor"
            case manifestMismatch = "manifest-mismatch"
            case activationFailed = "activation-failed"
        }
        let base: Base
        public var description: String { base.rawValue }

        /// The file does not exist or cannot be read.
        public static let fileUnreadable = Code(base: .fileUnreadable)
        /// Not an ELF shared object: empty, text, an executable, a relocatable object...
        public static let notSharedObject = Code(base: .notSharedObject)
        /// An ELF file cut short.
        public static let truncated = Code(base: .truncated)
        /// Built for another CPU or word size.
        public static let wrongArchitecture = Code(base: .wrongArchitecture)
        /// A library it links against cannot be found.
        public static let dependencyMissing = Code(base: .dependencyMissing)
        /// The dynamic loader refused it for another reason (e.g. an undefined symbol under RTLD_NOW).
        public static let dlopenFailed = Code(base: .dlopenFailed)
        /// No `keel_plugin_entry` symbol.
        public static let missingEntry = Code(base: .missingEntry)
        /// `keel_plugin_entry` returned NULL.
        public static let entryReturnedNull = Code(base: .entryReturnedNull)
        /// ABI major differs, or the plugin needs a newer minor than this host has.
        public static let incompatibleABI = Code(base: .incompatibleABI)
        /// The descriptor's struct_size is below what its ABI version requires.
        public static let descriptorTooSmall = Code(base: .descriptorTooSmall)
        /// A descriptor field is unusable (bad string, no activate function).
        public static let invalidDescriptor = Code(base: .invalidDescriptor)
        /// The descriptor disagrees with plugin.yaml (id, version or ABI).
        public static let manifestMismatch = Code(base: .manifestMismatch)
        /// activate returned an error or registered something it may not.
        public static let activationFailed = Code(base: .activationFailed)
    }

    public var code: Code
    /// The library file.
    public var path: String
    /// The plugin id, once known.
    public var pluginID: String?
    public var reason: String

    public init(_ code: Code, path: String, pluginID: String? = nil, reason: String) {
        self.code = code
        self.path = path
        self.pluginID = pluginID
        self.reason = reason
    }

    public var description: String {
        let prefix = code == .incompatibleABI ? "incompatible plugin" : "plugin"
        if let pluginID { return "\(prefix) \"\(pluginID)\" (\(path)): \(reason)" }
        return "\(path): \(reason)"
    }
}
