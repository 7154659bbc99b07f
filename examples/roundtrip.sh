#!/bin/sh
# roundtrip.sh - the first cmr pipeline: NumPy embeddings -> cmr stream -> look inside ->
# back to NumPy, bit for bit.  Run from the top of the source tree after make:
#     sh examples/roundtrip.sh
set -eu
cd "$(dirname "$0")/.."
PATH=$PWD/build/bin:$PATH
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# 6 image embeddings (8-d, unit length) with their image keys -> a stream
cmr-dump from-npy --kind embedding --keys examples/embeddings.keys examples/embeddings.npy \
	> "$out/emb.cmr"

echo "== records"
cmr-dump list "$out/emb.cmr"
echo "== provenance"
cmr-dump meta "$out/emb.cmr"
echo "== one embedding"
cmr-dump show -k 1000268201_693b08cb0e "$out/emb.cmr"

# back to .npy: the same bytes NumPy wrote
cmr-dump to-npy -o "$out/again.npy" --keys "$out/again.keys" "$out/emb.cmr"
cmp examples/embeddings.npy "$out/again.npy"
cmp examples/embeddings.keys "$out/again.keys"
echo "== round trip through .npy is bit-identical"
