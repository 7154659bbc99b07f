# t88-knowledge.sh - unpaired matching (MASK): cmr-knowledge build/info/apply/map on a tiny
# generated TFLite model and the fixture images, cmr-caption-ingest --knowledge with and
# without out-of-vocabulary bridging, cmr-eval's late interaction and fusion, the refusals.
. "$SRCDIR/tests/lib.sh"
MK=$BUILD/tests/mktflite
"$MK" u8 "$WORK/m.tflite" 4 # its top classes: sports car (17 images), a red ball (4)
"$MK" u8 "$WORK/other.tflite" 1
cmr-decode -q -s 8 "$SRCDIR/tests/fixtures/images" >"$WORK/im.cmr"
for F in pooled regions classes; do
	cmr-encode -q -m "$WORK/m.tflite" -F $F -o "$WORK/$F.cmr" "$WORK/im.cmr"
done
cmr-encode -q -m "$WORK/other.tflite" -F regions -o "$WORK/other-regions.cmr" "$WORK/im.cmr"
N=$(cmr-dump list "$WORK/im.cmr" | grep -c ' image ')
# five classes whose names have concept words; word vectors in 3 dimensions (JSON)
printf 'background\ndog, the dog\ntabby cat\nsports car\na red ball\n' >"$WORK/labels.txt"
cat >"$WORK/wv.json" <<'J'
{"words": ["dog", "football", "cat", "car", "sports", "red", "ball", "the", "a", "tree"],
 "vectors": [[1, 0, 0], [0.32, 0.3, 0.9], [0, 1, 0], [0, 0, 1], [0, 0.3, 1], [0.5, 0.5, 0.7],
             [0.3, 0.3, 0.9], [1, 1, 1], [1, 2, 3], [-1, 0, 0.1]]}
J
printf 'the\na\n' >"$WORK/stop.txt"
KB="cmr-knowledge build -c $WORK/classes.cmr --labels $WORK/labels.txt --word-vectors $WORK/wv.json --stopwords $WORK/stop.txt --min-prob 0 --min-count 1"

begin "build: the concepts are the predicted classes' words with vectors, no stop words; info says what is there"
run $KB -o "$WORK/k.st" "$WORK/pooled.cmr"
expect_status 0
run cmr-knowledge info --words "$WORK/k.st"
expect_status 0
expect_stdout_has "format          cmr-knowledge-1"
expect_stdout_has "features: m.tflite"
expect_stdout_has "mapping         none"
# the words the tiny model's top classes name (from --top 1), less stop words and 'tabby' (no vector)
cmr-encode -q -m "$WORK/m.tflite" --top 1 --labels "$WORK/labels.txt" "$WORK/im.cmr" | cut -f5 |
	tr ', ' '\n\n' | grep -vx -e '' -e the -e a -e tabby -e background | sort -u >"$WORK/want.txt"
awk -F'\t' 'NF == 3 {print $1}' "$OUT" >"$WORK/got.txt"
cmp -s "$WORK/want.txt" "$WORK/got.txt" || why "concepts $(tr '\n' ' ' <"$WORK/got.txt"), expected $(tr '\n' ' ' <"$WORK/want.txt")"
[ -s "$WORK/got.txt" ] || why "no concepts"
# every image counts once per concept of its class: the counts add up to at most N x 2 words
awk -F'\t' 'NF == 3 {s += $2} END {exit !(s >= 1 && s <= 2 * '"$N"')}' "$OUT" || why "counts do not add up"
end

begin "apply: without a centre, features are their own unit rows; with one, unit(x - centre); same keys and kind"
run $KB --no-centre -o "$WORK/k0.st" "$WORK/pooled.cmr"
expect_status 0
cmr-knowledge apply -o "$WORK/r0.cmr" "$WORK/k0.st" "$WORK/regions.cmr" || why "apply failed"
run cmr-dump diff --max-abs 1e-6 "$WORK/regions.cmr" "$WORK/r0.cmr"
expect_status 0
cmr-knowledge apply -o "$WORK/r1.cmr" "$WORK/k.st" "$WORK/regions.cmr" || why "apply failed"
[ "$(cmr-dump list "$WORK/r1.cmr" | grep -c " vectors  *f32  *\[16,4\] ")" -eq "$N" ] || why "not $N vectors [16,4]"
run cmr-dump diff --max-abs 1e-3 "$WORK/regions.cmr" "$WORK/r1.cmr"
expect_status 1
cmr-dump show -a "$WORK/r1.cmr" | awk '/^[-0-9]/ {s = 0; for (i = 1; i <= NF; i++) s += $i * $i; if (s < 0.99999 || s > 1.00001) bad++} END {exit bad > 0}' ||
	why "a row is not of unit length"
