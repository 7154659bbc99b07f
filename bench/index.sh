#!/bin/sh
# index.sh - queries/s of cmr-query on flat and IVF indexes of 100k and 1M clustered random
# vectors of dimension 512 (tests/tools/mkvec), with recall@10 against exact search, and the
# IVF build time, at 1 and 2 threads, next to FAISS IndexFlatIP and IndexIVFFlat (Debian
# python3-faiss) with the same nlist, nprobe, training sample, k-means iterations and threads,
# in the same run. Every figure is the best of RUNS (default 3) with the spread (worst). FAISS
# runs with OMP_WAIT_POLICY=PASSIVE (its idle OpenMP threads otherwise spin against
# OpenBLAS's). Writes its section of bench/RESULTS.md. Needs a built tree (make check builds
# mkvec) and python3-faiss. SIZES="100000" for a shorter run.
set -eu
. bench/lib.sh
PATH=$PWD/build/bin:$PATH
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
RUNS=${RUNS:-3}
SIZES=${SIZES:-100000 1000000}
THREADS=${THREADS:-1 2}
NQ=1000
NPROBE=16
ITERS=10
load=$(cut -d' ' -f1-3 /proc/loadavg)
rows=""
for N in $SIZES; do
	NLIST=$([ "$N" -gt 100000 ] && echo 1024 || echo 256)
	SAMPLE=$((64 * NLIST))
	build/tests/mkvec "$N" 512 2000 1.4 1 >"$T/base.cmr"
	build/tests/mkvec $((N + NQ)) 512 2000 1.4 1 v "$N" >"$T/q.cmr"
	cmr-index -q -o "$T/flat.idx" "$T/base.cmr"
	cmr-dump to-npy -o "$T/base.npy" "$T/base.cmr"
	cmr-dump to-npy -o "$T/q.npy" "$T/q.cmr"
	for TH in $THREADS; do
		rm -f "$T"/*.t
		timeit "$T/build.t" env OMP_NUM_THREADS="$TH" cmr-index -q --ivf "$NLIST" --sample "$SAMPLE" --iter "$ITERS" \
			-o "$T/ivf.idx" "$T/base.cmr"
		timeit "$T/flat.t" sh -c "cmr-query -j $TH -k 10 '$T/flat.idx' '$T/q.cmr' >'$T/exact.tsv'"
		timeit "$T/ivf.t" sh -c "cmr-query -j $TH -k 10 --nprobe $NPROBE '$T/ivf.idx' '$T/q.cmr' >'$T/ivf.tsv'"
		rec=$(recall "$T/exact.tsv" "$T/ivf.tsv")
		set -- $(OMP_NUM_THREADS="$TH" OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 bench/faiss_peer.py "$T/base.npy" \
			"$T/q.npy" "$NLIST" "$NPROBE" "$TH" "$SAMPLE" "$ITERS" "$RUNS")
		rows="$rows| $N | $TH | flat | $(rate $NQ "$T/flat.t") | 1 (exact) | $1 ($2) | 1 (exact) |
| $N | $TH | IVF nlist $NLIST, nprobe $NPROBE | $(rate $NQ "$T/ivf.t") | $rec | $3 ($4) | $5 |
| $N | $TH | IVF build (train + add), seconds | $(secs "$T/build.t") | | $6 ($7) | |
"
		echo "N=$N threads=$TH done" >&2
	done
	rm -f "$T"/*.npy "$T"/*.tsv "$T"/*.cmr "$T"/*.idx
done
section="<!-- index:begin -->
## cmr-index / cmr-query: queries/s at dimension 512, k = 10

Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); load before the run $load.
Date: $(date -u +%Y-%m-%d). Command: \`sh bench/index.sh\` (build $(git describe --always --dirty 2>/dev/null || echo '?')).
Data: tests/tools/mkvec clustered unit vectors (2000 clusters, noise 1.4), $NQ held-out queries
from the same clusters; k-means trained on 64 vectors per list, $ITERS iterations. Each figure
is the best of $RUNS runs, the worst in brackets. cmr-query is timed as a whole process
(start, mapping and checksumming the index file, reading the queries, writing TSV) with -j
THREADS; cmr-index's build as a whole process (reading the stream, writing the file) with
OMP_NUM_THREADS. recall@10 is against the same tool's exact (flat) search. Peer: FAISS
$(/usr/bin/python3 -c 'import faiss; print(faiss.__version__)') IndexFlatIP / IndexIVFFlat (inner product) with the same nlist, nprobe, training
sample and iterations, THREADS OpenMP threads waiting passively (\`OMP_WAIT_POLICY=PASSIVE\`:
its best setting here), the search call alone timed, and the build as train + add from
memory, in the same run.

| vectors | threads | index | cmr queries/s | cmr recall@10 | FAISS queries/s | FAISS recall@10 |
|---|---|---|---|---|---|---|
$rows<!-- index:end -->"
write_section index "$section"
