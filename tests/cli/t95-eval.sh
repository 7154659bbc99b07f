# t95-eval.sh - cmr-eval on hand-computed cases, its refusals, and the make-driven zero-shot
# pipeline on Flickr8k dev with a random tiny model.
. "$SRCDIR/tests/lib.sh"
FIX=$SRCDIR/tests/fixtures
cmr-dump from-npy --kind embedding --keys "$FIX/eval-img.keys" "$FIX/eval-img.npy" >"$WORK/img.cmr"
cmr-dump from-npy --kind embedding --keys "$FIX/eval-txt.keys" "$FIX/eval-txt.npy" >"$WORK/txt.cmr"

begin "the table holds the hand-computed recalls and ranks (K larger than N allowed)"
# images at 0, 90, 180 degrees; captions a#0 10, a#1 80, b#0 100, c#0 170:
# text->image ranks 1, 2, 1, 1; image->text ranks 1 (a), 2 (b: a#1 ties it and comes first), 1 (c)
run cmr-eval -k 1,2,100 "$WORK/img.cmr" "$WORK/txt.cmr"
expect_status 0
expect_stdout_has "3 images, 4 texts (1 to 2 captions per image, 1.33 on average), dimension 2"
expect_stdout_has "image->text    66.67  100.00  100.00      1.0     1.33"
expect_stdout_has "text->image    75.00  100.00  100.00      1.0     1.25"
expect_stdout_has "rsum 541.67"
end

begin "--json gives the same numbers; --bootstrap adds intervals; --plot writes an SVG"
run cmr-eval --json --bootstrap 200 "$WORK/img.cmr" "$WORK/txt.cmr"
expect_status 0
expect_stdout_has '"R@1": 66.6667'
expect_stdout_has '"R@1_ci95": ['
expect_stdout_has '"median_rank": 1.0'
expect_stdout_has '"recall_unit": "percent"'
run cmr-eval --plot "$WORK/r.svg" "$WORK/img.cmr" "$WORK/txt.cmr"
expect_status 0
grep -c '<polyline' "$WORK/r.svg" | grep -q '^2$' || why "the plot lacks its two curves"
grep -q '<polygon' "$WORK/r.svg" && why "a band without --bootstrap"
end

begin "--plot: the legend above the curves, text->image dashed (coinciding curves both show), --bootstrap draws a band around each curve"
run cmr-eval --bootstrap 300 --plot "$WORK/b.svg" "$WORK/img.cmr" "$WORK/txt.cmr"
expect_status 0
grep '<polyline' "$WORK/b.svg" | sed -n 2p | grep -q 'stroke-dasharray' || why "text->image is not dashed"
# the curves' highest point (smallest y) is below the legend's lowest text
top=$(grep '<polyline' "$WORK/b.svg" | sed 's/.*points="//; s/".*//' | tr ' ' '\n' | awk -F, 'NF == 2 && (m == "" || $2 < m) { m = $2 } END { print m }')
for y in $(grep -o '<text x="[0-9.]*" y="[0-9.]*" fill=' "$WORK/b.svg" | sed 's/.* y="//; s/".*//'); do
	awk -v y="$y" -v t="$top" 'BEGIN { exit !(y + 4 < t) }' || why "a legend text at y $y reaches the curves (top $t)"
done
[ "$(grep -c '<polygon class="band"' "$WORK/b.svg")" -eq 2 ] || why "not two bands"
# each band holds its curve at every K: band y of the upper edge <= curve y <= lower edge
for s in 1 2; do
	grep '<polyline' "$WORK/b.svg" | sed -n ${s}p | sed 's/.*points="//; s/".*//' | tr ' ' '\n' | grep , >"$WORK/c$s"
	grep '<polygon class="band"' "$WORK/b.svg" | sed -n ${s}p | sed 's/.*points="//; s/".*//' | tr ' ' '\n' | grep , >"$WORK/b$s"
	[ "$(wc -l <"$WORK/b$s")" -eq 100 ] || why "band $s has $(wc -l <"$WORK/b$s") points, not 2 x 50"
	awk -F, 'FNR == NR { c[FNR] = $2; next } FNR <= 50 { if ($2 > c[FNR] + 0.05) bad++ } FNR > 50 { if ($2 < c[101 - FNR] - 0.05) bad++ } END { exit bad > 0 }' "$WORK/c$s" "$WORK/b$s" || why "band $s does not hold its curve"
