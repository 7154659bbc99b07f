# t90-encode.sh - cmr-encode against PyTorch goldens (tests/golden/encode, made by
# tests/ref/clip_reference.py), both backends, batch sizes 1 and 7, tiny and ViT-B/32 shapes;
# fp16 checkpoints; errors that name the tensor; one tower loaded without the other.
. "$SRCDIR/tests/lib.sh"
MK=$BUILD/tests/mkclip
G=$SRCDIR/tests/golden/encode

for preset in tiny b32; do
	size=32
	[ $preset = b32 ] && size=224
	mkdir "$WORK/$preset"
	"$MK" model "$WORK/$preset" $preset
	"$MK" images 7 $size 3 >"$WORK/$preset-i.cmr"
	"$MK" tokens 7 4 >"$WORK/$preset-t.cmr"
	for backend in $(backends); do
		for b in 1 7; do
			begin "$preset, $backend backend, batch $b: image and text embeddings match PyTorch (relative error <= 2e-6; measured at most 1.1e-6)"
			run cmr-encode -m "$WORK/$preset" --backend $backend -b $b -o "$WORK/e.cmr" "$WORK/$preset-i.cmr" "$WORK/$preset-t.cmr"
			expect_status 0
			run cmr-dump diff --max-rel-norm 2e-6 "$G/$preset.cmr" "$WORK/e.cmr"
			expect_status 0
			[ "$(grep -c '^img' "$OUT")" -eq 14 ] || why "expected 14 embeddings compared"
			end
		done
	done
	begin "$preset in OpenCLIP's layout (q, k, v fused in in_proj, projections transposed): PyTorch's embeddings (relative error <= 2e-6), the HF layout's bit for bit"
	"$MK" openclip "$WORK/$preset" "$WORK/$preset-oc"
	run cmr-encode -m "$WORK/$preset-oc" -o "$WORK/oc.cmr" "$WORK/$preset-i.cmr" "$WORK/$preset-t.cmr"
	expect_status 0
	run cmr-dump diff --max-rel-norm 2e-6 "$G/$preset.cmr" "$WORK/oc.cmr"
	expect_status 0
	[ "$(grep -c '^img' "$OUT")" -eq 14 ] || why "expected 14 embeddings compared"
	cmr-encode -m "$WORK/$preset" -o "$WORK/hf.cmr" "$WORK/$preset-i.cmr" "$WORK/$preset-t.cmr"
	run cmr-dump diff --max-abs 0 "$WORK/hf.cmr" "$WORK/oc.cmr"
	expect_status 0
	rm -rf "$WORK/$preset-oc"
	end
	begin "$preset: an fp16 checkpoint gives embeddings within 1e-3 of the fp32 one"
	mkdir "$WORK/$preset-h"
	"$MK" model "$WORK/$preset-h" $preset --dtype f16
	cmr-encode -m "$WORK/$preset" "$WORK/$preset-i.cmr" "$WORK/$preset-t.cmr" >"$WORK/f32.cmr"
	cmr-encode -m "$WORK/$preset-h" "$WORK/$preset-i.cmr" "$WORK/$preset-t.cmr" >"$WORK/f16.cmr"
	run cmr-dump diff --max-abs 1e-3 "$WORK/f32.cmr" "$WORK/f16.cmr"
	expect_status 0
	end
	rm -rf "$WORK/$preset-h"
done
rm -rf "$WORK/b32"

