// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
@testable import Keel
@testable import KeelLoader
import KeelRegistry
import Testing

@Suite("activation contexts", .scheduled)
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

    @Test("set_error is kept for the call running on its thread, not for a thread of the plugin's own (held for good before)")
    func errorsOnlyForCalls() async {
        let environment = KernelEnvironment(registry: PluginRegistry(), log: KernelConfiguration.silentLog)
        let context = ActivationContext(pluginID: "errs", grants: [], config: "{}", environment: environment)
        defer { context.close(freeingConfig: true) }
        // The plugin's own threads: nobody reads what they set.
        for _ in 0..<8 {
            await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                Thread { context.setError("from a thread of the plugin's own"); done.resume() }.start()
            }
        }
        #expect(context.errorsHeld.load(ordering: .relaxed) == 0)
        // A call on this thread: its message is its reason, read once.
        let outer = ActivationContext.beginCall(context)
        context.setError("the call's reason")
        #expect(context.errorsHeld.load(ordering: .relaxed) == 1)
        #expect(context.takeError() == "the call's reason")
        #expect(context.takeError() == "")
        ActivationContext.endCall(outer)
        #expect(context.errorsHeld.load(ordering: .relaxed) == 0)
    }
}
