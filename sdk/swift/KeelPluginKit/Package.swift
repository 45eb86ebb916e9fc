// swift-tools-version: 6.0
import PackageDescription

// KeelPluginKit: Keel plugins in Swift without pointers, over Keel's C ABI. `keel sdk install` puts this package
// in PREFIX/share/keel/swift/KeelPluginKit, and `keel new ID --lang swift` projects name it as a path dependency.
// The headers come from the same SDK: CKeelABI's module map names PREFIX/include/keel/keel.h (so a C target of a
// plugin's package that includes it shares the module's declarations), and pkg-config (`keel-plugin`) gives C
// targets the include folder, so set PKG_CONFIG_PATH as `keel sdk install` says when PREFIX is not on its path.
let package = Package(
    name: "KeelPluginKit",
    products: [.library(name: "KeelPluginKit", targets: ["KeelPluginKit"])],
    targets: [
        .systemLibrary(name: "CKeelABI", path: "Sources/CKeelABI", pkgConfig: "keel-plugin"),
        .target(name: "KeelPluginKit", dependencies: ["CKeelABI"]),
    ]
)
