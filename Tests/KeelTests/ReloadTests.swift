// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelSystem
@testable import Keel
@testable import KeelManifest
@testable import KeelState
import Testing

/// Puts `library` into the bundle as `name`, the safe way (temporary file, then rename).
/// A started kernel (`f.kernel()` unless given) serving plugin `id` from `library`, named `name`, in a bundle folder of
/// its own, and that folder.
func serving(_ f: KernelFixture, _ id: String, _ library: String, as name: String,
             kernel: @autoclosure () throws -> Kernel? = nil) async throws -> (Kernel, String) {
    let bundle = try TestEnvironment.makeBundle(in: f.plugins, folder: id, manifest: TestEnvironment.manifest(id: id, library: name),
                                                library: library, libraryName: name)
    let kernel = try kernel() ?? f.kernel()
    await kernel.start()
    try await kernel.enable(id)
    return (kernel, bundle)
}

func install(_ library: String, into bundle: String, as name: String) throws {
    let temporary = bundle + "/.\(name).tmp"
    try? FileManager.default.removeItem(atPath: temporary)
    try FileManager.default.copyItem(atPath: library, toPath: temporary)
    guard rename(temporary, bundle + "/" + name) == 0 else { throw TestFailure("rename failed") }
}

func waitFor(_ seconds: Double = 5, _ condition: () async throws -> Bool) async rethrows -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: .milliseconds(25))
    }
    return try await condition()
}

@Suite("hot reload", .scheduled)
struct ReloadTests {
    /// Plugin `flip` serving build A (`tag=A`) from a fresh fixture; build B (`tag=B`) beside it, not installed.
    func flip() async throws -> (kernel: Kernel, bundle: String, a: String, b: String) {
        let a = try TestEnvironment.buildFixture("flipA", ["PLUGIN_ID=\"flip\"", "TAG=\"A\""])
        let b = try TestEnvironment.buildFixture("flipB", ["PLUGIN_ID=\"flip\"", "TAG=\"B\""])
        let (kernel, bundle) = try await serving(KernelFixture(), "flip", a, as: "libflip.so")
        return (kernel, bundle, a, b)
    }

    @Test("reload swaps in the new build; the history records both generations")
    func swap() async throws {
        let (kernel, bundle, a, b) = try await flip()
        let before = try #require(kernel.registry.snapshot.route(method: "GET", path: "/ext/flip/ping"))
        #expect(get(kernel, "/ext/flip/ping")?.1.contains("tag=A") == true)
        try install(b, into: bundle, as: "libflip.so")
        try await kernel.reload("flip")
        #expect(get(kernel, "/ext/flip/ping")?.1.contains("tag=B") == true)
        // The old generation drains and stops admitting calls; it never runs again.
        #expect(await waitFor { !before.route.handler.context.isActive })
        let history = try await kernel.history("flip")
        #expect(history.map(\.outcome).prefix(2) == ["activated", "activated"])
        #expect(await waitFor { (try? await kernel.history("flip").map(\.outcome).contains("retired")) == true })
        #expect(Set(history.map(\.checksum)).count == 2)
        #expect(history.map(\.generation).prefix(2) == [1, 2])
        await kernel.shutdown()
    }

    @Test("refresh (keel dev's) loads a new build once: after the watcher's reload of the same build it loads nothing; reload always loads")
    func refreshLoadsOnce() async throws {
        let (kernel, bundle, a, b) = try await flip()
        func generations() async throws -> [Int] { try await kernel.history("flip").filter { $0.outcome == "activated" }.map(\.generation) }
        // The serving build: nothing to load.
        try await kernel.execute(.refresh(id: "flip"))
        #expect(try await generations() == [1])
        // A new build, loaded first by a reload (the watcher's), then refreshed: still one generation for it.
        try install(b, into: bundle, as: "libflip.so")
        try await kernel.reload("flip")
        try await kernel.execute(.refresh(id: "flip"))
        #expect(try await generations() == [1, 2])
        #expect(get(kernel, "/ext/flip/ping")?.1.contains("tag=B") == true)
        // A new build nobody loaded yet: refresh loads it.
        try install(a, into: bundle, as: "libflip.so")
        try await kernel.execute(.refresh(id: "flip"))
        #expect(try await generations() == [1, 2, 3])
        #expect(get(kernel, "/ext/flip/ping")?.1.contains("tag=A") == true)
        // An explicit reload loads the same build again.
        try await kernel.execute(.reload(id: "flip"))
        #expect(try await generations() == [1, 2, 3, 4])
        // The audit names each.
        let rows = try kernel.auditTrail().map { "\($0.command) \($0.outcome)" }
        #expect(rows.filter { $0 == "refresh ok" }.count == 3 && rows.contains("reload ok"), "\(rows)")
        await kernel.shutdown()
    }

