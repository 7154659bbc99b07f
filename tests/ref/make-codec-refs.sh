#!/bin/sh
# make-codec-refs.sh - regenerates the PNG and WebP fixtures (tests/fixtures/images) and
# PIL's decoding of them (tests/golden/decode/pil-codecs.cmr: convert("RGB") as decoded,
# then four at 96 pixels with CLIP's preprocessing), with
# tests/ref/make_codec_refs.py. Needs Debian's python3-pil and python3-numpy, and a built
# cmr-dump. Run from the top of the tree.
set -eu
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
rm -rf tests/fixtures/images
/usr/bin/python3 tests/ref/make_codec_refs.py tests/fixtures/images "$T"
build/bin/cmr-dump from-npy --kind image --keys "$T/keys" --no-provenance -z 19 "$T/none.npy" >"$T/none.cmr"
build/bin/cmr-dump from-npy --kind image --keys "$T/keys96" --no-provenance -z 19 "$T/96.npy" >"$T/96.cmr"
cat "$T/none.cmr" "$T/96.cmr" >tests/golden/decode/pil-codecs.cmr
