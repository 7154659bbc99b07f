#!/usr/bin/python3
"""mkreal.py - vectors with a real embedding distribution for bench/ivfpq.sh: MobileNet v1
features of Flickr8k images (1024-d, cmr-encode with the TFLite embedding extractor),
centred on their mean and projected on their top DIM principal axes (as the Deep1B set is
GoogLeNet features PCA'd to 96), then mixed: each vector is a * f_i + (1 - a) * f_j + noise
for two random images i, j, a uniform in [0, 1] and Gaussian noise of NOISE times the
per-axis spread, made unit length. Base vectors mix the training images, queries the
held-out ones (so no query is a base vector's neighbour by construction).
Usage: mkreal.py TRAIN.npy TEST.npy N NQ DIM NOISE BASE.npy QUERIES.npy [SEED]"""
import sys

import numpy as np


def mix(f, n, noise, rng, chunk=100000):
    out = np.empty((n, f.shape[1]), dtype=np.float32)
    sd = f.std(axis=0)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        i, j = rng.integers(0, len(f), m), rng.integers(0, len(f), m)
        a = rng.random((m, 1), dtype=np.float32)
        x = a * f[i] + (1 - a) * f[j] + noise * sd * rng.standard_normal((m, f.shape[1]), dtype=np.float32)
        out[s:s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def main():
    train, test, n, nq, dim, noise, base_out, q_out = sys.argv[1:9]
    seed = int(sys.argv[9]) if len(sys.argv) > 9 else 1
    n, nq, dim, noise = int(n), int(nq), int(dim), float(noise)
    rng = np.random.default_rng(seed)
    tr = np.load(train).astype(np.float64).reshape(len(np.load(train)), -1)
    te = np.load(test).astype(np.float64).reshape(len(np.load(test)), -1)
    mean = tr.mean(axis=0)
    _, _, vt = np.linalg.svd(tr - mean, full_matrices=False)
    p = vt[:dim].T
    ftr, fte = ((tr - mean) @ p).astype(np.float32), ((te - mean) @ p).astype(np.float32)
    np.save(base_out, mix(ftr, n, noise, rng))
    np.save(q_out, mix(fte, nq, noise, rng))


if __name__ == "__main__":
    main()