    @Test("a library overwritten in place while loaded (cp over it) never touches the running code",
          arguments: [true, false])
    func overwriteInPlace(inMemory: Bool) async throws {
        let f = KernelFixture()
        let id = inMemory ? "inplace-mem" : "inplace-file"
        let a = try TestEnvironment.buildFixture(id + "A", ["PLUGIN_ID=\"\(id)\"", "TAG=\"A\""])
        let b = try TestEnvironment.buildFixture(id + "B", ["PLUGIN_ID=\"\(id)\"", "TAG=\"B\""])
        let (kernel, bundle) = try await serving(f, id, a, as: "lib.so", kernel: f.kernel(copiesInMemory: inMemory))
        let maps = try processMaps()
        #expect(maps.contains(inMemory ? "memfd:keel-\(id)-g1" : "/generations/\(id)-g1-"))
        // What `cp` does to an existing file: truncate it and write the new bytes into the same inode. A library
        // mapped from that file would now fault (SIGBUS) or run half-new code; the private copy is untouched.
        func overwrite(with bytes: Data) throws {
            let fd = open(bundle + "/lib.so", O_WRONLY | O_TRUNC)
            guard fd >= 0 else { throw TestFailure("cannot open the bundle's library") }
            defer { close(fd) }
            _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        }
        try overwrite(with: Data("not a library any more".utf8))
        for _ in 0..<20 { #expect(get(kernel, "/ext/\(id)/ping")?.1.contains("tag=A") == true) }
        do { try await kernel.reload(id); Issue.record("reloaded a text file") } catch {
            #expect(error.description.contains("not an ELF shared object"))
        }
        #expect(get(kernel, "/ext/\(id)/ping")?.1.contains("tag=A") == true)
        try overwrite(with: Data(contentsOf: URL(fileURLWithPath: b)))
        try await kernel.reload(id)
        #expect(get(kernel, "/ext/\(id)/ping")?.1.contains("tag=B") == true)
        // The copies are gone from the file system once mapped.
        if !inMemory {
            let left = try FileManager.default.contentsOfDirectory(atPath: (f.state as NSString).deletingLastPathComponent + "/generations")
            #expect(left.isEmpty, "\(left)")
        }
        #expect(try await kernel.history(id).map(\.outcome).prefix(3) == ["activated", "failed", "activated"])
        await kernel.shutdown()
    }

    @Test("start-up removes the file copies a process that died mid-load left behind, and only those")
    func leftovers() async throws {
        let f = KernelFixture()
        let folder = (f.state as NSString).deletingLastPathComponent + "/generations"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let old = folder + "/crashed-g3-abc-1.so", fresh = folder + "/busy-g1-def-2.so"
        try Data("x".utf8).write(to: URL(fileURLWithPath: old))
        try Data("x".utf8).write(to: URL(fileURLWithPath: fresh))
        var times = [timespec(tv_sec: time(nil) - 3600, tv_nsec: 0), timespec(tv_sec: time(nil) - 3600, tv_nsec: 0)]
        #expect(utimensat(AT_FDCWD, old, &times, 0) == 0)
        let kernel = try f.kernel()
        await kernel.start()
        #expect(!FileManager.default.fileExists(atPath: old))
        #expect(FileManager.default.fileExists(atPath: fresh))
        await kernel.shutdown()
    }

    @Test("every load's name for the dynamic loader is new: two libraries behind one reused descriptor number load apart")
    func loaderPaths() throws {
        let fd: Int32 = 947
        let names = (0..<5000).map { _ in LoaderPath.make(fd) }
        #expect(Set(names).count == names.count)
        #expect(names.allSatisfy { $0.hasSuffix("proc/\(getpid())/fd/\(fd)") && $0.count < 100 })
        // Two memory copies of one library, each behind descriptor 947 in turn, as a reused descriptor would be.
        let image = try Array(Data(contentsOf: URL(fileURLWithPath: try TestEnvironment.buildFixture("named", ["PLUGIN_ID=\"named\""]))))
        func load(_ name: (Int32) -> String) -> OpaquePointer? {
            let copy = SystemFile.memoryFile(name: "keel-test-named")
            guard copy >= 0, image.withUnsafeBytes({ SystemFile.writeAll(copy, $0) }), dup2(copy, fd) == fd else { return nil }
            close(copy)
            defer { close(fd) }
            return dlopen(name(fd), RTLD_NOW | RTLD_LOCAL).map { OpaquePointer($0) }
        }
        let first = load(LoaderPath.make), second = load(LoaderPath.make)
        #expect(first != nil && second != nil && first != second)
        // The plain name would have handed back the first library for the second: glibc matches loaded names first.
        let plain = { (fd: Int32) in "/proc/\(getpid())/fd/\(fd)" }
        let third = load(plain), fourth = load(plain)
        #expect(third != nil && third == fourth && third != first && third != second)
    }

    @Test("a memory copy is sealed once written: neither this process nor the probe's child can change what is loaded")
    func sealedCopies() throws {
        let library = try TestEnvironment.buildFixture("sealed", ["PLUGIN_ID=\"sealed\""])
        let store = GenerationStore(stateFile: NSTemporaryDirectory() + "keel-sealed-\(getpid()).db")
        let copy = try store.copy(library, id: "sealed", generation: 1)
        defer { store.discard(copy) }
        #expect(copy.descriptor >= 0 && !copy.inPlace)
        let byte: [UInt8] = [0]
        #expect(pwrite(copy.descriptor, byte, 1, 0) == -1 && errno == EPERM)
        #expect(ftruncate(copy.descriptor, 0) == -1 && errno == EPERM)
        // Through its name too, as another process (the probe) would reach it.
        let again = open(copy.path, O_RDWR)
        if again >= 0 {
            #expect(pwrite(again, byte, 1, 0) == -1 && errno == EPERM)
            close(again)
        }
        // And it still loads: the loader's writable mappings of it are private.
        #expect(dlopen(copy.path, RTLD_NOW | RTLD_LOCAL) != nil, "\(String(cString: dlerror()))")
    }

    @Test("a new build that fails to load or activate leaves the old one serving, with the reason recorded")
    func failedReload() async throws {
        let f = KernelFixture()
        let good = try TestEnvironment.buildFixture("okA", ["PLUGIN_ID=\"sturdy\"", "TAG=\"good\""])
        let failing = try TestEnvironment.buildFixture("okB", ["PLUGIN_ID=\"sturdy\"", "ACTIVATE_FAILS"])
        let (kernel, bundle) = try await serving(f, "sturdy", good, as: "libsturdy.so")

        try install(failing, into: bundle, as: "libsturdy.so")
        await #expect(throws: KernelError.self) { try await kernel.reload("sturdy") }
        #expect(get(kernel, "/ext/sturdy/ping")?.1.contains("tag=good") == true)
        var info = try await kernel.plugin("sturdy")
        #expect(info.status == .enabled)
        #expect(info.reason?.contains("reload failed, generation 1 still serving") == true)
        #expect(info.reason?.contains("cannot reach the frobnicator") == true)

        // A torn file (cut short while being written) is an error, not a crash.
        let bytes = try Data(contentsOf: URL(fileURLWithPath: good))
        try bytes.prefix(bytes.count / 3).write(to: URL(fileURLWithPath: bundle + "/libsturdy.so"))
        do { try await kernel.reload("sturdy"); Issue.record("loaded a torn library") } catch {
            #expect(error.description.contains("truncated ELF file"))
            #expect(error.description.contains(bundle + "/libsturdy.so"))
        }
        #expect(get(kernel, "/ext/sturdy/ping")?.1.contains("tag=good") == true)
        info = try await kernel.plugin("sturdy")
        #expect(info.status == .enabled)
        let outcomes = try await kernel.history("sturdy").map(\.outcome)
        #expect(outcomes == ["activated", "failed", "failed"])
        await kernel.shutdown()
    }

    @Test("an unload-safe plugin is unmapped after it stops; any other stays mapped")
    func unloadSafe() async throws {
        let f = KernelFixture()
        let safe = try TestEnvironment.buildFixture("safe", ["PLUGIN_ID=\"unloadable\"", "UNLOAD_SAFE"])
        let pinned = try TestEnvironment.buildFixture("pinned", ["PLUGIN_ID=\"pinned\""])
        try TestEnvironment.makeBundle(in: f.plugins, folder: "unloadable", manifest: TestEnvironment.manifest(id: "unloadable", library: "libsafe.so"), library: safe)
        try TestEnvironment.makeBundle(in: f.plugins, folder: "pinned", manifest: TestEnvironment.manifest(id: "pinned", library: "libpinned.so"), library: pinned)
        let kernel = try f.kernel()
        await kernel.start()
        try await kernel.enable("unloadable")
        try await kernel.enable("pinned")
        func mapped(_ id: String) throws -> Bool { try isMapped(id) }
        #expect(try mapped("unloadable") && mapped("pinned"))
        #expect(try await kernel.plugin("unloadable").routes == ["GET /ext/unloadable/ping"])
        try await kernel.disable("unloadable")
        try await kernel.disable("pinned")
        #expect(try !mapped("unloadable"))
        #expect(try mapped("pinned"))
        // And it loads again from a fresh copy.
        try await kernel.enable("unloadable")
        #expect(get(kernel, "/ext/unloadable/ping")?.0 == 200)
        await kernel.shutdown()
    }

    @Test("a reactivatable plugin enabled again, its library file unchanged, activates the copy it has; a changed file, a reload or a plugin without the flag gets a fresh copy")
    func keptLibrary() async throws {
        let f = KernelFixture()
        let first = try TestEnvironment.buildFixture("keptA", ["PLUGIN_ID=\"kept\"", "TAG=\"A\"", "REACTIVATABLE"])
        let second = try TestEnvironment.buildFixture("keptB", ["PLUGIN_ID=\"kept\"", "TAG=\"B\"", "REACTIVATABLE"])
        let plain = try TestEnvironment.buildFixture("fresh", ["PLUGIN_ID=\"fresh\""])
        try TestEnvironment.makeBundle(in: f.plugins, folder: "kept", manifest: TestEnvironment.manifest(id: "kept", library: "libkept.so"),
                                       library: first, libraryName: "libkept.so")
        try TestEnvironment.makeBundle(in: f.plugins, folder: "fresh", manifest: TestEnvironment.manifest(id: "fresh", library: "libfresh.so"),
                                       library: plain)
        // No margin after a file's last change (the default is 2 s; `racyFileNotKept` checks it): the files written
        // just now count as settled, whatever the machine's load.
        let kernel = try f.kernel(libraryStampMargin: 0)
        await kernel.start()
        for id in ["kept", "fresh"] { try await kernel.enable(id) }
        for _ in 0..<3 {
            for id in ["kept", "fresh"] {
                try await kernel.disable(id)
                try await kernel.enable(id)
            }
            #expect(get(kernel, "/ext/kept/ping")?.1.contains("tag=A") == true)
            #expect(get(kernel, "/ext/fresh/ping")?.0 == 200)
        }
        #expect(try mappedCopies("kept") == 1)
        #expect(try mappedCopies("fresh") == 4, "without the flag, every activation has a copy of its own")
        let loads = try await kernel.history("kept").filter { $0.outcome == "activated" }
        #expect(loads.map(\.generation) == [1, 2, 3, 4])
        #expect(Set(loads.map(\.checksum)).count == 1)
        // A new build written over the file: the next enable loads it, from a fresh copy; the one after keeps it.
        try Data(contentsOf: URL(fileURLWithPath: second)).write(to: URL(fileURLWithPath: f.plugins + "/kept/libkept.so"))
        try await kernel.disable("kept")
        try await kernel.enable("kept")
        #expect(get(kernel, "/ext/kept/ping")?.1.contains("tag=B") == true)
        #expect(try mappedCopies("kept") == 2)
        try await kernel.disable("kept")
        try await kernel.enable("kept")
        #expect(try mappedCopies("kept") == 2)
        // An explicit reload always loads a fresh copy.
        try await kernel.reload("kept")
        #expect(try mappedCopies("kept") == 3)
        // And so does the next enable after a reload of the disabled plugin, although its copy was kept at the disable.
        try await kernel.disable("kept")
        try await kernel.reload("kept")
        try await kernel.enable("kept")
        #expect(try mappedCopies("kept") == 4)
        #expect(get(kernel, "/ext/kept/ping")?.1.contains("tag=B") == true)
        await kernel.shutdown()
    }

    @Test("a reactivatable plugin's copy read within the margin after its file's last change is not kept: the next enable loads afresh")
    func racyFileNotKept() async throws {
        let f = KernelFixture()
        let lib = try TestEnvironment.buildFixture("racyA", ["PLUGIN_ID=\"racy\"", "REACTIVATABLE"])
        try TestEnvironment.makeBundle(in: f.plugins, folder: "racy", manifest: TestEnvironment.manifest(id: "racy", library: "libracy.so"),
                                       library: lib, libraryName: "libracy.so")
        // A margin of an hour: the file, written just now, is within it however slow the machine is.
        let kernel = try f.kernel(libraryStampMargin: 3600)
        await kernel.start()
        try await kernel.enable("racy")
        for _ in 0..<2 {
            try await kernel.disable("racy")
            try await kernel.enable("racy")
        }
        #expect(try mappedCopies("racy") == 3)
        #expect(get(kernel, "/ext/racy/ping")?.0 == 200)
        await kernel.shutdown()
    }

    @Test("a Swift plugin reloads repeatedly without upsetting the Swift runtime")
    func swiftReload() async throws {
        let f = KernelFixture()
        try TestEnvironment.stageExamples(into: f.plugins)
        let kernel = try f.kernel()
        await kernel.start()
        try await kernel.enable("hello")
        try await kernel.enable("greeter")
        for i in 0..<5 {
            try await kernel.reload("greeter")
            #expect(get(kernel, "/ext/greeter/hello/r\(i)")?.1 == "Hello, r\(i)! (from Swift)\n")
            let snapshot = kernel.registry.snapshot
            #expect(snapshot.authorize(Principal(id: "mallory", authenticatedBy: "t"), action: "GET", resource: "/").0 == .deny)
        }
        let generations = try await kernel.history("greeter").filter { $0.outcome == "activated" }.map(\.generation)
        #expect(generations == [1, 2, 3, 4, 5, 6])
        await kernel.shutdown()
    }

    @Test("the watcher: a new bundle loads, a replaced library reloads once per burst, a removed bundle retires")
    func watcher() async throws {
        let f = KernelFixture()
        let a = try TestEnvironment.buildFixture("wA", ["PLUGIN_ID=\"watched\"", "TAG=\"A\""])
        let b = try TestEnvironment.buildFixture("wB", ["PLUGIN_ID=\"watched\"", "TAG=\"B\""])
        let kernel = try f.kernel()
        await kernel.start()
        try await kernel.watch()
        // The operator enabled it earlier (stored state); the bundle arrives later.
        try kernel.state.setEnabled("watched", true, status: .installed)
        let staging = TestEnvironment.makeTemporaryDirectory("stage") + "/watched"
        try TestEnvironment.makeBundle(in: (staging as NSString).deletingLastPathComponent, folder: "watched",
                                       manifest: TestEnvironment.manifest(id: "watched", library: "libw.so"), library: a, libraryName: "libw.so")
        try FileManager.default.moveItem(atPath: staging, toPath: f.plugins + "/watched")
        #expect(await waitFor(20) { get(kernel, "/ext/watched/ping")?.1.contains("tag=A") == true })

        // A burst of writes to the library: one reload.
        for _ in 0..<5 { try install(b, into: f.plugins + "/watched", as: "libw.so"); usleep(20_000) }
        #expect(await waitFor(20) { get(kernel, "/ext/watched/ping")?.1.contains("tag=B") == true })
        try await Task.sleep(for: .milliseconds(800))
        let activations = try await kernel.history("watched").filter { $0.outcome == "activated" }
        #expect(activations.count == 2)
        // The history says why the generation was made.
        #expect(activations.last?.detail == "replaced generation 1: its files changed in the plugin folder", "\(activations)")

        // plugin.yaml broken mid-edit: the build goes on serving, listed with its version and commands as they serve,
        // and the reason says why nothing was reloaded; fixed, the reason goes (no reload: nothing changed).
        let yaml = f.plugins + "/watched/plugin.yaml"
        let good = try String(contentsOfFile: yaml, encoding: .utf8)
        let version = try await kernel.plugin("watched").version
        try (good + "version: [\n").write(toFile: yaml, atomically: true, encoding: .utf8)
        #expect(await waitFor(20) { (try? await kernel.plugin("watched").reason)??.contains("plugin.yaml") == true })
        var info = try await kernel.plugin("watched")
        #expect(info.status == .enabled && info.version == version && !version.isEmpty, "\(info)")
        #expect(info.reason?.hasPrefix("reload failed, generation 2 still serving: ") == true, "\(String(describing: info.reason))")
        #expect(try kernel.state.plugin("watched")?.version == version, "the record keeps the serving build's version")
        #expect(get(kernel, "/ext/watched/ping")?.1.contains("tag=B") == true)
        try good.write(toFile: yaml, atomically: true, encoding: .utf8)
        #expect(await waitFor(20) { (try? await kernel.plugin("watched").reason) == .some(nil) })
        info = try await kernel.plugin("watched")
        #expect(info.status == .enabled && info.version == version)
        #expect(try await kernel.history("watched").filter { $0.outcome == "activated" }.count == 2, "nothing was reloaded")

        // `library:` naming a file the folder lacks (a typo): the reason names it and the nearest name, as a manual reload
        // does, at once (it was a 5 s wait, then "library did not settle" in the log alone); the build goes on serving.
        try good.replacingOccurrences(of: "library: libw.so", with: "library: libww.so").write(toFile: yaml, atomically: true, encoding: .utf8)
        #expect(await waitFor(20) { (try? await kernel.plugin("watched").reason)??.contains("libww.so") == true })
        info = try await kernel.plugin("watched")
        #expect(info.reason?.hasPrefix("reload failed, generation 2 still serving: ") == true && info.reason?.contains("libw.so") == true,
                "\(String(describing: info.reason))")
        #expect(get(kernel, "/ext/watched/ping")?.1.contains("tag=B") == true)
        try good.write(toFile: yaml, atomically: true, encoding: .utf8)
        #expect(await waitFor(20) { (try? await kernel.plugin("watched").reason) == .some(nil) })
        // The watcher's reloads are the host's own decisions, in the audit trail: the new library's (ok), the typo's
        // (failed, with its code).
        let reloads = try kernel.auditTrail().filter { $0.target == "watched" && $0.command == "reload" }
        #expect(reloads.allSatisfy { $0.actor == "keel" } && reloads.contains { $0.outcome == "ok" && $0.detail == "its files changed in the plugin folder" }
                && reloads.contains { $0.outcome != "ok" && $0.detail == "its library libww.so is not in its folder" }, "\(reloads)")

