# t91-prompt.sh - prompt tuning (cmr-train --text-prompts/--vision-prompts, cmr-encode --tuning,
# cmr-tuning(5)): the prompted forward pass and the prompts' gradients against PyTorch's
# (tests/golden/prompt, made by tests/ref/make-prompt-goldens.sh, which uses these record
# seeds), then the tools: a tuning trains only the prompts, is kilobytes, resumes exactly, is
# applied by cmr-encode, and is refused for another base or when it is damaged.
. "$SRCDIR/tests/lib.sh"
MK=$BUILD/tests/mkclip
PC=$BUILD/tests/promptcheck
G=$SRCDIR/tests/golden/prompt

"$MK" model "$WORK/tiny" tiny
"$MK" images 4 32 8 >"$WORK/i.cmr"
"$MK" tokens 4 8 >"$WORK/t.cmr"
# tolerances: the largest errors measured (ref and blas, this machine) were 6.8e-7 for an
# embedding and 3.7e-6 for a gradient (B/32-shaped, blas); 1.1e-6 for the tiny model's
for g in shallow deep; do
	for backend in $(backends); do
		begin "tiny, $g prompts, $backend: embeddings within 1e-6 and prompt gradients within 2e-6 of PyTorch, captions cut alike"
		run "$PC" "$WORK/tiny" "$WORK/i.cmr" "$WORK/t.cmr" "$G/tiny-$g.safetensors" $backend 1e-6 2e-6
		expect_status 0
		expect_stdout_has "ok  : captions cut for the text prompts: 1, reference 1"
		expect_stdout_has "ok  : frozen base"
		grep -q FAIL "$OUT" && why "$(grep FAIL "$OUT")"
		end
	done
done

begin "the prompt check can fail: the deep golden on a model with the other activation"
"$MK" model "$WORK/gelu" tiny --act gelu
run "$PC" "$WORK/gelu" "$WORK/i.cmr" "$WORK/t.cmr" "$G/tiny-deep.safetensors" blas 1e-6 2e-6
expect_status 1
expect_stdout_has "FAIL: image embeddings"
end

begin "ViT-B/32-shaped, 8 text and 8 vision prompts, blas: embeddings within 1e-6, gradients within 5e-6 of PyTorch"
"$MK" model "$WORK/b32" b32
"$MK" images 2 224 3 >"$WORK/bi.cmr"
"$MK" tokens 2 3 >"$WORK/bt.cmr"
run "$PC" "$WORK/b32" "$WORK/bi.cmr" "$WORK/bt.cmr" "$G/b32-shallow.safetensors" blas 1e-6 5e-6
expect_status 0
grep -q FAIL "$OUT" && why "$(grep FAIL "$OUT")"
end
rm -rf "$WORK/b32"

# ---- the tools ----
"$MK" images 40 32 7 >"$WORK/ti.cmr"
"$MK" tokens 40 8 >"$WORK/tt.cmr"
TINY=$WORK/tiny
cp "$TINY/model.safetensors" "$WORK/base-before"

begin "cmr-train --text-prompts --vision-prompts --deep: only the prompts train, the loss falls, the tuning is kilobytes"
run cmr-train -q -t 1 -m "$TINY" -o "$WORK/tun" -b 8 --epochs 6 --lr 1e-2 --text-prompts 4 --vision-prompts 2 --deep --log "$WORK/log.jsonl" "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 0
for f in adapter_config.json adapter_model.safetensors train-state.safetensors; do
	[ -s "$WORK/tun/$f" ] || why "no $f"
done
expect_no_file "$WORK/tun/model.safetensors" "$WORK/tun/config.json"
# 4 x 32 text + 2 x 32 vision floats per layer, 2 layers: 384 floats
head -1 "$WORK/log.jsonl" | grep -q '"trained": 384,' || why "trained: $(head -1 "$WORK/log.jsonl")"
size=$(wc -c <"$WORK/tun/adapter_model.safetensors")
[ "$size" -lt 4000 ] || why "adapter_model.safetensors is $size bytes"
first=$(grep '"loss"' "$WORK/log.jsonl" | head -1 | sed 's/.*"loss": \([0-9.]*\).*/\1/')
last=$(grep '"loss"' "$WORK/log.jsonl" | tail -1 | sed 's/.*"loss": \([0-9.]*\).*/\1/')
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a * 0.9) }' || why "loss $first -> $last did not fall by a tenth"
expect_same "$TINY/model.safetensors" "$WORK/base-before"
grep -q '"base_model_hash"' "$WORK/tun/adapter_config.json" || why "no base hash in the config"
grep -q '"deep": true' "$WORK/tun/adapter_config.json" || why "not deep in the config"
end

