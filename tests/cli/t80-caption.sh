# t80-caption.sh - cmr-caption-ingest: CLIP tokens equal to the reference's on a stress set and
# on all Flickr8k captions; every input format; bad input.
. "$SRCDIR/tests/lib.sh"
T=$SRCDIR/tests/golden/tokens
ids_of() { cmr-dump show -a "$@" | awk -F'\t' 'NF==4{k=$1; next} {print k "\t" $0}'; }

begin "293 stress strings tokenize as the reference tokenizer does"
run_sh "cmr-caption-ingest -f jsonl '$T/stress.jsonl' | cmr-dump show -a | awk 'NR % 2 == 0'"
expect_status 0
expect_stdout_file "$T/stress.ids"
end

begin "a Hugging Face vocab.json + merges.txt pair gives the same ids"
mkdir "$WORK/hf"
"$BUILD/tests/mkhf" "$SRCDIR/lib/text/clip/bpe_simple_vocab_16e6.txt.gz" "$WORK/hf"
run_sh "cmr-caption-ingest --hf '$WORK/hf' -f jsonl '$T/stress.jsonl' | cmr-dump show -a | awk 'NR % 2 == 0'"
expect_status 0
expect_stdout_file "$T/stress.ids"
run_sh "cmr-caption-ingest --bpe '$SRCDIR/lib/text/clip/bpe_simple_vocab_16e6.txt.gz' -f jsonl '$T/stress.jsonl' | cmr-dump show -a | awk 'NR % 2 == 0'"
expect_stdout_file "$T/stress.ids"
end

begin "a typed query: one caption per line on standard input"
run_sh "echo 'a dog on the beach' | cmr-caption-ingest | cmr-dump show"
expect_status 0
expect_stdout_has "1	tokens	i32	[7]"
expect_stdout_has "49406 320 1929 525 518 2117 49407"
end

begin "long captions are cut to the context length with the end token kept"
run_sh "printf 'dog %.0s' \$(seq 100) | cmr-caption-ingest | cmr-dump show -a"
expect_stdout_has "[77]"
tail -1 "$OUT" | awk '{ if ($77 != 49407 || NF != 77) exit 1 }' || why "last id is not 49407"
run_sh "echo 'a dog on the beach' | cmr-caption-ingest -c 5 | cmr-dump show"
expect_stdout_has "49406 320 1929 525 49407"
end

begin "--desc writes auxiliary descriptions as desc-tokens"
run_sh "printf 'img1.jpg#0\ta photo of a dog\n' | cmr-caption-ingest --desc | cmr-dump list -H"
expect_stdout_has "desc-tokens"
expect_stdout_has "img1#0"
end

begin "Flickr token file: keys IMAGE#N"
printf '1000268201_693b08cb0e.jpg#0\tA child in a pink dress .\n1000268201_693b08cb0e.jpg#1\tA girl going into a wooden building .\n' >"$WORK/f.token"
run_sh "cmr-caption-ingest '$WORK/f.token' | cmr-dump list -H"
expect_status 0
expect_stdout_has " 1000268201_693b08cb0e#0"
expect_stdout_has " 1000268201_693b08cb0e#1"
end

begin "--only keeps the captions of the listed images"
printf 'dir/1000268201_693b08cb0e.jpg\n' >"$WORK/only"
printf '1000268201_693b08cb0e.jpg#0\ta\n1000268201_693b08cb0e.jpg#1\tb\n2000.jpg#0\tc\n' >"$WORK/o.token"
run_sh "cmr-caption-ingest --only '$WORK/only' '$WORK/o.token' | cmr-dump list -H | awk '\$2 != 0 {print \$NF}' | tr '\n' ' '"
expect_status 0
[ "$(cat "$OUT")" = "1000268201_693b08cb0e#0 1000268201_693b08cb0e#1 " ] || why "kept: $(cat "$OUT")"
end

