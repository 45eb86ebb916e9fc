// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Glibc
@testable import KeelSystem
import Testing

/// Where a worker's `pids` cgroup goes (`PidsCgroup.locate`), from the two files the kernel writes, and a real cgroup
/// made, joined, refusing and removed where this host can make one.
@Suite("pids cgroup", .scheduled)
struct PidsCgroupTests {
    static let v1Mounts = """
        31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
        38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
        39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
        41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
        """

    @Test("cgroup v1: the hierarchy mounted with pids, the host's path below it; a container's mount of its own path maps to the mount point")
    func v1() throws {
        let cgroups = "9:name=systemd:/\n8:pids:/system.slice/keel.service\n4:memory:/x\n0::/\n"
        #expect(try PidsCgroup.locate(cgroups: cgroups, mounts: Self.v1Mounts).get() == "/sys/fs/cgroup/pids/system.slice/keel.service")
        #expect(try PidsCgroup.locate(cgroups: "8:pids:/\n", mounts: Self.v1Mounts).get() == "/sys/fs/cgroup/pids")
        // A container whose mount's root is its own cgroup path.
        let container = "39 31 0:36 /docker/abc /sys/fs/cgroup/pids ro,nosuid - cgroup cgroup rw,pids\n"
        #expect(try PidsCgroup.locate(cgroups: "8:pids:/docker/abc\n", mounts: container).get() == "/sys/fs/cgroup/pids")
        #expect(try PidsCgroup.locate(cgroups: "8:pids:/docker/abc/sub\n", mounts: container).get() == "/sys/fs/cgroup/pids/sub")
        // Optional fields before the dash, and an escaped space in the mount point.
        let tagged = "39 31 0:36 / /sys/fs/my\\040cgroups shared:5 master:1 - cgroup cgroup rw,nsdelegate,pids\n"
        #expect(try PidsCgroup.locate(cgroups: "8:pids:/a\n", mounts: tagged).get() == "/sys/fs/my cgroups/a")
        // The hierarchy mounted twice (a subtree bind-mounted first): the mount that shows the path, nearest root first.
        let twice = "40 31 0:36 /other /mnt/other rw - cgroup cgroup rw,pids\n" + "39 31 0:36 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n"
            + "42 31 0:36 /docker /mnt/docker rw - cgroup cgroup rw,pids\n"
        #expect(try PidsCgroup.locate(cgroups: "8:pids:/system.slice/a\n", mounts: twice).get() == "/sys/fs/cgroup/pids/system.slice/a")
        #expect(try PidsCgroup.locate(cgroups: "8:pids:/docker/abc\n", mounts: twice).get() == "/mnt/docker/abc")
    }

    @Test("no pids cgroup to give a worker: the controller not mounted, the path outside the mount, or v2 without pids for the children; each says why")
    func unavailable() throws {
        func why(_ cgroups: String, _ mounts: String) -> String {
            switch PidsCgroup.locate(cgroups: cgroups, mounts: mounts) {
            case let .success(path): "found \(path)"
            case let .failure(reason): reason.description
            }
        }
        #expect(why("8:pids:/a\n", "38 31 0:35 / /sys/fs/cgroup/blkio rw - cgroup cgroup rw,blkio\n") == "the pids cgroup controller is not mounted here")
        #expect(why("8:pids:/elsewhere\n", "39 31 0:36 /docker/abc /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n")
                == "the host's pids cgroup /elsewhere lies outside the mount at /sys/fs/cgroup/pids")
        #expect(why("0::/user.slice\n", "") == "this kernel has no pids cgroup controller the host can use")
        // A cgroup outside this cgroup namespace's root reads as "/../..": never a folder made from it.
        #expect(why("8:pids:/../../system.slice\n", Self.v1Mounts) == "the host's pids cgroup /../../system.slice lies outside the mount at /sys/fs/cgroup/pids")
        #expect(why("0::/../x\n", "41 31 0:38 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n") == "this kernel has no pids cgroup controller the host can use")
        // v2, a folder whose cgroup.subtree_control does not name pids (here: none at all).
        let folder = FileManager.default.temporaryDirectory.path + "/keel-cg-\(getpid())"
        try? FileManager.default.createDirectory(atPath: folder + "/a", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        FileManager.default.createFile(atPath: folder + "/a/cgroup.subtree_control", contents: Data("cpu memory\n".utf8))
        let v2 = "41 31 0:38 / \(folder) rw - cgroup2 cgroup2 rw\n"
        #expect(why("0::/a\n", v2) == "neither the host's cgroup \(folder)/a nor its parent hands the pids controller to its children (cgroup v2: \"pids\" is in neither's cgroup.subtree_control; under systemd: Delegate=pids and DelegateSubgroup=)")
        // Beside the host, when the parent hands it down (systemd's DelegateSubgroup=).
        try FileManager.default.createDirectory(atPath: folder + "/a/host", withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: folder + "/a/host/cgroup.subtree_control", contents: Data())
        FileManager.default.createFile(atPath: folder + "/a/cgroup.subtree_control", contents: Data("cpu pids memory\n".utf8))
        #expect(why("0::/a/host\n", v2) == "found \(folder)/a")
        // The host's own, when it hands it down (the root, the one cgroup that may both hold processes and do that).
        #expect(why("0::/a\n", v2) == "found \(folder)/a")
        // Never above the mount, whatever lies there.
        FileManager.default.createFile(atPath: folder + "/cgroup.subtree_control", contents: Data("pids\n".utf8))
        FileManager.default.createFile(atPath: folder + "/a/cgroup.subtree_control", contents: Data("cpu\n".utf8))
        #expect(why("0::/\n", "41 31 0:38 / \(folder)/a rw - cgroup2 cgroup2 rw\n").hasPrefix("neither the host's cgroup \(folder)/a nor"))
    }

