// Keel — a microkernel plugin host. Licensed under Apache-2.0.

@testable import Keel
@testable import KeelLoader
import KeelRegistry
import Testing

@Suite("activation contexts")
struct ActivationContextTests {
    @Test("a closed context frees its configuration and hands out an empty one (a kept library keeps every context it had)")
    func configurationFreedAtClose() {
        let environment = KernelEnvironment(registry: PluginRegistry(), log: KernelConfiguration.silentLog)
        let context = ActivationContext(pluginID: "cfg", grants: [], config: #"{"a":1}"#, environment: environment)
        #expect(context.configText.len == 7)
        #expect(context.configText.ptr != nil)
        // Closed without its deactivate having run (calls were still running): the plugin may still hold it.
        context.close()
        #expect(context.configText.len == 7)
        context.close(freeingConfig: true)
        #expect(context.configText.len == 0)
        #expect(context.configText.ptr == nil)
    }
}
