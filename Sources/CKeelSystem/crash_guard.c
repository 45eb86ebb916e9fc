/* Keel — a microkernel plugin host. Licensed under Apache-2.0.
 * Crash attribution (keel_crash.h): the per-thread call sites, the table of plugin library ranges, and the fatal
 * signal handler that writes the crash record. Everything the handler touches is prepared beforehand: the record's
 * path, the range table (fixed size, published slot by slot with release stores), the sites (owned by the host). */
#define _GNU_SOURCE
#include "keel_crash.h"
#include <dlfcn.h>
#include <execinfo.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

__thread const keel_crash_site *keel_crash_current __attribute__((tls_model("initial-exec")));
__thread int keel_crash_thread_ready __attribute__((tls_model("initial-exec")));

/* MARK: alternate stacks */

/* Pages are only touched when a handler runs on them: the Swift runtime's backtracer, handed a crash of the host's
 * own, runs here too. */
enum { ALT_STACK = 256 * 1024 };

static pthread_key_t alt_key;
/* Set once the handler is installed: before that (a process that never installs it) threads get no stack. */
static int installed;
static pthread_once_t alt_once = PTHREAD_ONCE_INIT;
static long page_size;

/* A thread that ends gives its alternate stack back (disabled first: the kernel must never deliver onto it again). */
static void release_alt_stack(void *memory) {
    stack_t off = { .ss_flags = SS_DISABLE };
    sigaltstack(&off, NULL);
    munmap(memory, (size_t)page_size + ALT_STACK);
}

static void make_alt_key(void) {
    page_size = sysconf(_SC_PAGESIZE);
    if (page_size <= 0) page_size = 4096;
    pthread_key_create(&alt_key, release_alt_stack);
}

void keel_crash_prepare_thread(void) {
    keel_crash_thread_ready = 1;
    if (!__atomic_load_n(&installed, __ATOMIC_ACQUIRE)) return;
    pthread_once(&alt_once, make_alt_key);
    stack_t current;
    if (sigaltstack(NULL, &current) == 0 && !(current.ss_flags & SS_DISABLE)) return;
    void *memory = mmap(NULL, (size_t)page_size + ALT_STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (memory == MAP_FAILED) return;
    /* A guard page below: a handler that overflowed its stack faults instead of writing over other memory. */
    mprotect(memory, (size_t)page_size, PROT_NONE);
    stack_t stack = { .ss_sp = (char *)memory + page_size, .ss_size = ALT_STACK, .ss_flags = 0 };
    if (sigaltstack(&stack, NULL) != 0) { munmap(memory, (size_t)page_size + ALT_STACK); return; }
    pthread_setspecific(alt_key, memory);
}

/* MARK: sites */

static void copy_cut(char *to, size_t cap, const char *from) {
    size_t n = from ? strlen(from) : 0;
    if (n >= cap) n = cap - 1;
    if (n) memcpy(to, from, n);
    to[n] = 0;
    /* One line per field in the record: a control character in a name cannot start another. */
    for (size_t i = 0; i < n; i++) if ((unsigned char)to[i] < 0x20 || to[i] == 0x7f) to[i] = '?';
}

void keel_crash_site_init(keel_crash_site *site, const char *plugin, uint64_t generation, const char *what) {
    memset(site, 0, sizeof *site);
    copy_cut(site->plugin, sizeof site->plugin, plugin);
    site->generation = generation;
    copy_cut(site->what, sizeof site->what, what);
}

/* MARK: library ranges */

/* The table grows by chunks of CHUNK ranges, each allocated (under the lock, never in the handler) when the ones before
 * are full and published with a release store, up to CHUNKS of them: 65,536 libraries, where a fixed table of 1,024
 * left every later library (each enable or reload of a plugin that is not unload-safe maps a new copy) unknown to
 * attribution by address. A chunk is never freed; the handler walks the published chunks lock-free. */
enum { CHUNK = 1024, CHUNKS = 64 };

struct range {
    int used;              /* published with a release store after the rest is written; read with acquire */
    uintptr_t start, end;  /* [start, end): the library's loaded segments */
    uint64_t generation;
    char plugin[72];
};

static struct range first_chunk[CHUNK];
static struct range *chunks[CHUNKS] = { first_chunk };
static pthread_mutex_t ranges_lock = PTHREAD_MUTEX_INITIALIZER;

/* Range `i` of the table, or NULL past the chunks published so far. Lock-free. */
static struct range *range_at(int i) {
    struct range *chunk = __atomic_load_n(&chunks[i / CHUNK], __ATOMIC_ACQUIRE);
    return chunk ? &chunk[i % CHUNK] : NULL;
}

struct finding { uintptr_t address, start, end; };

/* dl_iterate_phdr callback: the object whose loaded segments contain the address, and their bounds. */
static int find_object(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    struct finding *f = data;
    uintptr_t low = UINTPTR_MAX, high = 0;
    int contains = 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD) continue;
        uintptr_t s = info->dlpi_addr + ph->p_vaddr, e = s + ph->p_memsz;
        if (s < low) low = s;
        if (e > high) high = e;
        if (f->address >= s && f->address < e) contains = 1;
    }
    if (!contains) return 0;
    f->start = low;
    f->end = high;
    return 1;
}

