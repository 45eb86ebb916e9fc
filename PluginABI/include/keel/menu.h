/* Keel plugin ABI — console navigation (service "keel.menu/1").
 *
 * Menu entries from every enabled plugin are composed into one navigation tree: entries sort by `order`, then id,
 * and nest under `parent`. Entries can also be declared statically in plugin.yaml under `menus:`.
 */
#pragma once

#include "types.h"
#include "status.h"

KEEL_EXTERN_C_BEGIN

#define KEEL_SERVICE_MENU "keel.menu/1"

/* A menu entry to add. Borrowed for the call; the host copies the strings. Growable. */
typedef struct keel_menu_entry {
    uint32_t struct_size; /* sizeof(keel_menu_entry) */
    keel_str id;          /* unique across all plugins, e.g. "hello.main"; [A-Za-z0-9._-], at most 128 bytes */
    keel_str title;       /* shown to people; not empty */
    keel_str parent;      /* id of the parent entry, or empty for the top level */
    keel_str link;        /* where it leads: a console path ("/ext/hello/") or an http(s) URL; anything else
                             (javascript:, data:, a relative path) is KEEL_ERR_INVALID_ARGUMENT */
    int32_t order;        /* smaller comes first */
    keel_str icon;        /* an icon name; may be empty */
    keel_str permission;  /* permission a caller needs to see it ("plugin.key:action"); empty = everyone */
} keel_menu_entry;

typedef struct keel_host_menu {
    uint32_t struct_size; /* sizeof(keel_host_menu) as the host knows it */

    /* Adds `entry` to this activation's menu. Borrowed for the call.
     * Returns KEEL_OK; KEEL_ERR_INVALID_ARGUMENT for a missing id or title or an id with other characters;
     * KEEL_ERR_CONFLICT when the id is taken (the message names the owner); KEEL_ERR_DENIED without the "menus"
     * capability; KEEL_ERR_LIMIT past the plugin's menu quota; KEEL_ERR_WRONG_STATE outside activate.
     * [activate-only] */
    keel_status(KEEL_ABI *add_entry)(keel_ctx *ctx, const keel_menu_entry *entry);
} keel_host_menu;

KEEL_EXTERN_C_END
