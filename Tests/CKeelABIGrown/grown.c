/* Test-only declarations live in include/keel_grown.h; this file gives the target a source. */
#include "keel_grown.h"
_Static_assert(sizeof(keel_route_grown) == sizeof(keel_route) + 8, "the grown route is the 1.0 route plus one field");