done
end

# zero-shot classification: images a b c at 0, 90, 180 degrees labelled cat dog cat; prompts
# cat#0 cat#1 at +-10 (mean 0), dog#0 dog#1 at 100 and 80 (mean 90), bird#0 at 225:
# a -> cat, b -> dog, c -> bird (cos 45 beats cat's -1), its class cat ranked 3rd of 3
cmr-dump from-npy --kind embedding --keys "$FIX/zs-txt.keys" "$FIX/zs-txt.npy" >"$WORK/zs.cmr"
begin "--labels: zero-shot top-1 and top-5 accuracy, per class, confusions (hand-computed)"
run cmr-eval --labels "$FIX/zs.labels" "$WORK/img.cmr" "$WORK/zs.cmr"
expect_status 0
expect_stdout_has "zero-shot classification: 3 images, 3 classes (from 5 texts), dimension 2"
expect_stdout_has "top-1    accuracy   66.67"
expect_stdout_has "top-5    accuracy  100.00"
expect_stdout_has "cat                            2       2   50.00"
expect_stdout_has "dog                            2       1  100.00"
expect_stdout_has "bird                           1       0       -"
expect_stdout_has "  cat -> bird: 1"
run cmr-eval --labels "$FIX/zs.labels" -k 1,2 --json "$WORK/img.cmr" "$WORK/zs.cmr"
expect_status 0
expect_stdout_has '"top1": 66.6667'
expect_stdout_has '"top2": 66.6667'
expect_stdout_has '"accuracy_unit": "percent"'
expect_stdout_has '"true": "cat"'
expect_stdout_has '"predicted": "bird"'
end

begin "--labels: an image without a label, a label that is no class, a bad line, a label twice: errors naming them"
printf 'a\tcat\nb\tdog\n' >"$WORK/l1"
run cmr-eval --labels "$WORK/l1" "$WORK/img.cmr" "$WORK/zs.cmr"
expect_status 1
expect_stderr_has "the image 'c' has no label in $WORK/l1"
printf 'a\tcat\nb\tdog\nc\tfish\n' >"$WORK/l2"
run cmr-eval --labels "$WORK/l2" "$WORK/img.cmr" "$WORK/zs.cmr"
expect_status 1
expect_stderr_has "the image 'c' is labelled 'fish', which is not a class of"
expect_stderr_has "hint: the classes are the keys of"
printf 'a\tcat\nb dog\n' >"$WORK/l3"
run cmr-eval --labels "$WORK/l3" "$WORK/img.cmr" "$WORK/zs.cmr"
expect_status 1
expect_stderr_has "l3:2: not KEY<TAB>CLASS"
printf 'a\tcat\nb\tdog\nc\tcat\na\tdog\n' >"$WORK/l4"
run cmr-eval --labels "$WORK/l4" "$WORK/img.cmr" "$WORK/zs.cmr"
expect_status 1
expect_stderr_has "the image 'a' is labelled twice"
run cmr-eval --labels "$FIX/zs.labels" --plot "$WORK/x.svg" "$WORK/img.cmr" "$WORK/zs.cmr"
expect_status 2
end

begin "a caption whose image is absent is refused with its key"
printf 'a#0\na#1\nb#0\nz#0\n' >"$WORK/k"
cmr-dump from-npy --kind embedding --keys "$WORK/k" "$FIX/eval-txt.npy" >"$WORK/orphan.cmr"
run cmr-eval "$WORK/img.cmr" "$WORK/orphan.cmr"
expect_status 1
expect_stderr_has "the image of caption 'z#0' is not in"
expect_stderr_has "hint: "
expect_stdout_empty
end

