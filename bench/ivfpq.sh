#!/bin/sh
# ivfpq.sh - IVF-PQ at 1M vectors of a real embedding distribution (bench/mkreal.py: MobileNet
# v1 features of Flickr8k images, PCA'd to DIM, mixed in pairs with noise): cmr-index --ivf
# --pq and cmr-query next to FAISS IndexIVFPQ (Debian python3-faiss, bench/faiss_ivfpq.py) at
# the same nlist, M, 8 bits, training sample, iterations, nprobe and threads, in the same run:
# queries/s, recall@10 against exact search, build time, bytes per vector; and cmr's exact
# re-ranking of the best 100. Best of RUNS (default 3) with the worst. Writes its section of
# bench/RESULTS.md. Needs a built tree, python3-faiss and python3-numpy, and the features:
# FEAT_TRAIN and FEAT_TEST (default out/lit/{train,test}-images.cmr, which
# make -f pipelines/lit.mk makes from ../shared). N, NQ, DIM, M, NLIST, NPROBE to vary.
set -eu
. bench/lib.sh
PATH=$PWD/build/bin:$PATH
FEAT_TRAIN=${FEAT_TRAIN:-out/lit/train-images.cmr}
FEAT_TEST=${FEAT_TEST:-out/lit/test-images.cmr}
RUNS=${RUNS:-3}
THREADS=${THREADS:-1 2}
N=${N:-1000000}
NQ=${NQ:-10000}
DIM=${DIM:-128}
NOISE=${NOISE:-0.3}
M=${M:-16}
NLIST=${NLIST:-1024}
NPROBE=${NPROBE:-16}
SAMPLE=$((64 * NLIST))
ITERS=10
RERANK=100
if [ ! -s "$FEAT_TRAIN" ] || [ ! -s "$FEAT_TEST" ]; then
	echo "ivfpq.sh: making the features (make -f pipelines/lit.mk $FEAT_TRAIN $FEAT_TEST)" >&2
	make -f pipelines/lit.mk "$FEAT_TRAIN" "$FEAT_TEST"
fi
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
load=$(cut -d' ' -f1-3 /proc/loadavg)

