// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
@testable import Keel
import KeelSystem
import Testing

/// The files Keel keeps beside its state (lock, activation mark, crash record, manifest cache) in a folder others may
/// write, such as /tmp: another user's file, or a link, planted at one of their names is never trusted nor written
/// through. (The state file itself: `StateStoreTests.plantedStateRefused`; the manifest cache:
/// `ManifestCacheTests.plantedCacheIgnored`.)
@Suite("files planted beside the state", .scheduled, .enabled(if: geteuid() == 0, "gives files to another user (chown): needs root, as CI runs"))
struct PlantedFilesTests {
    /// A folder anyone may write, sticky, as /tmp is; and a file of this user's that a link could point at.
    func shared() throws -> (folder: String, victim: String) {
        let folder = TestEnvironment.makeTemporaryDirectory("planted")
        #expect(chmod(folder, 0o1777) == 0)
        let victim = TestEnvironment.makeTemporaryDirectory("planted-victim") + "/precious.txt"
        try "keep me\n".write(toFile: victim, atomically: false, encoding: .utf8)
        return (folder, victim)
    }

    @Test("a lock file another user owns, or a link at its name, is refused in one line; the file a link points at is untouched")
    func lock() throws {
        let (folder, victim) = try shared()
        FileManager.default.createFile(atPath: folder + "/a.db.lock", contents: Data())
        #expect(chown(folder + "/a.db.lock", 65534, 65534) == 0)
        var said = ""
        do { _ = try ServerLock(stateFile: folder + "/a.db", info: "http://127.0.0.1:1") } catch { said = error.description }
        #expect(said.contains("a.db.lock belongs to uid 65534, not to this user") && said.contains("another user could have put it there")
                && !said.contains("remove it"), "\(said)")
        #expect(symlink(victim, folder + "/b.db.lock") == 0)
        said = ""
        do { _ = try ServerLock(stateFile: folder + "/b.db", info: "http://127.0.0.1:1") } catch { said = error.description }
        #expect(said.contains("b.db.lock is a symbolic link, which is never followed"), "\(said)")
        #expect(try String(contentsOfFile: victim, encoding: .utf8) == "keep me\n")
        // This user's own: taken, and the CLI reads it.
        let ours = try ServerLock(stateFile: folder + "/c.db", info: "http://127.0.0.1:1", pluginsFolder: "/srv/plugins")
        #expect(ServerLock.running(stateFile: folder + "/c.db") == "pid \(getpid()) http://127.0.0.1:1")
        #expect(ServerLock.servedFolder(stateFile: folder + "/c.db") == "/srv/plugins")
        _ = ours
        // Another user's lock, held (as a server of theirs would), naming their address: the CLI believes none of it
        // (it would send the admin token there).
        let planted = folder + "/d.db.lock"
        try "pid 1 http://evil.example:80\nplugins /tmp/theirs\n".write(toFile: planted, atomically: false, encoding: .utf8)
        #expect(chown(planted, 65534, 65534) == 0)
        let held = open(planted, O_RDONLY)
        defer { close(held) }
        #expect(flock(held, LOCK_EX | LOCK_NB) == 0)
        #expect(ServerLock.running(stateFile: folder + "/d.db") == nil)
        #expect(ServerLock.servedFolder(stateFile: folder + "/d.db") == nil)
    }

    @Test("the activation mark is neither mapped through a link (which would cut its target to a page) nor from another user's file, nor read from one")
    func activationMark() throws {
        let (folder, victim) = try shared()
        #expect(symlink(victim, folder + "/a.db.activating") == 0)
        let linked = ActivationMark(path: folder + "/a.db.activating")
        linked.set("hello 1 deadbeef")
        #expect(try String(contentsOfFile: victim, encoding: .utf8) == "keep me\n")
        #expect(linked.refusal == "is a symbolic link, which is never followed", "the kernel logs it: \(String(describing: linked.refusal))")
        FileManager.default.createFile(atPath: folder + "/b.db.activating", contents: Data("hello 3 feedface\n".utf8))
        #expect(chown(folder + "/b.db.activating", 65534, 65534) == 0)
        let planted = ActivationMark(path: folder + "/b.db.activating")
        #expect(planted.read() == nil, "another user's mark would quarantine the plugin it names")
        planted.set("mine 1 00")
        #expect(planted.refusal?.hasPrefix("belongs to uid 65534, not to this user") == true, "\(String(describing: planted.refusal))")
        #expect(try String(contentsOfFile: folder + "/b.db.activating", encoding: .utf8) == "hello 3 feedface\n", "not written either")
        let ours = ActivationMark(path: folder + "/c.db.activating")
        ours.set("mine 2 abc")
        #expect(ours.read() == "mine 2 abc")
    }

    @Test("a file read only when this user owns it: another user's is EPERM naming its owner")
    func ownedRead() throws {
        let (folder, _) = try shared()
        FileManager.default.createFile(atPath: folder + "/x.db.crash", contents: Data("plugin=hello\n".utf8))
        #expect(try SystemFile.read(folder + "/x.db.crash", ownedHere: true) == Array("plugin=hello\n".utf8))
        #expect(chown(folder + "/x.db.crash", 65534, 65534) == 0)
        #expect(throws: SystemFile.ReadError.self) { try SystemFile.read(folder + "/x.db.crash", ownedHere: true) }
        do { _ = try SystemFile.read(folder + "/x.db.crash", ownedHere: true) } catch {
            #expect(error.owner == 65534 && error.description.hasPrefix("belongs to uid 65534, not to this user"))
        }
        #expect(try SystemFile.read(folder + "/x.db.crash") == Array("plugin=hello\n".utf8), "without ownedHere, read as before")
    }
}
