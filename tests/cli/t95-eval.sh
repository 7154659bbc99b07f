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
