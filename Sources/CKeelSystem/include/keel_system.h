/* Keel — a microkernel plugin host. Licensed under Apache-2.0.
 * System calls the Swift Glibc module does not export. Host-only: not part of the plugin ABI. */
#ifndef KEEL_SYSTEM_H
#define KEEL_SYSTEM_H

/* Creates an anonymous in-memory file (memfd_create(2), close-on-exec). Returns the descriptor, or -1 with errno. */
int keel_memfd_create(const char *name);

/* A pipe whose two ends are close-on-exec from the start (pipe2 O_CLOEXEC): no child started meanwhile by another
 * thread inherits it. Returns 0, or -1 with errno. */
int keel_pipe_cloexec(int fds[2]);

/* Opens `relative` read-only below the folder `root` without following any symbolic link on the way (openat2(2) with
 * RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV; links above `root` are followed).
 * Returns the descriptor (close-on-exec), or -1 with errno (ENOSYS before Linux 5.6, ELOOP for a link, EXDEV for a
 * path that leaves `root` or crosses a mount). */
int keel_open_beneath(const char *root, const char *relative);

#include <spawn.h>
/* Adds to `actions` the closing of every descriptor from `from` up in the child (glibc's
 * posix_spawn_file_actions_addclosefrom_np, which Swift's Glibc module does not show). Returns its status. */
int keel_spawn_closefrom(posix_spawn_file_actions_t *actions, int from);

#include <stddef.h>
#include <stdint.h>

/* Compresses `len` bytes at `in` as gzip (zlib, best compression) into `out` (`cap` bytes). Returns the compressed
 * length, or 0 when it does not fit or zlib fails. */
size_t keel_gzip(const uint8_t *in, size_t len, uint8_t *out, size_t cap);

/* Confines the calling process (a `keel worker`, before it loads plugin code) with a seccomp filter: it may signal
 * (kill, tgkill, rt_sigqueueinfo, rt_tgsigqueueinfo, pidfd_open, fcntl F_SETOWN) only itself, its own process group
 * or group 0; ptrace, process_vm_readv/writev, tkill, F_SETOWN_EX and the FIOSETOWN/SIOCSPGRP ioctls are refused with
 * EPERM, pidfd_send_signal with ENOSYS (its pidfd may be an open /proc/<pid>); so are (EPERM) changes of a file's
 * mode, owner, times and extended attributes, socket(AF_UNIX) and a datagram socketpair (a stream or seqpacket Unix pair is allowed), every other socket() unless
 * `network` is non-zero, and the TIOCSTI/TIOCLINUX ioctls, and io_uring_setup (ENOSYS); another architecture's
 * system calls kill it. Unless `processes` is non-zero, it may start threads only: a clone without CLONE_THREAD, fork
 * and vfork fail with EAGAIN, clone3 with ENOSYS (glibc then makes its threads with clone). Applies to every thread of the
 * process (TSYNC). Drops every capability (bounding set included) and sets no_new_privs. Inherited by
 * its children, which may then signal only that worker and its group: a process the plugin starts cannot be
 * signalled by it (a filter cannot tell descendants). Returns 0, or -1 with errno (ENOSYS on an architecture it does
 * not know, EAGAIN when a thread could not be synchronised, capset's when the capabilities could not be dropped):
 * the caller must then not run plugin code. */
int keel_confine_worker(int network, int processes);

/* The Landlock ABI version this kernel offers (1 and up), or -1 without Landlock. */
int keel_landlock_abi(void);

/* Confines the calling thread, and every thread and process it starts afterwards (not threads that exist already:
 * a caller with other threads re-executes itself after this), with Landlock: files and folders may be read and
 * executed only below the `readable` paths, and written (not created or removed) only below the `writable` ones;
 * nothing else on the file system is reachable. From ABI 4 on, binding a TCP port is refused, and connecting to
 * one too unless `network` is non-zero.
 * From ABI 6 on, signals and abstract Unix sockets reach only
 * processes in the same domain. A listed path that does not exist is skipped. Sets no_new_privs. Returns the ABI
 * version applied, or -1 with errno (ENOSYS or EOPNOTSUPP when the kernel has no Landlock). */
int keel_restrict_files(const char *const *readable, size_t readable_count,
                        const char *const *writable, size_t writable_count, int network);

/* Makes this process not dumpable (prctl PR_SET_DUMPABLE 0): no core file, and its /proc/<pid>/mem, fd and environ
 * are closed to other processes of the same user without CAP_SYS_PTRACE (a worker drops it). Returns 0, or -1. */
int keel_make_undumpable(void);

/* Names the process (its main thread, which `ps` and /proc/<pid>/comm show) and the calling thread, whose name the
 * threads it starts later inherit (prctl PR_SET_NAME; at most 15 bytes are kept). Returns 0, or -1. */
int keel_name_process(const char *name);

/* The calls into one auth hook now (KeelLoader/HookWatch.swift): slots[0] counts them, slots[1...count] hold start
 * times in milliseconds of a monotonic clock (0: free), all read and written atomically from any thread.
 * keel_slots_enter counts the call in. It counts it out again and returns -3 when `max_in_flight` others are
 * running, and -2 when at least `stuck_limit` others are running and `stuck_limit` of them started before
 * `stuck_before` (do not call, either way). Otherwise it returns the slot it claimed for the call (started at
 * `now` > 0), or -1 when every slot was taken (the call is counted, untracked).
 * keel_slots_leave ends a call keel_slots_enter let through (its return value; never after -2 or -3). */
int keel_slots_enter(uint64_t *slots, int count, uint64_t now, uint64_t stuck_before, int stuck_limit, int max_in_flight);
void keel_slots_leave(uint64_t *slots, int index);

/* Fixes glibc's mmap threshold at `bytes` (mallopt M_MMAP_THRESHOLD), which also ends its dynamic raising: blocks of
 * that size or more are mappings of their own, given back when freed. Returns mallopt's result (1 on success). */
int keel_return_large_blocks(int bytes);

#include <sys/types.h>
/* SIGKILLs every process listed in the cgroup file `procs` (a cgroup's `cgroup.procs`) that is still listed once a
 * pidfd to it is open (pidfd_open(2), pidfd_send_signal(2)): the pidfd holds the process, so a pid that ended and was
 * given to another process between the listing and the signal is never signalled (where pidfd_open is missing,
 * before Linux 5.3, or refused, a pid listed both times is signalled by number). Returns how many were signalled, or -1 with errno
 * when the file cannot be read, either time. */
int keel_cgroup_kill_members(const char *procs);

/* The last error status the host returned to a plugin's call on this thread since keel_host_refusal_take (0: none).
 * The host's functions a route handler may call note their refusals here; once the handler returned, the host takes
 * it: a handler whose error status is exactly that one passed the host's refusal on (not its own answer). */
extern __thread int32_t keel_host_refusal_last __attribute__((tls_model("initial-exec")));
/* Whether that last call was one on the handler's response (set_status, add_header, write): its writer then holds
 * why it was refused. */
extern __thread uint8_t keel_host_refusal_response __attribute__((tls_model("initial-exec")));
static inline void keel_host_refusal_note(int32_t status) { keel_host_refusal_last = status; keel_host_refusal_response = 0; }
static inline void keel_host_refusal_note_response(int32_t status) { keel_host_refusal_last = status; keel_host_refusal_response = 1; }
static inline int32_t keel_host_refusal_take(void) {
    int32_t status = keel_host_refusal_last;
    keel_host_refusal_last = 0;
    keel_host_refusal_response = 0;
    return status;
}
static inline int keel_host_refusal_was_response(void) { return keel_host_refusal_response; }

#endif
