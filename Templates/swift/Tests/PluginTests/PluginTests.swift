import KeelPluginKit
import Testing
@testable import Plugin

@Suite("{{id}}")
struct PluginTests {
    @Test("GET /hello/:name greets by name")
    func greets() throws {
        #expect(greeting(name: "ada") == "hello, ada, from {{id}}\n")
        // The handler itself, with a request made here (the host makes the real ones).
        let response = try hello(Request(path: "/ext/{{id}}/hello/ada", routePath: "/hello/ada", parameters: [("name", "ada")]))
        #expect(response.status == 200 && response.body == Array("hello, ada, from {{id}}\n".utf8))
    }

    @Test("the library exports a descriptor, and leaves the id and the version to plugin.yaml")
    func descriptorLeavesIDAndVersionToTheManifest() {
        #expect(keelPluginEntry() != nil)
        #expect(HelloPlugin.id == "" && HelloPlugin.version == "")
    }
}
