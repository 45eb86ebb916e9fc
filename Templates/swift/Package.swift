// swift-tools-version: 6.0
import PackageDescription

// {{id}}: a Keel plugin in Swift, on KeelPluginKit, the SDK's Swift package (`keel sdk install` put it at the path
// below, with the SDK's headers; C targets find them through pkg-config). The product is lib{{ident}}.so.
let package = Package(
    name: "{{ident}}",
    products: [.library(name: "{{ident}}", type: .dynamic, targets: ["Plugin"])],
    dependencies: [.package(path: "{{keel_plugin_kit}}")],
    targets: [
        .target(name: "Plugin", dependencies: [.product(name: "KeelPluginKit", package: "KeelPluginKit")]),
        .testTarget(name: "PluginTests", dependencies: ["Plugin"]),
    ]
)