    @Test("a real cgroup: a child moved in cannot fork past the limit (EAGAIN, counted as a refusal), and ending it kills what is in it and removes it",
          .enabled(if: (try? PidsCgroup.parent.get()) != nil, "the host cannot make pids cgroups here (not root, no delegated cgroup)"))
    func real() throws {
        // A shell that waits for a line before it forks 20 sleeps; the cgroup holds 5 tasks.
        let shell = Process()
        shell.executableURL = URL(fileURLWithPath: "/bin/sh")
        shell.arguments = ["-c", "read go; for i in $(seq 20); do sleep 30 & done; wait"]
        let input = Pipe()
        shell.standardInput = input
        shell.standardError = FileHandle.nullDevice
        try shell.run()
        let cgroup = try PidsCgroup.make(for: shell.processIdentifier, limit: 5)
        #expect(cgroup.tasks == 1)
        #expect(cgroup.refusals == 0)
        input.fileHandleForWriting.write(Data("go\n".utf8))
        var refused = 0
        for _ in 0..<100 where refused == 0 {
            usleep(20_000)
            refused = cgroup.refusals ?? 0
        }
        #expect(refused > 0)
        #expect((cgroup.tasks ?? 99) <= 5)
        // What it forked before the refusal (the shell itself may have given up and ended): killed by `end`.
        let members = (SystemFile.text(cgroup.path + "/cgroup.procs") ?? "").split(separator: "\n").compactMap { pid_t($0) }
        #expect(members.count >= 2, "\(members)")
        cgroup.end()
        #expect(!FileManager.default.fileExists(atPath: cgroup.path))
        shell.waitUntilExit()
        for pid in members where pid != shell.processIdentifier {
            let state = (SystemFile.text("/proc/\(pid)/stat") ?? "").split(separator: ")").last?.split(separator: " ").first
            #expect(state == nil || state == "Z", "process \(pid) of the ended cgroup: \(state.map(String.init) ?? "gone")")
        }
    }

    @Test("a host killed with SIGKILL left a cgroup with a live process: the next start kills it and removes the cgroup; another namespace's is left alone",
          .enabled(if: (try? PidsCgroup.parent.get()) != nil, "the host cannot make pids cgroups here (not root, no delegated cgroup)"))
    func leftoversOfADeadHost() throws {
        let parent = try PidsCgroup.parent.get()
        // A host pid that no longer runs: a process that ended.
        let gone = Process()
        gone.executableURL = URL(fileURLWithPath: "/bin/true")
        try gone.run()
        gone.waitUntilExit()
        let dead = gone.processIdentifier
        // What a worker granted `processes` left running in its cgroup when its host was killed.
        let survivor = Process()
        survivor.executableURL = URL(fileURLWithPath: "/bin/sleep")
        survivor.arguments = ["30"]
        try survivor.run()
        defer { if survivor.isRunning { survivor.terminate() } }
        let ours = parent + "/keel-\(PidsCgroup.namespace)-\(dead)-\(survivor.processIdentifier)"
        let foreign = parent + "/keel-1-\(dead)-\(survivor.processIdentifier)"
        for folder in [ours, foreign] { #expect(mkdir(folder, 0o755) == 0, "\(folder): \(errno)") }
        defer { _ = rmdir(foreign); _ = rmdir(ours) }
        try "\(survivor.processIdentifier)\n".write(toFile: ours + "/cgroup.procs", atomically: false, encoding: .utf8)
        PidsCgroup.removeLeftovers(in: parent)
        survivor.waitUntilExit()
        #expect(survivor.terminationReason == .uncaughtSignal && survivor.terminationStatus == SIGKILL)
        #expect(!FileManager.default.fileExists(atPath: ours))
        #expect(FileManager.default.fileExists(atPath: foreign), "another pid namespace's cgroup is not this host's to judge")
    }
}