end

begin "apply refuses another model's features, naming both; --force warns and goes on"
run cmr-knowledge apply -o "$WORK/x.cmr" "$WORK/k.st" "$WORK/other-regions.cmr"
expect_status 1
expect_stderr_has "the features come from other.tflite"
expect_stderr_has "the knowledge's from m.tflite"
expect_no_file "$WORK/x.cmr"
run cmr-knowledge apply --force -o "$WORK/x.cmr" "$WORK/k.st" "$WORK/other-regions.cmr"
expect_status 0
expect_stderr_has "warning: "
end

begin "captions: concept words become their prototypes; an unknown word is bridged only with --word-vectors"
printf 'a.jpg#0\tthe ball and a football\nb.jpg#0\ta football\nc.jpg#0\ta tree\nd.jpg#0\tzebra\n' >"$WORK/cap.txt"
cmr-knowledge info --words "$WORK/k.st" | grep -q "^ball	" || why "ball is not a concept (the model's classes changed?)"
run cmr-caption-ingest -f flickr -v --knowledge "$WORK/k.st" --stopwords "$WORK/stop.txt" -o "$WORK/c0.cmr" "$WORK/cap.txt"
expect_status 0
expect_stderr_has "3 captions have no word with a prototype: written without rows (they score 0)"
run cmr-caption-ingest -f flickr -v --knowledge "$WORK/k.st" --word-vectors "$WORK/wv.json" --ood-neighbours 1 \
	--stopwords "$WORK/stop.txt" -o "$WORK/c1.cmr" "$WORK/cap.txt"
expect_status 0
expect_stderr_has "2 bridged to concepts"
expect_stderr_has "2 captions have no word with a prototype"
# ball is a concept: 'the ball and a football' is ball alone without bridging; ball + football's (= ball's) with it
cmr-dump list "$WORK/c0.cmr" | grep -q " vectors  *f32  *\[1,4\]  .* a#0$" || why "a#0 is not one row without bridging"
cmr-dump list "$WORK/c1.cmr" | grep -q " vectors  *f32  *\[2,4\]  .* a#0$" || why "a#0 is not two rows with bridging"
cmr-dump list "$WORK/c1.cmr" | grep -q " \[1,4\]  .* b#0$" || why "'a football' was not bridged to ball"
cmr-dump list "$WORK/c0.cmr" | grep -q " \[0,4\]  .* b#0$" || why "'a football' has rows without bridging"
cmr-dump show -a "$WORK/c1.cmr" | awk '/^[-0-9]/ {r[n++] = $0} END {exit !(n >= 3 && r[0] == r[1] && r[1] == r[2])}' ||
	why "football's bridged prototype (m 1) is not ball's"
# 'a tree': its nearest concept's cosine is under the floor; zebra has no vector
cmr-dump list "$WORK/c1.cmr" | grep -q " \[0,4\]  .* c#0$" || why "'a tree' got a prototype through a far neighbour"
cmr-dump list "$WORK/c1.cmr" | grep -q " \[0,4\]  .* d#0$" || why "'zebra' got a prototype"
end

begin "cmr-query --score maxsim-mean: one row each ranks as cosine over an index; captions' rows against regions, best first; no rows scores 0"
cmr-index -q -o "$WORK/pooled.idx" "$WORK/pooled.cmr" || why "cmr-index failed"
cmr-query -k 5 "$WORK/pooled.idx" "$WORK/pooled.cmr" >"$WORK/cos.tsv" || why "cmr-query (cosine) failed"
run cmr-query --score maxsim-mean -k 5 "$WORK/pooled.cmr" "$WORK/pooled.cmr"
expect_status 0
# the same hits in the same order; scores within float rounding (two different products)
paste "$WORK/cos.tsv" "$OUT" | awk -F'\t' '$1 != $5 || $2 != $6 || $3 != $7 || $4 - $8 > 2e-6 || $8 - $4 > 2e-6 {bad++} END {exit bad > 0 || NR != '"$((N * 5))"'}' ||
	why "maxsim-mean of one row each differs from the index's cosine: $(paste "$WORK/cos.tsv" "$OUT" | head -3)"
