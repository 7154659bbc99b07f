#!/bin/sh
# make-train-goldens.sh - regenerates tests/golden/train/tiny-debug.safetensors: the loss, every
# parameter's gradient and 10 AdamW-step losses that tests/ref/train_reference.py (PyTorch
# autograd, Debian python3-torch) computes for mkclip's tiny checkpoint (quick_gelu, then gelu)
# on 4 random images and 4 random token sequences. Needs a built tree (make check builds
# mkclip). Run from the top of the tree.
set -eu
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
M=build/tests/mkclip
$M images 4 32 5 >"$T/i.cmr"
$M tokens 4 6 >"$T/t.cmr"
for act in quick_gelu gelu; do
	$M model "$T/m" tiny --act $act
	/usr/bin/python3 tests/ref/train_reference.py "$T/m" "$T/i.cmr" "$T/t.cmr" tests/golden/train/tiny-$act.safetensors
	rm -rf "$T/m"
done