begin "Karpathy JSON: splits, keys, counts"
cat >"$WORK/k.json" <<'JSON'
{"images": [
 {"filename": "a.jpg", "split": "train", "sentences": [{"raw": "one"}, {"raw": "two"}]},
 {"filename": "b.jpg", "split": "val", "sentences": [{"raw": "three"}]},
 {"filename": "c.jpg", "split": "restval", "sentences": [{"raw": "four"}, {"raw": "five"}, {"raw": "six"}]},
 {"filename": "d.jpg", "split": "test", "sentences": [{"raw": "seven"}]}]}
JSON
run_sh "cmr-caption-ingest '$WORK/k.json' | cmr-dump list -H | grep -c tokens"
[ "$(cat "$OUT")" = 7 ] || why "all splits: $(cat "$OUT") records"
run_sh "cmr-caption-ingest --split train,restval '$WORK/k.json' | cmr-dump list -H | awk '\$2 != 0 {print \$NF}' | tr '\n' ' '"
[ "$(cat "$OUT")" = "a#0 a#1 c#0 c#1 c#2 " ] || why "train,restval: $(cat "$OUT")"
end

begin "COCO JSON: numbered per image in annotation order; a missing image is named"
cat >"$WORK/c.json" <<'JSON'
{"images": [{"id": 7, "file_name": "000000000007.jpg"}, {"id": 9, "file_name": "000000000009.jpg"}],
 "annotations": [{"image_id": 9, "caption": "x"}, {"image_id": 7, "caption": "y"}, {"image_id": 9, "caption": "z"},
                 {"image_id": 5, "caption": "orphan"}, {"image_id": 7, "caption": 3}]}
JSON
run_sh "cmr-caption-ingest '$WORK/c.json' | cmr-dump list -H | awk '\$2 != 0 {print \$NF}' | tr '\n' ' '"
[ "$(cat "$OUT")" = "000000000009#0 000000000007#0 000000000009#1 " ] || why "keys: $(cat "$OUT")"
expect_stderr_has "c.json: annotations[3]: image_id 5 is not in \"images\" (skipped)"
expect_stderr_has "c.json: annotations[4]: needs an integer \"image_id\" and a string \"caption\" (skipped)"
expect_stderr_has "2 of 5 captions could not be read"
end

begin "COCO JSON: 200k images with 200k captions in reverse order within 15 s of CPU (the quadratic matching took over 30)"
# A bound on CPU time, not wall time, so other load does not matter: the linear matching
# measured 1.4 s here (4 s under ASan); the old one went past 30 s (killed by SIGXCPU).
awk 'BEGIN { n = 200000; printf "{\"images\": ["
	for (i = 1; i <= n; i++) printf "%s{\"id\": %d, \"file_name\": \"%012d.jpg\"}", (i > 1 ? ", " : ""), i, i
	printf "], \"annotations\": ["
	for (i = n; i >= 1; i--) printf "%s{\"image_id\": %d, \"caption\": \"a dog\"}", (i < n ? ", " : ""), i
	print "]}" }' >"$WORK/big.json"
run sh -c 'ulimit -t 15; exec cmr-caption-ingest -o "$1" "$2"' sh "$WORK/big.cmr" "$WORK/big.json"
expect_status 0
run_sh "cmr-dump list -H '$WORK/big.cmr' | awk '\$2 != 0 { n++; k = \$NF } END { print n, k }'"
[ "$(cat "$OUT")" = "200000 000000000001#0" ] || why "records: $(cat "$OUT")"
rm -f "$WORK/big.json" "$WORK/big.cmr"
end

