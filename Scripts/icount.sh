#!/usr/bin/env bash
# The instruction-count gate: a fixed number of plugin handler calls, route lookups (a hit and a miss), authorize
# chains (3 hooks) and whole HTTP requests (a built-in route, the plugin's, the plugin's behind 3 hooks), counted by valgrind's callgrind, against the budget checked in at Scripts/icount-budget.txt.
# Instruction counts do not move with the machine's load, so this gate cannot be noisy; it fails on a rise of more
# than 10 % in any phase. Timings stay in the benchmark suite.
#   Scripts/icount.sh            measure and compare (CI)
#   Scripts/icount.sh --update   measure and write the budget (after a deliberate change; commit the file)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "icount: valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }
n=20000
budget=Scripts/icount-budget.txt
out="$(mktemp -d)"
# KEEL_ICOUNT_KEEP=1 keeps the callgrind dumps (their folder is printed) for callgrind_annotate.
if [ -n "${KEEL_ICOUNT_KEEP:-}" ]; then echo "icount: dumps in $out" >&2; else trap 'rm -rf "$out"' EXIT; fi
Scripts/release-build.sh --product keel-icount >&2
bin="$(Scripts/release-build.sh --show-bin-path)"
Scripts/bench-plugins.sh "$out"
# valgrind cannot read the toolchain's DWARF 5: run a copy without debug information (its symbols stay).
objcopy --strip-debug "$bin/keel-icount" "$out/keel-icount"
valgrind -q --tool=callgrind --dump-before=keel_bench_icount_mark --callgrind-out-file="$out/cg.out" \
  "$out/keel-icount" "$out/run" "$out/libbenchA.so" "$out/libroutes.so" "$n" \
  "$out/libauthz1.so" "$out/libauthz2.so" "$out/libauthz3.so" > "$out/stdout"
python3 - "$out" "$n" "$budget" "${1:-}" <<'PY'
import os, sys
out, n, budget, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
named = [l.split()[1:] for l in open(os.path.join(out, "stdout")) if l.startswith("icount-phases:")]
if not named: sys.exit("icount: keel-icount printed no icount-phases line")
dumps = named[0]
def total(path):
    for line in open(path):
        if line.startswith("summary:") or line.startswith("totals:"):
            return int(line.split()[1])
    sys.exit(f"icount: {path} has no summary line")
# Dump 1 is the set-up before the first mark; dump k+2 is the phase named k-th ("-": set-up, not measured).
measured = {}
for k, phase in enumerate(dumps):
    if phase == "-": continue
    path = os.path.join(out, f"cg.out.{k + 2}")
    if not os.path.exists(path):
        sys.exit(f"icount: callgrind wrote no dump for phase {phase} ({path})")
    # NAME@COUNT: a phase with its own iteration count (the HTTP phases run fewer requests than the others' n).
    name, _, count = phase.partition("@")
    measured[name] = total(path) / (int(count) if count else n)
phases = list(measured)
if mode == "--update":
    with open(budget, "w") as f:
        f.write("# Instructions per iteration, measured by Scripts/icount.sh --update (release build, x86_64).\n")
        for phase in phases: f.write(f"{phase} {measured[phase]:.0f}\n")
    print(f"icount: wrote {budget}")
    sys.exit(0)
limits = {}
for line in open(budget):
    if line.strip() and not line.startswith("#"):
        name, value = line.split()
        limits[name] = float(value)
failed = False
for phase in phases:
    base = limits.get(phase)
    if base is None:
        print(f"icount: {phase}: {measured[phase]:.0f} instructions, no budget in {budget}"); failed = True; continue
    ratio = measured[phase] / base
    verdict = "over budget" if ratio > 1.10 else ("ok (well under: consider --update)" if ratio < 0.85 else "ok")
    print(f"icount: {phase:18} {measured[phase]:8.0f} instructions per call, budget {base:8.0f}, ratio {ratio:.3f}: {verdict}")
    failed |= ratio > 1.10
# Route lookup must not grow with the number of plugins (100 plugins of 50 routes against one).
if "lookup-50-routes" in measured and "lookup-5000-routes" in measured:
    growth = measured["lookup-5000-routes"] / measured["lookup-50-routes"]
    print(f"icount: route lookup among 5,000 routes vs 50: {growth:.2f}x the instructions" + (" (grows with the plugins)" if growth > 1.5 else ""))
    failed |= growth > 1.5
# What the plugin path adds to a whole HTTP request, against a built-in route of the same server (reported; the phases'
# own budgets gate it).
if "http-builtin" in measured and "http-plugin" in measured:
    for phase in ("http-plugin", "http-plugin-authz"):
        if phase in measured:
            print(f"icount: {phase} vs http-builtin: {measured[phase] / measured['http-builtin']:.3f}x the instructions per request")
sys.exit(1 if failed else 0)
PY
