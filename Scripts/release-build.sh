#!/usr/bin/env bash
# The optimized build, as Keel ships and measures it: `swift build -c release` with one compiler flag, passed on to
# every module (Keel's and its dependencies'). Arguments go on to `swift build`:
#   Scripts/release-build.sh --product keel        the `keel` an operator deploys (in .build/release/)
#   Scripts/release-build.sh --show-bin-path       where it is
# -disable-concrete-type-metadata-mangled-name-accessors: generic types the code names (a Set<String>, a dictionary of
# records) get their run-time metadata from an accessor the compiler writes, not by demangling their name at first
# use, which looks each conformance up through every image's conformance records. A start of 1,000 installed lazy
# plugins spent about 1.5 ms of CPU on those look-ups (perf, 30 starts), a lazy plugin's first request a tenth of a
# millisecond; steady-state calls are unchanged (Scripts/icount.sh). The binary grows by about 0.5 %.
set -euo pipefail
cd "$(dirname "$0")/.."
exec swift build -c release -Xswiftc -Xfrontend -Xswiftc -disable-concrete-type-metadata-mangled-name-accessors "$@"
