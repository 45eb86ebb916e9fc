/* Keel plugin ABI — version.
 *
 * Compatibility rule: a plugin built against KEEL_ABI_VERSION major.minor loads in a host whose ABI has the same
 * major and a minor >= the plugin's. The patch number never affects compatibility.
 */
#pragma once

#include <stdint.h>
#include "private/macros.h"

KEEL_EXTERN_C_BEGIN

#define KEEL_ABI_VERSION_MAJOR 1
#define KEEL_ABI_VERSION_MINOR 1
#define KEEL_ABI_VERSION_PATCH 0

typedef struct keel_version {
    uint32_t major;
    uint32_t minor;
    uint32_t patch;
} keel_version;

/* The version of the header being compiled against. Use it to fill keel_plugin.abi_version. */
#define KEEL_ABI_VERSION_INIT { KEEL_ABI_VERSION_MAJOR, KEEL_ABI_VERSION_MINOR, KEEL_ABI_VERSION_PATCH }

/* True when the header being compiled is at least maj.min.pat. */
#define KEEL_ABI_VERSION_GE(maj, min, pat)                                                                        \
    ((KEEL_ABI_VERSION_MAJOR > (maj)) ||                                                                           \
     (KEEL_ABI_VERSION_MAJOR == (maj) && KEEL_ABI_VERSION_MINOR > (min)) ||                                        \
     (KEEL_ABI_VERSION_MAJOR == (maj) && KEEL_ABI_VERSION_MINOR == (min) && KEEL_ABI_VERSION_PATCH >= (pat)))

KEEL_EXTERN_C_END
