# t92-promptpool.sh - the prompt pool (issue 17; cmr-promptpool, cmr-tuning(5) method pool):
# a pool made from the images' own queries, its selection, its statistics, its application by
# cmr-encode, and its refusals. The core's part (a pool batch is per-sample prefixes, bit for
# bit) is tests/unit/test_model.c's.
. "$SRCDIR/tests/lib.sh"
MK=$BUILD/tests/mkclip
"$MK" model "$WORK/tiny" tiny
# two kinds of image: random noise, and coloured shapes on a dark ground
"$MK" images 24 32 5 >"$WORK/noise.cmr"
"$BUILD/examples/mkshapes" --size 32 24 3 >"$WORK/shapes.tar"
cmr-decode -q -s 32 -o "$WORK/shapes.cmr" "$WORK/shapes.tar"
cat "$WORK/noise.cmr" "$WORK/shapes.cmr" >"$WORK/both.cmr"

# ---- numerics: PyTorch's pool (tests/ref/pool_reference.py) ----
PC=$BUILD/tests/promptcheck
G=$SRCDIR/tests/golden/prompt
"$MK" images 4 32 8 >"$WORK/gi.cmr"
"$MK" tokens 4 8 >"$WORK/gt.cmr"
"$MK" descs 4 3 9 >"$WORK/gd.cmr"
# tolerances: the largest errors measured (this machine) were 3.5e-7 forward (blas) and
# 8.0e-7 for a gradient (the pool's, blas); ref 3.3e-7 and 3.0e-7
for backend in $(backends); do
	begin "pool, $backend: queries, selection, embeddings, loss with descriptions and pull within 1e-6, gradients of prompts and keys within 2e-6 of PyTorch"
	run "$PC" "$WORK/tiny" "$WORK/gi.cmr" "$WORK/gt.cmr" "$G/tiny-pool.safetensors" $backend 1e-6 2e-6 "$WORK/gd.cmr"
	expect_status 0
	expect_stdout_has "ok  : selection: 12 of 12 ids as the reference's"
	expect_stdout_has "ok  : its descriptions' terms, 3 perspectives"
	expect_stdout_has "ok  : gradient of prompt.vision.keys"
	grep -q FAIL "$OUT" && why "$(grep FAIL "$OUT")"
	end
done

begin "the pool check can fail: other descriptions"
"$MK" descs 4 3 10 >"$WORK/gd2.cmr"
run "$PC" "$WORK/tiny" "$WORK/gi.cmr" "$WORK/gt.cmr" "$G/tiny-pool.safetensors" blas 1e-6 2e-6 "$WORK/gd2.cmr"
expect_status 1
expect_stdout_has "FAIL: its descriptions' terms"
expect_stdout_has "ok  : its captions' InfoNCE"
end

begin "init: a pool from k-means of the images' queries, a tuning directory of kilobytes; show lists it"
run cmr-promptpool init -m "$WORK/tiny" -o "$WORK/pool" --size 4 --length 2 --top-k 1 "$WORK/both.cmr"
expect_status 0
grep -q '"method": "pool"' "$WORK/pool/adapter_config.json" || why "not method pool"
grep -q '"top_k": 1' "$WORK/pool/adapter_config.json" || why "no top_k"
size=$(wc -c <"$WORK/pool/adapter_model.safetensors")
[ "$size" -lt 4000 ] || why "the pool's tensors are $size bytes"
run cmr-promptpool show "$WORK/pool"
expect_status 0
expect_stdout_has "pool of 4 prompts of 2 rows, top 1"
expect_stdout_has "prompt.vision.pool       f32   [8,32]"
expect_stdout_has "prompt.vision.keys       f32   [4,32]"
end

begin "select: each image's prompts, best first; the two kinds of image choose different prompts"
run cmr-promptpool select -m "$WORK/tiny" "$WORK/pool" "$WORK/both.cmr"
expect_status 0
[ "$(wc -l <"$OUT")" -eq 48 ] || why "expected 48 lines (one prompt per image)"
top() { grep "^$1" "$OUT" | cut -f3 | sort | uniq -c | sort -rn | head -1 | awk '{ print $2 }'; }
a=$(top img) b=$(top mkshapes)
[ "$a" != "$b" ] || why "noise and shapes both choose prompt $a most"
run cmr-promptpool select -m "$WORK/tiny" -f jsonl "$WORK/pool" "$WORK/noise.cmr"
expect_status 0
expect_stdout_has '{"key":"img000","prompts":['
end