        try FileManager.default.removeItem(atPath: f.plugins + "/watched")
        #expect(await waitFor(20) { get(kernel, "/ext/watched/ping") == nil })
        #expect(await waitFor { (try? await kernel.plugin("watched").status) == .missing })
        await kernel.shutdown()
    }

    @Test("the watcher does not try again a build whose reload failed (keel dev's, or its own); a new build it does")
    func watcherSkipsFailedBuild() async throws {
        let f = KernelFixture()
        let good = try TestEnvironment.buildFixture("fsA", ["PLUGIN_ID=\"sturdy\"", "TAG=\"good\""])
        let failing = try TestEnvironment.buildFixture("fsB", ["PLUGIN_ID=\"sturdy\"", "ACTIVATE_FAILS"])
        let failingToo = try TestEnvironment.buildFixture("fsC", ["PLUGIN_ID=\"sturdy\"", "ACTIVATE_FAILS", "TAG=\"other\""])
        let better = try TestEnvironment.buildFixture("fsD", ["PLUGIN_ID=\"sturdy\"", "TAG=\"better\""])
        let (kernel, bundle) = try await serving(f, "sturdy", good, as: "libsturdy.so")
        try await kernel.watch()
        func failures() async throws -> Int { try await kernel.history("sturdy").filter { $0.outcome == "failed" }.count }

        // As keel dev does: the build copied in, then reloaded at once (before the watcher's quiet time is over).
        try install(failing, into: bundle, as: "libsturdy.so")
        await #expect(throws: KernelError.self) { try await kernel.reload("sturdy") }
        try await Task.sleep(for: .milliseconds(1_200))
        #expect(try await failures() == 1, "the watcher tried the failed build again")
        #expect(get(kernel, "/ext/sturdy/ping")?.1.contains("tag=good") == true)

        // Another failing build, seen by the watcher alone: tried once; touched again unchanged, not tried again.
        try install(failingToo, into: bundle, as: "libsturdy.so")
        #expect(await waitFor(20) { ((try? await failures()) ?? 0) == 2 })
        #expect(utime(bundle + "/libsturdy.so", nil) == 0)
        try await Task.sleep(for: .milliseconds(1_200))
        #expect(try await failures() == 2)
        #expect(try await kernel.plugin("sturdy").reason?.contains("reload failed, generation 1 still serving") == true)

        // A new build is reloaded; the same failed build put back later is tried again (the failure is forgotten).
        try install(better, into: bundle, as: "libsturdy.so")
        #expect(await waitFor(20) { get(kernel, "/ext/sturdy/ping")?.1.contains("tag=better") == true })
        try install(failingToo, into: bundle, as: "libsturdy.so")
        #expect(await waitFor(20) { ((try? await failures()) ?? 0) == 3 })
        #expect(get(kernel, "/ext/sturdy/ping")?.1.contains("tag=better") == true)
        // So after a disable and an enable of a good build: that activation forgets the failure too.
        try await kernel.disable("sturdy")
        try install(better, into: bundle, as: "libsturdy.so")
        try await kernel.enable("sturdy")
        try install(failingToo, into: bundle, as: "libsturdy.so")
        #expect(await waitFor(20) { ((try? await failures()) ?? 0) == 4 })
        await kernel.shutdown()
    }

    @Test("plugin.yaml broken while its plugin serves from a folder named otherwise: it goes on serving, not retired; a reason the watcher did not set (a failed upgrade's) stays")
    func brokenManifestInOtherFolder() async throws {
        let f = KernelFixture()
        let a = try TestEnvironment.buildFixture("wA", ["PLUGIN_ID=\"watched\"", "TAG=\"A\""])
        try TestEnvironment.makeBundle(in: f.plugins, folder: "Watched Plugin",
                                       manifest: TestEnvironment.manifest(id: "watched", library: "libw.so"), library: a, libraryName: "libw.so")
        let kernel = try f.kernel()
        await kernel.start()
        try await kernel.enable("watched")
        try await kernel.watch()
        #expect(get(kernel, "/ext/watched/ping")?.1.contains("tag=A") == true)

        let yaml = f.plugins + "/Watched Plugin/plugin.yaml"
        let good = try String(contentsOfFile: yaml, encoding: .utf8)
        try (good + "version: [\n").write(toFile: yaml, atomically: true, encoding: .utf8)
        #expect(await waitFor(20) { (try? await kernel.plugin("watched").reason)??.hasPrefix("reload failed, generation 1 still serving: ") == true })
        try await Task.sleep(for: .milliseconds(300))
        #expect(try await kernel.plugin("watched").status == .enabled)
        #expect(kernel.activePlugins == ["watched"])
        #expect(get(kernel, "/ext/watched/ping")?.1.contains("tag=A") == true)

        // Another folder (listed after it) claiming the id meanwhile takes neither the record nor the place, now or
        // once the plugin.yaml is fixed: both are refused as duplicates until it goes.
        let b = try TestEnvironment.buildFixture("wB", ["PLUGIN_ID=\"watched\"", "TAG=\"B\""])
        try TestEnvironment.makeBundle(in: f.plugins, folder: "zz-impostor",
                                       manifest: TestEnvironment.manifest(id: "watched", library: "libw.so"), library: b, libraryName: "libw.so")
        #expect(await waitFor(20) { await kernel.droppedBundles[f.plugins + "/zz-impostor"] != nil }, "the watcher saw the other folder")
        #expect(kernel.activePlugins == ["watched"])
        #expect(get(kernel, "/ext/watched/ping")?.1.contains("tag=A") == true)
        #expect(try kernel.state.plugin("watched")?.bundlePath.hasSuffix("/Watched Plugin") == true)
        #expect(try kernel.state.plugins().allSatisfy { !$0.bundlePath.hasSuffix("/zz-impostor") })
        try good.write(toFile: yaml, atomically: true, encoding: .utf8)
        #expect(await waitFor(20) { (try? await kernel.plugin("watched").reason)??.contains("duplicate plugin id \"watched\"") == true })
        #expect(get(kernel, "/ext/watched/ping")?.1.contains("tag=A") == true)
        #expect(try kernel.state.plugin("watched")?.bundlePath.hasSuffix("/Watched Plugin") == true)
        try FileManager.default.removeItem(atPath: f.plugins + "/zz-impostor")
        #expect(await waitFor(20) { (try? await kernel.plugin("watched").reason) == .some(nil) })
        #expect(get(kernel, "/ext/watched/ping")?.1.contains("tag=A") == true)
        #expect(try await kernel.history("watched").filter { $0.outcome == "activated" }.count == 1, "nothing was reloaded")

        // A failed upgrade's reason is not the watcher's to clear when the folder changes and the build does not.
        let failed = "upgrade to 2.0.0 failed, 1.0.0 kept: the archive's checksum differs"
        try kernel.state.setStatus("watched", .upgradeFailed, reason: failed)
        try good.write(toFile: yaml, atomically: true, encoding: .utf8)
        try await Task.sleep(for: .milliseconds(1500))
        #expect(try kernel.state.plugin("watched")?.reason == failed)
        await kernel.shutdown()
    }
}

