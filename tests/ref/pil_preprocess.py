#!/usr/bin/python3
"""pil_preprocess.py - reference CLIP image preprocessing with PIL, for cmr-decode's goldens.

What OpenAI CLIP's _transform does with torchvision on a PIL image (Resize(S, BICUBIC),
CenterCrop(S), convert('RGB')), written out with PIL alone: the shorter side goes to S and
the longer to int(S * long / short) with Image.resize(..., BICUBIC), then the center S x S
crop at int(round((size - S) / 2.0)). EXIF orientation is applied first (cmr-decode's
default; CLIP itself ignores it, as cmr-decode --no-exif does).

Usage: pil_preprocess.py SIZE OUT.npy OUT.keys ARCHIVE.tar [MEMBER...]
Writes the images as one uint8 array (N, S, S, 3) and their keys, for cmr-dump from-npy.
Run once to make the committed goldens; make check does not run Python.
"""
import io
import sys
import tarfile

import numpy as np
from PIL import Image, ImageOps


def resize_crop(img, size):
    """The shorter side to size with Image.BICUBIC, then the center size x size crop."""
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    nw, nh = (new_short, new_long) if w <= h else (new_long, new_short)
    img = img.resize((nw, nh), Image.BICUBIC)
    top = int(round((nh - size) / 2.0))
    left = int(round((nw - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def preprocess(data, size):
    img = Image.open(io.BytesIO(data))
    img = ImageOps.exif_transpose(img)
    img = resize_crop(img, size).convert("RGB")
    return np.asarray(img, dtype=np.uint8)


def main():
    size, out_npy, out_keys, archive = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    wanted = sys.argv[5:]
    arrays, keys = [], []
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers() if m.isfile()}
        for name in wanted or list(members):
            data = tar.extractfile(members[name]).read()
            arrays.append(preprocess(data, size))
            keys.append(name.rsplit("/", 1)[-1].split(".")[0])
    np.save(out_npy, np.stack(arrays))
    with open(out_keys, "w") as f:
        f.writelines(k + "\n" for k in keys)


if __name__ == "__main__":
    main()