begin "-f classes: each class through each template, keys CLASS#T, the same tokens as the texts written out"
printf 'cat\nsea lion\n' >"$WORK/cls.txt"
run_sh "cmr-caption-ingest -f classes --template 'a photo of a {}.' --template '{}' '$WORK/cls.txt' | cmr-dump show"
expect_status 0
printf 'a photo of a cat.\ncat\na photo of a sea lion.\nsea lion\n' | cmr-caption-ingest -f text | cmr-dump show | grep -v tokens >"$WORK/want"
[ "$(grep -v tokens "$OUT")" = "$(cat "$WORK/want")" ] || why "tokens differ from the texts written out"
[ "$(grep tokens "$OUT" | cut -f1 | tr '\n' ' ')" = "cat#0 cat#1 sea lion#0 sea lion#1 " ] || why "keys: $(grep tokens "$OUT" | cut -f1)"
# the default template, and templates from a file
run_sh "cmr-caption-ingest -f classes '$WORK/cls.txt' | cmr-dump show | sed -n 2p"
[ "$(cat "$OUT")" = "$(echo 'a photo of a cat.' | cmr-caption-ingest | cmr-dump show | sed -n 2p)" ] || why "the default template is not 'a photo of a {}.'"
printf 'itap of a {}.\n\na bad photo of the {}.\n' >"$WORK/tpl.txt"
run_sh "cmr-caption-ingest -f classes --templates '$WORK/tpl.txt' '$WORK/cls.txt' | cmr-dump list -H | awk '\$2 != 0' | wc -l"
[ "$(cat "$OUT")" -eq 4 ] || why "two templates (the blank line skipped) x two classes: $(cat "$OUT") records"
end

begin "-f classes: a class with '#' or given twice is skipped and named; a template without {} is a usage error"
printf 'cat\nc#t\ncat\n' >"$WORK/bad-cls.txt"
run_sh "cmr-caption-ingest -f classes '$WORK/bad-cls.txt' | cmr-dump list -H | awk '\$2 != 0 {print \$NF}' | tr '\n' ' '"
[ "$(cat "$OUT")" = "cat#0 " ] || why "records: $(cat "$OUT")"
expect_stderr_has "bad-cls.txt:2: the class name 'c#t' holds '#', which keys use to number a prompt (skipped)"
expect_stderr_has "bad-cls.txt:3: the class 'cat' is given twice (skipped)"
run cmr-caption-ingest -f classes --template 'a photo' "$WORK/cls.txt"
expect_status 2
expect_stderr_has "--template: the template 'a photo' has no {} for the class name"
run cmr-caption-ingest -f text --template '{}' "$WORK/cls.txt"
expect_status 2
expect_stderr_has "--template and --templates are for -f classes"
end

begin "webdataset tar: KEY.txt lines and KEY.json captions"
mkdir "$WORK/wds"
printf 'first caption\nsecond caption\n' >"$WORK/wds/s1.txt"
printf '{"caption": ["a", "b", "c"]}' >"$WORK/wds/s2.json"
printf 'not a caption' >"$WORK/wds/s2.cls"
(cd "$WORK/wds" && tar cf ../w.tar s1.txt s2.json s2.cls)
run_sh "cmr-caption-ingest '$WORK/w.tar' | cmr-dump list -H | awk '\$2 != 0 {print \$NF}' | tr '\n' ' '"
expect_status 0
[ "$(cat "$OUT")" = "s1#0 s1#1 s2#0 s2#1 s2#2 " ] || why "keys: $(cat "$OUT")"
end

begin "an archive is known by its bytes, not its name: a tar on standard input, shards.wds, a gzipped tar"
cp "$WORK/w.tar" "$WORK/shards.wds"
gzip -c "$WORK/w.tar" >"$WORK/w.gz"
cmr-caption-ingest "$WORK/w.tar" | cmr-dump list -H | awk '$2 != 0 {print $NF}' >"$WORK/want.keys"
for how in "< '$WORK/w.tar'" "'$WORK/shards.wds'" "< '$WORK/w.gz'"; do
	run_sh "cmr-caption-ingest $how | cmr-dump list -H | awk '\$2 != 0 {print \$NF}'"
	expect_status 0
	expect_stdout_file "$WORK/want.keys"
	expect_stderr_empty
done
run cmr-caption-ingest -f flickr "$WORK/shards.wds"
expect_status 1
expect_stderr_has "shards.wds is an archive or a compressed file, not flickr captions: give -f wds, or no -f"
end

