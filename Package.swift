// swift-tools-version: 6.1
import PackageDescription

// Data flows one way: file → manifest → loader → registry → kernel → CLI.
// A module imports only modules to its left; only KeelLoader sees the C ABI types.
let package = Package(
    name: "Keel",
    products: [
        .library(name: "Keel", targets: ["Keel"]),
        // The HTTP server for an embedder (README, "Embedding the kernel": `KeelServer`).
        .library(name: "KeelHTTP", targets: ["KeelHTTP"]),
        .library(name: "KeelPluginKit", targets: ["KeelPluginKit"]),
        .executable(name: "keel", targets: ["KeelCLI"]),
        .executable(name: "keel-bench", targets: ["KeelBench"]),
        .executable(name: "keel-icount", targets: ["KeelICount"]),
        // The C embedding API (keel/keel_embed.h). Built as libkeel-embed.so (the executable owns the name "keel");
        // `keel sdk install` installs it as libkeel.so.
        .library(name: "keel-embed", type: .dynamic, targets: ["KeelEmbedding"]),
        // Example plugins, built as real shared objects (lib<name>.so in the build folder).
        .library(name: "hello-c", type: .dynamic, targets: ["HelloC"]),
        .library(name: "greeter-swift", type: .dynamic, targets: ["GreeterSwift"]),
        .library(name: "argo-sync", type: .dynamic, targets: ["ArgoSync"]),
        .library(name: "deployer", type: .dynamic, targets: ["Deployer"]),
        .library(name: "inventory", type: .dynamic, targets: ["Inventory"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        // TLS for a proxied app's `wss://` WebSocket (Keel's own client on NIOWebSocket: `UpstreamWebSocket`).
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        // The WebSocket client the tests talk to proxied WebSockets with.
        .package(url: "https://github.com/hummingbird-project/swift-websocket", from: "1.6.2"),
        // The structured log (`keel serve --log-format json|text`): swift-log, with a handler of Keel's.
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        // Metrics (`GET /metrics`): the swift-metrics API, exported in Prometheus text format.
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        // PostgreSQL as the shared state store (KeelStatePostgres), for hosts that share one state.
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
    ],
    targets: [
        // The C ABI: headers plus a layout check that fails the build if a published struct changes.
        .target(name: "CKeelABI", path: "PluginABI", sources: ["layout_check.c"], publicHeadersPath: "include"),
        .systemLibrary(name: "CSQLite", path: "Sources/CSQLite"),
        // System calls Swift's Glibc module leaves out (memfd_create), and the one small module for the host's
        // system calls: whole writes, in-memory files, inotify, a shared page.
        .target(name: "CKeelSystem", linkerSettings: [.linkedLibrary("z")]),
        .target(name: "KeelSystem", dependencies: ["CKeelSystem"]),

        .target(name: "KeelManifest", dependencies: ["KeelSystem", .product(name: "Yams", package: "Yams")]),
        // libffi (Debian's libffi-dev): commands are called through a call prepared once per generation.
        .target(name: "CKeelFFI", linkerSettings: [.linkedLibrary("ffi")]),
        .target(name: "KeelLoader", dependencies: ["CKeelABI", "CKeelFFI", "CKeelSystem", "KeelManifest", "KeelSystem"]),
        .target(name: "KeelRegistry", dependencies: ["KeelLoader", "KeelManifest"]),
        .target(name: "KeelState", dependencies: ["CSQLite", "KeelSystem"]),
        // The same state store on PostgreSQL, shared by several hosts; only the CLI links it, so embedders of `Keel`
        // who keep SQLite do not.
        .target(name: "KeelStatePostgres", dependencies: [
            "KeelState", "KeelSystem",
            .product(name: "PostgresNIO", package: "postgres-nio"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ]),
        // Extension management: repositories, packages, signatures, trust.
        .target(name: "KeelExtensions", dependencies: [
            "KeelManifest", "KeelLoader", "KeelState", "KeelSystem",
            .product(name: "Crypto", package: "swift-crypto"),
            // Repository downloads: a streamed body with back-pressure, so a limit bounds what the host holds.
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"), .product(name: "NIOSSL", package: "swift-nio-ssl"),
        ]),
        // Plugins in worker processes (`isolation: process`): the host's side and the worker's, and their wire.
        .target(name: "KeelIsolation", dependencies: ["KeelLoader", "KeelManifest", "KeelSystem"]),
        .target(name: "Keel", dependencies: [
            "KeelManifest", "KeelLoader", "KeelRegistry", "KeelState", "KeelExtensions", "KeelSystem", "KeelIsolation",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .target(name: "KeelHTTP", dependencies: [
            "Keel", "KeelSystem",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdCore", package: "hummingbird"),
            .product(name: "HTTPTypes", package: "swift-http-types"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOWebSocket", package: "swift-nio"),
            .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "CoreMetrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "Logging", package: "swift-log"),
        ], resources: [
            // The plugin page bridge: the console's half and the half inside each page's frame (PageBridge.swift).
            .embedInCode("Console/pages.js"), .embedInCode("Console/keel-page.js"),
            // The console's HTML, script and style, embedded in the binary (no resource folder at run time).
            .embedInCode("Console/index.html"), .embedInCode("Console/console.js"), .embedInCode("Console/console.css"),
            .embedInCode("Console/live.js"), .embedInCode("Console/icons.js"), .embedInCode("Console/views.js"),
            .embedInCode("Console/plugin.js"), .embedInCode("Console/config.js"), .embedInCode("Console/sections.js"),
            .embedInCode("Console/directory.js"),
        ]),
        // The plugin SDK (headers, pkg-config template) and the `keel new` templates, embedded in the binary at build
        // time by the EmbedSDK plugin, so an installed `keel` needs no checkout (`keel sdk install`, `keel new`).
        .executableTarget(name: "KeelEmbed", path: "BuildTools/KeelEmbed"),
        .plugin(name: "EmbedSDK", capability: .buildTool(), dependencies: ["KeelEmbed"], path: "BuildTools/EmbedSDK"),
        .executableTarget(name: "KeelCLI", dependencies: [
            "Keel", "KeelHTTP", "KeelSystem", "KeelStatePostgres", "KeelIsolation",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], plugins: ["EmbedSDK"]),

        // The C embedding API: @_cdecl functions over Keel and KeelHTTP (the one other module that sees C types:
        // those of keel_embed.h, through CKeelABI.Embed).
        .target(name: "KeelEmbedding", dependencies: [
            "Keel", "KeelHTTP", "KeelStatePostgres", "KeelSystem", "CKeelABI", .product(name: "NIOCore", package: "swift-nio"),
        ]),

        // The benchmark suite (Scripts/bench.sh), separate from the tests.
        .target(name: "CKeelBenchNative", dependencies: ["CKeelABI"]),
        .executableTarget(name: "KeelBench", dependencies: [
            "Keel", "KeelHTTP", "KeelLoader", "KeelIsolation", "CKeelABI", "CKeelBenchNative", "CKeelFFI",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ]),

        // The instruction-count gate's fixed work (Scripts/icount.sh runs it under callgrind).
        .executableTarget(name: "KeelICount", dependencies: [
            "Keel", "KeelHTTP", "KeelLoader", "CKeelBenchNative", .product(name: "Hummingbird", package: "hummingbird"),
        ]),

        // The Swift side of the plugin ABI for plugin authors: hides pointers, trampolines and lifetimes.
        .target(name: "KeelPluginKit", dependencies: ["CKeelABI"]),

        // Example plugins.
        .target(name: "HelloC", dependencies: ["CKeelABI"], path: "Plugins/hello-c", exclude: ["plugin.yaml", "config.schema.yaml"],
                sources: ["hello.c"], publicHeadersPath: "."),
        .target(name: "GreeterSwift", dependencies: ["KeelPluginKit"], path: "Plugins/greeter-swift",
                exclude: ["plugin.yaml"]),
        // Services between plugins (ABI 1.1): argo-sync provides gitops.sync/1, deployer consumes it; the
        // interface header ships with the consumer. (flux-sync, the Rust provider: Scripts/build-rust-example.sh.)
        .target(name: "ArgoSync", dependencies: ["CKeelABI"], path: "Plugins/argo-sync", exclude: ["plugin.yaml"],
                sources: ["argo_sync.c"], publicHeadersPath: ".", cSettings: [.headerSearchPath("../deployer")]),
        .target(name: "Deployer", dependencies: ["CKeelABI"], path: "Plugins/deployer", exclude: ["plugin.yaml"],
                sources: ["deployer.c"], publicHeadersPath: "."),
        // A console page from a plugin: a JSON route in C, a page as a plain ES module in assets/ (no build step).
        .target(name: "Inventory", dependencies: ["CKeelABI"], path: "Plugins/inventory", exclude: ["plugin.yaml", "assets"],
                sources: ["inventory.c"], publicHeadersPath: "."),

        // Test-only: an ABI struct as a later 1.x host might declare it (grown at its end).
        .target(name: "CKeelABIGrown", dependencies: ["CKeelABI"], path: "Tests/CKeelABIGrown"),
        .testTarget(name: "KeelTests", dependencies: [
            "Keel", "KeelHTTP", "KeelManifest", "KeelLoader", "KeelRegistry", "KeelState", "KeelStatePostgres", "KeelSystem", "CKeelABIGrown",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "WSClient", package: "swift-websocket"),
            .product(name: "HTTPTypes", package: "swift-http-types"),
        ], exclude: ["Fixtures"]),
    ]
)