begin "provenance names the model, the tower and a content hash; upstream metadata is kept"
run_sh "cmr-encode -m '$WORK/tiny' '$WORK/tiny-i.cmr' | cmr-dump meta"
expect_status 0
expect_stdout_has '"tool":"cmr-encode"'
expect_stdout_has '"model":{"name":"tiny"'
expect_stdout_has '"tower":"vision","xxh3":"'
run_sh "cmr-dump from-npy --key q '$SRCDIR/tests/fixtures/f64-scalar.npy' > '$WORK/m.cmr'; cmr-dump to-npy --meta '$WORK/meta.cmr' -o '$WORK/x.npy' '$WORK/m.cmr'; cat '$WORK/meta.cmr' '$WORK/tiny-t.cmr' | cmr-encode -m '$WORK/tiny' | cmr-dump meta"
[ "$(grep -c '"tool"' "$OUT")" -eq 2 ] || why "upstream provenance not passed along: $(cat "$OUT")"
head -1 "$OUT" | grep -q '"tool":"cmr-dump"' || why "upstream record is not first"
end

begin "a pipeline: cmr-decode | cmr-encode, keys kept, unit-norm embeddings"
mkdir "$WORK/j"
"$BUILD/tests/mkjpeg" rgb 64 48 "$WORK/j/a.jpg"
"$BUILD/tests/mkjpeg" gray 48 64 "$WORK/j/b.jpg"
run_sh "cmr-decode -s 32 '$WORK/j' | cmr-encode -m '$WORK/tiny' | cmr-dump show -a"
expect_status 0
expect_stdout_has "a	embedding	f32	[16]"
expect_stdout_has "b	embedding	f32	[16]"
awk 'NF == 16 { s = 0; for (i = 1; i <= NF; i++) s += $i * $i; if (s < 0.9999 || s > 1.0001) bad = 1 } END { exit bad }' "$OUT" ||
	why "embeddings are not unit length"
run_sh "cmr-decode -s 32 '$WORK/j' | cmr-encode --no-normalize --dtype f16 -m '$WORK/tiny' | cmr-dump list -H"
expect_stdout_has "embedding   f16   [16]"
end

begin "embeddings: the same -t gives the same bits; -t 1, 2, 3 agree within 1e-6"
"$MK" images 40 32 5 >"$WORK/i40.cmr"
for t in 1 2 3 2; do cmr-encode -t $t -b 40 -m "$WORK/tiny" -o "$WORK/t$t.new" "$WORK/i40.cmr" "$WORK/tiny-t.cmr"
	[ -e "$WORK/t$t.cmr" ] && { cmp -s "$WORK/t$t.cmr" "$WORK/t$t.new" || why "-t $t twice: different bits"; }
	mv "$WORK/t$t.new" "$WORK/t$t.cmr"
done
for t in 2 3; do
	run cmr-dump diff --max-abs 1e-6 "$WORK/t1.cmr" "$WORK/t$t.cmr"
	expect_status 0
done
end

begin "an input with no image or token record: a warning, an empty stream"
run_sh "cmr-encode -m '$WORK/tiny' < /dev/null | cmr-dump list -H"
expect_status 0
expect_stderr_has "warning: no image or token records in the input: no embeddings written"
end

begin "one tower loads without the other's tensors"
mkdir "$WORK/vonly"
"$MK" model "$WORK/vonly" tiny --drop text
run cmr-encode -m "$WORK/vonly" -o "$WORK/v.cmr" "$WORK/tiny-i.cmr"
expect_status 0
cmr-encode -m "$WORK/tiny" -o "$WORK/t.cmr" "$WORK/tiny-i.cmr"
run cmr-dump diff --max-abs 0 "$WORK/t.cmr" "$WORK/v.cmr"
expect_status 0
run cmr-encode -m "$WORK/vonly" -o "$WORK/x.cmr" "$WORK/tiny-t.cmr"
expect_status 1
expect_stderr_has "model.safetensors: tensor 'text_model.embeddings.token_embedding.weight' is missing"
expect_no_file "$WORK/x.cmr"
end