begin "select with top-2: two prompts per image, distinct, in falling score"
cmr-promptpool init -q -m "$WORK/tiny" -o "$WORK/pool2" --size 4 --length 2 --top-k 2 --seed 3 "$WORK/both.cmr"
run cmr-promptpool select -m "$WORK/tiny" "$WORK/pool2" "$WORK/both.cmr"
expect_status 0
awk -F '\t' '$2 == 1 { p = $3; s = $4 } $2 == 2 { if ($3 == p || $4 > s) bad++ } END { exit bad > 0 }' "$OUT" || why "a second prompt repeats the first or scores higher"
end

begin "stats: every image counted top-k times, no prompt dead on the data its keys came from, the keys' closest pair"
run cmr-promptpool stats -m "$WORK/tiny" "$WORK/pool2" "$WORK/both.cmr"
expect_status 0
expect_stdout_has "48 images, a pool of 4 prompts of 2 rows, top 2"
expect_stdout_has "most similar keys: "
sum=$(awk '$1 ~ /^[0-9]+$/ && NF == 4 { s += $2 } END { print s }' "$OUT")
[ "$sum" -eq 96 ] || why "the prompts were chosen $sum times, not 48 x 2"
run cmr-promptpool stats -m "$WORK/tiny" --json "$WORK/pool2" "$WORK/both.cmr"
expect_status 0
expect_stdout_has '"images": 48'
expect_stdout_has '"dead": '
end

begin "cmr-encode --tuning POOL: images change, texts are the base's bit for bit; the same bytes twice"
"$MK" tokens 6 4 >"$WORK/t.cmr"
cmr-encode -m "$WORK/tiny" -o "$WORK/base.cmr" "$WORK/noise.cmr" "$WORK/t.cmr"
run cmr-encode -m "$WORK/tiny" --tuning "$WORK/pool" -o "$WORK/p1.cmr" "$WORK/noise.cmr" "$WORK/t.cmr"
expect_status 0
cmr-encode -m "$WORK/tiny" --tuning "$WORK/pool" -o "$WORK/p2.cmr" "$WORK/noise.cmr" "$WORK/t.cmr"
cmr-dump diff --max-abs 0 "$WORK/p1.cmr" "$WORK/p2.cmr" >/dev/null || why "two runs differ"
cmr-dump show -a "$WORK/base.cmr" | grep -A1 '#0	' >"$WORK/bt"
cmr-dump show -a "$WORK/p1.cmr" | grep -A1 '#0	' >"$WORK/pt"
cmp -s "$WORK/bt" "$WORK/pt" || why "the texts changed"
cmr-dump show -a "$WORK/base.cmr" | grep -A1 '^img000	' >"$WORK/bi"
cmr-dump show -a "$WORK/p1.cmr" | grep -A1 '^img000	' >"$WORK/pi"
cmp -s "$WORK/bi" "$WORK/pi" && why "the pool changed no image"
end

begin "refusals: top-k above the size, too few images for k-means, a pool for another base, a mistyped command"
run cmr-promptpool init -m "$WORK/tiny" -o "$WORK/x" --size 3 --top-k 4 "$WORK/both.cmr"
expect_status 2
expect_stderr_has "--top-k 4 is more than the 3 prompts of the pool"
expect_no_file "$WORK/x"
run cmr-promptpool init -m "$WORK/tiny" -o "$WORK/x" --size 30 "$WORK/noise.cmr"
expect_status 1
expect_stderr_has "24 images cannot give 30 keys by k-means"
expect_no_file "$WORK/x"
"$MK" model "$WORK/other" tiny --seed 9
run cmr-promptpool select -m "$WORK/other" "$WORK/pool" "$WORK/noise.cmr"
expect_status 1
expect_stderr_has "made for a base whose vision tower is"
run cmr-encode -m "$WORK/other" --tuning "$WORK/pool" "$WORK/noise.cmr"
expect_status 1
expect_stderr_has "made for a base whose vision tower is"
run cmr-promptpool frobnicate
expect_status 2
expect_stderr_has "'frobnicate' is not a command (init, select, stats, show)"
end

begin "init on a full disk: an error, and no directory left behind"
run sh -c "ulimit -f 8; trap '' XFSZ; exec cmr-promptpool init -m '$WORK/tiny' -o '$WORK/full' --size 200 --length 8 --keys random"
expect_status 1
expect_stderr_has "File too large (nothing was written)"
expect_no_file "$WORK/full"
end

begin "a damaged pool config is refused, naming the field"
cp -r "$WORK/pool" "$WORK/bad"
sed 's/"top_k": 1/"top_k": 9/' "$WORK/pool/adapter_config.json" >"$WORK/bad/adapter_config.json"
run cmr-promptpool show "$WORK/bad"
expect_status 1
expect_stderr_has "pool of 4 prompts of 2 rows, top 9"
end