begin "no captions out of a non-empty input is an error with a hint, nothing written"
mkdir "$WORK/imgdir"
"$BUILD/tests/mkjpeg" rgb 16 16 "$WORK/imgdir/a.jpg"
(cd "$WORK/imgdir" && tar cf ../imgs.tar a.jpg)
run cmr-caption-ingest -o "$WORK/none.cmr" "$WORK/imgs.tar"
expect_status 1
expect_stderr_has "no captions in $WORK/imgs.tar"
expect_stderr_has "hint: a webdataset tar needs KEY.txt or KEY.json members"
expect_no_file "$WORK/none.cmr"
echo zzz >"$WORK/only.txt"
run cmr-caption-ingest --only "$WORK/only.txt" -o "$WORK/none.cmr" "$WORK/w.tar"
expect_status 1
expect_stderr_has "none of the 5 captions of $WORK/w.tar is of an image listed in $WORK/only.txt"
expect_no_file "$WORK/none.cmr"
end

begin "one key grammar: two images of one basename, an empty image name, a key with a NUL are errors naming them (were a#0 twice, #0, a cut key)"
cat >"$WORK/k.json" <<'JSON'
{"images": [{"filepath": "train", "filename": "a.jpg", "split": "test", "sentences": [{"raw": "one"}]},
            {"filepath": "val", "filename": "a.jpg", "split": "test", "sentences": [{"raw": "two"}]},
            {"filepath": "val", "filename": ".jpg", "split": "test", "sentences": [{"raw": "three"}]}]}
JSON
run cmr-caption-ingest -o "$WORK/k.cmr" "$WORK/k.json"
expect_status 1
expect_stderr_has "images[1].sentences[0]: the images 'train/a.jpg' and 'val/a.jpg' both have the key 'a'"
expect_stderr_has "images[2].sentences[0]: the image name 'val/.jpg' gives an empty key"
run cmr-dump list -H "$WORK/k.cmr"
[ "$(grep -c tokens "$OUT")" -eq 1 ] || why "$(grep -c tokens "$OUT") records, 1 expected (train/a.jpg's)"
printf '{"image": "x\\u0000y.jpg", "caption": "hello"}\n' >"$WORK/nul.jsonl"
run cmr-caption-ingest -o "$WORK/n.cmr" "$WORK/nul.jsonl"
expect_status 1
expect_stderr_has "nul.jsonl:1: \"image\" holds a NUL character (\\u0000): not a key"
end

begin "-m MODEL: the context length of the checkpoint; -c that disagrees is a usage error"
"$BUILD/tests/mkclip" model "$WORK/mini" mini
run_sh "echo 'a caption much longer than eight tokens of the mini model' | cmr-caption-ingest -m '$WORK/mini' | cmr-dump list -H"
expect_status 0
expect_stdout_has "tokens      i32   [8]"
run_sh "echo x | cmr-caption-ingest -m '$WORK/mini' -c 77 > /dev/null"
expect_status 2
expect_stderr_has "-c 77 disagrees with $WORK/mini, whose context is 8: give one of them"
end

begin "errors are capped: the first 10 are shown, then how many more"
seq 30 | sed 's/^/no tab on line /' >"$WORK/many.token"
run cmr-caption-ingest -f flickr -o "$WORK/m.cmr" "$WORK/many.token"
expect_status 1
[ "$(grep -c '(skipped)' "$ERR")" -eq 10 ] || why "$(grep -c '(skipped)' "$ERR") errors shown"
expect_stderr_has "many.token:10: no tab"
expect_stderr_has "20 more skipped, not shown (the first 10 are above)"
expect_stderr_has "30 of 30 captions could not be read"
end

begin "TSV and JSON Lines with named columns"
printf 'caption\timage\nred car\tcars/r.jpg\nblue car\tcars/r.jpg\n' >"$WORK/t.tsv"
run_sh "cmr-caption-ingest '$WORK/t.tsv' | cmr-dump list -H | awk '\$2 != 0 {print \$NF}' | tr '\n' ' '"
[ "$(cat "$OUT")" = "r#0 r#1 " ] || why "tsv keys: $(cat "$OUT")"
printf '{"img": "x.jpg", "text": "hello"}\n"bare string"\n' >"$WORK/j.jsonl"
run_sh "cmr-caption-ingest --key-field img --text-field text '$WORK/j.jsonl' | cmr-dump list -H | awk '\$2 != 0 {print \$NF}' | tr '\n' ' '"
[ "$(cat "$OUT")" = "x#0 2 " ] || why "jsonl keys: $(cat "$OUT")"
end