begin "cmr-encode --tuning: tuned embeddings differ from the base's, and the provenance names base + tuning"
cmr-encode -m "$TINY" "$WORK/ti.cmr" >"$WORK/base-i.cmr"
run cmr-encode -m "$TINY" --tuning "$WORK/tun" -o "$WORK/tun-i.cmr" "$WORK/ti.cmr"
expect_status 0
cmr-dump diff --max-abs 0 "$WORK/base-i.cmr" "$WORK/tun-i.cmr" >/dev/null 2>&1 && why "the tuning changed nothing"
cmr-dump meta "$WORK/tun-i.cmr" >"$WORK/prov.txt" 2>&1
grep -q '"tuning"' "$WORK/prov.txt" || why "no tuning in the provenance: $(head -c 400 "$WORK/prov.txt")"
grep -q '"base_xxh3"' "$WORK/prov.txt" || why "no base hash in the provenance"
end

begin "a tower without prompts is the base's bit for bit (vision-only tuning: text embeddings; text-only: image embeddings)"
cmr-train -q -t 1 -m "$TINY" -o "$WORK/vis" -b 8 --steps 3 --lr 1e-2 --vision-prompts 3 "$WORK/ti.cmr" "$WORK/tt.cmr"
cmr-train -q -t 1 -m "$TINY" -o "$WORK/txt" -b 8 --steps 3 --lr 1e-2 --text-prompts 3 "$WORK/ti.cmr" "$WORK/tt.cmr"
cmr-encode -m "$TINY" "$WORK/tt.cmr" >"$WORK/base-t.cmr"
cmr-encode -m "$TINY" --tuning "$WORK/vis" "$WORK/tt.cmr" >"$WORK/vis-t.cmr"
cmr-encode -m "$TINY" --tuning "$WORK/txt" "$WORK/ti.cmr" >"$WORK/txt-i.cmr"
cmr-dump diff --max-abs 0 "$WORK/base-t.cmr" "$WORK/vis-t.cmr" >/dev/null || why "text embeddings changed under a vision-only tuning"
cmr-dump diff --max-abs 0 "$WORK/base-i.cmr" "$WORK/txt-i.cmr" >/dev/null || why "image embeddings changed under a text-only tuning"
end

begin "--prompt-init PHRASE, untrained: caption X through the tuning = 'PHRASE X' through the base"
printf 'red circle left of a blue square\nthe green one\n' >"$WORK/c.txt"
printf 'a photo of a red circle left of a blue square\na photo of a the green one\n' >"$WORK/pc.txt"
cmr-caption-ingest -q -f text -o "$WORK/c.cmr" "$WORK/c.txt"
cmr-caption-ingest -q -f text -o "$WORK/pc.cmr" "$WORK/pc.txt"
run cmr-train -q -t 1 -m "$TINY" -o "$WORK/init" -b 8 --steps 1 --lr 0 --text-prompts 4 --prompt-init "a photo of a" "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 0
cmr-encode -m "$TINY" --tuning "$WORK/init" "$WORK/c.cmr" >"$WORK/a.cmr"
cmr-encode -m "$TINY" "$WORK/pc.cmr" >"$WORK/b.cmr"
run cmr-dump diff --max-abs 1e-6 "$WORK/a.cmr" "$WORK/b.cmr"
expect_status 0
end

begin "a prompt tuning interrupted with --max-steps and resumed gives the tuning of an uninterrupted run"
cmr-train -q -t 1 -m "$TINY" -o "$WORK/half" -b 8 --epochs 6 --lr 1e-2 --text-prompts 4 --vision-prompts 2 --deep --max-steps 13 "$WORK/ti.cmr" "$WORK/tt.cmr"
run cmr-train -q -t 1 --resume "$WORK/half" -b 8 --epochs 6 --lr 1e-2 "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 0
cmr-encode -q -m "$TINY" --tuning "$WORK/half" "$WORK/ti.cmr" "$WORK/tt.cmr" >"$WORK/h.cmr"
cmr-encode -q -m "$TINY" --tuning "$WORK/tun" "$WORK/ti.cmr" "$WORK/tt.cmr" >"$WORK/f.cmr"
run cmr-dump diff --max-abs 0 "$WORK/f.cmr" "$WORK/h.cmr"
expect_status 0
end

begin "--recompute (q, k, v and fc1's output recomputed in the backward pass, not kept) trains the same prompts bit for bit"
run cmr-train -q -t 1 -m "$TINY" -o "$WORK/rc" -b 8 --epochs 6 --lr 1e-2 --text-prompts 4 --vision-prompts 2 --deep --recompute "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 0
cmr-encode -q -m "$TINY" --tuning "$WORK/rc" "$WORK/ti.cmr" "$WORK/tt.cmr" >"$WORK/rc.cmr"
run cmr-dump diff --max-abs 0 "$WORK/f.cmr" "$WORK/rc.cmr"
expect_status 0
run cmr-train -t 1 -m "$TINY" -o "$WORK/rc2" -b 8 --steps 1 --recompute --train 'text_model.encoder.layers.1.*' "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 0
expect_stderr_has "--recompute applies when no layer weight trains"
end