cmr-dump to-npy -o "$T/ftr.npy" "$FEAT_TRAIN"
cmr-dump to-npy -o "$T/fte.npy" "$FEAT_TEST"
/usr/bin/python3 bench/mkreal.py "$T/ftr.npy" "$T/fte.npy" "$N" "$NQ" "$DIM" "$NOISE" "$T/base.npy" "$T/q.npy"
awk -v n="$N" 'BEGIN { for (i = 0; i < n; i++) printf "b%d\n", i }' >"$T/bk"
awk -v n="$NQ" 'BEGIN { for (i = 0; i < n; i++) printf "q%d\n", i }' >"$T/qk"
cmr-dump from-npy --kind embedding --keys "$T/bk" -o "$T/base.cmr" "$T/base.npy"
cmr-dump from-npy --kind embedding --keys "$T/qk" -o "$T/q.cmr" "$T/q.npy"
/usr/bin/python3 -c "import numpy as np; np.save('$T/q1.npy', np.load('$T/q.npy')[:1])"
head -1 "$T/qk" >"$T/qk1"
cmr-dump from-npy --kind embedding --keys "$T/qk1" -o "$T/q1.cmr" "$T/q1.npy"
cmr-index -q -o "$T/flat.idx" "$T/base.cmr"
cmr-query -k 10 "$T/flat.idx" "$T/q.cmr" >"$T/exact.tsv"
rm -f "$T/flat.idx"
rows=""
for TH in $THREADS; do
	rm -f "$T"/*.t
	timeit "$T/build.t" env OMP_NUM_THREADS="$TH" OPENBLAS_NUM_THREADS="$TH" cmr-index -q --ivf "$NLIST" --pq "$M" \
		--sample "$SAMPLE" --iter "$ITERS" -o "$T/pq.idx" "$T/base.cmr"
	# the same codes with the exact vectors beside them, for re-ranking
	[ -s "$T/pqx.idx" ] || cmr-index -q --ivf "$NLIST" --pq "$M" --keep-exact --sample "$SAMPLE" --iter "$ITERS" \
		-o "$T/pqx.idx" "$T/base.cmr"
	timeit "$T/q.t" sh -c "cmr-query -j $TH -k 10 --nprobe $NPROBE '$T/pq.idx' '$T/q.cmr' >'$T/pq.tsv'"
	# the process's fixed part: start, mapping and checking the index, one query
	timeit "$T/s.t" sh -c "cmr-query -j $TH -k 10 --nprobe $NPROBE '$T/pq.idx' '$T/q1.cmr' >/dev/null"
	fixed=$(sort -g "$T/s.t" | head -1)
	search=$(sort -g "$T/q.t" | awk -v f="$fixed" -v n="$NQ" 'NR == 1 { b = n / ($1 - f) } { w = n / ($1 - f) } END { printf "%.0f (%.0f)", b, w }')
	timeit "$T/qr.t" sh -c "cmr-query -j $TH -k 10 --nprobe $NPROBE --rerank $RERANK '$T/pqx.idx' '$T/q.cmr' >'$T/pqr.tsv'"
	codes=$(cmr-index info "$T/pq.idx" | sed -n 's/^bytes\/vector \([0-9.]*\).*/\1/p')
	bpv=$(cmr-index info "$T/pqx.idx" | sed -n 's/^bytes\/vector \([0-9.]*\).*/\1/p')
	set -- $(OMP_NUM_THREADS="$TH" OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 bench/faiss_ivfpq.py "$T/base.npy" \
		"$T/q.npy" "$NLIST" "$M" "$NPROBE" "$TH" "$SAMPLE" "$ITERS" "$RUNS")
	rows="$rows| $TH | IVF-PQ search, whole process | $(rate "$NQ" "$T/q.t") | $(recall "$T/exact.tsv" "$T/pq.tsv") | | |
| $TH | IVF-PQ search alone (whole process less its fixed $(printf %.2f "$fixed") s) | $search | | $1 ($2) | $3 |
| $TH | + exact re-ranking of the best $RERANK | $(rate "$NQ" "$T/qr.t") | $(recall "$T/exact.tsv" "$T/pqr.tsv") | | |
| $TH | build (train + add), seconds | $(secs "$T/build.t") | | $4 ($5) | |
"
	echo "threads=$TH done" >&2
done
section="<!-- ivfpq:begin -->
## IVF-PQ: cmr-index --ivf $NLIST --pq $M next to FAISS IndexIVFPQ, $N vectors

Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); load before the run $load.
Date: $(date -u +%Y-%m-%d). Command: \`sh bench/ivfpq.sh\` (build $(git describe --always --dirty 2>/dev/null || echo '?')).
Data (bench/mkreal.py): MobileNet v1 features of the Flickr8k training images, centred and
projected on their top $DIM principal axes, mixed in random pairs with Gaussian noise ($NOISE of
each axis's spread), unit length: $N base vectors; $NQ queries mixed from the held-out
images. nlist $NLIST, M $M sub-quantisers of 8 bits, nprobe $NPROBE, k-means trained on
$SAMPLE vectors, $ITERS iterations, k = 10; recall@10 against each tool's exact search. cmr-query
is timed as a whole process (start, mapping and checking the file, reading the queries,
writing TSV), and its search alone as that less the same process with one query (best of
each); FAISS's search call alone, its build as train + add from memory, its OpenMP
threads waiting passively. Best of $RUNS runs, the worst in brackets. Memory per vector: cmr
$codes bytes (codes and ordinal; $bpv with the exact vectors kept for re-ranking), FAISS $6
(codes and id).

| threads | | cmr queries/s | cmr recall@10 | FAISS queries/s | FAISS recall@10 |
|---|---|---|---|---|---|
$rows<!-- ivfpq:end -->"
write_section ivfpq "$section"
