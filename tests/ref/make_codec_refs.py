#!/usr/bin/python3
"""make_codec_refs.py - PNG and WebP fixtures for cmr-decode, and what PIL makes of them.

Writes tests/fixtures/images/*.png, *.webp (72 x 54 pixels, a gradient with noise): every
PNG colour type and bit depth (gray 1/2/4/8/16, gray+alpha 8/16, RGB 8/16, RGBA 8/16,
palette 4/8 bits with and without tRNS transparency, tRNS on RGB), an Adam7-interlaced one,
rows of all five filter types; lossy, lossless and lossy-with-alpha WebP. The PNGs that PIL
cannot write (16-bit, 2/4-bit gray, 4-bit palette, interlaced) come from the small writer
below, which also cycles the row filters.

Then the reference, PIL's Image.open(f).convert("RGB") (as Hugging Face's CLIP processor
does first), as two uint8 arrays in sorted file order: the images as decoded (N, 54, 72, 3),
and, for four of them (PRE96), CLIP's preprocessing at 96 pixels (shorter side to 96 with
Image.BICUBIC, center crop; tests/ref/pil_preprocess.py's resize_crop). Usage:
make_codec_refs.py FIXTURE_DIR OUT_DIR (writes OUT_DIR/none.npy, keys, 96.npy, keys96). Debian's python3-pil 9.4 and python3-numpy;
make check does not run Python (tests/ref/make-codec-refs.sh makes the goldens).
"""
import io
import os
import struct
import sys
import zlib

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pil_preprocess import resize_crop  # noqa: E402  the CLIP resize + crop of the other goldens

W, H = 72, 54
PRE96 = ["gray16", "lossy-alpha", "palette8-trns", "rgba8"]