begin "-m: a hub id is found in the Hugging Face cache offline; other layouts get a message saying what was found and what to do"
mkdir -p "$WORK/hf/models--someorg--tiny-clip/refs" "$WORK/hf/models--someorg--tiny-clip/snapshots/abc123"
echo abc123 >"$WORK/hf/models--someorg--tiny-clip/refs/main"
cp "$WORK/tiny/"* "$WORK/hf/models--someorg--tiny-clip/snapshots/abc123/"
cmr-encode -m "$WORK/tiny" -o "$WORK/direct.cmr" "$WORK/tiny-i.cmr"
run env HF_HUB_CACHE="$WORK/hf" cmr-encode -m someorg/tiny-clip -o "$WORK/hub.cmr" "$WORK/tiny-i.cmr"
expect_status 0
run cmr-dump diff --max-abs 0 "$WORK/direct.cmr" "$WORK/hub.cmr"
expect_status 0
run env HF_HUB_CACHE="$WORK/hf" cmr-encode -m openai/clip-vit-base-patch32 "$WORK/tiny-i.cmr"
expect_status 1
expect_stderr_has "openai/clip-vit-base-patch32: no such directory; as a Hugging Face hub id it is not in the cache either ($WORK/hf/models--openai--clip-vit-base-patch32/snapshots/)"
expect_stderr_has "huggingface-cli download openai/clip-vit-base-patch32"
mkdir "$WORK/pickle" "$WORK/oc"
: >"$WORK/pickle/pytorch_model.bin"
run cmr-encode -m "$WORK/pickle" "$WORK/tiny-i.cmr"
expect_status 1
expect_stderr_has "pickle: no config.json: PyTorch pickle weights (pytorch_model.bin)"
: >"$WORK/oc/open_clip_config.json"
run cmr-encode -m "$WORK/oc" "$WORK/tiny-i.cmr"
expect_status 1
expect_stderr_has "oc: no config.json: an OpenCLIP checkpoint (open_clip_config.json)"
run cmr-encode -m "$WORK/tiny/model.safetensors" "$WORK/tiny-i.cmr"
expect_status 1
expect_stderr_has "model.safetensors is a weights file: give the checkpoint's directory"
end

begin "a tensor the model does not know (a tuning it was not given) is refused, naming it; position_ids buffers are not parameters"
"$MK" model "$WORK/extra" tiny --extra prompts.text.prefix
run cmr-encode -m "$WORK/extra" -o "$WORK/x.cmr" "$WORK/tiny-i.cmr"
expect_status 1
expect_stderr_has "tensor 'prompts.text.prefix' is not part of this model"
expect_no_file "$WORK/x.cmr"
"$MK" model "$WORK/posids" tiny --extra text_model.embeddings.position_ids
run cmr-encode -m "$WORK/posids" -o "$WORK/p.cmr" "$WORK/tiny-i.cmr"
expect_status 0
end

begin "a config that disagrees with the weights names the tensor and both shapes"
mkdir "$WORK/bad"
cp "$WORK/tiny/model.safetensors" "$WORK/bad/"
sed 's/"projection_dim": 16/"projection_dim": 24/' "$WORK/tiny/config.json" >"$WORK/bad/config.json"
run cmr-encode -m "$WORK/bad" "$WORK/tiny-i.cmr"
expect_status 1
expect_stderr_has "tensor 'visual_projection.weight' has shape [16, 32], the config says [24, 32]"
sed 's/"num_hidden_layers": 2, "num_attention_heads": 4,$/"num_hidden_layers": 3, "num_attention_heads": 4,/' "$WORK/tiny/config.json" >"$WORK/bad/config.json"
run cmr-encode -m "$WORK/bad" "$WORK/tiny-t.cmr"
expect_status 1
expect_stderr_has "tensor 'text_model.encoder.layers.2.layer_norm1.weight' is missing"
end

begin "--backend list names this build's backends, the reference first; an unknown one is a usage error that lists them"
run cmr-encode --backend list
expect_status 0
[ "$(head -1 "$OUT" | cut -f1)" = ref ] || why "the reference is not first"
grep -q '^blas	' "$OUT" || why "no blas line"
run cmr-encode -m "$WORK/tiny" --backend nope "$WORK/tiny-i.cmr"
expect_status 2
expect_stderr_has "'nope' is not one of this build's backends (ref, blas"
end