extension ReloadTests {
    @Test("a reload keeps a plugin's place in the auth chain; a request that took the chain before it is answered by the new generation, neither by the next hook nor by a stopped guard's deny")
    func authChainAcrossReload() async throws {
        let f = KernelFixture()
        // Both take "Bearer <id>": idp names the caller alone, idp2 in tenant acme with the admin role.
        try f.fixtureBundle("idp", defines: ["AUTH_MODE=3", "ROUTE_PATH=\"/a\""])
        try f.fixtureBundle("idp2", defines: ["AUTH_MODE=1", "ROUTE_PATH=\"/b\""])
        try f.fixtureBundle("guard", defines: ["AUTHZ_MODE=2", "ROUTE_PATH=\"/c\""])
        try f.fixtureBundle("guard2", defines: ["AUTHZ_MODE=1", "ROUTE_PATH=\"/d\""])
        let kernel = try f.kernel()
        await kernel.start()
        for id in ["idp", "idp2", "guard", "guard2"] { try await kernel.enable(id) }
        let request = PluginRequest(method: "GET", path: "/ext/idp/a", headers: [("authorization", "Bearer kim")])
        func signIn(_ snapshot: Snapshot) throws -> Principal { try kernel.access.identify(request, snapshot: snapshot).get() }
        #expect(try signIn(kernel.registry.snapshot).authenticatedBy == "idp")

        for round in 2...3 {
            let before = kernel.registry.snapshot
            try await kernel.reload("idp")
            try await kernel.reload("guard")
            let now = kernel.registry.snapshot
            #expect(now.order == ["idp", "idp2", "guard", "guard2"], "round \(round)")
            #expect(now.authenticators.map(\.pluginID) == ["idp", "idp2"] && now.authorizers.map(\.pluginID) == ["guard", "guard2"])
            // The generations `before` holds stopped taking calls: the chain is asked as it is now.
            let kim = try signIn(before)
            #expect(kim.authenticatedBy == "idp" && kim.roles.isEmpty, "\(kim)")
            #expect(kim.roleSources?.signInGeneration == round)
            #expect(try signIn(now).authenticatedBy == "idp")
            var asked = request
            asked.principal = kim
            #expect(kernel.access.denial(of: asked, snapshot: before) == nil)
            asked.path = "/ext/idp/secret"
            #expect(kernel.access.denial(of: asked, snapshot: before)?.reason == "authorize hook \"rules\" of plugin \"guard\" denied")
        }
        // A plugin disabled since: its hook names no one and the next is asked; enabled again, it comes last.
        let before = kernel.registry.snapshot
        try await kernel.disable("idp")
        #expect(try signIn(before).authenticatedBy == "idp2")
        try await kernel.enable("idp")
        #expect(kernel.registry.snapshot.authenticators.map(\.pluginID) == ["idp2", "idp"])
        await kernel.shutdown()
    }

