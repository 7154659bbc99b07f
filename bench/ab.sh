#!/bin/sh
# ab.sh OTHER_BUILD - this tree's build against another build of cmr (e.g. a worktree of an
# older commit: git worktree add /tmp/old REV && make -C /tmp/old), alternating, ROUNDS times
# (default 5), best of each: cmr-encode of a ViT-B/32 shape (mkclip b32) on 64 images and 64
# captions at 2 threads, and a cmr-train step at bench/train.sh's size (batch 128, steps 3..12
# from the log's clock). For "no loss of speed" checks of a change; writes its section of
# bench/RESULTS.md. Needs a built tree (make check builds mkclip) and python3-numpy.
set -eu
. bench/lib.sh
OTHER=${1:?usage: sh bench/ab.sh OTHER_BUILD_DIR (the directory holding bin/)}
ROUNDS=${ROUNDS:-5}
HERE=$PWD/build
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
M=build/tests/mkclip
$M model "$T/b32" b32
$M images 64 224 5 >"$T/i.cmr"
$M tokens 64 6 >"$T/tok.cmr"
flickr_cfg "$T/cfg.json"
$M images 128 64 1 >"$T/ti.cmr"
captions20 128 "$T"
mv "$T/t.cmr" "$T/tt.cmr"
secs() { # command...: wall seconds
	s=$(date +%s.%N)
	"$@" >/dev/null
	e=$(date +%s.%N)
	echo "$e - $s" | bc -l
}
best() { awk -v f="${1:-%.3f}" 'NR == 1 || $1 < m { m = $1 } END { printf f, m }'; }
load=$(cut -d' ' -f1-3 /proc/loadavg)
for r in $(seq "$ROUNDS"); do
	for v in this other; do
		B=$HERE
		[ $v = other ] && B=$OTHER
		secs "$B/bin/cmr-encode" -t 2 -m "$T/b32" "$T/i.cmr" >>"$T/$v.img"
		secs "$B/bin/cmr-encode" -t 2 -m "$T/b32" "$T/tok.cmr" >>"$T/$v.txt"
		rm -rf "$T/out"
		"$B/bin/cmr-train" -q -t 2 --config "$T/cfg.json" -o "$T/out" -b 128 --steps 12 --log "$T/log" "$T/ti.cmr" "$T/tt.cmr"
		awk -v b=128 -F '"pairs_per_s": ' '/"loss"/ { n++; split($2, a, "}"); r[n] = a[1] }
			END { t2 = 2 * b / r[2]; tn = n * b / r[n]; printf "%.4f\n", (tn - t2) / 10 }' "$T/log" >>"$T/$v.step"
	done
done
row() { # label file...
	printf '| %s | %s | %s | %s |\n' "$1" "$(best <"$T/$2.img")" "$(best <"$T/$2.txt")" "$(awk '{ print $1 * 1000 }' "$T/$2.step" | best %.0f)"
}
section="<!-- ab:begin -->
## This build against another, alternating (bench/ab.sh)

Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load
before the run $load. Date: $(date -u +%Y-%m-%d). Command: \`sh bench/ab.sh $OTHER\` (ROUNDS=$ROUNDS,
best of each). This build: $(git describe --always --dirty 2>/dev/null || echo '?'); the other: $(git -C "$OTHER/.." describe --always --dirty 2>/dev/null || echo "$OTHER").
Encode: cmr-encode -t 2 on mkclip's b32 (ViT-B/32 shape, F32), wall time including the model
load; train: a cmr-train step at bench/train.sh's size (batch 128), 2 threads.

| build | encode 64 images (s) | encode 64 captions (s) | train step (ms) |
|---|---|---|---|
$(row this this)
$(row other other)
<!-- ab:end -->"
write_section ab "$section"
