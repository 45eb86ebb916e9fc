/* Keel — a microkernel plugin host. Licensed under Apache-2.0.
 * System calls the Swift Glibc module does not export. Host-only: not part of the plugin ABI. */
#ifndef KEEL_SYSTEM_H
#define KEEL_SYSTEM_H

/* Creates an anonymous in-memory file (memfd_create(2), close-on-exec). Returns the descriptor, or -1 with errno. */
int keel_memfd_create(const char *name);

#endif
