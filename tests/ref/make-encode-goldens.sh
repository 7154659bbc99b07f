#!/bin/sh
# make-encode-goldens.sh - regenerates tests/golden/encode/{tiny,b32}.cmr: the embeddings that
# tests/ref/clip_reference.py (PyTorch, Debian python3-torch) computes for the random
# checkpoints and inputs of tests/tools/mkclip (7 images, then 7 token sequences). Needs a
# built tree (make check builds mkclip). Run from the top of the tree.
set -eu
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
M=build/tests/mkclip
for preset in tiny b32; do
	size=32
	[ $preset = b32 ] && size=224
	mkdir "$T/$preset"
	$M model "$T/$preset" $preset
	$M images 7 $size 3 >"$T/i.cmr"
	$M tokens 7 4 >"$T/t.cmr"
	for x in i t; do
		/usr/bin/python3 tests/ref/clip_reference.py "$T/$preset" "$T/$x.cmr" "$T/$x.npy" "$T/$x.keys"
		build/bin/cmr-dump from-npy --kind embedding --keys "$T/$x.keys" --no-provenance "$T/$x.npy" >"$T/$x.out"
	done
	cat "$T/i.out" "$T/t.out" >tests/golden/encode/$preset.cmr
	rm -rf "$T/$preset"
done
