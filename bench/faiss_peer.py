#!/usr/bin/python3
"""faiss_peer.py - the peer of cmr-index/cmr-query in bench/index.sh: FAISS (Debian
python3-faiss) IndexFlatIP and IndexIVFFlat with the same parameters on the same vectors.
Usage: faiss_peer.py BASE.npy QUERIES.npy NLIST NPROBE THREADS TRAIN_SAMPLE ITERS EXACT_OUT.npy
Prints: flat_qps ivf_qps ivf_recall@10 (against FAISS's own flat search)."""
import sys
import time

import faiss
import numpy as np


def main():
    base, queries, nlist, nprobe, threads, sample, iters, out = sys.argv[1:9]
    nlist, nprobe, threads, sample, iters = int(nlist), int(nprobe), int(threads), int(sample), int(iters)
    faiss.omp_set_num_threads(threads)
    xb = np.load(base, mmap_mode="r").astype(np.float32)
    xq = np.load(queries).astype(np.float32)
    d = xb.shape[1]
    flat = faiss.IndexFlatIP(d)
    flat.add(xb)
    t0 = time.perf_counter()
    _, exact = flat.search(xq, 10)
    flat_qps = len(xq) / (time.perf_counter() - t0)
    np.save(out, exact)
    quant = faiss.IndexFlatIP(d)
    ivf = faiss.IndexIVFFlat(quant, d, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.niter = iters
    rng = np.random.default_rng(1)
    ivf.train(xb[np.sort(rng.choice(len(xb), min(sample, len(xb)), replace=False))])
    ivf.add(xb)
    ivf.nprobe = nprobe
    t0 = time.perf_counter()
    _, got = ivf.search(xq, 10)
    ivf_qps = len(xq) / (time.perf_counter() - t0)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, got)])
    print("%.1f %.1f %.4f" % (flat_qps, ivf_qps, recall))


if __name__ == "__main__":
    main()
