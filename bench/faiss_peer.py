#!/usr/bin/python3
"""faiss_peer.py - the peer of cmr-index/cmr-query in bench/index.sh: FAISS (Debian
python3-faiss) IndexFlatIP and IndexIVFFlat with the same parameters on the same vectors.
Usage: faiss_peer.py BASE.npy QUERIES.npy NLIST NPROBE THREADS TRAIN_SAMPLE ITERS RUNS
Each search and the IVF build (train + add) runs RUNS times. Prints one line:
flat_qps_best flat_qps_worst ivf_qps_best ivf_qps_worst ivf_recall@10 build_s_best build_s_worst
(recall against FAISS's own flat search). Run it with OMP_WAIT_POLICY=PASSIVE (bench/index.sh
does): with OpenMP's default spinning its idle threads fight OpenBLAS's for the cores."""
import sys
import time

import faiss
import numpy as np


def timed(runs, fn):
    """(best, worst) seconds of runs calls of fn, and its last result"""
    ts, out = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t0)
    return min(ts), max(ts), out


def main():
    base, queries, nlist, nprobe, threads, sample, iters, runs = sys.argv[1:9]
    nlist, nprobe, threads, sample, iters, runs = (int(nlist), int(nprobe), int(threads), int(sample), int(iters),
                                                   int(runs))
    faiss.omp_set_num_threads(threads)
    xb = np.ascontiguousarray(np.load(base, mmap_mode="r"), dtype=np.float32)
    xq = np.ascontiguousarray(np.load(queries), dtype=np.float32)
    d, nq = xb.shape[1], len(xq)
    flat = faiss.IndexFlatIP(d)
    flat.add(xb)
    fb, fw, (_, exact) = timed(runs, lambda: flat.search(xq, 10))
    del flat
    rng = np.random.default_rng(1)
    train = xb[np.sort(rng.choice(len(xb), min(sample, len(xb)), replace=False))]

    def build():
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.cp.niter = iters
        ivf.train(train)
        ivf.add(xb)
        return ivf
    bb, bw, ivf = timed(runs, build)
    ivf.nprobe = nprobe
    ib, iw, (_, got) = timed(runs, lambda: ivf.search(xq, 10))
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, got)])
    print("%.0f %.0f %.0f %.0f %.4f %.1f %.1f" % (nq / fb, nq / fw, nq / ib, nq / iw, recall, bb, bw))


if __name__ == "__main__":
    main()