/* The bounds of the loaded object containing f->address: glibc's _dl_find_object where there is one (a lookup in a
 * sorted table, where dl_iterate_phdr walks every loaded object: registering each of n plugins was O(n)), else a walk.
 * Both give the mapping from its lowest to its highest loaded segment (_dl_find_object rounded to pages). */
static int find_range(struct finding *f) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 35))
    struct dl_find_object found;
    if (_dl_find_object((void *)f->address, &found) == 0) {
        f->start = (uintptr_t)found.dlfo_map_start;
        f->end = (uintptr_t)found.dlfo_map_end;
        return 1;
    }
#endif
    return dl_iterate_phdr(find_object, f);
}

int keel_crash_register_library(const void *address_in_library, const char *plugin, uint64_t generation) {
    struct finding f = { (uintptr_t)address_in_library, 0, 0 };
    if (!find_range(&f)) return -1;
    int result = -1;
    pthread_mutex_lock(&ranges_lock);
    for (int i = 0; i < CHUNK * CHUNKS; i++) {
        struct range *r = range_at(i);
        if (!r) {
            /* Every published range is in use: the next chunk (zeroed: unused), published once allocated. */
            struct range *chunk = calloc(CHUNK, sizeof *chunk);
            if (!chunk) break;
            __atomic_store_n(&chunks[i / CHUNK], chunk, __ATOMIC_RELEASE);
            r = &chunk[0];
        }
        int used = __atomic_load_n(&r->used, __ATOMIC_ACQUIRE);
        if (used && r->start == f.start) __atomic_store_n(&r->used, 0, __ATOMIC_RELEASE);  /* registered again */
        else if (used) continue;
        r->start = f.start;
        r->end = f.end;
        r->generation = generation;
        copy_cut(r->plugin, sizeof r->plugin, plugin);
        __atomic_store_n(&r->used, 1, __ATOMIC_RELEASE);
        result = 0;
        break;
    }
    pthread_mutex_unlock(&ranges_lock);
    return result;
}

