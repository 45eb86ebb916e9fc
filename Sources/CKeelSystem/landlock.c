/* Keel — a microkernel plugin host. Licensed under Apache-2.0.
 * A worker process's file-system confinement: a Landlock ruleset that lets plugin code read only the folders it is
 * given (see keel_system.h). The constants are the kernel's ABI (linux/landlock.h); those newer than the build
 * machine's header are spelled out here. */
#define _GNU_SOURCE
#include "keel_system.h"
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_landlock_create_ruleset
#define SYS_landlock_create_ruleset 444
#define SYS_landlock_add_rule 445
#define SYS_landlock_restrict_self 446
#endif

enum {
    LL_EXECUTE = 1 << 0, LL_WRITE_FILE = 1 << 1, LL_READ_FILE = 1 << 2, LL_READ_DIR = 1 << 3,
    LL_V1_ALL = (1 << 13) - 1, LL_REFER = 1 << 13, LL_TRUNCATE = 1 << 14, LL_IOCTL_DEV = 1 << 15,
    LL_FILE_RIGHTS = LL_EXECUTE | LL_WRITE_FILE | LL_READ_FILE | LL_TRUNCATE | LL_IOCTL_DEV,
    LL_SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0, LL_SCOPE_SIGNAL = 1 << 1, LL_NET_BIND_TCP = 1 << 0, LL_NET_CONNECT_TCP = 1 << 1,
    LL_RULE_PATH_BENEATH = 1, LL_CREATE_RULESET_VERSION = 1,
};

struct ll_ruleset_attr { uint64_t handled_access_fs, handled_access_net, scoped; };
struct ll_path_beneath_attr { uint64_t allowed_access; int32_t parent_fd; } __attribute__((packed));

int keel_landlock_abi(void) {
    long abi = syscall(SYS_landlock_create_ruleset, NULL, 0, LL_CREATE_RULESET_VERSION);
    return abi < 0 ? -1 : (int)abi;
}

/* One rule: `rights` below `path` (a file gets only the file rights among them). A path that does not exist is
 * skipped: the list names what a system may have (/lib32, /libx32). */
static int allow(int ruleset, const char *path, uint64_t rights, uint64_t handled) {
    int fd = open(path, O_PATH | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT || errno == ENOTDIR || errno == EACCES ? 0 : -1;
    struct stat st;
    if (fstat(fd, &st) != 0) { close(fd); return -1; }
    if (!S_ISDIR(st.st_mode)) rights &= LL_FILE_RIGHTS;
    struct ll_path_beneath_attr rule = { .allowed_access = rights & handled, .parent_fd = fd };
    long r = syscall(SYS_landlock_add_rule, ruleset, LL_RULE_PATH_BENEATH, &rule, 0);
    int saved = errno;
    close(fd);
    errno = saved;
    return r == 0 ? 0 : -1;
}

int keel_restrict_files(const char *const *readable, size_t readable_count,
                        const char *const *writable, size_t writable_count, int network) {
    int abi = keel_landlock_abi();
    if (abi < 1) { if (errno != EOPNOTSUPP) errno = ENOSYS; return -1; }
    uint64_t handled = LL_V1_ALL;
    if (abi >= 2) handled |= LL_REFER;
    if (abi >= 3) handled |= LL_TRUNCATE;
    if (abi >= 5) handled |= LL_IOCTL_DEV;
    struct ll_ruleset_attr attr = { .handled_access_fs = handled };
    size_t size = sizeof attr.handled_access_fs;
    if (abi >= 4) {
        /* TCP: binding a port refused (no rule allows one), so a plugin cannot listen on the network; connecting out
         * too without the network granted (a second layer under the seccomp filter, which refuses the socket). */
        attr.handled_access_net = LL_NET_BIND_TCP | (network ? 0 : LL_NET_CONNECT_TCP);
        size = offsetof(struct ll_ruleset_attr, scoped);
    }
    if (abi >= 6) {
        /* Signals (kill, pidfd, SIGIO owners) and abstract Unix sockets only within this domain: its own processes. */
        attr.scoped = LL_SCOPE_ABSTRACT_UNIX_SOCKET | LL_SCOPE_SIGNAL;
        size = sizeof attr;
    }
    int ruleset = (int)syscall(SYS_landlock_create_ruleset, &attr, size, 0);
    if (ruleset < 0) return -1;
    const uint64_t read = LL_EXECUTE | LL_READ_FILE | LL_READ_DIR;
    for (size_t i = 0; i < readable_count; i++)
        if (allow(ruleset, readable[i], read, handled) != 0) goto fail;
    for (size_t i = 0; i < writable_count; i++)
        if (allow(ruleset, writable[i], read | LL_WRITE_FILE | LL_TRUNCATE, handled) != 0) goto fail;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) goto fail;
    if (syscall(SYS_landlock_restrict_self, ruleset, 0) != 0) goto fail;
    close(ruleset);
    return abi;
fail:;
    int saved = errno;
    close(ruleset);
    errno = saved;
    return -1;
}
