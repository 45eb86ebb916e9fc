/* Keel plugin ABI — per-plugin configuration (service "keel.config/1").
 *
 * The operator gives a plugin its configuration as YAML (`keel plugins config ID FILE`, or at install). The host
 * validates it against the schema the bundle ships (config.schema.yaml), stores it, and hands it to the plugin as
 * JSON text at activation. A change re-activates the plugin, so a plugin reads its configuration in activate.
 */
#pragma once

#include "types.h"

KEEL_EXTERN_C_BEGIN

#define KEEL_SERVICE_CONFIG "keel.config/1"

typedef struct keel_host_config {
    uint32_t struct_size; /* sizeof(keel_host_config) as the host knows it */

    /* Returns the plugin's configuration as JSON text (an object), or the empty string when it has none. The text
     * is owned by the host, constant, and valid until deactivate returns.
     * [thread-safe] */
    keel_str(KEEL_ABI *get)(keel_ctx *ctx);
} keel_host_config;

KEEL_EXTERN_C_END
