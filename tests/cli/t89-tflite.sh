# t89-tflite.sh - cmr-encode with TensorFlow Lite models: tiny generated models (tests/tools/mktflite)
# for the outputs, backends and refusals; with ../shared, the pretrained MobileNets on real photos.
. "$SRCDIR/tests/lib.sh"
MK=$BUILD/tests/mktflite
"$MK" u8 "$WORK/u8.tflite" 1
"$MK" i8 "$WORK/i8.tflite" 1
"$MK" maxpool "$WORK/max.tflite" 1
cmr-decode -q -s 8 "$SRCDIR/tests/fixtures/images" >"$WORK/im8.cmr"
cmr-decode -q -s 9 "$SRCDIR/tests/fixtures/images" >"$WORK/im9.cmr"
N=$(cmr-dump list "$WORK/im8.cmr" | grep -c ' image ')

for k in u8 i8; do
	begin "$k model: pooled features are unit embeddings [C], regions are vectors [16, C], classes are scores [5]"
	ok=1
	for F in pooled regions classes; do
		cmr-encode -q -m "$WORK/$k.tflite" -F $F -o "$WORK/$k-$F.cmr" "$WORK/im8.cmr" || ok=0
	done
	[ $ok = 1 ] || why "cmr-encode failed"
	C=4
	[ $k = i8 ] && C=6
	[ "$(cmr-dump list "$WORK/$k-pooled.cmr" | grep -c " embedding  *f32  *\[$C\] ")" -eq "$N" ] || why "pooled: not $N embeddings [$C]"
	[ "$(cmr-dump list "$WORK/$k-regions.cmr" | grep -c " vectors  *f32  *\[16,$C\] ")" -eq "$N" ] || why "regions: not $N vectors [16,$C]"
	[ "$(cmr-dump list "$WORK/$k-classes.cmr" | grep -c " scores  *f32  *\[5\] ")" -eq "$N" ] || why "classes: not $N scores [5]"
	# unit rows; probabilities that sum to one up to the output's quantisation (5 values of 1/256)
	cmr-dump show -a "$WORK/$k-pooled.cmr" | awk '/^[-0-9]/ {s = 0; for (i = 1; i <= NF; i++) s += $i * $i; if (s < 0.99999 || s > 1.00001) bad++} END {exit bad > 0}' ||
		why "a pooled embedding is not of unit length"
	cmr-dump show -a "$WORK/$k-classes.cmr" | awk '/^[-0-9]/ {s = 0; for (i = 1; i <= NF; i++) s += $i; if (s < 1 - 5 / 256 || s > 1 + 5 / 256) bad++} END {exit bad > 0}' ||
		why "probabilities do not sum to one"
	end

	begin "$k model: the plain loops (--backend ref) and the dgemm path give the same values, bit for bit, at 1 and 2 threads"
	for F in pooled regions classes; do
		for t in 1 2; do
			cmr-encode -q --backend ref -t $t -m "$WORK/$k.tflite" -F $F -o "$WORK/ref.cmr" "$WORK/im8.cmr"
			run cmr-dump diff --max-abs 0 "$WORK/ref.cmr" "$WORK/$k-$F.cmr"
			expect_status 0
		done
	done
	end

	begin "$k model: --top lists the most probable classes as text, best first, with the labels given"
	printf 'zero\none\ntwo\nthree\nfour\n' >"$WORK/labels.txt"
	run cmr-encode -q -m "$WORK/$k.tflite" --top 2 --labels "$WORK/labels.txt" "$WORK/im8.cmr"
	expect_status 0
	[ "$(wc -l <"$OUT")" -eq $((2 * N)) ] || why "not 2 lines per image"
	awk -F'\t' 'NF != 5 || ($2 == 2 && $4 > last) || $5 !~ /^(zero|one|two|three|four)$/ {bad++} {last = $4} END {exit bad > 0}' "$OUT" ||
		why "lines are not KEY RANK CLASS PROB LABEL, best first: $(head -2 "$OUT")"
	end
done

begin "an operator the interpreter lacks is refused, naming it, before anything is read"
run cmr-encode -m "$WORK/max.tflite" "$WORK/im8.cmr"
expect_status 1
expect_stderr_has "operator 3 is MAX_POOL_2D, which is not supported"
expect_stdout_empty
end

begin "a truncated model is refused with a message, not a crash"
head -c 1500 "$WORK/u8.tflite" >"$WORK/cut.tflite"
run cmr-encode -m "$WORK/cut.tflite" "$WORK/im8.cmr"
expect_status 1
expect_stderr_has "cut.tflite: "
end