def content(rng):
    y, x = np.mgrid[0:H, 0:W]
    r = 255 * x / (W - 1)
    g = 255 * y / (H - 1)
    b = 128 + 100 * np.sin(x / 5.0) * np.cos(y / 7.0)
    img = np.stack([r, g, b], -1) + rng.normal(0, 8, (H, W, 3))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def filtered(rows, bpp):
    """Rows of bytes, each with a filter byte: the five types in turn."""
    out, prev = b"", bytes(len(rows[0]))
    for i, row in enumerate(rows):
        ft = i % 5
        f = bytearray(len(row))
        for j, v in enumerate(row):
            a = row[j - bpp] if j >= bpp else 0
            b = prev[j]
            c = prev[j - bpp] if j >= bpp else 0
            pred = [0, a, b, (a + b) // 2, paeth(a, b, c)][ft]
            f[j] = (v - pred) & 0xFF
        out += bytes([ft]) + bytes(f)
        prev = row
    return out


def pack(samples, depth):
    """A row of samples (ints) at a bit depth, as PNG stores them."""
    if depth == 16:
        return b"".join(struct.pack(">H", int(v)) for v in samples)
    if depth == 8:
        return bytes(int(v) for v in samples)
    per = 8 // depth
    out = bytearray()
    for i in range(0, len(samples), per):
        byte = 0
        for k in range(per):
            v = int(samples[i + k]) if i + k < len(samples) else 0
            byte |= v << (8 - depth * (k + 1))
        out.append(byte)
    return bytes(out)


def write_png(path, a, ct, depth, plte=None, trns=None, interlace=False):
    """a: (H, W, channels) samples at depth."""
    chans = a.shape[2]
    bpp = max(1, chans * depth // 8)

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    def image_data(sub):
        rows = [pack(sub[y].reshape(-1), depth) for y in range(sub.shape[0])]
        return filtered(rows, bpp) if rows and rows[0] else b""

    if interlace:
        data = b""
        for x0, y0, dx, dy in [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
                               (0, 1, 1, 2)]:
            sub = a[y0::dy, x0::dx]
            if sub.shape[0] and sub.shape[1]:
                data += image_data(sub)
    else:
        data = image_data(a)
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", W, H, depth, ct, 0, 0, int(interlace)))
    if plte is not None:
        out += chunk(b"PLTE", plte)
    if trns is not None:
        out += chunk(b"tRNS", trns)
    out += chunk(b"IDAT", zlib.compress(data, 9)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(out)


def make_fixtures(d):
    rng = np.random.default_rng(7)
    rgb = content(rng)
    gray = np.rint(rgb @ [0.299, 0.587, 0.114]).astype(np.uint8)
    alpha = np.clip(np.rint(255 * np.mgrid[0:H, 0:W][1] / (W - 1)) + rng.integers(-40, 40, (H, W)), 0, 255)
    alpha[:, :6] = 0
    alpha = alpha.astype(np.uint8)
    wide = rng.integers(0, 65536, (H, W, 4)).astype(np.int64)
    wide[..., :3] = rgb.astype(np.int64) * 257 + rng.integers(-128, 128, (H, W, 3))
    wide = np.clip(wide, 0, 65535)
    os.makedirs(d, exist_ok=True)
    # PIL's own writer (adaptive filters)
    Image.fromarray(rgb, "RGB").save(f"{d}/rgb8.png")
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(f"{d}/rgba8.png")
    Image.fromarray(gray, "L").save(f"{d}/gray8.png")
    Image.fromarray(np.dstack([gray, alpha]), "LA").save(f"{d}/graya8.png")
    Image.fromarray(gray > 127).save(f"{d}/gray1.png")
    pal = Image.fromarray(rgb, "RGB").quantize(200)
    pal.save(f"{d}/palette8.png")
    tr = bytes(int(v) for v in rng.integers(0, 256, 200))
    pal.save(f"{d}/palette8-trns.png", transparency=tr)
    # the writer above: what PIL does not write, and every filter type
    write_png(f"{d}/gray2.png", (gray >> 6)[..., None], 0, 2)
    write_png(f"{d}/gray4.png", (gray >> 4)[..., None], 0, 4)
    small = Image.fromarray(rgb, "RGB").quantize(16)
    idx = np.asarray(small)
    p16 = bytes(small.getpalette()[:48])
    write_png(f"{d}/palette4.png", idx[..., None], 3, 4, plte=p16)
    write_png(f"{d}/palette4-trns.png", idx[..., None], 3, 4, plte=p16, trns=bytes(range(0, 160, 10)))
    write_png(f"{d}/rgb8-trns.png", rgb, 2, 8, trns=struct.pack(">HHH", *[int(v) for v in rgb[0, 0]]))
    write_png(f"{d}/rgb8-adam7.png", rgb, 2, 8, interlace=True)
    write_png(f"{d}/rgb16.png", wide[..., :3], 2, 16)
    write_png(f"{d}/rgba16.png", wide, 6, 16)
    g16 = np.clip(gray.astype(np.int64) * 3 - 200, 0, 65535)  # values below and above 255
    write_png(f"{d}/gray16.png", g16[..., None], 0, 16)
    write_png(f"{d}/graya16.png", np.dstack([wide[..., 0], wide[..., 3]]), 4, 16)
    write_png(f"{d}/gray16-adam7.png", (wide[..., 1] >> 4)[..., None], 0, 16, interlace=True)
    # WebP through PIL (libwebp)
    Image.fromarray(rgb, "RGB").save(f"{d}/lossy.webp", quality=80)
    Image.fromarray(rgb, "RGB").save(f"{d}/lossless.webp", lossless=True)
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(f"{d}/lossy-alpha.webp", quality=70)


def main():
    fix, out = sys.argv[1], sys.argv[2]
    make_fixtures(fix)
    names = sorted(n for n in os.listdir(fix) if n.endswith((".png", ".webp")))
    none, s96 = [], []
    for n in names:
        with open(f"{fix}/{n}", "rb") as f:
            img = Image.open(io.BytesIO(f.read())).convert("RGB")
        none.append(np.asarray(img, dtype=np.uint8))
        if n.split(".")[0] in PRE96:
            s96.append(np.asarray(resize_crop(img, 96), dtype=np.uint8))
    np.save(f"{out}/none.npy", np.stack(none))
    np.save(f"{out}/96.npy", np.stack(s96))
    with open(f"{out}/keys", "w") as f:
        f.writelines(n.split(".")[0] + "\n" for n in names)
    with open(f"{out}/keys96", "w") as f:
        f.writelines(k + "\n" for k in PRE96)


if __name__ == "__main__":
    main()
