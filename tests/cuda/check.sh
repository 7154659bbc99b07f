#!/bin/sh
# check.sh - the cross-backend tests on a machine with an NVIDIA GPU (make check-cuda, and
# tests/cuda/device-check.sh): the unit tests (a model placed on cuda against the host
# reference: fp32 within 1e-5, tf32 and bf16 within 1e-2) and the shell tests that run every
# backend that can start, cuda included (t85 fails instead of skipping when it cannot).
# Usage: sh tests/cuda/check.sh [BUILD_DIR]
BUILD=${1:-build}
CMR_REQUIRE_CUDA=1 exec sh "$(dirname "$0")/../run.sh" "$BUILD" t85-device t90-encode t91-prompt t98-train