begin "bad input: invalid UTF-8, no tab, bad key form, overlong caption; named by file and line"
printf 'a.jpg#0\tgood\na.jpg#1\tbad \377 byte\nno tab here\nb.jpg\tno number\na.jpg#2\t%s\n' "$(head -c 20000 /dev/zero | tr '\0' x)" >"$WORK/bad.token"
run_sh "cmr-caption-ingest -f flickr '$WORK/bad.token' > '$WORK/bad.cmr'"
expect_status 1
expect_stderr_has "bad.token:2: not valid UTF-8 at byte 4 of the caption (skipped)"
expect_stderr_has "bad.token:3: no tab between IMAGE#N and the caption (skipped)"
expect_stderr_has "bad.token:4: 'b.jpg' is not IMAGE#N (skipped)"
expect_stderr_has "bad.token:5: caption of 20000 bytes is longer than --max-bytes 16384 (skipped)"
expect_stderr_has "4 of 5 captions could not be read"
run cmr-dump list -H "$WORK/bad.cmr"
expect_stdout_has " a#0"
end

begin "--strict stops at the first bad caption"
run_sh "cmr-caption-ingest --strict -f flickr '$WORK/bad.token' > /dev/null"
expect_status 1
expect_stderr_has "bad.token:2: not valid UTF-8"
grep -q "bad.token:3" "$ERR" && why "went on after the first error"
end

begin "malformed JSON names line and column; JSON of the wrong layout is refused"
printf '{"images": [1, 2,}' >"$WORK/broken.json"
run cmr-caption-ingest "$WORK/broken.json"
expect_status 1
expect_stderr_has "broken.json:1:"
printf '{"something": []}' >"$WORK/other.json"
run cmr-caption-ingest "$WORK/other.json"
expect_status 1
expect_stderr_has "neither COCO captions"
end

begin "all 35,460 Flickr8k captions tokenize as the reference tokenizer does"
if have_shared; then
	cmr-caption-ingest "$SHARED/data/flickr8k/captions.token.txt" >"$WORK/f.cmr"
	ids_of "$WORK/f.cmr" >"$WORK/f.ids"
	zstd -q -d -c "$T/flickr8k.ids.zst" >"$WORK/want.ids"
	expect_same "$WORK/want.ids" "$WORK/f.ids"
	[ "$(wc -l <"$WORK/f.ids")" -eq 35460 ] || why "$(wc -l <"$WORK/f.ids") captions"
	end
else
	skip "../shared absent"
fi

begin "COCO captions JSON of coco-mini: 395 captions of 79 images"
if have_shared; then
	run_sh "cmr-caption-ingest '$SHARED/data/coco-mini/captions_val2017.json' | cmr-dump list -H | awk '\$2 != 0 {print \$NF}'"
	expect_status 0
	[ "$(wc -l <"$OUT")" -eq 395 ] || why "$(wc -l <"$OUT") captions"
	[ "$(sed 's/#.*//' "$OUT" | sort -u | wc -l)" -eq 79 ] || why "not 79 images"
	grep -q '^000000[0-9]*#4$' "$OUT" || why "no fifth caption keys"
	# every caption key names an image of the tar
	tar tf "$SHARED/data/coco-mini/val2017.tar" | sed 's|.*/||; s|\..*||' | sort >"$WORK/imgs"
	sed 's/#.*//' "$OUT" | sort -u | comm -23 - "$WORK/imgs" >"$WORK/orphans"
	[ ! -s "$WORK/orphans" ] || why "captions without images: $(head -3 "$WORK/orphans")"
	end
else
	skip "../shared absent"
fi

# ---- word vectors (--word-vectors) ----
printf 'dog 3 4 0\nbeach 0 0 2\nthe 1 0 0\n' >"$WORK/wv.txt"
printf 'a.jpg#0\tThe Dog on the beach.\nb.jpg#0\tzebra crossing\nc.jpg#0\tDOG\n' >"$WORK/wv-cap.txt"

