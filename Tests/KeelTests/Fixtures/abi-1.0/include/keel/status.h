/* Keel plugin ABI — status codes.
 *
 * Every function that can fail returns a keel_status. Codes are never renumbered and only appended: a host or plugin
 * that meets a code it does not know treats it as KEEL_ERR_INTERNAL. A message for the failure travels separately,
 * through keel_host.set_error (plugin → host) or is logged by the host (host → plugin).
 */
#pragma once

#include <stdint.h>
#include "private/macros.h"

KEEL_EXTERN_C_BEGIN

typedef int32_t keel_status;

#define KEEL_OK                   0 /* success */
#define KEEL_ERR_INTERNAL         1 /* unexpected failure; the message says what */
#define KEEL_ERR_INVALID_ARGUMENT 2 /* a pointer was NULL, a string not UTF-8, a size too small, a value out of range */
#define KEEL_ERR_CONFLICT         3 /* the route, menu id or name is already taken (by this or another plugin) */
#define KEEL_ERR_DENIED           4 /* outside the plugin's namespace or beyond its granted capabilities */
#define KEEL_ERR_NOT_FOUND        5 /* no such service, route or entry */
#define KEEL_ERR_UNSUPPORTED      6 /* the host or plugin does not offer this feature or version */
#define KEEL_ERR_WRONG_STATE      7 /* called at the wrong time, e.g. registering outside activate */
#define KEEL_ERR_LIMIT            8 /* a quota or size limit would be exceeded */
#define KEEL_ERR_NO_MEMORY        9 /* allocation failed */
#define KEEL_ERR_UNAVAILABLE     10 /* a resource the call needs is temporarily unavailable; retrying may succeed */

KEEL_EXTERN_C_END
