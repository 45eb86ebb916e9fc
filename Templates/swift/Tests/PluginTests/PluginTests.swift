import KeelPluginKit
import Testing
@testable import Plugin

@Suite("{{id}}")
struct PluginTests {
    @Test("GET /hello/:name greets by name")
    func greets() {
        #expect(greeting(name: "ada") == "hello, ada, from {{id}}\n")
    }

    @Test("the library exports a descriptor, and leaves the id and the version to plugin.yaml")
    func descriptorLeavesIDAndVersionToTheManifest() {
        #expect(keelPluginEntry() != nil)
        #expect(HelloPlugin.id == "" && HelloPlugin.version == "")
    }
}
