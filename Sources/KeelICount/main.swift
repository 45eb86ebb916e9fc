// Keel — a microkernel plugin host. Licensed under Apache-2.0.
//
// keel-icount WORK PLUGIN ROUTES N [AUTHZ...]: the instruction-count gate's fixed work (InstructionCounts.swift), run
// by Scripts/icount.sh under callgrind. The main thread waits on a semaphore rather than in an async main: an async
// main parks it in libdispatch's sigsuspend, whose read-only signal mask valgrind 3.19 cannot handle.

import Dispatch
import Foundation

let arguments = Array(CommandLine.arguments.dropFirst())
guard arguments.count >= 4, let n = Int(arguments[3]), n > 0 else {
    FileHandle.standardError.write(Data("usage: keel-icount WORK PLUGIN ROUTES N [AUTHZ...]\n".utf8))
    exit(64)
}
let done = DispatchSemaphore(value: 0)
Task.detached {
    do {
        try await runInstructionCounts(n: n, httpN: max(1, n / 10), work: arguments[0], plugin: arguments[1], authz: Array(arguments.dropFirst(4)),
                                       routes: arguments[2])
    } catch {
        FileHandle.standardError.write(Data("keel-icount: \(error)\n".utf8))
        exit(1)
    }
    done.signal()
}
done.wait()
