#!/bin/sh
# make-soft-goldens.sh - regenerates tests/golden/soft/losses.safetensors: the soft contrastive
# transfer and distillation losses and their gradients that tests/ref/soft_reference.py
# (PyTorch autograd, Debian python3-torch) computes on its own random embeddings (seed 7).
# Checked by tests/unit/test_grad.c. Run from the top of the tree.
set -eu
mkdir -p tests/golden/soft
/usr/bin/python3 tests/ref/soft_reference.py tests/golden/soft/losses.safetensors 7
