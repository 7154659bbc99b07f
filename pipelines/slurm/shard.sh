#!/bin/sh
# shard.sh - one shard's work, the same under Slurm (encode-index.sbatch) and make
# (pipelines/shards.mk): decode an image archive, embed it, index it.
#   shard.sh N ARCHIVE OUT
# writes OUT/emb/N.cmr and OUT/idx/N.idx (N: the shard's 5-digit number, its line in the
# shard list counted from 0, so that the merge keeps the list's order).
# Environment: MODEL (checkpoint directory, required), INDEX_OPTS (cmr-index options, e.g.
# "--quantizer q.idx" for IVF shards that merge), THREADS (per tool, default 1).
set -eu
[ $# -eq 3 ] || { echo "usage: shard.sh N ARCHIVE OUT" >&2; exit 2; }
n=$1 archive=$2 out=$3
: "${MODEL:?set MODEL to the checkpoint directory}"
THREADS=${THREADS:-1}
mkdir -p "$out/emb" "$out/idx"
# each output is written under a temporary name by its tool and renamed, so a task that
# fails or is cancelled leaves no partial file for the merge to take
# (no pipefail in sh: the decoder's status goes through a file)
st="$out/emb/.$n.decode-status"
rm -f "$st"
{ cmr-decode -q -m "$MODEL" -j "$THREADS" "$archive" || echo $? >"$st"; } |
	cmr-encode -q -m "$MODEL" -t "$THREADS" -o "$out/emb/$n.cmr"
if [ -e "$st" ]; then
	rm -f "$st" "$out/emb/$n.cmr"
	echo "shard.sh: $archive could not be decoded" >&2
	exit 1
fi
# shellcheck disable=SC2086 # INDEX_OPTS is a list of options
cmr-index ${INDEX_OPTS:-} -o "$out/idx/$n.idx" "$out/emb/$n.cmr"
