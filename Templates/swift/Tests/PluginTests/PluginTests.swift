import CKeel
import Testing
@testable import Plugin

@Suite("{{id}}")
struct PluginTests {
    @Test("GET /hello/:name greets by name")
    func greets() {
        #expect(greeting(name: "ada") == "hello, ada, from {{id}}\n")
    }

    @Test("the descriptor leaves the id and the version to plugin.yaml")
    func descriptorLeavesIDAndVersionToTheManifest() {
        let d = keelPluginEntry().assumingMemoryBound(to: keel_plugin.self).pointee
        #expect(d.id.len == 0)
        #expect(d.version.len == 0)
        #expect(d.activate != nil)
    }
}
