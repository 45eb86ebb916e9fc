// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Keel
import Testing

/// Operations find bundles by the id their manifest declares; recovery leaves live work alone.
extension KernelTests {
    @Test("uninstall removes the folder whose manifest declares the id, never a folder that merely has its name")
    func uninstallByManifest() async throws {
        let f = KernelFixture()
        try TestEnvironment.stageExamples(into: f.plugins)
        // An unrelated plugin (greeter) in a folder named like hello's id.
        try FileManager.default.moveItem(atPath: f.plugins + "/greeter-swift", toPath: f.plugins + "/hello")
        let kernel = try f.kernel()
        await kernel.start()
        try await kernel.uninstall("hello")
        #expect(!FileManager.default.fileExists(atPath: f.plugins + "/hello-c"))
        #expect(FileManager.default.fileExists(atPath: f.plugins + "/hello/plugin.yaml"))
        #expect(try await kernel.plugins().map(\.id) == ["greeter"])
        do { try await kernel.uninstall("hello"); Issue.record("uninstalled twice") } catch {
            #expect(error.description == "\"hello\" is not installed")
        }
        #expect(FileManager.default.fileExists(atPath: f.plugins + "/hello/plugin.yaml"))
        await kernel.shutdown()
    }

    @Test("an uninstall finished at start removes the recorded folder only, and only while it declares the id")
    func finishUninstallByRecord() async throws {
        let f = KernelFixture()
        try TestEnvironment.stageExamples(into: f.plugins)
        try FileManager.default.moveItem(atPath: f.plugins + "/greeter-swift", toPath: f.plugins + "/hello")
        let first = try f.kernel()
        await first.start()
        await first.shutdown()
        // A crash mid-uninstall of hello (recorded in hello-c): its folder already gone, the record says uninstalling.
        try FileManager.default.removeItem(atPath: f.plugins + "/hello-c")
        try first.state.setStatus("hello", .uninstalling)
        let kernel = try f.kernel()
        await kernel.start()
        #expect(FileManager.default.fileExists(atPath: f.plugins + "/hello/plugin.yaml"))
        #expect(try await kernel.plugins().map(\.id) == ["greeter"])
        await kernel.shutdown()
    }

    @Test("start-up recovery removes work folders of dead processes only, and puts an interrupted upgrade back")
    func recoveryLeavesLiveWork() async throws {
        let f = KernelFixture()
        let dead = try Self.deadProcessID(), live = getpid()
        let names = [".installing-a-\(live)", ".installing-a-\(dead)", ".upgrading-b-\(live)", ".upgrading-b-\(dead)",
                     ".uninstalling-c-\(dead)", ".previous-d-folder-\(live)", ".previous-e-folder-\(dead)"]
        for name in names { try FileManager.default.createDirectory(atPath: f.plugins + "/" + name, withIntermediateDirectories: true) }
        let kernel = try f.kernel()
        await kernel.start()
        let left = try FileManager.default.contentsOfDirectory(atPath: f.plugins).sorted()
        #expect(left == [".installing-a-\(live)", ".previous-d-folder-\(live)", ".upgrading-b-\(live)", "e-folder"], "\(left)")
        await kernel.shutdown()
    }

    @Test("a bundle put back from an interrupted upgrade is found by the same start, not the next")
    func recoveredBundleFoundAtOnce() async throws {
        let f = KernelFixture()
        // Start-up reads the folder's listing ahead, beside the records: the put-back must not be missed by it.
        let previous = f.plugins + "/.previous-app-\(try Self.deadProcessID())"
        try FileManager.default.createDirectory(atPath: previous, withIntermediateDirectories: true)
        try "id: app\nname: App\nversion: 1.0.0\nabi: \"1.0\"\n".write(toFile: previous + "/plugin.yaml", atomically: true, encoding: .utf8)
        let kernel = try f.kernel()
        await kernel.start()
        #expect(FileManager.default.fileExists(atPath: f.plugins + "/app/plugin.yaml"))
        #expect(try await kernel.plugins().map(\.id) == ["app"])
        await kernel.shutdown()
    }

    /// The id of a process that has ended (the owner of a work folder left by a crash).
    static func deadProcessID() throws -> pid_t {
        let exited = Process()
        exited.executableURL = URL(fileURLWithPath: "/bin/true")
        try exited.run()
        exited.waitUntilExit()
        return exited.processIdentifier
    }
}