void keel_crash_unregister_library(const void *address_in_library) {
    uintptr_t a = (uintptr_t)address_in_library;
    pthread_mutex_lock(&ranges_lock);
    struct range *r;
    for (int i = 0; i < CHUNK * CHUNKS && (r = range_at(i)); i++) {
        if (__atomic_load_n(&r->used, __ATOMIC_ACQUIRE) && a >= r->start && a < r->end)
            __atomic_store_n(&r->used, 0, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&ranges_lock);
}

/* The registered range containing `a`, or NULL. Lock-free: safe in the signal handler. */
static const struct range *owner_of(uintptr_t a) {
    const struct range *r;
    for (int i = 0; i < CHUNK * CHUNKS && (r = range_at(i)); i++) {
        if (__atomic_load_n(&r->used, __ATOMIC_ACQUIRE) && a >= r->start && a < r->end) return r;
    }
    return NULL;
}

int64_t keel_crash_owner(const void *address, char *out, size_t cap) {
    const struct range *r = owner_of((uintptr_t)address);
    if (!r) return -1;
    if (out && cap) copy_cut(out, cap, r->plugin);
    return (int64_t)r->generation;
}

/* MARK: the handler */

static char record_path[4096];
static int fatal_signals[] = { SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT };
enum { FATAL_COUNT = sizeof fatal_signals / sizeof fatal_signals[0] };
/* What was installed before (the Swift runtime's backtracer, say): still called for a crash of the host's own. */
static struct sigaction previous[FATAL_COUNT];
static int claimed;

/* A small buffer of text built without libc formatting (snprintf is not async-signal-safe). */
struct text { char bytes[1024]; size_t len; };

static void put(struct text *t, const char *s) {
    while (*s && t->len < sizeof t->bytes) t->bytes[t->len++] = *s++;
}

static void put_unsigned(struct text *t, uint64_t v, unsigned base) {
    char digits[24];
    int n = 0;
    do { digits[n++] = "0123456789abcdef"[v % base]; v /= base; } while (v && n < 24);
    if (base == 16) put(t, "0x");
    while (n > 0 && t->len < sizeof t->bytes) t->bytes[t->len++] = digits[--n];
}

static const char *signal_name(int signal) {
    switch (signal) {
    case SIGSEGV: return "SIGSEGV";
    case SIGBUS: return "SIGBUS";
    case SIGILL: return "SIGILL";
    case SIGFPE: return "SIGFPE";
    case SIGABRT: return "SIGABRT";
    default: return "a fatal signal";
    }
}

static void put_line(struct text *t, const char *key, const char *value) {
    put(t, key); put(t, " "); put(t, value); put(t, "\n");
}

static uintptr_t instruction_address(const void *context) {
    const ucontext_t *uc = context;
    if (!uc) return 0;
#if defined(__x86_64__)
    return (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
#elif defined(__aarch64__)
    return (uintptr_t)uc->uc_mcontext.pc;
#else
    return 0;
#endif
}

/* The plugin library whose code the innermost plugin frame of this thread returns to, found by unwinding the stack
 * from the handler (glibc's backtrace: the libraries' unwind tables, through the signal frame into the faulting
 * code), so that only frames that are live count, never a stale word left on the stack by an earlier call. For a
 * fault outside every plugin library (in libc, or the host's code) on a plugin's behalf, that plugin is the caller.
 * NULL when none. backtrace is warmed at install (its first call loads libgcc_s, which allocates); after that it
 * reads memory only. A stack too damaged to unwind may fault here: the process then dies of the signal without a
 * record, which the next start reads as a crash outside any plugin, as before this walk existed. */
static const struct range *innermost_plugin_frame(void) {
    void *frames[64];
    int n = backtrace(frames, 64);
    for (int i = 0; i < n; i++) {
        const struct range *r = owner_of((uintptr_t)frames[i]);
        if (r) return r;
    }
    return NULL;
}

static void die(int signal) {
    struct sigaction fallback;
    memset(&fallback, 0, sizeof fallback);
    fallback.sa_handler = SIG_DFL;
    sigemptyset(&fallback.sa_mask);
    sigaction(signal, &fallback, NULL);
    raise(signal);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, signal);
    sigprocmask(SIG_UNBLOCK, &mask, NULL);
    /* Still here (the signal is ignored by a tracer, say): returning re-runs a faulting instruction, which now kills. */
}

static void on_fatal(int signal, siginfo_t *info, void *context) {
    int saved = errno;
    if (__atomic_exchange_n(&claimed, 1, __ATOMIC_ACQ_REL)) {
        /* Another thread is writing the record and will end the process; give it time, then die anyway. */
        struct timespec pause = { 0, 10 * 1000 * 1000 };
        for (int i = 0; i < 500; i++) nanosleep(&pause, NULL);
        die(signal);
        return;
    }
    uintptr_t pc = instruction_address(context);
    const keel_crash_site *site = keel_crash_current;
    const struct range *code = pc ? owner_of(pc) : NULL;
    /* A fault outside every plugin library raised on this thread (a fault, an abort; or a tgkill from within the
     * process, which can be told from an abort by nothing: the thread it lands on was running what its stack says;
     * not a signal from another process, which may land on any thread) is the innermost live plugin frame's on its
     * stack: a provider's function that aborts inside libc while a consumer's handler called it, a plugin's own
     * thread faulting in memcpy. Until 2026-12-08 the first was blamed on the consumer's handler (the thread's site)
     * and the second on no plugin at all. */
    int own = info && (info->si_code > 0 || (info->si_code == SI_TKILL && info->si_pid == getpid()));
    const struct range *frame = !code && own ? innermost_plugin_frame() : NULL;
    /* The faulting instruction's library names the plugin (a provider's service called by another plugin's
     * handler, a plugin's own thread); else the innermost plugin frame's; else the thread's site does. */
    const struct range *found = code ? code : frame;
    const char *plugin = found ? found->plugin : site ? site->plugin : "";
    uint64_t generation = found ? found->generation : site ? site->generation : 0;
    int same = found && site && strcmp(found->plugin, site->plugin) == 0;
    struct timespec now = { 0, 0 };
    clock_gettime(CLOCK_REALTIME, &now);

    struct text t = { .len = 0 };
    put(&t, "keel-crash 1\n");
    put_line(&t, "plugin", plugin);
    put(&t, "generation "); put_unsigned(&t, generation, 10); put(&t, "\n");
    put(&t, "signal "); put_unsigned(&t, (uint64_t)signal, 10); put(&t, "\n");
    /* A signal the kernel raised for a fault has a positive si_code and a faulting address; one sent by kill,
     * raise or abort has neither. */
    int si_code = info ? info->si_code : 0;
    put(&t, "code "); if (si_code < 0) put(&t, "-"); put_unsigned(&t, (uint64_t)(si_code < 0 ? -(int64_t)si_code : si_code), 10); put(&t, "\n");
    if (si_code > 0) { put(&t, "address "); put_unsigned(&t, (uint64_t)(uintptr_t)info->si_addr, 16); put(&t, "\n"); }
    put(&t, "pc "); put_unsigned(&t, pc, 16); put(&t, "\n");
    if (code) { put(&t, "offset "); put_unsigned(&t, pc - code->start, 16); put(&t, "\n"); }
    const char *by = code ? (site && same ? "address+call" : "address")
                   : frame ? (site && same ? "stack+call" : "stack") : site ? "call" : "none";
    put_line(&t, "by", by);
    put(&t, "site ");
    if (site && (!found || same)) put(&t, site->what);
    else if (found && site) { put(&t, "a call from plugin "); put(&t, site->plugin); put(&t, " ("); put(&t, site->what); put(&t, ")"); }
    else if (found) put(&t, "a thread of its own");
    put(&t, "\n");
    put(&t, "time "); put_unsigned(&t, (uint64_t)now.tv_sec, 10); put(&t, "\n");
    put(&t, "end\n");
    int recorded = 0;
    if (record_path[0]) {
        /* A new file, never one found at the path: a symbolic or hard link planted there would have the handler write
         * over another file. Whatever is there goes first (unlink is async-signal-safe). */
        unlink(record_path);
        int fd = open(record_path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd >= 0) {
            recorded = 1;
            size_t done = 0;
            while (done < t.len) {
                ssize_t n = write(fd, t.bytes + done, t.len - done);
                if (n < 0 && errno == EINTR) continue;
                if (n <= 0) break;
                done += (size_t)n;
            }
            fsync(fd);
            close(fd);
        }
    }
    if (plugin[0]) {
        /* One line for whoever watches the host's output: the process is about to die of the signal, and the reason
         * would otherwise show only at the next start. */
        struct text e = { .len = 0 };
        put(&e, "keel: plugin \""); put(&e, plugin); put(&e, "\" (generation "); put_unsigned(&e, generation, 10);
        put(&e, ") crashed the host with "); put(&e, signal_name(signal));
        put(&e, recorded ? "; the next start quarantines it (crash record: " : "");
        if (recorded) { put(&e, record_path); put(&e, ")"); }
        put(&e, "\n");
        size_t done = 0;
        while (done < e.len) {
            ssize_t n = write(2, e.bytes + done, e.len - done);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            done += (size_t)n;
        }
    }
    if (!found && !site && (si_code > 0 || (signal == SIGABRT && si_code == SI_TKILL))) {
        /* The host's own crash: handed back to whoever handled it before (the Swift runtime's backtracer), as if
         * this handler were not there: a fault re-runs its instruction on return, and abort() raises again after a
         * handler returned. (A fatal signal sent from outside goes on to die: a handler that returns would leave
         * the process running.) */
        for (int i = 0; i < FATAL_COUNT; i++) {
            struct sigaction *p = &previous[i];
            if (fatal_signals[i] != signal || p->sa_handler == SIG_DFL || p->sa_handler == SIG_IGN) continue;
            sigaction(signal, p, NULL);
            if (si_code <= 0) raise(signal);  /* abort(): delivered to that handler once this one returns */
            errno = saved;
            return;
        }
    }
    die(signal);
    errno = saved;
}

int keel_crash_install(const char *path) {
    size_t n = strlen(path);
    if (n >= sizeof record_path) return -1;
    /* Terminated first: a crash during the copy finds no path rather than half of one. */
    record_path[0] = 0;
    memcpy(record_path + 1, path + 1, n > 0 ? n - 1 : 0);
    record_path[n] = 0;
    if (n > 0) __atomic_store_n(&record_path[0], path[0], __ATOMIC_RELEASE);
    if (__atomic_load_n(&installed, __ATOMIC_ACQUIRE)) return 0;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_fatal;
    action.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&action.sa_mask);
    for (int i = 0; i < FATAL_COUNT; i++) sigaddset(&action.sa_mask, fatal_signals[i]);
    for (int i = 0; i < FATAL_COUNT; i++) {
        if (sigaction(fatal_signals[i], &action, &previous[i]) != 0) return -1;
    }
    /* backtrace's first call loads libgcc_s's unwinder (dlopen, malloc): made here, never first in the handler. */
    void *warm[2];
    (void)backtrace(warm, 2);
    __atomic_store_n(&installed, 1, __ATOMIC_RELEASE);
    keel_crash_prepare_thread();
    return 0;
}

/* dl_iterate_phdr callback: whether f->address lies in an executable loadable segment of an object (start = 1). */
static int find_code(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    struct finding *f = data;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X)) continue;
        uintptr_t s = info->dlpi_addr + ph->p_vaddr, e = s + ph->p_memsz;
        if (f->address >= s && f->address < e) { f->start = 1; return 1; }
    }
    return 0;
}

int keel_loaded_object(const void *address, const void **base, const char **name, int *code) {
    Dl_info info;
    if (!address || !dladdr(address, &info)) return -1;
    *base = info.dli_fbase;
    *name = info.dli_fname ? info.dli_fname : "?";
    struct finding f = { (uintptr_t)address, 0, 0 };
    dl_iterate_phdr(find_code, &f);
    *code = f.start == 1;
    return 0;
}
