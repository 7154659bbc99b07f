#!/bin/sh
# demo.sh - `make demo`: cmr end to end with a model trained here, in a few minutes on 2 cores.
# Makes a synthetic dataset (examples/mkshapes.c: coloured shapes in places, with templated
# captions, as webdataset tars), trains a tiny CLIP from scratch on 3000 images
# (examples/demo-config.json), encodes 100 held-out images whose descriptions all differ,
# indexes them, runs a few text queries, prints the Recall@K table and classifies the held-out
# images zero-shot by colour and by shape (prompts of the class names). Fails (exit 1) when
# text->image R@1 on the held-out images is below 80%.
# Environment: BUILD (default build), OUT (default $BUILD/demo), EPOCHS (default 40).
set -eu
BUILD=${BUILD:-build}
OUT=${OUT:-$BUILD/demo}
EPOCHS=${EPOCHS:-40}
PATH=$BUILD/bin:$PATH
export PATH
mkdir -p "$OUT"
say() { printf '\n== %s\n' "$*"; }
start=$(date +%s)

say "1. synthetic data: 3000 training images, 100 held-out (webdataset tars of JPEG + captions)"
"$BUILD/examples/mkshapes" 3000 1 >"$OUT/train.tar"
"$BUILD/examples/mkshapes" --distinct --prefix held 100 2 >"$OUT/test.tar"
tar -xOf "$OUT/test.tar" held00000.txt

say "2. decode and tokenize at the model's size and context (64 x 64, 32: -m its config)"
CFG=examples/demo-config.json
cmr-decode -q -m $CFG -o "$OUT/train-images.cmr" "$OUT/train.tar"
cmr-caption-ingest -q -f wds -m $CFG -o "$OUT/train-texts.cmr" "$OUT/train.tar"
cmr-decode -q -m $CFG -o "$OUT/test-images.cmr" "$OUT/test.tar"
cmr-caption-ingest -q -f wds -m $CFG -o "$OUT/test-texts.cmr" "$OUT/test.tar"
cmr-dump list "$OUT/train-images.cmr" | sed -n 2,3p

say "3. train a tiny CLIP from scratch ($EPOCHS epochs; log in $OUT/train.jsonl)"
cmr-train --config $CFG -o "$OUT/model" -b 64 --epochs "$EPOCHS" --lr 2e-3 \
	--log-every 460 --log "$OUT/train.jsonl" "$OUT/train-images.cmr" "$OUT/train-texts.cmr"

say "4. encode the held-out set with the checkpoint, index the images"
cmr-encode -q -m "$OUT/model" -o "$OUT/test-image-emb.cmr" "$OUT/test-images.cmr"
cmr-encode -q -m "$OUT/model" -o "$OUT/test-text-emb.cmr" "$OUT/test-texts.cmr"
cmr-index -o "$OUT/test.idx" "$OUT/test-image-emb.cmr"

say "5. text queries (descriptions of four held-out images): the 3 best images, with what they show"
for k in held00003 held00017 held00042 held00071; do
	tar -xOf "$OUT/test.tar" $k.txt | sed -n 2p
done >"$OUT/queries.txt"
cmr-caption-ingest -q -f text -m "$OUT/model" "$OUT/queries.txt" | cmr-encode -q -m "$OUT/model" |
	cmr-query -k 3 "$OUT/test.idx" >"$OUT/hits.tsv"
n=0
while IFS= read -r q; do
	n=$((n + 1))
	printf 'query: %s\n' "$q"
	awk -F '\t' -v n=$n '$1 == n { print $2 "\t" $3 "\t" $4 }' "$OUT/hits.tsv" | while IFS="$(printf '\t')" read -r rank key score; do
		printf '  %s. %s  %s  (%s)\n' "$rank" "$key" "$score" "$(tar -xOf "$OUT/test.tar" "$key.txt" | head -1)"
	done
done <"$OUT/queries.txt"

say "6. Recall@K on the held-out set (cmr-eval)"
cmr-eval "$OUT/test-image-emb.cmr" "$OUT/test-text-emb.cmr" | tee "$OUT/eval.txt"

say "7. zero-shot classification of the held-out images by colour and by shape (cmr-eval --labels)"
# the labels from each image's first caption: "a SIZE COLOUR SHAPE in the PLACE"
tar -xOf "$OUT/test.tar" $(tar tf "$OUT/test.tar" | grep '\.txt$') | awk 'NR % 3 == 1' >"$OUT/first.txt"
tar tf "$OUT/test.tar" | grep '\.txt$' | sed 's/\.txt$//' >"$OUT/keys.txt"
for what in colour shape; do
	col=$([ $what = colour ] && echo 3 || echo 4)
	awk -v c=$col '{ print $c }' "$OUT/first.txt" | paste "$OUT/keys.txt" - >"$OUT/$what.labels"
	cut -f2 "$OUT/$what.labels" | awk '!seen[$0]++' >"$OUT/$what.classes"
	printf 'a {}\na small {}\na large {}\nthere is a {}\n' >"$OUT/templates.txt"
	cmr-caption-ingest -q -f classes --templates "$OUT/templates.txt" -m "$OUT/model" "$OUT/$what.classes" |
		cmr-encode -q -m "$OUT/model" --mean-by-key -o "$OUT/$what-classes.cmr"
	printf 'by %s (%s classes, 4 prompts each): ' $what "$(wc -l <"$OUT/$what.classes")"
	cmr-eval --labels "$OUT/$what.labels" "$OUT/test-image-emb.cmr" "$OUT/$what-classes.cmr" | sed -n 2p
done
cmr-index -q -o "$OUT/colours.idx" "$OUT/colour-classes.cmr"
echo "image -> colour answers (cmr-query -k 1 against the class embeddings), the first three:"
cmr-query -k 1 "$OUT/colours.idx" "$OUT/test-image-emb.cmr" | head -3 | while IFS="$(printf '\t')" read -r key rank cls score; do
	printf '  %s: %s (%s)  [%s]\n' "$key" "$cls" "$score" "$(grep "^$key	" "$OUT/colour.labels" | cut -f2)"
done

r1=$(awk '$1 == "text->image" { print $2 }' "$OUT/eval.txt")
printf '\ndemo: text->image R@1 %s%% on 100 held-out images (target >= 80%%), %s s in all\n' "$r1" $(($(date +%s) - start))
awk -v r="$r1" 'BEGIN { exit !(r >= 80) }'
