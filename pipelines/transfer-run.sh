#!/bin/sh
# transfer-run.sh OUT TARGET METHOD SEED - one row of pipelines/transfer.mk: tune the base
# model (OUT/base) on TARGET's training pairs with METHOD and SEED, then evaluate the result on
# TARGET's test set and on the source's (forgetting). Writes OUT/runs/TARGET/METHOD-sSEED/
# {target.json, source.json, row.txt}: cmr-eval's JSON both ways, and one line
# "trainable bytes seconds" (parameters trained, bytes of what the method adds or changes on
# disk, training time). Methods: zeroshot (no training), full (every parameter), proj (the two
# projections), last (the last layer of each tower, the final layer norms and the
# projections); more register in transfer.mk's METHOD_ARGS (a method that writes a tuning
# directory, cmr-tuning(5), is evaluated as the base with that tuning).
set -euf # no globbing: METHOD_ARGS holds fnmatch patterns
OUT=$1 T=$2 M=$3 S=$4
: "${BIN:=build/bin}" "${SOURCE:=source}" "${BATCH:=128}" "${TUNE_EPOCHS:=10}" "${TUNE_LR:=5e-4}"
: "${METHOD_ARGS:=}" "${METHOD_INIT:=}"
set -- # the text prompts' initial phrase (a method's METHOD_INIT), one argument
if [ -n "$METHOD_INIT" ]; then set -- --prompt-init "$METHOD_INIT"; fi
D=$OUT/runs/$T/$M-s$S
mkdir -p "$D"
model=$OUT/base
start=$(date +%s)
trainable=0
bytes=0
if [ "$M" != zeroshot ]; then
	rm -rf "$D/model" "$D/row.txt"
	# shellcheck disable=SC2086
	"$BIN/cmr-train" -q -m "$OUT/base" -o "$D/model" -b "$BATCH" --epochs "$TUNE_EPOCHS" --lr "$TUNE_LR" \
		--seed "$S" $METHOD_ARGS "$@" --log "$D/train.jsonl" "$OUT/data/$T-train-i.cmr" "$OUT/data/$T-train-t.cmr" \
		2>"$D/train.err" || { cat "$D/train.err" >&2; exit 1; }
	model=$D/model
	trainable=$(sed -n 's/.*"trained": \([0-9]*\).*/\1/p' "$D/train.jsonl" | head -1)
	# what the method adds to the base model on disk: the trained tensors, in F32; a tuning
	# directory's (cmr-tuning(5)) tensor file as it is
	bytes=$((trainable * 4))
	if [ -f "$D/model/adapter_model.safetensors" ]; then bytes=$(wc -c <"$D/model/adapter_model.safetensors"); fi
fi
set -- -m "$model"
if [ -f "$model/adapter_config.json" ]; then set -- -m "$OUT/base" --tuning "$model"; fi
secs=$(($(date +%s) - start))
for set in target source; do
	w=$T
	[ $set = source ] && w=$SOURCE
	"$BIN/cmr-encode" -q "$@" -o "$D/$set-i.emb" "$OUT/data/$w-test-i.cmr"
	"$BIN/cmr-encode" -q "$@" -o "$D/$set-t.emb" "$OUT/data/$w-test-t.cmr"
	"$BIN/cmr-eval" --json "$D/$set-i.emb" "$D/$set-t.emb" >"$D/$set.json.tmp"
	mv "$D/$set.json.tmp" "$D/$set.json"
	rm -f "$D/$set-i.emb" "$D/$set-t.emb"
done
echo "$trainable $bytes $secs" >"$D/row.txt"
