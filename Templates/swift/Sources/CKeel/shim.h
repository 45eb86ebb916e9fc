#include <keel/keel.h>
