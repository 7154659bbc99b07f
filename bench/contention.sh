#!/bin/sh
# contention.sh - training and encoding alone and under one competing busy process, with
# OpenMP's threads spinning (libgomp's default: what cmr did before it set OMP_WAIT_POLICY
# itself) and waiting passively (what a tool does now when the variable is unset). A
# machine shared with other work should degrade gracefully. Each figure is the best of RUNS
# (default 3) and the spread (worst - best). Writes its section of bench/RESULTS.md. Needs a
# built tree (make check builds mkclip).
set -eu
. bench/lib.sh
PATH=$PWD/build/bin:$PATH
RUNS=${RUNS:-3}
T=$(mktemp -d)
busy=
trap '[ -n "$busy" ] && kill $busy 2>/dev/null; rm -rf "$T"' EXIT
build/tests/mkclip model "$T/tiny" tiny
build/tests/mkclip images 64 32 1 >"$T/i.cmr"
build/tests/mkclip tokens 64 2 >"$T/t.cmr"
build/tests/mkclip images 8192 32 2 >"$T/e.cmr"
load=$(cut -d' ' -f1-3 /proc/loadavg)
# best and spread of RUNS timings of a command (seconds)
timed() {
	for r in $(seq "$RUNS"); do
		rm -rf "$T/o"
		s=$(date +%s.%N)
		"$@" >/dev/null
		e=$(date +%s.%N)
		echo "$s $e"
	done | awk '{ t = $2 - $1; if (NR == 1 || t < b) b = t; if (t > w) w = t } END { printf "%.2f s (+%.2f)", b, w - b }'
}
# spin: libgomp's default when OMP_WAIT_POLICY is unset (300000 spins, then sleep), set
# explicitly so that the tools do not restart themselves; passive: what they run with now
SPIN="OMP_WAIT_POLICY=ACTIVE GOMP_SPINCOUNT=300000"
PASSIVE="OMP_WAIT_POLICY=PASSIVE"
train() { env $1 cmr-train -q -m "$T/tiny" -o "$T/o" -b 16 --steps 30 "$T/i.cmr" "$T/t.cmr"; }
encode() { env $1 cmr-encode -m "$T/tiny" -o "$T/o.cmr" "$T/e.cmr"; }
row() { # label
	echo "| $1 | $(timed train "$SPIN") | $(timed train "$PASSIVE") | $(timed encode "$SPIN") | $(timed encode "$PASSIVE") |"
}
alone=$(row alone)
sh -c 'while :; do :; done' &
busy=$!
loaded=$(row "one busy process beside it")
kill $busy
busy=
section="<!-- contention:begin -->
## Threads on a shared machine: alone and beside one busy process

Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load before
the run $load. Date: $(date -u +%Y-%m-%d). Command: \`sh bench/contention.sh\` (RUNS=$RUNS).
Training: mkclip's tiny model, 30 steps of batch 16, default threads. Encoding: 8192 images
of 32x32 with the tiny model. The busy process is \`sh -c 'while :; do :; done'\` on one core.
\"Spin\" is libgomp's default wait when \`OMP_WAIT_POLICY\` is unset (300000 spins, then sleep:
\`OMP_WAIT_POLICY=ACTIVE GOMP_SPINCOUNT=300000\`), what the tools did before they set the
variable themselves; \"passive\" is what a tool started without it now runs with.
Best of $RUNS runs (+ the spread to the worst).

| | train, spin | train, passive | encode, spin | encode, passive |
|---|---|---|---|---|
$alone
$loaded
<!-- contention:end -->"
write_section contention "$section"
