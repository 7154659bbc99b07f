#!/bin/sh
# prepare.sh - here, before a device run (the device tool): the programs of this build
# (stripped) and the shared libraries they load beyond the C library, packed into
# .devpack/pack.tar.xz (git-ignored: name .devpack in the run's carry). The GPU machine has
# CUDA and PyTorch but not this project's Debian libraries, and nothing can be installed there.
# Usage: sh tests/cuda/prepare.sh   (after make; CUDA=1 builds, which nvcc makes the default)
set -eu
cd "$(dirname "$0")/../.."
make -s -j"$(nproc)" all build/tests/unit build/tests/mkclip build/tests/traincheck build/tests/promptcheck build/tests/mkgolden >/dev/null
[ -f build/obj/lib/backend/cuda/cuda.o ] ||
	{ echo "prepare.sh: build/ has no CUDA backend (make CUDA=1)" >&2; exit 1; }
P=$(mktemp -d)
trap 'rm -rf "$P"' EXIT
mkdir -p "$P/build/bin" "$P/build/tests" "$P/lib"
cp build/bin/* "$P/build/bin/"
for t in build/tests/*; do [ -f "$t" ] && [ -x "$t" ] && cp "$t" "$P/build/tests/"; done
strip "$P"/build/bin/* "$P"/build/tests/* 2>/dev/null || true
# the libraries, not glibc's own (the GPU machine's are as new or newer)
for b in "$P"/build/bin/* "$P"/build/tests/*; do ldd "$b" 2>/dev/null; done | awk '/=> \// { print $3 }' | sort -u |
	grep -v -E '/(libc|libm|libdl|librt|libpthread|ld-linux[^/]*|libstdc\+\+|libgcc_s)\.so' | while read -r l; do
	cp -L "$l" "$P/lib/"
done
mkdir -p .devpack
tar -C "$P" -cJf .devpack/pack.tar.xz build lib
ls -la .devpack/pack.tar.xz
