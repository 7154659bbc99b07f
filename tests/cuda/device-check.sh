#!/bin/sh
# device-check.sh - one run on the GPU machine (the device tool), under 8 minutes on an H100
# or H200: the CUDA backend's tests (tests/cuda/check.sh), then bench/gpu.sh next to PyTorch,
# whose bench/RESULTS.md section and logs go to $OUT. Uses the programs of .devpack (made here
# by tests/cuda/prepare.sh and carried), or builds with make where the machine can.
#   run: sh tests/cuda/device-check.sh   carry: [".devpack"]   timeout_s: 560
set -u
OUT=${OUT:-$(mktemp -d)}
cd "$(dirname "$0")/../.."
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
if [ -f .devpack/pack.tar.xz ]; then
	D=$(mktemp -d)
	tar -C "$D" -xJf .devpack/pack.tar.xz
	BUILD=$D/build
	export LD_LIBRARY_PATH="$D/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
else
	make -j"$(nproc)" >"$OUT/build.log" 2>&1 || { tail -20 "$OUT/build.log"; exit 1; }
	BUILD=build
fi
"$BUILD/bin/cmr-encode" --backend list | tee "$OUT/backends.txt"
sh tests/cuda/check.sh "$BUILD" >"$OUT/check.log" 2>&1
rc=$?
grep -v '^PASS' "$OUT/check.log" | tail -40
echo "check-cuda: status $rc, $(($(date +%s) - t0)) s"
sh bench/gpu.sh "$BUILD" >"$OUT/bench.log" 2>&1
cat "$OUT/bench.log"
sed -n '/<!-- gpu:begin -->/,/<!-- gpu:end -->/p' bench/RESULTS.md >"$OUT/RESULTS-gpu.md"
echo "done in $(($(date +%s) - t0)) s"
exit $rc