    @Test("a broken plugin.yaml keeps the id its folder had at the last scan (a duplicate's too), else its one record's however the folder is spelled; two records naming a folder name none")
    func brokenBundleNames() throws {
        func broken(_ folder: String) -> PluginBundle {
            PluginBundle(folder: folder, manifestPath: folder + "/plugin.yaml", manifest: nil, warnings: [], problem: folder + "/plugin.yaml: broken")
        }
        func record(_ id: String, _ path: String, _ status: PluginStatus = .installed) -> PluginRecord {
            PluginRecord(id: id, name: id, version: "1.0.0", bundlePath: path, enabled: false, status: status, reason: nil, changedAt: "")
        }
        let cwd = FileManager.default.currentDirectoryPath
        // The last scan: "w2" held x beside an impostor (both refused): broken now, it still claims x, and the
        // impostor, usable alone, is refused as its duplicate.
        var found = [broken("/p/w2"), PluginBundle(folder: "/p/zz", manifestPath: "/p/zz/plugin.yaml",
                                                     manifest: try ManifestLoader().parse(Data("id: x\nname: X\nversion: 1.0.0\nabi: \"1.0\"\nlibrary: libx.so\n".utf8), file: "zz/plugin.yaml").0, warnings: [])]
        Kernel.nameBrokenBundles(&found, lastScan: [("/p/zz", "x"), ("/p/w2", "x")], records: [])
        #expect(found[0].id == "x")
        #expect(found[1].problem?.contains("duplicate plugin id \"x\", also declared in /p/w2") == true, "\(found[1].problem ?? "none")")
        // No last scan (a start): the record, written by a process that spelled the plugin folder relatively.
        found = [broken(cwd + "/plugins/Other Plugin")]
        Kernel.nameBrokenBundles(&found, lastScan: [], records: [record("other", "./plugins/Other Plugin/")])
        #expect(found[0].id == "other")
        // A missing record does not count; two that name the folder leave it unnamed.
        found = [broken("/p/a")]
        Kernel.nameBrokenBundles(&found, lastScan: [], records: [record("gone", "/p/a", .missing)])
        #expect(found[0].knownAs == nil)
        Kernel.nameBrokenBundles(&found, lastScan: [], records: [record("one", "/p/a"), record("two", "/p/a")])
        #expect(found[0].knownAs == nil && found[0].id == "a")
        #expect(Kernel.sameFolder("plugins/x", cwd + "/plugins/./x/") && !Kernel.sameFolder("/p/x", "/q/x"))
    }