begin "--word-vectors: each caption's found words as unit rows (kind vectors [N, D]); words without one skipped, counted; a caption without any has no rows, said"
run cmr-caption-ingest --word-vectors "$WORK/wv.txt" -o "$WORK/wv.cmr" "$WORK/wv-cap.txt"
expect_status 0
expect_stderr_has "3 of 8 words have no vector"
expect_stderr_has "(e.g. 'on', 'zebra', 'crossing')"
expect_stderr_has "1 captions have no word with a vector: written without rows (they score 0)"
cmr-dump list -H "$WORK/wv.cmr" | awk '$2 != 0 {print $4, $6, $NF}' >"$WORK/l"
printf 'vectors [4,3] a#0\nvectors [0,3] b#0\nvectors [1,3] c#0\n' | cmp -s - "$WORK/l" || why "records: $(cat "$WORK/l")"
cmr-dump show -k 'a#0' "$WORK/wv.cmr" | sed -n 2,5p | tr '\n' ' ' |
	awk '{split("1 0 0 0.6 0.8 0 1 0 0 0 0 1", w, " "); e = NF != 12; for (i = 1; i <= 12; i++) if ($i - w[i] > 1e-6 || w[i] - $i > 1e-6) e = 1; exit e}' ||
	why "rows: $(cmr-dump show -k 'a#0' "$WORK/wv.cmr")"
end

begin "--word-vectors --mean: one unit embedding per caption, the mean of its unit word vectors"
run cmr-caption-ingest --mean --word-vectors "$WORK/wv.txt" -o "$WORK/wvm.cmr" "$WORK/wv-cap.txt"
expect_status 0
# (1,0,0) twice + (0.6,0.8,0) + (0,0,1) = (2.6, 0.8, 1), over its norm 2.8999
cmr-dump show -k 'a#0' "$WORK/wvm.cmr" | sed -n 2p |
	awk '{d = sqrt(2.6 * 2.6 + 0.8 * 0.8 + 1); e = 0; w[1] = 2.6 / d; w[2] = 0.8 / d; w[3] = 1 / d;
	      for (i = 1; i <= 3; i++) if ($i - w[i] > 1e-6 || w[i] - $i > 1e-6) e = 1; exit e}' ||
	why "mean: $(cmr-dump show -k 'a#0' "$WORK/wvm.cmr")"
run cmr-caption-ingest --mean "$WORK/wv-cap.txt"
expect_status 2
run cmr-caption-ingest --word-vectors "$WORK/wv.txt" -c 32 "$WORK/wv-cap.txt"
expect_status 2
printf 'dog 1 2\ncat 1\n' >"$WORK/wv-bad.txt"
run cmr-caption-ingest --word-vectors "$WORK/wv-bad.txt" "$WORK/wv-cap.txt"
expect_status 1
expect_stderr_has "wv-bad.txt:2: 1 values, the file's vectors have 2"
end

begin "Flickr8k dev captions through the shared GloVe-50d and 300-d tables: [N, 50] and [300] records"
if have_shared && [ -d "$SHARED/pretrained/glove-50d-subset" ]; then
	head -200 "$SHARED/data/flickr8k/captions.token.txt" >"$WORK/f200.txt"
	run cmr-caption-ingest --word-vectors "$SHARED/pretrained/glove-50d-subset/embeddings.json" -o "$WORK/g.cmr" "$WORK/f200.txt"
	expect_status 0
	n=$(cmr-dump list -H "$WORK/g.cmr" | awk '$2 != 0 && $4 == "vectors" && $6 ~ /^\[[0-9]+,50\]$/' | wc -l)
	[ "$n" -ge 190 ] || why "$n captions with GloVe vectors of 200"
	run cmr-caption-ingest --mean --word-vectors "$SHARED/pretrained/wordvecs-300d-1000/wordvecs1000.json" -o "$WORK/w.cmr" "$WORK/f200.txt"
	expect_status 0
	n=$(cmr-dump list -H "$WORK/w.cmr" | awk '$2 != 0 && $4 == "embedding" && $6 == "[300]"' | wc -l)
	[ "$n" -ge 190 ] || why "$n captions with 300-d means of 200"
	end
else
	skip "../shared absent"
fi