run cmr-query --score maxsim-mean -k 3 -f jsonl "$WORK/r1.cmr" "$WORK/c1.cmr"
expect_status 0
[ "$(wc -l <"$OUT")" -eq 4 ] || why "not one line per caption"
grep -q '"query":"a#0","hits":\[{"key":"[^"]*","score":' "$OUT" || why "jsonl: $(head -c 200 "$OUT")"
grep '"query":"c#0"' "$OUT" | grep -q '"score":0\.0[,}]' || why "a caption of no rows does not score 0: $(grep c#0 "$OUT")"
run cmr-query --score maxsim-mean -k 3 "$WORK/r1.cmr" "$WORK/c1.cmr"
awk -F'\t' '$1 == p && $4 > s + 0 {bad++} {p = $1; s = $4} END {exit bad > 0}' "$OUT" || why "hits not best first"
run cmr-query --score maxsim-mean --nprobe 4 "$WORK/r1.cmr" "$WORK/c1.cmr"
expect_status 2
expect_stderr_has "--nprobe is for an index"
cmr-caption-ingest -q -f flickr --word-vectors "$WORK/wv.json" -o "$WORK/c3.cmr" "$WORK/cap.txt"
run cmr-query --score maxsim-mean "$WORK/r1.cmr" "$WORK/c3.cmr"
expect_status 1
expect_stderr_has "dimension"
run cmr-query --score dot "$WORK/r1.cmr"
expect_status 2
expect_stderr_has "is not cosine or maxsim-mean"
end

begin "map: learns the mapping on the concepts' own pairs; apply --mapped puts features in the word space"
K=$(cmr-knowledge info "$WORK/k.st" | awk '$1 == "concepts" {print $2}')
if [ "$K" -ge 2 ]; then
	run cmr-knowledge map --steps 50 -o "$WORK/km.st" "$WORK/k.st"
	expect_status 0
	cmr-knowledge info "$WORK/km.st" | grep -q "mapping         yes" || why "info does not show the mapping"
	cmr-knowledge apply --mapped -o "$WORK/pm.cmr" "$WORK/km.st" "$WORK/pooled.cmr" || why "apply --mapped failed"
	[ "$(cmr-dump list "$WORK/pm.cmr" | grep -c " embedding  *f32  *\[3\] ")" -eq "$N" ] || why "not $N embeddings [3]"
	run cmr-knowledge apply --mapped "$WORK/k.st" "$WORK/pooled.cmr"
	expect_status 1
	expect_stderr_has "no mapping (cmr-knowledge map learns one)"
else
	run cmr-knowledge map -o "$WORK/km.st" "$WORK/k.st"
	expect_status 1
	expect_stderr_has "the mapping needs two or more"
fi
end

begin "fusion: beta 0 ranks as plain cosine; the second streams may lack keys; usage errors"
# base: pooled features mapped into the word space against captions' mean word vectors
cmr-encode -q -m "$WORK/m.tflite" --top 1 --labels "$WORK/labels.txt" "$WORK/im.cmr" |
	awk -F'\t' '{printf "%s.jpg#0\ta photo of a %s\n", $1, $5}' >"$WORK/own.txt"
cmr-caption-ingest -q -f flickr --word-vectors "$WORK/wv.json" --mean -o "$WORK/own-mean.cmr" "$WORK/own.txt"
cmr-caption-ingest -q -f flickr --knowledge "$WORK/k.st" -o "$WORK/own-proto.cmr" "$WORK/own.txt"
if [ -f "$WORK/pm.cmr" ] && [ "$(cmr-dump list "$WORK/own-mean.cmr" | grep -c ' embedding ')" -eq "$N" ]; then
	run cmr-eval "$WORK/pm.cmr" "$WORK/own-mean.cmr"
	cp "$OUT" "$WORK/plain.txt"
	run cmr-eval --fuse-images "$WORK/r1.cmr" --fuse-texts "$WORK/own-proto.cmr" --fuse-beta 0 "$WORK/pm.cmr" "$WORK/own-mean.cmr"
	expect_status 0
	expect_stdout_file "$WORK/plain.txt"
	run cmr-eval --fuse-images "$WORK/r1.cmr" --fuse-texts "$WORK/own-proto.cmr" --fuse-beta 5 --fuse-top $N \
		"$WORK/pm.cmr" "$WORK/own-mean.cmr"
	expect_status 0
	expect_stdout_has "rsum"
else
	why "fusion not exercised: no mapped features or not one caption embedding per image"
fi
run cmr-eval --fuse-images "$WORK/r1.cmr" "$WORK/pooled.cmr" "$WORK/own-mean.cmr"
expect_status 2
expect_stderr_has "fusion needs both --fuse-images and --fuse-texts"
run cmr-eval --fuse-beta 0.2 "$WORK/pooled.cmr" "$WORK/own-mean.cmr"
expect_status 2
expect_stderr_has "--fuse-beta and --fuse-top are for fusion"
end

