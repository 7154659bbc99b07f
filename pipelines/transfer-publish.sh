#!/bin/sh
# transfer-publish.sh OUT COMMAND BASE_CONFIG [SECTION [SVG]] - writes the transfer benchmark's
# table (OUT/results.md) and the base model's source test figures as the SECTION section
# (default "transfer") of bench/RESULTS.md, and its plot (OUT/results.svg) as SVG (default
# bench/transfer.svg).
set -eu
. bench/lib.sh
OUT=$1
SECTION=${4:-transfer}
CMD=$(printf '%s' "$2" | sed 's/\$\$/$/g') # make's escaped dollars, as typed
SVG=${5:-bench/transfer.svg}
r() { sed -n "/\"$2\"/,/}/p" "$1" | sed -n "s/.*\"$3\": \([0-9.]*\).*/\1/p" | head -1; }
b=$OUT/base-source.json
params=$(sed -n 's/.*"parameters": \([0-9]*\).*/\1/p' "$OUT/base.jsonl" | head -1)
title="The specific-database benchmark (pipelines/transfer.mk)"
[ "$SECTION" = transfer ] || title="The specific-database benchmark: $SECTION (pipelines/transfer.mk)"
section="<!-- $SECTION:begin -->
## $title

Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'). Date: $(date -u +%Y-%m-%d).
Command: \`$CMD\`, then \`make -f pipelines/transfer.mk publish\` (the rows in this run's OUT).
Load average when published: $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min; the cores are shared with other
tenants and rows may run side by side, so \"train s\" is a loaded time, not a benchmark).
Worlds: examples/worlds/ (examples/worlds/README.md). Base model: $3 ($params parameters),
pretrained on the source world; on the source test set ($(r "$b" text_to_image queries) captions of $(r "$b" image_to_text queries) distinct scenes) it has
text→image R@1 $(r "$b" text_to_image R@1), R@5 $(r "$b" text_to_image R@5); image→text R@1 $(r "$b" image_to_text R@1), R@5 $(r "$b" image_to_text R@5).
Rows: mean ± half the range over the seeds; \"source after\" is the tuned model's text→image
R@1 on the source test set (forgetting); bytes: what the method adds to or changes in the base
checkpoint, F32 (a prompt tuning's: its adapter_model.safetensors). Budget: TUNE_EPOCHS
passes over each target's training pairs for every method (personal: TUNE_EPOCHS_personal).
The plot of R@1 against trainable parameters: [$(basename "$SVG")]($(basename "$SVG")).

$(cat "$OUT/results.md")
<!-- $SECTION:end -->"
cp "$OUT/results.svg" "$SVG.tmp" && mv "$SVG.tmp" "$SVG"
write_section "$SECTION" "$section"
