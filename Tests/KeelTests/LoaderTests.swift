// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelLoader
import KeelManifest
import Testing

@Suite("loading shared objects", .scheduled)
struct LoaderTests {
    func loadError(_ path: String, id: String? = nil) -> LoadError? {
        do { _ = try PluginLibrary.open(path: path, expectedID: id); return nil } catch { return error }
    }

    func write(_ bytes: [UInt8], _ name: String) throws -> String {
        let path = TestEnvironment.makeTemporaryDirectory("bad") + "/" + name
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    @Test("a good library opens and describes itself")
    func good() throws {
        let lib = try PluginLibrary.open(path: try TestEnvironment.builtLibrary("libhello-c.so"))
        #expect(lib.descriptor.id == "hello")
        #expect(lib.descriptor.version == "1.0.0")
        #expect(lib.descriptor.abi == ABIVersion(1, 1), "built against the current headers")
        #expect(!lib.descriptor.unloadSafe)
    }

    @Test("a file that is not ELF, an empty file and a truncated one get their own message")
    func notELF() throws {
        let text = try write(Array("#!/bin/sh\necho hi\n".utf8), "libtext.so")
        #expect(loadError(text)?.description == "\(text): not an ELF shared object (no ELF magic number)")
        #expect(loadError(text)?.code == .notSharedObject)

        let empty = try write([], "libempty.so")
        #expect(loadError(empty)?.description == "\(empty): empty file, not a shared object")

        let real = try Data(contentsOf: URL(fileURLWithPath: try TestEnvironment.builtLibrary("libhello-c.so")))
        let short = try write(Array(real.prefix(40)), "libshort.so")
        #expect(loadError(short)?.description == "\(short): truncated ELF file (40 bytes, the header alone needs 64)")
        let half = try write(Array(real.prefix(real.count / 2)), "libhalf.so")
        #expect(loadError(half)?.code == .truncated)
        #expect(loadError(half)?.description.contains("truncated ELF file (\(real.count / 2) bytes, its headers reach byte") == true)
        // Header table offsets near 2^64: the end is computed without overflow (the sum trapped, killing the host).
        for offset in [32, 40] {
            var crafted = Array(real)
            for i in 0..<8 { crafted[offset + i] = 0xFF }
            let path = try write(crafted, "libcrafted\(offset).so")
            #expect(loadError(path)?.description == "\(path): a malformed ELF header (its header tables lie past any file's end)")
        }

        let missing = TestEnvironment.scratch + "/nope/libnope.so"
        #expect(loadError(missing)?.description == "\(missing): no such file")
    }

    @Test("a library for another CPU says which")
    func wrongArchitecture() throws {
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: try TestEnvironment.builtLibrary("libhello-c.so"))))
        // The other of the two CPUs the host knows by name.
        #if arch(x86_64)
        let (machine, other, host): (UInt8, String, String) = (183, "aarch64", "x86_64") // EM_AARCH64
        #else
        let (machine, other, host): (UInt8, String, String) = (62, "x86_64", "aarch64") // EM_X86_64
        #endif
        bytes[18] = machine; bytes[19] = 0
        let path = try write(bytes, "libother.so")
        let e = try #require(loadError(path))
        #expect(e.code == .wrongArchitecture)
        #expect(e.description == "\(path): built for \(other); this host is \(host)")
    }

    @Test("an object file and an executable are not shared libraries")
    func wrongType() throws {
        let dir = TestEnvironment.makeTemporaryDirectory("obj")
        try "int f(void) { return 1; }\nint main(void) { return f(); }\n".write(toFile: dir + "/x.c", atomically: true, encoding: .utf8)
        try TestEnvironment.run("/usr/bin/env", ["cc", "-c", dir + "/x.c", "-o", dir + "/x.o"])
        try TestEnvironment.run("/usr/bin/env", ["cc", "-no-pie", dir + "/x.c", "-o", dir + "/x.bin"])
        #expect(loadError(dir + "/x.o")?.description.contains("a relocatable object (.o), not a shared library") == true)
        #expect(loadError(dir + "/x.bin")?.description.contains("an executable, not a shared library") == true)
        // `cc x.c -o libx.so` (no -shared) makes a position-independent executable, which dlopen refuses in its words.
        try TestEnvironment.run("/usr/bin/env", ["cc", "-pie", "-fPIE", dir + "/x.c", "-o", dir + "/libpie.so"])
        #expect(loadError(dir + "/libpie.so")?.description == "\(dir)/libpie.so: an executable, not a shared library: link it with -shared -fPIC")
        #expect(loadError(dir + "/libpie.so")?.code == .notSharedObject)
        // A folder named like the library (mkdir in the wrong place) is not a file without ELF magic.
        try FileManager.default.createDirectory(atPath: dir + "/libdir.so", withIntermediateDirectories: false)
        #expect(loadError(dir + "/libdir.so")?.description == "\(dir)/libdir.so: a folder, not a shared library file")
    }

    @Test("a missing dependency library is named")
    func missingDependency() throws {
        let dir = TestEnvironment.makeTemporaryDirectory("dep")
        try "int keel_dep_value(void) { return 7; }\n".write(toFile: dir + "/dep.c", atomically: true, encoding: .utf8)
        try TestEnvironment.run("/usr/bin/env", ["cc", "-shared", "-fPIC", dir + "/dep.c", "-o", dir + "/libkeeltestdep.so"])
        let linked = dir + "/libneedsdep.so"
        let r = try TestEnvironment.run("/usr/bin/env", ["cc", "-std=c11", "-shared", "-fPIC", "-I", TestEnvironment.abiInclude,
                                                         TestEnvironment.fixtures + "/plugins/fixture.c", "-L", dir,
                                                         "-Wl,--no-as-needed", "-lkeeltestdep", "-o", linked])
        #expect(r.status == 0, "\(r.stderr)")
        try FileManager.default.removeItem(atPath: dir + "/libkeeltestdep.so")
        let e = try #require(loadError(linked, id: "fixture"))
        #expect(e.code == .dependencyMissing)
        #expect(e.description.hasPrefix("plugin \"fixture\" (\(linked)): needs libkeeltestdep.so, which cannot be found"))
    }

    @Test("an undefined symbol fails at load time, not mid-request")
    func undefinedSymbol() throws {
        let path = try TestEnvironment.buildPlugin(source: TestEnvironment.fixtures + "/plugins/fixture.c", name: "undef",
                                                   defines: ["USE_MISSING_SYMBOL"])
        let e = try #require(loadError(path))
        #expect(e.code == .dlopenFailed)
        #expect(e.description.contains("undefined symbol keel_fixture_symbol_that_does_not_exist"))
    }

    @Test("no entry symbol, or an entry that returns NULL")
    func entry() throws {
        let none = try TestEnvironment.buildFixture("noentry", ["NO_ENTRY"])
        #expect(loadError(none, id: "fixture")?.description
                == "plugin \"fixture\" (\(none)): no keel_plugin_entry symbol: define it with KEEL_PLUGIN_ENTRY(descriptor) in C, @_cdecl(\"keel_plugin_entry\") in Swift or keel_plugin::plugin! in Rust, and keep it visible")
        let null = try TestEnvironment.buildFixture("nullentry", ["ENTRY_RETURNS_NULL"])
        #expect(loadError(null, id: "fixture")?.description
                == "plugin \"fixture\" (\(null)): keel_plugin_entry returned NULL: the plugin declined to load")
    }

    @Test("ABI major must match and minor may not be newer, in PostgreSQL's words")
    func abiVersions() throws {
        let two = try TestEnvironment.buildFixture("abi2", ["ABI_MAJOR=2", "ABI_MINOR=0"])
        #expect(loadError(two, id: "hello")?.description == "incompatible plugin \"hello\" (\(two)): ABI 2.0, this host supports \(PluginLibrary.supportedABIText)")
        let newer = try TestEnvironment.buildFixture("abi1_9", ["ABI_MINOR=9"])
        #expect(loadError(newer)?.code == .incompatibleABI)
        #expect(loadError(newer)?.description.contains("ABI 1.9, this host supports 1.0") == true)
    }

    @Test("a descriptor smaller than its ABI version requires is refused")
    func structSize() throws {
        let small = try TestEnvironment.buildFixture("small", ["STRUCT_SIZE=40"])
        #expect(loadError(small, id: "fixture")?.description
                == "plugin \"fixture\" (\(small)): descriptor struct_size 40 is smaller than the 80 bytes ABI 1.1 requires")
        let tiny = try TestEnvironment.buildFixture("tiny", ["STRUCT_SIZE=8"])
        #expect(loadError(tiny)?.code == .descriptorTooSmall)
    }

    @Test("the descriptor must agree with plugin.yaml")
    func manifestMismatch() throws {
        let lib = try PluginLibrary.open(path: try TestEnvironment.builtLibrary("libhello-c.so"))
        var manifest = Manifest(id: "hullo", name: "x", version: Semver(1, 0, 0), abi: ABIVersion(1, 0), library: "x")
        #expect(throws: LoadError.self) { try lib.verify(against: manifest, manifestPath: "b/plugin.yaml") }
        do { try lib.verify(against: manifest, manifestPath: "b/plugin.yaml") } catch {
            #expect(error.description.hasSuffix("library says id \"hello\" but b/plugin.yaml says \"hullo\""))
        }
        manifest.id = "hello"
        manifest.version = Semver(1, 1, 0)
        do { try lib.verify(against: manifest, manifestPath: "b/plugin.yaml"); Issue.record("accepted") } catch {
            #expect(error.description.hasSuffix("library says version 1.0.0 but b/plugin.yaml says 1.1.0"))
        }
    }
}
