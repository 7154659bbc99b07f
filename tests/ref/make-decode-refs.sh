#!/bin/sh
# make-decode-refs.sh - regenerates tests/golden/decode/pil96.cmr, PIL's CLIP preprocessing
# (tests/ref/pil_preprocess.py) of 24 real photos at 96 pixels: the first 12 of
# ../shared/data/flickr8k-fullres/fullres.tar (500x375 and 375x500) and the first 12 of
# ../shared/data/coco-mini/val2017.tar (640x480, 640x427, 480x640, ...). Needs Debian's
# python3-pil and python3-numpy, and a built cmr-dump. Run from the top of the tree.
set -eu
S=../shared/data
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
for a in flickr8k-fullres/fullres.tar coco-mini/val2017.tar; do
	n=$(basename "$a" .tar)
	/usr/bin/python3 tests/ref/pil_preprocess.py 96 "$T/$n.npy" "$T/$n.keys" "$S/$a" \
		$(tar tf "$S/$a" | head -12)
	build/bin/cmr-dump from-npy --kind image --keys "$T/$n.keys" --no-provenance -z 19 \
		"$T/$n.npy" >"$T/$n.cmr"
done
cat "$T/fullres.cmr" "$T/val2017.cmr" >tests/golden/decode/pil96.cmr