begin "cmr-train --pool: prompts and keys train on the frozen base (loss falls), a pool tuning comes out; --pull 0 leaves the keys as they were"
cmr-caption-ingest -q -f wds -m "$WORK/tiny" -o "$WORK/shapes-t.cmr" "$WORK/shapes.tar"
run cmr-train -q -t 1 -m "$WORK/tiny" --pool "$WORK/pool2" -o "$WORK/trained" -b 8 --epochs 6 --lr 1e-2 --log "$WORK/pl.jsonl" "$WORK/shapes.cmr" "$WORK/shapes-t.cmr"
expect_status 0
grep -q '"method": "pool"' "$WORK/trained/adapter_config.json" || why "the output is not a pool"
first=$(head -1 "$WORK/pl.jsonl" | sed 's/.*"loss": \([0-9.-]*\).*/\1/')
last=$(tail -1 "$WORK/pl.jsonl" | sed 's/.*"loss": \([0-9.-]*\).*/\1/')
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a) }' || why "loss $first -> $last did not fall"
cmr-promptpool show "$WORK/pool2" >"$WORK/s0"
cmr-promptpool show "$WORK/trained" >"$WORK/s1"
[ "$(grep vision.keys "$WORK/s0")" != "$(grep vision.keys "$WORK/s1")" ] || why "the keys did not move with the pull term"
cmr-train -q -t 1 -m "$WORK/tiny" --pool "$WORK/pool2" --pull 0 -o "$WORK/nopull" -b 8 --epochs 2 --lr 1e-2 "$WORK/shapes.cmr" "$WORK/shapes-t.cmr"
cmr-promptpool select -m "$WORK/tiny" "$WORK/pool2" "$WORK/both.cmr" >"$WORK/sel0"
cmr-promptpool select -m "$WORK/tiny" "$WORK/nopull" "$WORK/both.cmr" >"$WORK/sel1"
cmp -s "$WORK/sel0" "$WORK/sel1" || why "with --pull 0 the keys (so the selection) changed"
run cmr-encode -m "$WORK/tiny" --tuning "$WORK/trained" "$WORK/shapes.cmr"
expect_status 0
run cmr-train -m "$WORK/tiny" --pool "$WORK/pool2" --vision-prompts 4 -o "$WORK/x" "$WORK/shapes.cmr" "$WORK/shapes-t.cmr"
expect_status 2
run cmr-train -m "$WORK/tiny" --pull 0.1 -o "$WORK/x" "$WORK/shapes.cmr" "$WORK/shapes-t.cmr"
expect_status 2
expect_stderr_has "--pull weighs a pool's key term: it goes with --pool"
end

begin "cmr-train --desc: each perspective's terms join the loss (logged) and change the pool; refusals"
# three "perspectives" of each image: its first three captions, as KEY.jpg#N<TAB>text
for f in $(tar -tf "$WORK/shapes.tar" | grep '\.txt$'); do
	tar -xOf "$WORK/shapes.tar" "$f" | head -3 | awk -v k="${f%.txt}" '{ printf "%s.jpg#%d\t%s\n", k, NR - 1, $0 }'
done >"$WORK/shapes.desc"
cmr-caption-ingest -q -f flickr --desc -m "$WORK/tiny" -o "$WORK/shapes-d.cmr" "$WORK/shapes.desc"
n=$(cmr-dump list "$WORK/shapes-d.cmr" | grep -c desc-tokens)
[ "$n" -eq 72 ] || why "$n descriptions, not 24 x 3"
run cmr-train -t 1 -m "$WORK/tiny" --pool "$WORK/pool2" -o "$WORK/dtrained" -b 8 --epochs 2 --lr 1e-2 --desc "$WORK/shapes-d.cmr" --desc-trip 0.5 --log "$WORK/dl.jsonl" "$WORK/shapes.cmr" "$WORK/shapes-t.cmr"
expect_status 0
expect_stderr_has "descriptions of 3 perspectives, images with one: '0' 24, '1' 24, '2' 24 (of 24)"
d=$(sed -n 's/.*"descriptions": \([0-9.]*\).*/\1/p' "$WORK/dl.jsonl" | head -1)
awk -v d="$d" 'BEGIN { exit !(d > 0) }' || why "no descriptions' loss logged: '$d'"
# without descriptions: another pool (the terms reach the prompts)
cmr-train -q -t 1 -m "$WORK/tiny" --pool "$WORK/pool2" -o "$WORK/ndtrained" -b 8 --epochs 2 --lr 1e-2 "$WORK/shapes.cmr" "$WORK/shapes-t.cmr"
cmp -s "$WORK/dtrained/adapter_model.safetensors" "$WORK/ndtrained/adapter_model.safetensors" && why "the descriptions changed nothing"
run cmr-train -q -t 1 -m "$WORK/tiny" --pool "$WORK/pool2" -o "$WORK/x" -b 8 --steps 1 --desc "$WORK/shapes-t.cmr" "$WORK/shapes.cmr" "$WORK/shapes-t.cmr"
expect_status 1
expect_stderr_has "the description streams hold no desc-tokens records (cmr-caption-ingest --desc makes them)"
expect_no_file "$WORK/x"
printf 'nosuch.jpg#0\ta red square\n' | cmr-caption-ingest -q --desc -m "$WORK/tiny" -o "$WORK/orphan.cmr"
run cmr-train -q -t 1 -m "$WORK/tiny" --pool "$WORK/pool2" -o "$WORK/x" -b 8 --steps 1 --desc "$WORK/orphan.cmr" "$WORK/shapes.cmr" "$WORK/shapes-t.cmr"
expect_status 1
expect_stderr_has "no description names one of the training images"
run cmr-train -q -m "$WORK/tiny" --pool "$WORK/pool2" -o "$WORK/x" --desc-clip 0.2 "$WORK/shapes.cmr" "$WORK/shapes-t.cmr"
expect_status 2
expect_stderr_has "--desc-clip, --desc-trip and --desc-margin weigh the description terms: give --desc STREAM"
run cmr-train -q -m "$WORK/tiny" --pool "$WORK/pool2" -o "$WORK/x" --desc "$WORK/shapes-d.cmr" --desc-clip 0 --desc-trip 0 "$WORK/shapes.cmr" "$WORK/shapes-t.cmr"
expect_status 2
end

