#!/bin/sh
# make-prompt-goldens.sh - regenerates tests/golden/prompt/*.safetensors: the prompted forward
# pass and the prompts' gradients that tests/ref/prompt_reference.py (PyTorch autograd, Debian
# python3-torch) computes for mkclip's checkpoints on mkclip's random records:
#   tiny-shallow  tiny model, 8 text and 3 vision prompts, 4 pairs (one caption cut)
#   tiny-deep     the same, deep
#   b32-shallow   ViT-B/32-shaped model, 8 text and 8 vision prompts, 2 pairs
#   tiny-pool     tiny model, a pool of 5 prompts of 2 rows, top 3, 4 pairs, 3 description
#                 perspectives (one image lacks one), weights 0.3, 0.5, margin 0.2, pull 0.5
#                 (tests/ref/pool_reference.py; larger than the defaults, so that every term
#                 shows in the gradients)
#   tiny-adapter-{parallel,sequential,lora}   tiny model, adapters of width (rank) 8 (vision)
#                 and 4 (text), random values (tests/ref/adapter_reference.py)
#   tiny-adapter-lora-head   the same LoRA, with multi-level attention over 2 layers and
#                 injection from 1 (width 8) on both heads, gates open
#   tiny-adapter-none-head   those head modules alone on the frozen base
# Needs a built tree (make check builds mkclip). Run from the top of the tree. The record
# seeds here are tests/cli/t91-prompt.sh's.
set -eu
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
M=build/tests/mkclip
G=tests/golden/prompt
R=tests/ref/prompt_reference.py
$M model "$T/tiny" tiny
$M images 4 32 8 >"$T/i.cmr"
$M tokens 4 8 >"$T/t.cmr"
/usr/bin/python3 $R "$T/tiny" "$T/i.cmr" "$T/t.cmr" $G/tiny-shallow.safetensors 8 3 0 1
/usr/bin/python3 $R "$T/tiny" "$T/i.cmr" "$T/t.cmr" $G/tiny-deep.safetensors 8 3 1 2
$M descs 4 3 9 >"$T/d.cmr"
/usr/bin/python3 tests/ref/pool_reference.py "$T/tiny" "$T/i.cmr" "$T/t.cmr" "$T/d.cmr" $G/tiny-pool.safetensors \
	5 2 3 4 0.3 0.5 0.2 0.5
for k in parallel sequential lora; do
	/usr/bin/python3 tests/ref/adapter_reference.py "$T/tiny" "$T/i.cmr" "$T/t.cmr" $G/tiny-adapter-$k.safetensors $k 8 4 5
done
/usr/bin/python3 tests/ref/adapter_reference.py "$T/tiny" "$T/i.cmr" "$T/t.cmr" $G/tiny-adapter-lora-head.safetensors lora 8 4 5 \
	2 1 8
/usr/bin/python3 tests/ref/adapter_reference.py "$T/tiny" "$T/i.cmr" "$T/t.cmr" $G/tiny-adapter-none-head.safetensors none 0 0 6 \
	2 1 8
$M model "$T/b32" b32
$M images 2 224 3 >"$T/bi.cmr"
$M tokens 2 3 >"$T/bt.cmr"
/usr/bin/python3 $R "$T/b32" "$T/bi.cmr" "$T/bt.cmr" $G/b32-shallow.safetensors 8 8 0 3