    @Test("an installed plugin's plugin.yaml broken in a folder named otherwise: its own record fails with the reason, no second record")
    func brokenManifestOfInstalled() async throws {
        let f = KernelFixture()
        let lib = try TestEnvironment.buildFixture("oA", ["PLUGIN_ID=\"other\""])
        try TestEnvironment.makeBundle(in: f.plugins, folder: "Other Plugin",
                                       manifest: TestEnvironment.manifest(id: "other", library: "libo.so"), library: lib, libraryName: "libo.so")
        let kernel = try f.kernel()
        await kernel.start()
        let before = try #require(try kernel.state.plugin("other"))
        #expect(before.status == .installed)
        let yaml = f.plugins + "/Other Plugin/plugin.yaml"
        let good = try String(contentsOfFile: yaml, encoding: .utf8)
        try (good + "version: [\n").write(toFile: yaml, atomically: true, encoding: .utf8)
        await kernel.rescan()
        let broken = try #require(try kernel.state.plugin("other"))
        #expect(broken.status == .failed)
        #expect(broken.reason?.hasPrefix(yaml) == true, "\(broken.reason ?? "no reason")")
        #expect(broken.name == before.name && broken.version == before.version)
        #expect(try kernel.state.plugins().map(\.id) == ["other"], "no record named after the folder")
        try good.write(toFile: yaml, atomically: true, encoding: .utf8)
        await kernel.rescan()
        let fixed = try #require(try kernel.state.plugin("other"))
        #expect(fixed.status == .installed && fixed.reason == nil)
        await kernel.shutdown()
    }
}

/// The whole of /proc/self/maps. (String(contentsOfFile:) trusts the size /proc reports and may stop early.)
/// True when a private copy of plugin `id`'s library is mapped: an in-memory copy (`memfd:keel-<id>-g<n>`) or a
/// file copy (`…/generations/<id>-g<n>-…`).
func isMapped(_ id: String) throws -> Bool {
    let maps = try processMaps()
    return maps.contains("memfd:keel-\(id)-g") || maps.contains("/generations/\(id)-g")
}

/// The private copies of plugin `id` mapped in this process (each load's memory file is named after its generation).
func mappedCopies(_ id: String) throws -> Int {
    Set(try processMaps().split(separator: "\n").compactMap { line in
        line.range(of: "memfd:keel-\(id)-g").map { line[$0.upperBound...].prefix { $0.isNumber } }
    }).count
}

func processMaps() throws -> String {
    guard let handle = FileHandle(forReadingAtPath: "/proc/self/maps") else { throw TestFailure("no /proc/self/maps") }
    defer { try? handle.close() }
    return String(decoding: handle.readDataToEndOfFile(), as: UTF8.self)
}