begin "images of another size are refused with the size to decode at; token records are refused"
run cmr-encode -m "$WORK/u8.tflite" -o "$WORK/x.cmr" "$WORK/im9.cmr"
expect_status 1
expect_stderr_has "the model takes u8 [8,8,3]"
expect_stderr_has "cmr-decode -s 8"
expect_no_file "$WORK/x.cmr"
printf 'a.jpg\ta dog\n' >"$WORK/cap.txt"
cmr-caption-ingest -q -o "$WORK/tok.cmr" "$WORK/cap.txt"
run cmr-encode -m "$WORK/u8.tflite" "$WORK/tok.cmr"
expect_status 1
expect_stderr_has "cannot be encoded by a TFLite image model"
end

begin "CLIP-only and TFLite-only options are refused with the other kind of model (usage, exit 2)"
run cmr-encode -m "$WORK/u8.tflite" --mean-by-key "$WORK/im8.cmr"
expect_status 2
run cmr-encode -m "$WORK/u8.tflite" -F regions --top 3 "$WORK/im8.cmr"
expect_status 2
run cmr-encode -m "$WORK/u8.tflite" --labels "$WORK/labels.txt" "$WORK/im8.cmr"
expect_status 2
end

# ---- the pretrained MobileNets (../shared/pretrained) ----
P=$SHARED/pretrained/mobilenet-tflite
begin "real photos: each classifier's top-1 (hot dog 935 and macaw 89; the pets a dog or cat class; the burrowing owl, no ImageNet class, a bird)"
if [ -d "$P" ]; then
	cmr-decode -q -s 224 "$P/images" >"$WORK/photos.cmr"
	for m in mobilenet_v2_1.0_224_quant tf2_mobilenet_v2_1.0_224_ptq; do
		run cmr-encode -q -m "$P/$m.tflite" --top 1 --labels "$P/imagenet_labels.txt" "$WORK/photos.cmr"
		expect_status 0
		# ImageNet + background: birds 8-25 and 81-101 and 128-147, dogs 152-269, cats 282-286
		awk -F'\t' '
			$1 == "hot_dog" && $3 == 935 {ok++}
			$1 == "parrot" && $3 == 89 {ok++}
			$1 == "pets" && (($3 >= 152 && $3 <= 269) || ($3 >= 282 && $3 <= 286)) {ok++}
			$1 == "owl" && (($3 >= 8 && $3 <= 25) || ($3 >= 81 && $3 <= 101) || ($3 >= 128 && $3 <= 147)) {ok++}
			END {exit ok != 4}' "$OUT" || why "$m: $(cut -f1,3,5 "$OUT" | tr '\n' ';')"
	done
	end
else
	skip "../shared absent"
fi

begin "Flickr8k dev: the uint8 and the TF2 post-training-quantised MobileNetV2 agree on top-1 for most photos (200 photos; measured 60%, 86% where the uint8 one is above 0.5)"
if have_shared && [ -d "$P" ]; then
	cmr-decode -q -s 224 "$SHARED/data/flickr8k/dev.tar" >"$WORK/dev.cmr"
	# the first 200 images: cut the stream at its 201st image record
	off=$(cmr-dump list "$WORK/dev.cmr" | awk '$3 == "tensor" {n++; if (n == 201) {print $2; exit}}')
	head -c "$off" "$WORK/dev.cmr" >"$WORK/dev200.cmr"
	cmr-encode -q -m "$P/mobilenet_v2_1.0_224_quant.tflite" --top 1 "$WORK/dev200.cmr" >"$WORK/a.tsv"
	cmr-encode -q -m "$P/tf2_mobilenet_v2_1.0_224_ptq.tflite" --top 1 "$WORK/dev200.cmr" >"$WORK/b.tsv"
	paste "$WORK/a.tsv" "$WORK/b.tsv" | awk -F'\t' '{n++; s += $3 == $8} $4 > 0.5 {c++; cs += $3 == $8}
		END {printf "%d of %d agree, %d of %d confident\n", s, n, cs, c; exit !(n == 200 && s >= 0.5 * n && cs >= 0.75 * c)}' >"$OUT" ||
		why "$(cat "$OUT")"
	end
else
	skip "../shared absent"
fi

begin "the embedding extractor gives 1024-d pooled features and [49, 1024] regions on real photos"
if [ -d "$P" ]; then
	run cmr-encode -q -m "$P/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite" -F regions "$WORK/photos.cmr"
	expect_status 0
	cmr-dump list "$OUT" | grep -q " vectors  *f32  *\[49,1024\] " || why "no [49,1024] regions"
	run cmr-encode -q -m "$P/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite" "$WORK/photos.cmr"
	expect_status 0
	[ "$(cmr-dump list "$OUT" | grep -c " embedding  *f32  *\[1024\] ")" -eq 4 ] || why "not 4 embeddings [1024]"
	end
else
	skip "../shared absent"
fi