begin "cmr-train --pool on two kinds of image: after training the kinds still choose different prompts (stats); --majority trains too"
"$MK" tokens 24 11 >"$WORK/noise-t.cmr"
cmr-train -q -t 1 -m "$WORK/tiny" --pool "$WORK/pool2" -o "$WORK/two" -b 8 --epochs 3 --lr 1e-2 "$WORK/both.cmr" "$WORK/noise-t.cmr" "$WORK/shapes-t.cmr"
for k in noise shapes; do
	cmr-promptpool stats -m "$WORK/tiny" "$WORK/two" "$WORK/$k.cmr" >"$WORK/st-$k"
done
run cmr-promptpool select -m "$WORK/tiny" "$WORK/two" "$WORK/both.cmr"
expect_status 0
a=$(top img) b=$(top mkshapes)
[ "$a" != "$b" ] || why "after training noise and shapes both choose prompt $a most"
cmp -s "$WORK/st-noise" "$WORK/st-shapes" && why "the two kinds' statistics are the same"
run cmr-train -q -t 1 -m "$WORK/tiny" --pool "$WORK/pool2" --majority -o "$WORK/maj" -b 8 --epochs 2 --lr 1e-2 "$WORK/both.cmr" "$WORK/noise-t.cmr" "$WORK/shapes-t.cmr"
expect_status 0
cmr-train -q -t 1 -m "$WORK/tiny" --pool "$WORK/pool2" -o "$WORK/nomaj" -b 8 --epochs 2 --lr 1e-2 "$WORK/both.cmr" "$WORK/noise-t.cmr" "$WORK/shapes-t.cmr"
cmp -s "$WORK/maj/adapter_model.safetensors" "$WORK/nomaj/adapter_model.safetensors" && why "--majority changed nothing"
run cmr-train -q -m "$WORK/tiny" --majority -o "$WORK/x" "$WORK/shapes.cmr" "$WORK/shapes-t.cmr"
expect_status 2
expect_stderr_has "--majority is a pool's selection: it goes with --pool"
end

begin "cmr-train --pool: interrupted with --max-steps and resumed gives the pool of an uninterrupted run"
cmr-train -q -t 1 -m "$WORK/tiny" --pool "$WORK/pool2" -o "$WORK/full" -b 8 --epochs 4 --lr 1e-2 "$WORK/shapes.cmr" "$WORK/shapes-t.cmr"
cmr-train -q -t 1 -m "$WORK/tiny" --pool "$WORK/pool2" -o "$WORK/half" -b 8 --epochs 4 --lr 1e-2 --max-steps 5 "$WORK/shapes.cmr" "$WORK/shapes-t.cmr"
run cmr-train -q -t 1 --resume "$WORK/half" -b 8 --epochs 4 --lr 1e-2 "$WORK/shapes.cmr" "$WORK/shapes-t.cmr"
expect_status 0
cmr-encode -m "$WORK/tiny" --tuning "$WORK/full" -o "$WORK/ef.cmr" "$WORK/shapes.cmr"
cmr-encode -m "$WORK/tiny" --tuning "$WORK/half" -o "$WORK/eh.cmr" "$WORK/shapes.cmr"
run cmr-dump diff --max-abs 0 "$WORK/ef.cmr" "$WORK/eh.cmr"
expect_status 0
end
