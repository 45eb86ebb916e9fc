/* Keel — a microkernel plugin host. Licensed under Apache-2.0. */
#define _GNU_SOURCE
#include <sys/mman.h>
#include "keel_system.h"

int keel_memfd_create(const char *name) { return memfd_create(name, MFD_CLOEXEC); }