begin "a tuning made for another base is refused, naming both, and nothing is written"
run cmr-encode -m "$WORK/gelu" --tuning "$WORK/tun" -o "$WORK/x.cmr" "$WORK/ti.cmr"
expect_status 1
expect_stderr_has "$WORK/tun: made for a base whose"
expect_stderr_has "(gelu,"
expect_no_file "$WORK/x.cmr"
run cmr-train --resume "$WORK/tun" -m "$WORK/gelu" -o "$WORK/y" -b 8 --epochs 7 "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 1
expect_stderr_has "made for a base whose"
expect_no_file "$WORK/y"
end

begin "a tuning whose lengths do not fit the context is refused, naming the file"
cp -r "$WORK/tun" "$WORK/long"
sed 's/"text_prompts": 4/"text_prompts": 76/' "$WORK/tun/adapter_config.json" >"$WORK/long/adapter_config.json"
run cmr-encode -m "$TINY" --tuning "$WORK/long" -o "$WORK/x.cmr" "$WORK/tt.cmr"
expect_status 1
expect_stderr_has "$WORK/long: 76 text prompts do not fit a context of 77"
expect_no_file "$WORK/x.cmr"
run cmr-train -m "$TINY" -o "$WORK/y" --text-prompts 76 "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 1
expect_stderr_has "76 text prompts do not fit a context of 77"
expect_no_file "$WORK/y"
end

begin "a damaged tuning is refused, naming the file: truncated tensors, a wrong shape, NaN, bad JSON, a wrong format"
mkdir "$WORK/bad"
cp "$WORK/tun/adapter_config.json" "$WORK/bad/"
head -c 1000 "$WORK/tun/adapter_model.safetensors" >"$WORK/bad/adapter_model.safetensors"
run cmr-encode -m "$TINY" --tuning "$WORK/bad" -o "$WORK/x.cmr" "$WORK/ti.cmr"
expect_status 1
expect_stderr_has "$WORK/bad/adapter_model.safetensors"
expect_no_file "$WORK/x.cmr"
cp "$WORK/txt/adapter_model.safetensors" "$WORK/bad/"   # 3 text prompts, the config says 4 and vision
run cmr-encode -m "$TINY" --tuning "$WORK/bad" -o "$WORK/x.cmr" "$WORK/ti.cmr"
expect_status 1
expect_stderr_has "adapter_model.safetensors: tensor 'prompt."
expect_no_file "$WORK/x.cmr"
cp "$WORK/tun/adapter_model.safetensors" "$WORK/bad/"
size=$(wc -c <"$WORK/bad/adapter_model.safetensors")
printf '\377\377\377\177' | dd of="$WORK/bad/adapter_model.safetensors" bs=1 seek=$((size - 4)) conv=notrunc 2>/dev/null
run cmr-encode -m "$TINY" --tuning "$WORK/bad" -o "$WORK/x.cmr" "$WORK/ti.cmr"
expect_status 1
expect_stderr_has "has a value that is not finite"
expect_no_file "$WORK/x.cmr"
printf '{"format": "cmr-tuning-1", "method": "prompts", "text_prompts": 4, ' >"$WORK/bad/adapter_config.json"
run cmr-encode -m "$TINY" --tuning "$WORK/bad" -o "$WORK/x.cmr" "$WORK/ti.cmr"
expect_status 1
expect_stderr_has "$WORK/bad/adapter_config.json: line 1:"
sed 's/cmr-tuning-1/cmr-tuning-9/' "$WORK/tun/adapter_config.json" >"$WORK/bad/adapter_config.json"
run cmr-encode -m "$TINY" --tuning "$WORK/bad" -o "$WORK/x.cmr" "$WORK/ti.cmr"
expect_status 1
expect_stderr_has "format 'cmr-tuning-9' is not cmr-tuning-1"
sed 's/"deep": true/"deep": 1/' "$WORK/tun/adapter_config.json" >"$WORK/bad/adapter_config.json"
run cmr-encode -m "$TINY" --tuning "$WORK/bad" -o "$WORK/x.cmr" "$WORK/ti.cmr"
expect_status 1
expect_stderr_has "\"deep\" must be true or false"
expect_no_file "$WORK/x.cmr"
run cmr-encode -m "$TINY" --tuning "$WORK/nowhere" "$WORK/ti.cmr"
expect_status 1
expect_stderr_has "nowhere/adapter_config.json: No such file or directory (not a tuning directory"
end

begin "cmr-train prompt options: usage errors exit 2"
for args in "--deep" "--prompt-init x --vision-prompts 2" "--text-prompts 2 --train '*'" "--text-prompts -1"; do
	eval "run cmr-train -m \"$TINY\" -o \"$WORK/u\" $args \"$WORK/ti.cmr\" \"$WORK/tt.cmr\""
	[ "$STATUS" -eq 2 ] || why "$args: exit $STATUS"
done
expect_no_file "$WORK/u"
end
