// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Testing

@Suite("the server's descriptor limit", .scheduled)
struct DescriptorLimitTests {
    @Test("keel serve raises its soft limit on open descriptors to the hard one (a proxied connection holds two)")
    func softLimitRaised() async throws {
        let f = KernelFixture()
        let keel = TestEnvironment.binPath + "/keel"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", "ulimit -Sn 512 && exec \"$0\" serve --port 0 --no-watch --plugins \"$1\" --state \"$2\"",
                             keel, f.plugins, f.state]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        defer {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        var seen = ""
        let deadline = Date().addingTimeInterval(30)
        while !seen.contains("listening on"), Date() < deadline {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            seen += String(decoding: chunk, as: UTF8.self)
        }
        #expect(seen.contains("listening on"), "\(seen)")
        let limits = try String(contentsOfFile: "/proc/\(process.processIdentifier)/limits", encoding: .utf8)
        let line = try #require(limits.split(separator: "\n").first { $0.hasPrefix("Max open files") })
        let numbers = line.split(separator: " ").compactMap { Int($0) }
        var mine = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &mine)
        let hard = Int(min(mine.rlim_max, 65_536))
        #expect(numbers.first == hard, "\(line), hard limit \(mine.rlim_max)")
    }
}
