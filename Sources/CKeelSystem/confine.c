/* Keel — a microkernel plugin host. Licensed under Apache-2.0.
 * A worker process's confinement: a seccomp filter that keeps plugin code from signalling, tracing or reading the
 * memory of any process but its own, from changing files' metadata, from Unix sockets on the file system (a datagram
 * socket pair's end included) and, unless
 * the network was granted, from every other socket; and the capabilities it drops (see keel_system.h). */
#define _GNU_SOURCE
#include "keel_system.h"
#include <errno.h>
#include <sched.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/sockios.h>
#include <linux/seccomp.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>

/* System calls newer than some build machines' headers: one number on every architecture. */
#define KEEL_SYS_io_uring_setup 425
#define KEEL_SYS_clone3 435
/* clone's CLONE_NEW* flags: a new mount, cgroup, UTS, IPC, user, pid or network namespace (CLONE_NEWTIME shares
 * clone's exit-signal byte, and is only asked for through clone3 or unshare, both refused). */
#define KEEL_CLONE_NEW_ANY 0x7E020000u
#define KEEL_SYS_fchmodat2 452
#define KEEL_SYS_setxattrat 463
#define KEEL_SYS_removexattrat 466
#define KEEL_SYS_file_setattr 469
/* One filter step: system call `nr` is refused with EPERM (needs `deny` in scope). */
#define DENY(nr) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), BPF_STMT(BPF_RET | BPF_K, deny)

#if defined(__x86_64__)
#define KEEL_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define KEEL_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif

int keel_make_undumpable(void) { return prctl(PR_SET_DUMPABLE, 0, 0, 0, 0); }

int keel_name_process(const char *name) {
    int fd = open("/proc/self/comm", O_WRONLY | O_CLOEXEC), ok = -1;
    if (fd >= 0) {
        size_t length = strlen(name);
        ok = write(fd, name, length > 15 ? 15 : length) >= 0 ? 0 : -1;
        close(fd);
    }
    return prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0) == 0 ? ok : -1;
}

/* Drops every capability: from the bounding set (so that no program it executes gets one back, the worker's own
 * re-execution included) and from the ambient, effective, permitted and inheritable sets. A worker run as root keeps
 * uid 0 but none of root's powers: CAP_SYS_PTRACE would open a non-dumpable host's /proc/<pid>/mem, CAP_SYS_ADMIN
 * and CAP_PERFMON its /proc/<pid>/environ (the admin token) despite Landlock, and the others reboot, load modules,
 * or type into a terminal. Returns 0 when the process holds no capability afterwards (effective, permitted,
 * inheritable): a capset refused (a service manager's system call filter refuses it as privileged) is a failure only
 * when there was something to drop. */
static int drop_capabilities(void) {
    for (int cap = 0; prctl(PR_CAPBSET_READ, cap, 0, 0, 0) >= 0; cap++) prctl(PR_CAPBSET_DROP, cap, 0, 0, 0);
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    struct __user_cap_header_struct header = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
    struct __user_cap_data_struct none[2] = { { 0, 0, 0 }, { 0, 0, 0 } };
    if (syscall(SYS_capset, &header, none) == 0) return 0;
    int saved = errno;
    struct __user_cap_data_struct held[2] = { { 0, 0, 0 }, { 0, 0, 0 } };
    header.version = _LINUX_CAPABILITY_VERSION_3;
    if (syscall(SYS_capget, &header, held) != 0) { errno = saved; return -1; }
    for (int i = 0; i < 2; i++) {
        if (held[i].effective | held[i].permitted | held[i].inheritable) { errno = saved; return -1; }
    }
    return 0;
}

