#!/bin/sh
# mask-table.sh - pipelines/mask.mk's results table: one markdown row per cmr-eval --json
# file of OUT. Usage: sh pipelines/mask-table.sh OUT "UNPAIRED ROWS" "FUSED ROWS"
set -eu
OUT=$1
ROWS=$2
FUSED=${3:-}

# what each row is
describe() {
	case $1 in
	proto) echo "prototypes: caption words that are concepts, late interaction with the regions" ;;
	proto-ood) echo "prototypes + OOD bridge (other words through their GloVe neighbours)" ;;
	mapped) echo "learned mapping: regions mapped into the word space, every word's vector" ;;
	mapped-global) echo "learned mapping, whole image: mapped pooled feature vs mean word vector (cosine)" ;;
	mapped-global-proto-ood) echo "mapping (whole image) + prototypes with OOD, scores summed" ;;
	lit) echo "paired: locked-image model (pipelines/lit.mk) alone" ;;
	fused-*) echo "paired + unpaired (prototypes with OOD) re-ranking its top $FUSE_TOP, beta ${1#fused-}" ;;
	*) echo "$1" ;;
	esac
}

# R@1 R@5 R@10 and the median rank of one direction of a cmr-eval --json file (its members in cmr-eval's order)
recall() { # file direction
	awk -v dir="\"$2\":" '
		$1 == dir { on = 1; next }
		on && /^  }/ { exit }
		on && $1 ~ /^"R@(1|5|10)":$/ { v = $2; sub(/,$/, "", v); printf "%s%.1f", n++ ? " / " : "", v }
		on && $1 == "\"median_rank\":" { m = $2; sub(/,$/, "", m) }
		END { if (n != 3 || m == "") exit 1; printf " | %g", m }' "$1"
}

FUSE_TOP=${FUSE_TOP:-20}
echo "$(date -u +%Y-%m-%d), $(nproc) cores ($(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)), load $(cut -d' ' -f1-3 /proc/loadavg);"
echo "make -f pipelines/mask.mk${MAKE_VARS:+ $MAKE_VARS} (OUT=$OUT)."
echo
echo "| method | text->image R@1 / R@5 / R@10 | medr | image->text R@1 / R@5 / R@10 | medr |"
echo "|---|---|---|---|---|"
for r in $ROWS $FUSED; do
	f=$OUT/$r.json
	[ -f "$f" ] || { echo "mask-table.sh: $f missing" >&2; exit 1; }
	echo "| $(describe "$r") | $(recall "$f" text_to_image) | $(recall "$f" image_to_text) |"
done
nimg=$(awk '$1 == "\"images\":" {v = $2; sub(/,$/, "", v); print v; exit}' "$OUT/proto.json")
echo
echo "Chance: R@K = K/$nimg for text->image (R@10 $(awk -v n="$nimg" 'BEGIN {printf "%.1f", 100 * (n < 10 ? n : 10) / n}')%)."