begin "duplicate keys, an image without captions, mixed dimensions are refused"
printf 'a\nb\na\n' >"$WORK/k"
cmr-dump from-npy --kind embedding --keys "$WORK/k" "$FIX/eval-img.npy" >"$WORK/dup.cmr"
run cmr-eval "$WORK/dup.cmr" "$WORK/txt.cmr"
expect_status 1
expect_stderr_has "image key 'a' occurs more than once"
printf 'a#0\na#1\na#2\nc#0\n' >"$WORK/k"
cmr-dump from-npy --kind embedding --keys "$WORK/k" "$FIX/eval-txt.npy" >"$WORK/nob.cmr"
run cmr-eval "$WORK/img.cmr" "$WORK/nob.cmr"
expect_status 1
expect_stderr_has "image 'b' has no caption"
cmr-dump from-npy --kind embedding --key x#0 "$FIX/f32-3x4.npy" >"$WORK/w.cmr"
run_sh "cat '$WORK/txt.cmr' '$WORK/w.cmr' | cmr-eval '$WORK/img.cmr' -"
expect_status 1
expect_stderr_has "(key 'x#0'): not an f32 or f16 embedding [D]"
cmr-dump from-npy --kind embedding --keys "$FIX/eval-img.keys" "$FIX/f32-3x4.npy" >"$WORK/d4.cmr"
run cmr-eval "$WORK/d4.cmr" "$WORK/txt.cmr"
expect_status 1
expect_stderr_has "images have dimension 4, texts 2"
end

begin "zero-shot pipeline on Flickr8k dev with a random tiny model; a second make does nothing"
if have_shared; then
	"$BUILD/tests/mkclip" model "$WORK/tiny" tiny
	zs() { env -u MAKEFLAGS -u MFLAGS make --no-print-directory -f "$SRCDIR/pipelines/zeroshot.mk" -C "$SRCDIR" \
		MODEL="$WORK/tiny" OUT="$WORK/zs" BIN="$BUILD/bin" IMAGES="$SHARED/data/flickr8k/dev.tar" \
		CAPTIONS="$SHARED/data/flickr8k/captions.token.txt" "$@"; }
	run zs
	expect_status 0
	expect_stdout_has "1000 images, 5000 texts (5 to 5 captions per image, 5.00 on average), dimension 16"
	expect_stdout_has "image->text"
	expect_stdout_has "rsum"
	ls -l --time-style=full-iso "$WORK/zs" >"$WORK/before"
	run zs -q
	expect_status 0 # up to date
	run zs
	expect_status 0
	grep -q 'cmr-' "$OUT" && why "the second run ran tools: $(grep cmr- "$OUT" | head -2)"
	ls -l --time-style=full-iso "$WORK/zs" >"$WORK/after"
	cmp -s "$WORK/before" "$WORK/after" || why "the second run changed files"
	[ -s "$WORK/zs/recall.svg" ] && [ -s "$WORK/zs/results.json" ] || why "results.json or recall.svg missing"
	end
else
	skip "../shared absent"
fi

begin "--score maxsim-mean: late interaction over multi-vector records (a text's words to an image's best region); one row each is the cosine"
printf 'red 1 0 0 0\nblue 0 1 0 0\ndog 0 0 1 0\ncat 0 0 0 1\n' >"$WORK/mv.txt"
printf 'red dog\nblue cat\nred cat\n' >"$WORK/mv-img.txt"
printf '1.jpg#0\tdog red\n2.jpg#0\tcat blue\n3.jpg#0\ta cat that is red\n1.jpg#1\tred\n' >"$WORK/mv-cap.txt"
cmr-caption-ingest -q -f text --word-vectors "$WORK/mv.txt" -o "$WORK/mvi.cmr" "$WORK/mv-img.txt"
cmr-caption-ingest -q --word-vectors "$WORK/mv.txt" -o "$WORK/mvt.cmr" "$WORK/mv-cap.txt"
run cmr-eval -k 1 --score maxsim-mean "$WORK/mvi.cmr" "$WORK/mvt.cmr"
expect_status 0
# 1#1 "red" scores 1 with images 1 and 3: the tie goes to image 1, its own, earlier in the input;
# 3#0 "cat red" scores 1 with image 3, 0.5 with 1 and 2
expect_stdout_has "image->text   100.00      1.0     1.00"
expect_stdout_has "text->image   100.00      1.0     1.00"
run cmr-eval "$WORK/mvi.cmr" "$WORK/mvt.cmr"
expect_status 1
expect_stderr_has "not an f32 or f16 embedding [D]"
run cmr-eval --score maxsim-mean --labels "$WORK/mv.txt" "$WORK/mvi.cmr" "$WORK/mvt.cmr"
expect_status 2
# embeddings are items of one row: the hand-computed table of the cosine, ties and all
run cmr-eval -k 1,2,100 --score maxsim-mean "$WORK/img.cmr" "$WORK/txt.cmr"
expect_status 0
expect_stdout_has "image->text    66.67  100.00  100.00      1.0     1.33"
expect_stdout_has "text->image    75.00  100.00  100.00      1.0     1.25"
end