int keel_confine_worker(int network, int processes) {
    if (drop_capabilities() != 0) return -1;
#ifdef KEEL_AUDIT_ARCH
    uint32_t self = (uint32_t)getpid();
    uint32_t group = (uint32_t)(-(int32_t)self);
    enum { NR = offsetof(struct seccomp_data, nr), ARCH = offsetof(struct seccomp_data, arch),
           ARG0 = offsetof(struct seccomp_data, args[0]), ARG1 = offsetof(struct seccomp_data, args[1]),
           ARG2 = offsetof(struct seccomp_data, args[2]) };
    const uint32_t deny = SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA);
    /* A new process, unless granted: "try again" (EAGAIN), as a process limit answers. */
    const uint32_t spawn = processes ? SECCOMP_RET_ALLOW : SECCOMP_RET_ERRNO | (EAGAIN & SECCOMP_RET_DATA);
    struct sock_filter filter[] = {
        /* Another architecture's calling convention (x32, i386 on x86_64): refused whole. */
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARCH),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, KEEL_AUDIT_ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, NR),
#if defined(__x86_64__)
        BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000, 0, 1), /* __X32_SYSCALL_BIT */
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
#endif
        /* Threads only, unless the processes capability was granted (a fork bomb would exhaust the host's user's
         * processes; RLIMIT_NPROC does not bind root). A clone with CLONE_THREAD is a thread; any other (fork, vfork,
         * posix_spawn, system) is refused. Granted or not, never a new namespace (CLONE_NEW*), nor CLONE_PARENT: its
         * child would be the host's, outside
         * the worker's process group and cgroup accounting's reach once the worker dies, a zombie of the host's that
         * nothing reaps. clone3 passes its flags through memory the filter cannot read: always "not implemented",
         * so that glibc falls back to clone, checked here, for its threads and processes alike. The flags are the
         * first argument on x86_64 and aarch64 alike; CLONE_THREAD and CLONE_PARENT lie in their low 32 bits. */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone, 0, 8),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG0),
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, CLONE_THREAD, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, CLONE_PARENT, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, deny),
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, KEEL_CLONE_NEW_ANY, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, deny),
        BPF_STMT(BPF_RET | BPF_K, spawn),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, KEEL_SYS_clone3, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA)),
#ifdef SYS_fork
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_fork, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, spawn),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_vfork, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, spawn),
#endif
        /* Never: tracing, another process's memory, a signal by thread id alone. */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_ptrace, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, deny),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_process_vm_readv, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, deny),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_process_vm_writev, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, deny),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_tkill, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, deny),
        /* Never: a file's mode, owner, times or extended attributes, which Landlock does not guard (the state file's
         * mode, the user's files). */
#ifdef SYS_chmod
        DENY(SYS_chmod), DENY(SYS_chown), DENY(SYS_lchown), DENY(SYS_utime), DENY(SYS_utimes), DENY(SYS_futimesat),
