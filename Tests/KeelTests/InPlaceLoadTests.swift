// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Keel
import KeelExtensions
import KeelState
import Testing

/// The lines of /proc/self/maps that map a file at exactly `path` (not a deleted one, not a copy).
func mappings(of path: String) throws -> [Substring] {
    try processMaps().split(separator: "\n").filter { $0.hasSuffix(" " + path) }
}

@Suite("loading installed packages in place", .scheduled)
struct InPlaceLoadTests {
    /// A local repository offering plugin `up` in 1.0.0 (answers tag=one) and 1.1.0 (tag=two), unsigned.
    func repository() throws -> String {
        try SignerPinningTests.repository(id: "up", [("1.0.0", "one", nil), ("1.1.0", "two", nil)])
    }

    @Test("an installed package is loaded where it lies, an upgrade's new code too; a plugins/ folder library and a second load of one file are copied")
    func installedInPlace() async throws {
        let f = KernelFixture()
        let repo = try repository()
        try f.fixtureBundle("devplug")
        let kernel = try f.kernel()
        await kernel.start()
        _ = try kernel.state.addRepository(StateStore.Repository(name: "main", location: repo, priority: 0))
        let store = ExtensionStore(state: kernel.state, pluginsDirectory: f.plugins)
        _ = try await kernel.install("up", version: "1.0.0", store: store, allowUnsigned: true)
        let installed = f.plugins + "/up/libup.so"
        // What an install leaves: files no one may write.
        let mode = try #require(FileManager.default.attributesOfItem(atPath: installed)[.posixPermissions] as? Int)
        #expect(mode & 0o222 == 0)
        try await kernel.enable("up")
        try await kernel.enable("devplug")
        #expect(get(kernel, "/ext/up/ping")?.1.contains("tag=one") == true)
        // The package is mapped from its installed file, without a memory copy; the plugins/ folder library is not.
        #expect(try !mappings(of: installed).isEmpty)
        #expect(try !processMaps().contains("memfd:keel-up-g"))
        #expect(try processMaps().contains("memfd:keel-devplug-g1"))
        #expect(try mappings(of: f.plugins + "/devplug/libdevplug.so").isEmpty)
        // cp over the plugins/ folder library while it is loaded: the copy runs on.
        let fd = open(f.plugins + "/devplug/libdevplug.so", O_WRONLY | O_TRUNC)
        #expect(fd >= 0)
        _ = write(fd, "not a library", 13)
        close(fd)
        #expect(get(kernel, "/ext/devplug/ping")?.1.contains("tag=") == true)

        // An upgrade unpacks a new folder and renames it into place: same path, new file, new code, no copy.
        try await kernel.upgrade("up", to: "1.1.0", store: store, allowUnsigned: true)
        #expect(get(kernel, "/ext/up/ping")?.1.contains("tag=two") == true)
        #expect(try mappings(of: installed).count >= 1)
        #expect(try !processMaps().contains("memfd:keel-up-g"))
        // Loading the same file again (a reload with nothing changed) is from a copy: the dynamic loader would hand
        // back the library already open from that file, and the new generation must be a library of its own.
        try await kernel.reload("up")
        #expect(try processMaps().contains("memfd:keel-up-g3"))
        #expect(get(kernel, "/ext/up/ping")?.1.contains("tag=two") == true)
        let history = try await kernel.history("up")
        #expect(history.filter { $0.outcome == "activated" }.count == 3)
        #expect(Set(history.map(\.checksum)).count == 2)
        await kernel.shutdown()
    }

    @Test("only a read-only library of this user's, reached without a symbolic link, loads where it lies: another user's file, or one behind a link, is copied",
          .enabled(if: geteuid() == 0, "giving a file to another user needs root"))
    func onlyOwnFilesInPlace() async throws {
        let f = KernelFixture()
        for id in ["own", "foreign", "linked"] { try f.fixtureBundle(id) }
        // "linked": its folder is a symbolic link to a folder outside the plugin folder.
        let outside = TestEnvironment.makeTemporaryDirectory("outside") + "/linked"
        try FileManager.default.moveItem(atPath: f.plugins + "/linked", toPath: outside)
        try FileManager.default.createSymbolicLink(atPath: f.plugins + "/linked", withDestinationPath: outside)
        for (id, folder) in [("own", f.plugins + "/own"), ("foreign", f.plugins + "/foreign"), ("linked", outside)] {
            #expect(chmod(folder + "/lib\(id).so", 0o444) == 0)
        }
        #expect(chown(f.plugins + "/foreign/libforeign.so", 65534, 65534) == 0)
        let kernel = try f.kernel()
        await kernel.start()
        for id in ["own", "foreign", "linked"] { try await kernel.enable(id) }
        for id in ["own", "foreign", "linked"] { #expect(get(kernel, "/ext/\(id)/ping")?.0 == 200, "\(id)") }
        let maps = try processMaps()
        #expect(try !mappings(of: f.plugins + "/own/libown.so").isEmpty && !maps.contains("memfd:keel-own-g"), "read-only and this user's: in place")
        #expect(try mappings(of: f.plugins + "/foreign/libforeign.so").isEmpty && maps.contains("memfd:keel-foreign-g1"),
                "another user may write its own file: copied")
        #expect(try mappings(of: outside + "/liblinked.so").isEmpty && maps.contains("memfd:keel-linked-g1"),
                "behind a symbolic link, the folder is not the plugin folder's: copied")
        await kernel.shutdown()
    }
}