begin "pipelines/mask.mk runs on small archives: every row of the table, and the fusion rows with a paired model's streams; a second make has nothing to do"
mkdir -p "$WORK/data" "$WORK/lit"
(cd "$SRCDIR/tests/fixtures/images" && tar cf "$WORK/data/pool.tar" *.png *.webp && tar cf "$WORK/data/test.tar" rgb8.png rgba8.png gray8.png palette8.png)
printf 'rgb8.png#0\ta red ball\nrgb8.png#1\tthe football\nrgba8.png#0\ta sports car\ngray8.png#0\ta car\npalette8.png#0\ta tree\nother.png#0\ta ball\n' >"$WORK/data/cap.txt"
# the paired model's streams: any embeddings of the test images and their captions in one space
printf 'rgb8.png\nrgba8.png\ngray8.png\npalette8.png\n' >"$WORK/data/test.list"
cmr-decode -q -s 8 "$WORK/data/test.tar" | cmr-encode -q -m "$WORK/m.tflite" -F pooled >"$WORK/lit/pooled.cmr"
cmr-knowledge map -q --steps 20 -o "$WORK/km2.st" "$WORK/k.st" &&
	cmr-knowledge apply --mapped -o "$WORK/lit/images-emb.cmr" "$WORK/km2.st" "$WORK/lit/pooled.cmr" || why "no mapping"
cmr-caption-ingest -q -f flickr --only "$WORK/data/test.list" --word-vectors "$WORK/wv.json" --mean \
	-o "$WORK/lit/texts-emb.cmr" "$WORK/data/cap.txt"
set -- -s -C "$SRCDIR" -f pipelines/mask.mk SHARED="$WORK/data" POOL="$WORK/data/pool.tar" TEST="$WORK/data/test.tar" \
	CAPTIONS="$WORK/data/cap.txt" MODEL="$WORK/m.tflite" LABELS="$WORK/labels.txt" WORDVEC="$WORK/wv.json" \
	STOPWORDS="$WORK/stop.txt" SIZE=8 MIN_PROB=0 MIN_COUNT=1 MAP_ARGS="--steps 20" LIT="$WORK/lit" BETAS="0 0.5" \
	OUT="$WORK/mask" BIN="$BUILD/bin"
run make "$@"
expect_status 0
mkdir -p "$WORK/mask" && touch "$WORK/mask/results.md" # (the checks below fail on an empty one)
for r in "prototypes:" "prototypes + OOD" "learned mapping: regions" "learned mapping, whole image" \
	"mapping (whole image) + prototypes" "paired: locked-image" "beta 0 |" "beta 0.5 |"; do
	grep -qF "$r" "$WORK/mask/results.md" || why "no row '$r': $(cat "$WORK/mask/results.md")"
done
# rows of three recalls each way
[ "$(grep -cE '^\| [^|]+ \| [0-9.]+ / [0-9.]+ / [0-9.]+ \| [0-9.]+ \| [0-9.]+ / [0-9.]+ / [0-9.]+ \| [0-9.]+ \|$' "$WORK/mask/results.md")" -eq 8 ] ||
	why "not 8 rows of recalls and median ranks: $(cat "$WORK/mask/results.md")"
# beta 0 re-ranks nothing: the paired model's own recalls
[ "$(grep 'paired: locked' "$WORK/mask/results.md" | cut -d'|' -f3-)" = "$(grep 'beta 0 |' "$WORK/mask/results.md" | cut -d'|' -f3-)" ] ||
	why "beta 0 differs from the paired model alone"
grep -q "Chance: R@K = K/4 for text->image (R@10 100.0%)" "$WORK/mask/results.md" || why "no chance line"
touch "$BUILD/bin/cmr-encode" # a rebuilt tool does not redo the encoding (order-only)
run make -q "$@"
expect_status 0
end

begin "bad inputs: a truncated knowledge file, labels that do not match the classes, options without their mode"
head -c 100 "$WORK/k.st" >"$WORK/cut.st"
run cmr-knowledge info "$WORK/cut.st"
expect_status 1
expect_stderr_has "cut.st"
printf 'one\ntwo\n' >"$WORK/two.txt"
run cmr-knowledge build -o "$WORK/y.st" -c "$WORK/classes.cmr" --labels "$WORK/two.txt" --word-vectors "$WORK/wv.json" "$WORK/pooled.cmr"
expect_status 1
expect_stderr_has "2 labels for the 5 classes"
expect_no_file "$WORK/y.st"
run cmr-knowledge build -o "$WORK/y.st" -c "$WORK/pooled.cmr" --labels "$WORK/labels.txt" --word-vectors "$WORK/wv.json" "$WORK/pooled.cmr"
expect_status 1
expect_stderr_has "is not f32 class probabilities"
run cmr-caption-ingest --ood-neighbours 3 --knowledge "$WORK/k.st" "$WORK/cap.txt"
expect_status 2
expect_stderr_has "need --knowledge FILE and --word-vectors FILE"
run cmr-knowledge frobnicate
expect_status 2
end
