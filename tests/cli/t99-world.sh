# t99-world.sh - mkworld: a database from a JSON world file alone (tests/fixtures/worlds/
# tiny.json): what it writes, that cmr-decode and cmr-caption-ingest read it, determinism,
# distinct test scenes, and errors that name the field; the shipped worlds load.
. "$SRCDIR/tests/lib.sh"
MW=$BUILD/examples/mkworld
TINY=$SRCDIR/tests/fixtures/worlds/tiny.json

begin "a world of a JSON file: images, captions, three descriptions and a label per image, read by cmr-decode and cmr-caption-ingest"
run sh -c "'$MW' '$TINY' > '$WORK/train.tar'"
expect_status 0
[ "$(tar tf "$WORK/train.tar" | grep -c '\.jpg$')" -eq 12 ] || why "expected the world's 12 training images"
for k in tiny-train000000 tiny-train000011; do
	[ "$(tar xOf "$WORK/train.tar" $k.txt | wc -l)" -eq 2 ] || why "$k: expected 2 captions"
	[ "$(tar xOf "$WORK/train.tar" $k.desc | wc -l)" -eq 3 ] || why "$k: expected 3 descriptions"
	tar xOf "$WORK/train.tar" $k.cls | grep -qx '[012]' || why "$k: the label is not a colour index"
done
run sh -c "cmr-decode -s 32 '$WORK/train.tar' | cmr-dump list"
expect_status 0
[ "$(grep -c ' image ' "$OUT")" -eq 12 ] || why "cmr-decode read $(grep -c ' image ' "$OUT") images"
run sh -c "cmr-caption-ingest -f wds -c 77 '$WORK/train.tar' | cmr-dump list"
expect_status 0
[ "$(grep -c ' tokens ' "$OUT")" -eq 24 ] || why "cmr-caption-ingest read $(grep -c ' tokens ' "$OUT") captions"
grep -q 'tiny-train000003#1' "$OUT" || why "caption keys are not <image key>#<n>"
end

begin "the same world gives the same bytes; another seed another database"
"$MW" "$TINY" >"$WORK/again.tar"
expect_same "$WORK/train.tar" "$WORK/again.tar"
sed 's/"seed": 5/"seed": 6/' "$TINY" >"$WORK/seed6.json"
"$MW" "$WORK/seed6.json" >"$WORK/other.tar"
cmp -s "$WORK/train.tar" "$WORK/other.tar" && why "seed 6 wrote the bytes of seed 5"
end

begin "a test split holds distinct scenes: every caption names one image"
run sh -c "'$MW' --split test '$TINY' > '$WORK/test.tar'"
expect_status 0
for k in $(tar tf "$WORK/test.tar" | sed -n 's/\.txt$//p'); do tar xOf "$WORK/test.tar" $k.txt | head -1; done >"$WORK/caps"
[ "$(wc -l <"$WORK/caps")" -eq 8 ] || why "expected 8 test images"
[ "$(sort -u "$WORK/caps" | wc -l)" -eq 8 ] || why "two test images share a caption: $(sort "$WORK/caps" | uniq -d | head -2)"
end

begin "a world with too few distinct scenes for the test split asked for is an error saying so"
# one object a scene: 2 shapes x 3 colours x 2 sizes x 9 places = 108 scenes
sed 's/"max": 2/"max": 1/' "$TINY" >"$WORK/one.json"
run sh -c "'$MW' --split test -n 108 '$WORK/one.json' > '$WORK/all.tar'"
expect_status 0
run sh -c "'$MW' --split test -n 109 '$WORK/one.json' > '$WORK/big.tar'"
expect_status 1
expect_stderr_has "fewer than 109 distinct scenes"
end

begin "bad worlds: the field is named (unknown, out of range, a word of two entries, not JSON); usage errors exit 2"
sed 's/"seed": 5/"sed": 5/' "$TINY" >"$WORK/b1.json"
run "$MW" "$WORK/b1.json"
expect_status 1
expect_stderr_has 'unknown field "sed"'
sed 's/\[220, 40, 40\]/[220, 40, 400]/' "$TINY" >"$WORK/b2.json"
run "$MW" "$WORK/b2.json"
expect_status 1
expect_stderr_has "colours[0].rgb[2]: give an integer in 0..255"
sed 's/"words": \["blue", "azure"\]/"words": ["blue", "red"]/' "$TINY" >"$WORK/b3.json"
run "$MW" "$WORK/b3.json"
expect_status 1
expect_stderr_has "'red' is a word of both red and blue"
echo '{"name": ' >"$WORK/b4.json"
run "$MW" "$WORK/b4.json"
expect_status 1
expect_stderr_has "b4.json:"
run "$MW" --split dev "$TINY"
expect_status 2
end

begin "the shipped worlds (source and four target databases) load and render"
for w in source render vocab compose personal; do
	"$MW" -n 2 "$SRCDIR/examples/worlds/$w.json" >"$WORK/$w.tar" 2>"$WORK/$w.err" || why "$w: $(cat "$WORK/$w.err")"
	[ "$(tar tf "$WORK/$w.tar" | grep -c '\.jpg$')" -eq 2 ] || why "$w: expected 2 images"
done
end

begin "the transfer benchmark (pipelines/transfer.mk) runs on databases of JSON files alone: base, rows, table; a second make has nothing to do"
mkdir -p "$WORK/worlds"
cp "$TINY" "$WORK/worlds/tiny.json"
sed 's/"seed": 5/"seed": 9/; s/"name": "tiny"/"name": "mine"/; s/"words": \["circle", "orb"\]/"words": ["ball"]/' "$TINY" >"$WORK/worlds/mine.json"
cat >"$WORK/base.json" <<'J'
{"projection_dim": 16,
 "text_config": {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4, "intermediate_size": 64,
   "vocab_size": 49408, "max_position_embeddings": 64},
 "vision_config": {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4, "intermediate_size": 64,
   "image_size": 32, "patch_size": 16}}
J
set -- -s -C "$SRCDIR" -f pipelines/transfer.mk WORLDS="$WORK/worlds" SOURCE=tiny TARGETS=mine SEEDS="1 2" \
	BASE_CONFIG="$WORK/base.json" BASE_EPOCHS=2 TUNE_EPOCHS=1 BATCH=4 SIZE=32 OUT="$WORK/transfer" BIN="$BUILD/bin" \
	MKWORLD="$BUILD/examples/mkworld"
run make "$@"
expect_status 0
for m in zeroshot full proj last tprompt vprompt prompts deep; do
	grep -q "^| mine | $m |" "$WORK/transfer/results.md" || why "no $m row"
done
# 2 text and 8 vision prompts of 32 floats, deep: 3 layers each
grep -q '"method": "deep", "seeds": 2, .*"trainable": 960,' "$WORK/transfer/results.json" ||
	why "the deep prompts row should train (2 + 8) x 32 x 3 = 960 floats: $(grep deep "$WORK/transfer/results.json")"
[ -f "$WORK/transfer/runs/mine/prompts-s1/model/adapter_config.json" ] || why "the prompts row wrote no tuning"
grep -q '<circle' "$WORK/transfer/results.svg" || why "no plot"
touch "$BUILD/bin/cmr-train" # a rebuilt tool redoes nothing (the tools are order-only)
grep -q '"method": "proj", "seeds": 2, .*"trainable": 1024, "bytes": 4096' "$WORK/transfer/results.json" ||
	why "the projections row should train 2 x 16 x 32 = 1024 floats: $(grep proj "$WORK/transfer/results.json")"
run make -q "$@"
expect_status 0
end
