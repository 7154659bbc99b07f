#!/usr/bin/python3
"""pil_decode.py - the peer of cmr-decode in bench/decode.sh: PIL decode + CLIP resize
(bicubic, shorter side) + center crop of every JPEG of a tar, in PROCS processes.
Usage: pil_decode.py ARCHIVE SIZE PROCS   -> prints images/s (reading the tar included)."""
import io
import sys
import tarfile
import time
from multiprocessing import Pool

from PIL import Image


def work(args):
    data, size = args
    img = Image.open(io.BytesIO(data))
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    nl = int(size * long / short)
    nw, nh = (size, nl) if w <= h else (nl, size)
    img = img.resize((nw, nh), Image.BICUBIC)
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    img = img.crop((left, top, left + size, top + size)).convert("RGB")
    return len(img.tobytes())


def main():
    archive, size, procs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    t0 = time.perf_counter()
    with tarfile.open(archive) as tar:
        jobs = [(tar.extractfile(m).read(), size) for m in tar.getmembers()
                if m.isfile() and m.name.lower().endswith((".jpg", ".jpeg"))]
    if procs == 1:
        n = sum(1 for _ in map(work, jobs))
    else:
        with Pool(procs) as pool:
            n = sum(1 for _ in pool.imap(work, jobs, chunksize=16))
    dt = time.perf_counter() - t0
    print("%.1f" % (n / dt))


if __name__ == "__main__":
    main()