begin "wrong inputs: image size, kind, missing model, truncated weights"
run_sh "cmr-decode -s 48 '$WORK/j' | cmr-encode -m '$WORK/tiny' > /dev/null"
expect_status 1
expect_stderr_has "(key 'a'): image is u8 [48,48,3], the model takes u8 [32,32,3]"
expect_stderr_has "hint: decode at the model's size: cmr-decode -s 32"
run_sh "cmr-encode -m '$WORK/tiny' '$WORK/t.cmr' > /dev/null"
expect_status 1
expect_stderr_has "a record of kind embedding cannot be encoded"
run cmr-encode -m "$WORK/nowhere" "$WORK/tiny-i.cmr"
expect_status 1
expect_stderr_has "nowhere: no such model directory (a Hugging Face CLIP checkpoint: config.json, model.safetensors)"
mkdir "$WORK/trunc"
cp "$WORK/tiny/config.json" "$WORK/trunc/"
head -c 100000 "$WORK/tiny/model.safetensors" >"$WORK/trunc/model.safetensors"
run cmr-encode -m "$WORK/trunc" "$WORK/tiny-i.cmr"
expect_status 1
expect_stderr_has "do not hold its"
run cmr-encode "$WORK/tiny-i.cmr"
expect_status 2
expect_stderr_has "a model is needed"
# a shape whose size wraps to 0 bytes (2^31 x 2^31 x 4 = 2^64) was accepted with no data
mkdir "$WORK/wrap"
cp "$WORK/tiny/config.json" "$WORK/wrap/"
hdr='{"logit_scale":{"dtype":"F32","shape":[2147483648,2147483648,4],"data_offsets":[0,0]}}'
{ printf "\\$(printf %03o ${#hdr})\\000\\000\\000\\000\\000\\000\\000"; printf '%s' "$hdr"; } >"$WORK/wrap/model.safetensors"
run cmr-encode -m "$WORK/wrap" "$WORK/tiny-i.cmr"
expect_status 1
expect_stderr_has "model.safetensors: tensor 'logit_scale': its shape's size overflows"
end

begin "--mean-by-key: one unit embedding per class of prompts; cmr-eval --labels says the same of both; cmr-query answers image -> class"
printf 'cat\nsea lion\nbird\n' >"$WORK/cls.txt"
cmr-caption-ingest -f classes --template 'a {}' --template 'the {}' -m "$WORK/tiny" "$WORK/cls.txt" >"$WORK/p.cmr"
cmr-encode -m "$WORK/tiny" -o "$WORK/pe.cmr" "$WORK/p.cmr"
run cmr-encode -m "$WORK/tiny" --mean-by-key -o "$WORK/ce.cmr" "$WORK/p.cmr"
expect_status 0
run_sh "cmr-dump show '$WORK/ce.cmr' | grep '	embedding	' | cut -f1 | tr '\n' ,"
[ "$(cat "$OUT")" = "cat,sea lion,bird," ] || why "classes: $(cat "$OUT")"
cmr-encode -m "$WORK/tiny" -o "$WORK/ie.cmr" "$WORK/tiny-i.cmr"
cmr-dump list -H "$WORK/ie.cmr" | awk '$3 == "tensor" {print $NF}' | awk '{ print $1 "\t" (NR % 3 == 1 ? "cat" : NR % 3 == 2 ? "sea lion" : "bird") }' >"$WORK/zs.labels"
cmr-eval --labels "$WORK/zs.labels" "$WORK/ie.cmr" "$WORK/pe.cmr" >"$WORK/a.txt"
cmr-eval --labels "$WORK/zs.labels" "$WORK/ie.cmr" "$WORK/ce.cmr" >"$WORK/b.txt"
# the same accuracies, per class and confusions (not the counts of texts and prompts)
[ "$(sed 1d "$WORK/a.txt" | awk '{ $(NF - 2) = ""; print }')" = "$(sed 1d "$WORK/b.txt" | awk '{ $(NF - 2) = ""; print }')" ] || why "prompts and their means classify differently: $(diff "$WORK/a.txt" "$WORK/b.txt" | head -5)"
grep -q "from 6 texts" "$WORK/a.txt" && grep -q "from 3 texts" "$WORK/b.txt" || why "text counts: $(head -1 "$WORK/a.txt") / $(head -1 "$WORK/b.txt")"
cmr-index -q -o "$WORK/cls.idx" "$WORK/ce.cmr"
run cmr-query -k 1 "$WORK/cls.idx" "$WORK/ie.cmr"
expect_status 0
[ "$(wc -l <"$OUT")" -eq 7 ] || why "expected an answer for each of 7 images"
cut -f3 "$OUT" | grep -qvE '^(cat|sea lion|bird)$' && why "answers that are no class: $(cut -f3 "$OUT" | sort -u)"
run cmr-encode -m "$WORK/tiny" --mean-by-key "$WORK/tiny-i.cmr" "$WORK/p.cmr"
expect_status 1
expect_stderr_has "--mean-by-key averages the embeddings of one tower, and the input holds both images and tokens"
run cmr-encode -m "$WORK/tiny" --mean-by-key --no-normalize "$WORK/p.cmr"
expect_status 2
end

