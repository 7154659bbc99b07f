#!/bin/sh
# encode.sh - cmr-encode at ViT-B/32 dimensions (a seeded random checkpoint from
# tests/tools/mkclip): images/s and captions/s at 1 and 2 threads, the achieved GFLOP/s as a
# fraction of this machine's OpenBLAS sgemm peak (measured here, 2048^3), and the same model
# in PyTorch on the CPU (Debian python3-torch, same threads) in the same run. Writes its
# section of bench/RESULTS.md. Needs a built tree (make check builds mkclip) and python3-torch.
set -eu
. bench/lib.sh
PATH=$PWD/build/bin:$PATH
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
mkdir "$T/b32"
build/tests/mkclip model "$T/b32" b32
NI=64
NT=256
build/tests/mkclip images $NI 224 1 >"$T/i.cmr"
# captions of 20 tokens (about the Flickr8k average), ids drawn at random, as a .npy
awk -v n=$NT 'BEGIN { srand(3); for (i = 0; i < n; i++) { printf "49406"; for (j = 0; j < 18; j++) printf " %d", int(rand() * 49000); print " 49407" } }' >"$T/ids.txt"
/usr/bin/python3 -c "
import numpy as np, sys
a = np.loadtxt('$T/ids.txt', dtype=np.int32)
np.save('$T/ids.npy', a)"
seq -f 'cap%g#0' 1 $NT >"$T/keys"
cmr-dump from-npy --kind tokens --keys "$T/keys" "$T/ids.npy" >"$T/t.cmr"
best() { # best items/s of 3 runs of cmr-encode ARGS over N items
	n=$1
	shift
	b=0
	for i in 1 2 3; do
		t0=$(date +%s.%N)
		cmr-encode "$@" >/dev/null
		t1=$(date +%s.%N)
		r=$(echo "$n / ($t1 - $t0)" | bc -l)
		b=$(echo "if ($r > $b) $r else $b" | bc -l)
	done
	printf '%.1f' "$b"
}
cat >"$T/peak.c" <<'C'
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
int main(int argc, char **argv) {
	int n = 2048, th = atoi(argv[1]);
	openblas_set_num_threads(th);
	float *a = calloc((size_t)n * n, 4), *b = calloc((size_t)n * n, 4), *c = calloc((size_t)n * n, 4);
	double best = 0;
	for (int r = 0; r < 4; r++) {
		struct timespec t0, t1;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1, a, n, b, n, 0, c, n);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		double s = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
		if (2.0 * n * n * n / s / 1e9 > best) best = 2.0 * n * n * n / s / 1e9;
	}
	printf("%.1f\n", best);
	return 0;
}
C
cc -O2 $(pkg-config --cflags openblas) -o "$T/peak" "$T/peak.c" $(pkg-config --libs openblas)
# forward FLOPs per sample at these sizes: 2 * multiply-adds (as lib/model/forward.c counts)
FI=$(echo "2 * (12 * (50 * (4 * 768 * 768 + 2 * 768 * 3072) + 2 * 50 * 50 * 768) + 768 * 512 + 49 * 3 * 32 * 32 * 768)" | bc)
FT=$(echo "2 * (12 * (20 * (4 * 512 * 512 + 2 * 512 * 2048) + 2 * 20 * 20 * 512) + 512 * 512)" | bc)
rows=""
for th in 1 2; do
	peak=$("$T/peak" $th)
	ci=$(best $NI -m "$T/b32" -t $th -b 32 "$T/i.cmr")
	ct=$(best $NT -m "$T/b32" -t $th -b 64 "$T/t.cmr")
	gi=$(echo "$ci * $FI / 1000000000" | bc -l)
	gt=$(echo "$ct * $FT / 1000000000" | bc -l)
	set -- $(OMP_NUM_THREADS=$th OPENBLAS_NUM_THREADS=$th MKL_NUM_THREADS=$th /usr/bin/python3 bench/torch_encode.py "$T/b32" $th 32 64 20)
	rows="$rows| $th | $(printf '%.1f' "$peak") | $ci | $(printf '%.1f (%.0f%%)' "$gi" "$(echo "100 * $gi / $peak" | bc -l)") | $ct | $(printf '%.1f (%.0f%%)' "$gt" "$(echo "100 * $gt / $peak" | bc -l)") | $1 | $2 |
"
done
section="<!-- encode:begin -->
## cmr-encode: ViT-B/32 dimensions (random weights), images/s and captions/s

Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //').
Date: $(date -u +%Y-%m-%d). Command: \`sh bench/encode.sh\`: $NI images (batch 32) and $NT
captions of 20 tokens (batch 64), best of 3 runs of the whole cmr-encode process (weights
mapped from a warm page cache). GFLOP/s counts 2 per multiply-add (8.8 GFLOP per image, 1.5
per caption); peak is OpenBLAS sgemm on 2048x2048 matrices at the same thread count, measured
in this run. Peer: the same forward pass in PyTorch $(/usr/bin/python3 -c 'import torch; print(torch.__version__)')
on the CPU (bench/torch_encode.py, batch 32 images / 64 captions, best of 3, model in memory;
OMP_NUM_THREADS and OPENBLAS_NUM_THREADS set to the thread count as well).

| threads | sgemm peak GFLOP/s | cmr images/s | cmr image GFLOP/s (of peak) | cmr captions/s | cmr caption GFLOP/s (of peak) | PyTorch images/s | PyTorch captions/s |
|---|---|---|---|---|---|---|---|
$rows<!-- encode:end -->"
write_section encode "$section"
