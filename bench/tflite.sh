#!/bin/sh
# tflite.sh - cmr-encode with the pretrained TFLite MobileNets (../shared/pretrained): images/s at
# 1 and 2 threads on 200 Flickr8k dev photos (decoded once beforehand; best of 3, spread), the
# multiply-adds per image and the achieved GMAC/s beside this machine's OpenBLAS dgemm peak
# (measured here: the fast path's products are dgemm), and the plain loops (--backend ref) for
# scale. No peer runtime: Debian packages no TensorFlow Lite interpreter (Arm NN's TFLite parser
# runs its CPU reference backend on x86, not a speed peer). Writes its section of bench/RESULTS.md.
set -eu
. bench/lib.sh
PATH=$PWD/build/bin:$PATH
P=../shared/pretrained/mobilenet-tflite
[ -d "$P" ] || { echo "tflite.sh: $P absent" >&2; exit 1; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cmr-decode -q -s 224 ../shared/data/flickr8k/dev.tar >"$T/all.cmr"
off=$(cmr-dump list "$T/all.cmr" | awk '$3 == "tensor" {n++; if (n == 201) {print $2; exit}}')
head -c "$off" "$T/all.cmr" >"$T/i.cmr"
off10=$(cmr-dump list "$T/all.cmr" | awk '$3 == "tensor" {n++; if (n == 11) {print $2; exit}}')
head -c "$off10" "$T/all.cmr" >"$T/ten.cmr"
N=200
cat >"$T/peak.c" <<'C'
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
int main(int argc, char **argv)
{
	int n = 1024, t = atoi(argv[1]);
	openblas_set_num_threads(t);
	double *a = calloc((size_t)n * n, 8), *b = calloc((size_t)n * n, 8), *c = calloc((size_t)n * n, 8), best = 0;
	for (int r = 0; r < 4; r++) {
		struct timespec t0, t1;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1, a, n, b, n, 0, c, n);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec), g = (double)n * n * n / s / 1e9;
		best = g > best ? g : best;
	}
	printf("%.1f\n", best); /* GMAC/s */
	return 0;
}
C
cc -O2 $(pkg-config --cflags openblas 2>/dev/null || echo -I/usr/include/x86_64-linux-gnu/openblas-pthread) -o "$T/peak" "$T/peak.c" \
	$(pkg-config --libs openblas 2>/dev/null || echo -lopenblas)
run3() { # best and worst images/s of 3 runs of cmr-encode ARGS over N images
	b=0 w=1000000000
	for i in 1 2 3; do
		t0=$(date +%s.%N)
		cmr-encode -q "$@" "$T/i.cmr" >/dev/null
		t1=$(date +%s.%N)
		r=$(echo "$N / ($t1 - $t0)" | bc -l)
		b=$(echo "if ($r > $b) $r else $b" | bc -l)
		w=$(echo "if ($r < $w) $r else $w" | bc -l)
	done
	printf '%.1f %.1f' "$b" "$w"
}
load=$(cut -d' ' -f1-3 /proc/loadavg)
p1=$("$T/peak" 1)
p2=$("$T/peak" 2)
rows=""
for m in mobilenet_v1_1.0_224_quant_embedding_extractor mobilenet_v2_1.0_224_quant tf2_mobilenet_v2_1.0_224_ptq; do
	macs=$(cmr-encode -v -m "$P/$m.tflite" /dev/null 2>&1 | sed -n 's/.*operators, \([0-9]*\)M multiply-adds.*/\1/p')
	set -- $(run3 -t 1 -m "$P/$m.tflite")
	b1=$1 w1=$2
	set -- $(run3 -t 2 -m "$P/$m.tflite")
	b2=$1 w2=$2
	g1=$(echo "$b1 * $macs / 1000" | bc -l)
	g2=$(echo "$b2 * $macs / 1000" | bc -l)
	# the plain loops on the first 10 images, once (slow)
	t0=$(date +%s.%N)
	cmr-encode -q --backend ref -t 1 -m "$P/$m.tflite" "$T/ten.cmr" >/dev/null
	t1=$(date +%s.%N)
	ref=$(echo "10 / ($t1 - $t0)" | bc -l)
	rows="$rows
| $m | $macs | $b1 ($w1) | $(printf %.1f "$g1") ($(printf %.0f "$(echo "100 * $g1 / $p1" | bc -l)")%) | $b2 ($w2) | $(printf %.1f "$g2") ($(printf %.0f "$(echo "100 * $g2 / $p2" | bc -l)")%) | $(printf %.1f "$ref") |"
done
write_section tflite "<!-- tflite:begin -->
## TFLite MobileNets in cmr-encode (bench/tflite.sh)

$(date -u +%Y-%m-%d), $(uname -m), $(nproc) cores ($(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)), load before the run $load.
Command: \`sh bench/tflite.sh\`: \`cmr-encode -m MODEL.tflite\` (pooled features) on 200 Flickr8k dev photos
decoded beforehand, best of 3 runs (worst in brackets). GMAC/s: multiply-adds of convolutions and fully
connected layers per second, beside OpenBLAS dgemm's peak measured in the same run ($p1 GMAC/s at 1 thread,
$p2 at 2): the fast path's products are dgemm on the zero-point-offset integers. ref: the plain loops
(\`--backend ref\`, 1 thread, one run of 10 images). No peer: Debian packages no TensorFlow Lite runtime.

| model | M MAC/image | images/s, 1 thread | GMAC/s (of dgemm peak) | images/s, 2 threads | GMAC/s (of peak) | ref images/s |
|---|---|---|---|---|---|---|$rows
<!-- tflite:end -->"
