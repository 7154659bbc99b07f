#!/usr/bin/python3
"""faiss_ivfpq.py - the peer of cmr-index --ivf --pq in bench/ivfpq.sh: FAISS (Debian
python3-faiss) IndexIVFPQ, inner product, with the same nlist, M, 8 bits, training sample,
iterations, nprobe and threads on the same vectors.
Usage: faiss_ivfpq.py BASE.npy QUERIES.npy NLIST M NPROBE THREADS SAMPLE ITERS RUNS
Prints one line: qps_best qps_worst recall@10 build_s_best build_s_worst bytes_per_vector
(recall against FAISS's exact IndexFlatIP search; the search call alone timed, the build as
train + add from memory; bytes per vector: the codes and the 8-byte id of an inverted list
entry). Run with OMP_WAIT_POLICY=PASSIVE, as bench/ivfpq.sh does."""
import sys

import faiss
import numpy as np

from faiss_peer import timed  # bench/ is the script's directory: on sys.path


def main():
    base, queries, nlist, m, nprobe, threads, sample, iters, runs = sys.argv[1:10]
    nlist, m, nprobe, threads, sample, iters, runs = (int(v) for v in (nlist, m, nprobe, threads, sample, iters,
                                                                          runs))
    faiss.omp_set_num_threads(threads)
    xb = np.ascontiguousarray(np.load(base, mmap_mode="r"), dtype=np.float32)
    xq = np.ascontiguousarray(np.load(queries), dtype=np.float32)
    d, nq = xb.shape[1], len(xq)
    flat = faiss.IndexFlatIP(d)
    flat.add(xb)
    _, exact = flat.search(xq, 10)
    del flat
    rng = np.random.default_rng(1)
    train = xb[np.sort(rng.choice(len(xb), min(sample, len(xb)), replace=False))]

    def build():
        ix = faiss.IndexIVFPQ(faiss.IndexFlatIP(d), d, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
        ix.cp.niter = iters
        ix.train(train)
        ix.add(xb)
        return ix
    bb, bw, ix = timed(runs, build)
    ix.nprobe = nprobe
    qb, qw, (_, got) = timed(runs, lambda: ix.search(xq, 10))
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, got)])
    print("%.0f %.0f %.4f %.1f %.1f %d" % (nq / qb, nq / qw, recall, bb, bw, ix.code_size + 8))


if __name__ == "__main__":
    main()
