/* The Keel plugin ABI's headers, from the SDK's include folder (pkg-config keel-plugin). */
#include <keel/keel.h>