#endif
        DENY(SYS_fchmod), DENY(SYS_fchmodat), DENY(KEEL_SYS_fchmodat2), DENY(SYS_fchown), DENY(SYS_fchownat),
        DENY(SYS_utimensat), DENY(SYS_setxattr), DENY(SYS_lsetxattr), DENY(SYS_fsetxattr), DENY(SYS_removexattr),
        DENY(SYS_lremovexattr), DENY(SYS_fremovexattr), DENY(KEEL_SYS_setxattrat), DENY(KEEL_SYS_removexattrat),
        DENY(KEEL_SYS_file_setattr),
        /* Never: leaving the worker's process group (a new session or group), which the host kills with the worker:
         * a process that left it outlived the worker and held its output pipe, and a thread of the host, open.
         * setsid fails; setpgid "succeeds" without effect, since posix_spawn with POSIX_SPAWN_SETPGROUP (what
         * Foundation's Process always asks for) fails whole when it fails, and the child stays in the group. */
        DENY(SYS_setsid),
        /* Never: a namespace of its own (unshare, setns; clone's CLONE_NEW* above). None lets a worker out today,
         * but without Landlock a new user namespace's root could write its cgroup's files. */
        DENY(SYS_unshare), DENY(SYS_setns),
        /* Never: the kernel's key rings, which hold the user's keys (a session's, a login's) for any of its processes. */
        DENY(SYS_keyctl), DENY(SYS_add_key), DENY(SYS_request_key),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_setpgid, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 0),
        /* Never: a Unix socket of its own, which could connect to any socket on the file system (Landlock does not
         * guard connect: a database with peer authentication, the user's session bus or ssh-agent, docker.sock). A
         * stream socket pair has no address, and gets none (below). */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_socket, 0, 4),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AF_UNIX, 1, 0),
        /* Any other family only with the network granted: without it no socket at all (no TCP or UDP out, IPv4 or
         * IPv6, no netlink, no raw or packet socket). */
        BPF_STMT(BPF_RET | BPF_K, network ? SECCOMP_RET_ALLOW : deny),
        BPF_STMT(BPF_RET | BPF_K, deny),
        /* A socket pair: Unix, and a stream or sequenced one only, which stays connected to its other end. A datagram
         * pair's end (SOCK_RAW makes one too) sends to any Unix socket on the file system (sendto with an address,
         * or connect): the system log, the journal, whatever datagram service listens there. */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_socketpair, 0, 8),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AF_UNIX, 0, 4),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG1),
        BPF_STMT(BPF_ALU | BPF_AND | BPF_K, 0xf), /* SOCK_TYPE_MASK: the flags (SOCK_CLOEXEC...) aside */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SOCK_STREAM, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SOCK_SEQPACKET, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, deny),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        /* Another process's resource limits or scheduling, which the kernel lets any process of the same user set:
         * only this process's own (pid 0, or its own pid). prlimit64 of the host's CPU time to one second had the
         * kernel kill it; of its open files to 3, it served nothing. The filter knows the worker's pid, not its
         * threads' ids: a call naming one of its own other threads (pthread_setaffinity_np, pthread_setschedparam,
         * a pthread_create with explicit scheduling) is refused too (EPERM); one about the calling thread (0) works. */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_prlimit64, 5, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_sched_setaffinity, 4, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_sched_setparam, 3, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_sched_setscheduler, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_sched_setattr, 1, 0),
        BPF_STMT(BPF_JMP | BPF_JA | BPF_K, 5),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, self, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, deny),
        /* The same for a priority: setpriority only of a process (PRIO_PROCESS, not a group or every process of the
         * user), ioprio_set likewise (IOPRIO_WHO_PROCESS), and only this one. */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_setpriority, 0, 2),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, PRIO_PROCESS, 3, 8),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_ioprio_set, 0, 8),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 1 /* IOPRIO_WHO_PROCESS */, 0, 5),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG1),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, self, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, deny),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, deny),
        /* io_uring runs its operations (socket, connect, setxattr...) where this filter does not see them: "not
         * implemented", so that callers fall back to the system calls. */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, KEEL_SYS_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA)),
        /* A pidfd may be an open /proc/<pid> of any process, which the filter cannot see: "not implemented", so that
         * callers fall back to kill, which it checks. */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_pidfd_send_signal, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA)),
        /* The owner of a descriptor's SIGIO (any signal with F_SETSIG), set through a pointer: refused. So is typing
         * into a terminal (TIOCSTI, TIOCLINUX) or taking its foreground (TIOCSPGRP): the host's standard error,
         * inherited, may be the user's terminal, whose shell would run the line once the host ends. The command is an int: its low 32 bits are all the kernel reads. */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_ioctl, 0, 8),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG1),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, FIOSETOWN, 5, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SIOCSPGRP, 4, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, TIOCSTI, 3, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, TIOCSPGRP, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, TIOCLINUX, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, deny),
        /* fcntl: F_SETOWN_EX refused (a pointer); F_SETOWN checked as kill is. */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_fcntl, 0, 7),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG1),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, F_SETOWN_EX, 4, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, F_SETOWN, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG2),
        BPF_STMT(BPF_JMP | BPF_JA | BPF_K, 8), /* to the check of the target below */
        BPF_STMT(BPF_RET | BPF_K, deny),
        /* Signals and pidfds: only for this process, its own group, or 0 (its group). */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_kill, 5, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_tgkill, 4, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_pidfd_open, 3, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_rt_sigqueueinfo, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_rt_tgsigqueueinfo, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, self, 3, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, group, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, deny),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog program = { .len = (unsigned short)(sizeof filter / sizeof filter[0]), .filter = filter };
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -1;
    /* Every thread: the run-time started some (Dispatch's pools) before this, and plugin code may run on them. */
    long r = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &program);
    if (r > 0) { errno = EAGAIN; return -1; } /* a thread (its id) could not be synchronised */
    return (int)r;
#else
    errno = ENOSYS;
    return -1;
#endif
}