begin "OpenCLIP layouts cmr does not run are refused naming the field; a stray tensor and missing weights are named"
"$MK" openclip "$WORK/tiny" "$WORK/oc"
cp -r "$WORK/oc" "$WORK/oc-timm"
sed 's/"vision_cfg": {/"vision_cfg": {"timm_model_name": "vit_base_patch16_224", /' "$WORK/oc/open_clip_config.json" >"$WORK/oc-timm/open_clip_config.json"
run cmr-encode -m "$WORK/oc-timm" "$WORK/tiny-i.cmr"
expect_status 1
expect_stderr_has "open_clip_config.json: model_cfg.vision_cfg.timm_model_name is set: cmr builds OpenCLIP's plain CLIP ViT towers only"
sed 's/"layers": 2, "width": 32, "head_width"/"layers": [3, 4, 6, 3], "width": 32, "head_width"/' "$WORK/oc/open_clip_config.json" >"$WORK/oc-timm/open_clip_config.json"
run cmr-encode -m "$WORK/oc-timm" "$WORK/tiny-i.cmr"
expect_status 1
expect_stderr_has "layers is a list: a ResNet tower, which cmr does not build"
rm "$WORK/oc-timm/open_clip_model.safetensors"
cp "$WORK/oc/open_clip_config.json" "$WORK/oc-timm/"
run cmr-encode -m "$WORK/oc-timm" "$WORK/tiny-i.cmr"
expect_status 1
expect_stderr_has "without open_clip_model.safetensors: cmr reads safetensors, not PyTorch pickles"
end

begin "cmr-train from an OpenCLIP checkpoint writes a Hugging Face checkpoint that encodes like it before training (0 steps of change: --lr 0)"
run cmr-train -q -t 1 -m "$WORK/oc" -o "$WORK/oc-trained" -b 4 --steps 1 --lr 0 --wd 0 "$WORK/tiny-i.cmr" "$WORK/tiny-t.cmr"
expect_status 0
[ -f "$WORK/oc-trained/config.json" ] && [ -f "$WORK/oc-trained/model.safetensors" ] || why "no HF checkpoint: $(ls "$WORK/oc-trained")"
cmr-encode -m "$WORK/oc" -o "$WORK/a.cmr" "$WORK/tiny-i.cmr" "$WORK/tiny-t.cmr"
cmr-encode -m "$WORK/oc-trained" -o "$WORK/b.cmr" "$WORK/tiny-i.cmr" "$WORK/tiny-t.cmr"
run cmr-dump diff --max-abs 0 "$WORK/a.cmr" "$WORK/b.cmr"
expect_status 0
end
