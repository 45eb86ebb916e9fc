import CKeel
import Testing
@testable import Plugin

@Suite("{{id}}")
struct PluginTests {
    @Test("GET /hello/:name greets by name")
    func greets() {
        #expect(greeting(name: "ada") == "hello, ada, from {{id}}\n")
    }

    @Test("the descriptor names the plugin and leaves the version to plugin.yaml")
    func descriptorNamesThePlugin() {
        let d = keelPluginEntry().assumingMemoryBound(to: keel_plugin.self).pointee
        #expect(string(d.id) == "{{id}}")
        #expect(d.version.len == 0)
        #expect(d.activate != nil)
    }
}
