// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Testing

extension PostgresBackedTests {
    /// The C embedding API on a PostgreSQL state: what one appliance process stores, the next one finds.
    @Suite("the C embedding API on a PostgreSQL state")
    struct EmbeddingPostgresTests {
        @Test("keel_config.state takes a postgres:// URL: a plugin enabled by one process is enabled in the next",
              .enabled(if: StateEngine.postgresURL != nil))
        func sharedState() throws {
            let app = try EmbeddingCTests.build(TestEnvironment.fixtures + "/embed/embed_postgres.c", "embed_postgres")
            let plugins = try EmbeddingCTests.plugins()
            let url = StateEngine.postgres.freshLocation()
            let hostDirectory = TestEnvironment.makeTemporaryDirectory("embed-host")
            let environment = ["KEEL_HOST_DIR": hostDirectory]
            let first = try TestEnvironment.run(app, [plugins, url, "enable"], environment: environment)
            #expect(first.status == 0 && first.stdout.contains("enable hello: ok\n") && first.stdout.contains("hello is enabled\n"),
                    "\(first.stdout)\(first.stderr)")
            #expect(first.stdout.contains("GET /ext/hello/greet/ada -> 200 hello, ada"), "\(first.stdout)")
            let second = try TestEnvironment.run(app, [plugins, url, "check"], environment: environment)
            #expect(second.status == 0 && second.stdout.contains("hello is enabled\n"), "\(second.stdout)\(second.stderr)")
            #expect(second.stdout.contains("GET /ext/hello/greet/ada -> 200 hello, ada"), "\(second.stdout)")
            // The state is in the database (not in a SQLite file named after the URL), and this host's own files went to
            // KEEL_HOST_DIR.
            let stored = try StateEngine.postgres.open(url).plugins()
            #expect(stored.first { $0.id == "hello" }?.enabled == true, "\(stored)")
            #expect(!FileManager.default.fileExists(atPath: "postgres:"))
        }

        @Test("a postgres:// state that cannot be reached: keel_open fails with one line naming the server")
        func unreachable() throws {
            let app = try EmbeddingCTests.build(TestEnvironment.fixtures + "/embed/embed_postgres.c", "embed_postgres")
            let r = try TestEnvironment.run(app, [try EmbeddingCTests.plugins(), "postgres://keel@127.0.0.1:1/keel", "check"],
                                            environment: ["KEEL_HOST_DIR": TestEnvironment.makeTemporaryDirectory("embed-host")])
            let line = r.stdout.split(separator: "\n").first.map(String.init) ?? ""
            #expect(r.status == 1 && line.hasPrefix("keel_open: ") && line.contains("127.0.0.1:1"), "\(r.stdout)\(r.stderr)")
            #expect(!line.contains("NIO") && !line.contains("PSQLError"), "\(line)")
        }
    }
}
