#!/bin/sh
# index.sh - queries/s of cmr-query on flat and IVF indexes of 100k and 1M clustered random
# vectors of dimension 512 (tests/tools/mkvec), with recall@10 against exact search, next to
# FAISS IndexFlatIP and IndexIVFFlat (Debian python3-faiss) with the same nlist, nprobe,
# training sample, k-means iterations and threads, in the same run. Writes its section of
# bench/RESULTS.md. Needs a built tree (make check builds mkvec) and python3-faiss.
set -eu
. bench/lib.sh
PATH=$PWD/build/bin:$PATH
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
TH=$(nproc)
NQ=1000
NPROBE=16
ITERS=10
now() { date +%s.%N; }
rows=""
for N in 100000 1000000; do
	NLIST=$([ $N -gt 100000 ] && echo 1024 || echo 256)
	SAMPLE=$((64 * NLIST))
	build/tests/mkvec $N 512 2000 1.4 1 >"$T/base.cmr"
	build/tests/mkvec $((N + NQ)) 512 2000 1.4 1 v $N >"$T/q.cmr"
	t0=$(now)
	cmr-index -o "$T/flat.idx" "$T/base.cmr"
	t1=$(now)
	cmr-index --ivf $NLIST --sample $SAMPLE --iter $ITERS -o "$T/ivf.idx" "$T/base.cmr"
	t2=$(now)
	cmr-query -j $TH -k 10 "$T/flat.idx" "$T/q.cmr" >"$T/exact.tsv"
	t3=$(now)
	cmr-query -j $TH -k 10 --nprobe $NPROBE "$T/ivf.idx" "$T/q.cmr" >"$T/ivf.tsv"
	t4=$(now)
	rec=$(awk -F'\t' 'NR == FNR { a[$1 " " $3] = 1; next } ($1 " " $3) in a { h++ } END { printf "%.4f", h / FNR }' "$T/exact.tsv" "$T/ivf.tsv")
	fq=$(echo "$NQ / ($t3 - $t2)" | bc -l)
	iq=$(echo "$NQ / ($t4 - $t3)" | bc -l)
	bi=$(echo "$t2 - $t1" | bc -l)
	cmr-dump to-npy -o "$T/base.npy" "$T/base.cmr"
	cmr-dump to-npy -o "$T/q.npy" "$T/q.cmr"
	rm -f "$T/base.cmr" "$T/flat.idx" "$T/ivf.idx"
	set -- $(OMP_NUM_THREADS=$TH /usr/bin/python3 bench/faiss_peer.py "$T/base.npy" "$T/q.npy" $NLIST $NPROBE $TH $SAMPLE $ITERS "$T/fx.npy")
	rows="$rows| $N | flat | $(printf '%.0f' "$fq") | 1 (exact) | $(printf '%.0f' "$1") | 1 (exact) |
| $N | IVF nlist $NLIST, nprobe $NPROBE | $(printf '%.0f' "$iq") | $rec | $(printf '%.0f' "$2") | $3 |
"
	echo "N=$N: cmr IVF build $(printf '%.1f' "$bi") s" >&2
	rm -f "$T"/*.npy "$T"/*.tsv "$T"/*.cmr
done
section="<!-- index:begin -->
## cmr-index / cmr-query: queries/s at dimension 512, k = 10

Machine: $TH cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //').
Date: $(date -u +%Y-%m-%d). Command: \`sh bench/index.sh\`. Data: tests/tools/mkvec clustered
unit vectors (2000 clusters, noise 1.4), $NQ held-out queries from the same clusters;
k-means trained on 64 vectors per list, $ITERS iterations. cmr-query is timed as a whole
process (mapping and checking the index file included) with -j $TH; recall@10 is against the
same tool's exact (flat) search. Peer: FAISS $(/usr/bin/python3 -c 'import faiss; print(faiss.__version__)')
IndexFlatIP / IndexIVFFlat (inner product) with the same nlist, nprobe, training sample size
and iterations, $TH OpenMP threads, search call timed, in the same run.

| vectors | index | cmr queries/s | cmr recall@10 | FAISS queries/s | FAISS recall@10 |
|---|---|---|---|---|---|
$rows<!-- index:end -->"
write_section index "$section"
