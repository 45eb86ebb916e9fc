/* The interface's header as a module for Swift (include/gitops_sync.h, a copy of Plugins/deployer/gitops_sync.h). */
#include "gitops_sync.h"
