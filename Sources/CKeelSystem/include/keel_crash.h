/* Keel — a microkernel plugin host. Licensed under Apache-2.0.
 * Crash attribution: which plugin was running when the host died of a fatal signal. Host-only: not part of the
 * plugin ABI.
 *
 * The host marks every call into plugin code with a site (plugin id, generation, what is called) in a thread-local
 * pointer, and registers each plugin library's address range when it is loaded. A handler for SIGSEGV, SIGBUS,
 * SIGILL, SIGFPE and SIGABRT, on an alternate stack of its own per thread that runs plugin code, writes a crash record
 * naming the plugin (from the faulting instruction's address, else from the thread's site) to a file prepared at
 * install time, then lets the process die of the original signal. The handler only makes async-signal-safe calls:
 * no malloc, no locks, no stdio. */
#ifndef KEEL_CRASH_H
#define KEEL_CRASH_H

#include <stddef.h>
#include <stdint.h>

/* One place plugin code is called from, prepared when the call site is set up (a route, a hook, a command), never
 * during a call. Owned by the host object that calls the plugin; it must outlive every call marked with it. */
typedef struct keel_crash_site {
    char plugin[72];   /* plugin id, NUL-terminated (cut to fit) */
    uint64_t generation;
    char what[232];    /* e.g. "handler GET /ext/x/items/:id", NUL-terminated (cut to fit) */
} keel_crash_site;

/* The site of the plugin call running on this thread, or NULL. Read by the signal handler. */
extern __thread const keel_crash_site *keel_crash_current __attribute__((tls_model("initial-exec")));
/* Nonzero once this thread has its alternate signal stack (or needs none). */
extern __thread int keel_crash_thread_ready __attribute__((tls_model("initial-exec")));

/* Gives the calling thread an alternate signal stack (256 KiB plus a guard page, released when the thread ends), so
 * that the handler runs even when plugin code overflowed the thread's stack. Does nothing when the thread has one,
 * or before keel_crash_install (a thread marked ready earlier keeps its own stack for the handler).
 * [any thread; not from a signal handler] */
void keel_crash_prepare_thread(void);

/* Marks the start of a call into plugin code on this thread: returns the outer site, to pass to keel_crash_leave.
 * Two thread-local stores (three on a thread's first call). [any thread] */
static inline const keel_crash_site *keel_crash_enter(const keel_crash_site *site) {
    if (__builtin_expect(!keel_crash_thread_ready, 0)) keel_crash_prepare_thread();
    const keel_crash_site *outer = keel_crash_current;
    keel_crash_current = site;
    return outer;
}

/* Marks the end of the call keel_crash_enter started. [the thread that entered] */
static inline void keel_crash_leave(const keel_crash_site *outer) { keel_crash_current = outer; }

/* Fills `site`, cutting `plugin` and `what` to fit. [any thread] */
void keel_crash_site_init(keel_crash_site *site, const char *plugin, uint64_t generation, const char *what);

/* Installs the handler for SIGSEGV, SIGBUS, SIGILL, SIGFPE and SIGABRT (on the alternate stack), and prepares the
 * calling thread. `record_path` (copied; at most 4095 bytes) is the file the handler writes. A later call changes
 * the path. Returns 0, or -1 when the path is too long or sigaction failed. [any thread; not concurrently] */
int keel_crash_install(const char *record_path);

/* Registers the address range of the loaded library that contains `address_in_library` (any address of its
 * code or data) as plugin `plugin`, generation `generation`. Returns 0, or -1 when no loaded object contains the
 * address or the table (65,536 libraries) is full. [any thread] */
int keel_crash_register_library(const void *address_in_library, const char *plugin, uint64_t generation);

/* Forgets the range registered for the library containing `address_in_library` (before it is unmapped).
 * [any thread] */
void keel_crash_unregister_library(const void *address_in_library);

/* Attributes `address` as the handler would: copies the plugin id of the registered range containing it into `out`
 * (`cap` bytes, NUL-terminated) and returns its generation, or returns -1 when no registered range contains it.
 * For tests and diagnostics. [any thread] */
int64_t keel_crash_owner(const void *address, char *out, size_t cap);

/* The loaded object (dladdr) containing `address`: sets *base to its load base, *name to its file name (owned by
 * the dynamic linker, valid while the object stays loaded) and *code to 1 when the address lies in one of its
 * executable (PF_X) loadable segments, else 0; returns 0, or -1 when no loaded object contains it. [any thread] */
int keel_loaded_object(const void *address, const void **base, const char **name, int *code);

#endif
