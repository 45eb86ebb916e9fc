// swift-tools-version: 6.0
import PackageDescription

// {{id}}: a Keel plugin in Swift over the C ABI. The headers come from the Keel plugin SDK through pkg-config
// (`keel sdk install`); the product is lib{{ident}}.so.
let package = Package(
    name: "{{ident}}",
    products: [.library(name: "{{ident}}", type: .dynamic, targets: ["Plugin"])],
    targets: [
        .systemLibrary(name: "CKeel", path: "Sources/CKeel", pkgConfig: "keel-plugin"),
        .target(name: "Plugin", dependencies: ["CKeel"]),
        .testTarget(name: "PluginTests", dependencies: ["Plugin"]),
    ]
)
