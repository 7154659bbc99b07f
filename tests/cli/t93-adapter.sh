# t93-adapter.sh - adapters on a frozen base (issue 18; cmr-train --adapter, cmr-tuning(5)
# method adapter): their numerics against PyTorch, training, application by cmr-encode, the
# tuning directory, its refusals. The core's part (zero-initialised modules change nothing,
# at every hook point) is tests/unit/test_model.c's.
. "$SRCDIR/tests/lib.sh"
MK=$BUILD/tests/mkclip
PC=$BUILD/tests/promptcheck
G=$SRCDIR/tests/golden/prompt
"$MK" model "$WORK/tiny" tiny
"$MK" images 4 32 8 >"$WORK/gi.cmr"
"$MK" tokens 4 8 >"$WORK/gt.cmr"

# tolerances: the largest errors measured were, on a Zen 3 (AVX2) machine, 8.2e-7 for an
# embedding (lora, blas) and 2.7e-6 for a gradient (lora, blas; ref 2.2e-6), 1.5e-6 for the
# scales as one vector; LoRA merged into the weights against unmerged: 9.0e-7 (blas), 3.3e-7
# (ref); on an AVX-512 EPYC (OpenBLAS's other kernels) 9.1e-7, 5.8e-6 and 1.06e-6 (lora, blas)
for kind in parallel sequential lora; do
	for backend in $(backends); do
		begin "$kind adapters, $backend: embeddings and loss within 1.2e-6, gradients of every adapter tensor within 7e-6 of PyTorch"
		run "$PC" "$WORK/tiny" "$WORK/gi.cmr" "$WORK/gt.cmr" "$G/tiny-adapter-$kind.safetensors" $backend 1.2e-6 7e-6 scale=2e-6
		expect_status 0
		[ $kind = lora ] || expect_stdout_has "ok  : gradients of the "
		expect_stdout_has "ok  : frozen base"
		[ $kind = lora ] && expect_stdout_has "ok  : LoRA merged into the weights: the unmerged embeddings"
		grep -q FAIL "$OUT" && why "$(grep FAIL "$OUT")"
		end
	done
done

# the head's modules (multi-level attention over 2 layers, injection from 1 of width 8, gates
# open), beside LoRA and alone: largest errors measured 8.6e-7 for an embedding (lora-head,
# blas), 4.9e-6 for a gradient (the text tower's level query, lora-head, blas; ref 2.5e-6),
# 1.3e-6 for the scales and gates as one vector (AVX-512 EPYC; the same bounds as above)
for kind in lora-head none-head; do
	for backend in $(backends); do
		begin "head modules ($kind), $backend: embeddings and loss within 1.2e-6, gradients within 7e-6 of PyTorch"
		run "$PC" "$WORK/tiny" "$WORK/gi.cmr" "$WORK/gt.cmr" "$G/tiny-adapter-$kind.safetensors" $backend 1.2e-6 7e-6 scale=2e-6
		expect_status 0
		expect_stdout_has "head modules (worst relative L2)"
		expect_stdout_has "ok  : gradients of the 4 adapters' scales and gates"
		[ $kind = lora-head ] && expect_stdout_has "ok  : merged: no module left on the layers"
		grep -q FAIL "$OUT" && why "$(grep FAIL "$OUT")"
		end
	done
done

begin "the adapter check can fail: the parallel golden on a model with the other activation"
"$MK" model "$WORK/gelu" tiny --act gelu
run "$PC" "$WORK/gelu" "$WORK/gi.cmr" "$WORK/gt.cmr" "$G/tiny-adapter-parallel.safetensors" blas 1e-6 4e-6
expect_status 1
expect_stdout_has "FAIL: image embeddings, parallel adapters of width 8"
end

# ---- the tools ----
same_as_training() { # IMAGES TEXTS LOG WHAT: cmr-eval's text->image R@1 is the training log's last evaluation's
	r=$(cmr-eval --json "$1" "$2" | sed -n '/"text_to_image"/,/}/p' | sed -n 's/.*"R@1": \([0-9.]*\).*/\1/p' | head -1)
	e=$(sed -n 's/.*"eval".*"text_to_image": {"R@1": \([0-9.]*\).*/\1/p' "$3" | tail -1)
	awk -v a="$r" -v b="$e" 'BEGIN { exit !(a - b < 0.01 && b - a < 0.01) }' || why "$4 R@1 $r, training's evaluation $e"
}
"$MK" images 40 32 7 >"$WORK/ti.cmr"
"$MK" tokens 40 8 >"$WORK/tt.cmr"
TINY=$WORK/tiny
cp "$TINY/model.safetensors" "$WORK/base-before"

begin "cmr-train --adapter parallel: only the adapters train, the loss falls, the tuning is kilobytes, the base unchanged"
run cmr-train -q -t 1 -m "$TINY" -o "$WORK/par" -b 8 --epochs 6 --lr 1e-2 --adapter parallel --adapter-width vision=8,text=2 --log "$WORK/log.jsonl" "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 0
grep -q '"method": "adapter"' "$WORK/par/adapter_config.json" || why "not method adapter"
grep -q '"type": "parallel"' "$WORK/par/adapter_config.json" || why "no type"
# per layer: vision 8 x 32 + 8 + 32 x 8 + 32 + 1 = 553, text 2 x 32 + 2 + 32 x 2 + 32 + 1 = 163;
# 2 layers: 1432
head -1 "$WORK/log.jsonl" | grep -q '"trained": 1432,' || why "trained: $(head -1 "$WORK/log.jsonl")"
size=$(wc -c <"$WORK/par/adapter_model.safetensors")
[ "$size" -lt 10000 ] || why "the tuning's tensors are $size bytes"
first=$(sed -n 2p "$WORK/log.jsonl" | sed 's/.*"loss": \([0-9.]*\).*/\1/')
last=$(tail -1 "$WORK/log.jsonl" | sed 's/.*"loss": \([0-9.]*\).*/\1/')
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a) }' || why "loss $first -> $last did not fall"
cmp -s "$TINY/model.safetensors" "$WORK/base-before" || why "the base model changed"
expect_no_file "$WORK/par/model.safetensors"
end

begin "cmr-encode --tuning: images and texts both change (adapters in both towers), the same bytes twice; one tower's adapters leave the other's embeddings the base's bit for bit"
cmr-encode -m "$TINY" -o "$WORK/base.cmr" "$WORK/ti.cmr" "$WORK/tt.cmr"
run cmr-encode -m "$TINY" --tuning "$WORK/par" -o "$WORK/a1.cmr" "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 0
cmr-encode -m "$TINY" --tuning "$WORK/par" -o "$WORK/a2.cmr" "$WORK/ti.cmr" "$WORK/tt.cmr"
cmr-dump diff --max-abs 0 "$WORK/a1.cmr" "$WORK/a2.cmr" >/dev/null || why "two runs differ"
cmr-dump show -a "$WORK/base.cmr" | grep -A1 '^img000	' >"$WORK/bi"
cmr-dump show -a "$WORK/a1.cmr" | grep -A1 '^img000	' >"$WORK/ai"
cmp -s "$WORK/bi" "$WORK/ai" && why "the adapters changed no image"
cmr-dump show -a "$WORK/base.cmr" | grep -A1 '#0	' >"$WORK/bt"
cmr-dump show -a "$WORK/a1.cmr" | grep -A1 '#0	' >"$WORK/at"
cmp -s "$WORK/bt" "$WORK/at" && why "the adapters changed no text"
cmr-train -q -t 1 -m "$TINY" -o "$WORK/vis" -b 8 --epochs 2 --lr 1e-2 --adapter sequential --adapter-width vision=4 "$WORK/ti.cmr" "$WORK/tt.cmr"
grep -q '"text": 0' "$WORK/vis/adapter_config.json" || why "the text width is not 0"
cmr-encode -m "$TINY" --tuning "$WORK/vis" -o "$WORK/v1.cmr" "$WORK/ti.cmr" "$WORK/tt.cmr"
cmr-dump show -a "$WORK/v1.cmr" | grep -A1 '#0	' >"$WORK/vt"
cmp -s "$WORK/bt" "$WORK/vt" || why "vision adapters changed the texts"
end

begin "cmr-train --adapter lora: no biases, no scales, B trains from zero; cmr-encode merges it and gives what training's evaluation saw"
run cmr-train -t 1 -m "$TINY" -o "$WORK/lora" -b 8 --epochs 4 --lr 1e-2 --adapter lora --adapter-width vision=4,text=2 --log "$WORK/ll.jsonl" --eval "$WORK/ti.cmr" --eval "$WORK/tt.cmr" "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 0
# per layer: vision 4 x (4 x 32 + 32 x 4) = 1024, text 4 x (2 x 32 + 32 x 2) = 512; 2 layers: 3072
head -1 "$WORK/ll.jsonl" | grep -q '"trained": 3072,' || why "trained: $(head -1 "$WORK/ll.jsonl")"
grep -q '"type": "lora"' "$WORK/lora/adapter_config.json" || why "not lora"
cmr-encode -q -m "$TINY" --tuning "$WORK/lora" -o "$WORK/li.cmr" "$WORK/ti.cmr"
cmr-encode -q -m "$TINY" --tuning "$WORK/lora" -o "$WORK/lt.cmr" "$WORK/tt.cmr"
same_as_training "$WORK/li.cmr" "$WORK/lt.cmr" "$WORK/ll.jsonl" merged
cmr-dump show -a "$WORK/li.cmr" | grep -A1 '^img000	' >"$WORK/li0"
cmp -s "$WORK/bi" "$WORK/li0" && why "LoRA changed no image"
end

begin "--adapter-capacity auto: the widths from the base's features, printed and recorded; the budget kept"
run cmr-train -t 1 -m "$TINY" -o "$WORK/auto" -b 8 --steps 2 --adapter sequential --adapter-width 8 --adapter-capacity auto "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 0
expect_stderr_has "adapter capacity: the base's features on 40 training pairs have effective rank "
w=$(sed -n 's/.*widths vision=\([0-9]*\),text=\([0-9]*\).*/\1 \2/p' "$ERR")
set -- $w
[ $(($1 + $2)) -eq 16 ] || why "widths '$w' do not add up to 2 x 8"
grep -q "\"vision\": $1," "$WORK/auto/adapter_config.json" || why "the config does not record vision=$1"
run cmr-train -m "$TINY" -o "$WORK/x" --adapter lora --adapter-width vision=8,text=2 --adapter-capacity auto "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 2
expect_stderr_has "give one --adapter-width N"
end

begin "cmr-train --adapter sequential: interrupted with --max-steps and resumed gives the tuning of an uninterrupted run"
cmr-train -q -t 1 -m "$TINY" -o "$WORK/full" -b 8 --epochs 4 --lr 1e-2 --adapter sequential --adapter-width 4 "$WORK/ti.cmr" "$WORK/tt.cmr"
cmr-train -q -t 1 -m "$TINY" -o "$WORK/half" -b 8 --epochs 4 --lr 1e-2 --adapter sequential --adapter-width 4 --max-steps 9 "$WORK/ti.cmr" "$WORK/tt.cmr"
run cmr-train -q -t 1 --resume "$WORK/half" -b 8 --epochs 4 --lr 1e-2 "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 0
cmr-encode -m "$TINY" --tuning "$WORK/full" -o "$WORK/ef.cmr" "$WORK/ti.cmr" "$WORK/tt.cmr"
cmr-encode -m "$TINY" --tuning "$WORK/half" -o "$WORK/eh.cmr" "$WORK/ti.cmr" "$WORK/tt.cmr"
cmr-dump diff --max-abs 0 "$WORK/ef.cmr" "$WORK/eh.cmr" >/dev/null || why "the resumed tuning's embeddings differ"
end

begin "refusals: an adapter width without --adapter, a bad type or width, with prompts, on another base, a damaged config"
run cmr-train -m "$TINY" -o "$WORK/x" --adapter-width 4 "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 2
expect_stderr_has "--adapter-width and --adapter-capacity go with --adapter TYPE"
run cmr-train -m "$TINY" -o "$WORK/x" --adapter serial "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 2
expect_stderr_has "--adapter: 'serial' is not parallel, sequential, lora or none"
run cmr-train -m "$TINY" -o "$WORK/x" --adapter parallel --adapter-width vision=0 "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 2
expect_stderr_has "no tower has an adapter"
run cmr-train -m "$TINY" -o "$WORK/x" --adapter parallel --adapter-width sight=3 "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 2
run cmr-train -t 1 -m "$TINY" -o "$WORK/rc" -b 8 --steps 1 --adapter parallel --recompute "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 0
expect_stderr_has "--recompute applies when no module reads the layers' activations (adapters do)"
run cmr-train -m "$TINY" -o "$WORK/x" --adapter parallel --vision-prompts 2 "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 2
expect_no_file "$WORK/x"
"$MK" model "$WORK/other" tiny --seed 9
run cmr-encode -m "$WORK/other" --tuning "$WORK/par" "$WORK/ti.cmr"
expect_status 1
expect_stderr_has "made for a base whose vision tower is"
cp -r "$WORK/par" "$WORK/bad"
sed 's/"type": "parallel"/"type": "serial"/' "$WORK/par/adapter_config.json" >"$WORK/bad/adapter_config.json"
run cmr-encode -m "$TINY" --tuning "$WORK/bad" "$WORK/ti.cmr"
expect_status 1
expect_stderr_has "adapters of type 'serial'"
sed 's/"vision": 8/"vision": 16/' "$WORK/par/adapter_config.json" >"$WORK/bad/adapter_config.json"
run cmr-encode -m "$TINY" --tuning "$WORK/bad" "$WORK/ti.cmr"
expect_status 1
expect_stderr_has "adapters.vision.mlp.layers.0.down.weight"
end

begin "cmr-train --multi-level --inject: the head's modules alone (type none), layers printed, the loss falls; cmr-encode gives what training's evaluation saw"
run cmr-train -t 1 -m "$TINY" -o "$WORK/head" -b 8 --epochs 6 --lr 1e-2 --multi-level 2 --inject 1 --inject-width 8 --log "$WORK/hl.jsonl" --eval "$WORK/ti.cmr" --eval "$WORK/tt.cmr" "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 0
expect_stderr_has "vision head: multi-level attention over layers 0, 1 of 2"
expect_stderr_has "text head: injection from layers 0 of 2 (0-based), width 8"
grep -q '"type": "none"' "$WORK/head/adapter_config.json" || why "not type none"
grep -q '"levels": 2' "$WORK/head/adapter_config.json" || why "no levels"
grep -q '"inject_width": 8' "$WORK/head/adapter_config.json" || why "no injection width"
# per tower: levels 32 + 1, injection 3 x 8 x 32 + 32 x 8 + 1 = 1025: 2 x 1058
head -1 "$WORK/hl.jsonl" | grep -q '"trained": 2116,' || why "trained: $(head -1 "$WORK/hl.jsonl")"
first=$(sed -n 2p "$WORK/hl.jsonl" | sed 's/.*"loss": \([0-9.]*\).*/\1/')
last=$(grep '"loss"' "$WORK/hl.jsonl" | tail -1 | sed 's/.*"loss": \([0-9.]*\).*/\1/')
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a) }' || why "loss $first -> $last did not fall"
cmr-encode -q -m "$TINY" --tuning "$WORK/head" -o "$WORK/hi.cmr" "$WORK/ti.cmr"
cmr-encode -q -m "$TINY" --tuning "$WORK/head" -o "$WORK/ht.cmr" "$WORK/tt.cmr"
same_as_training "$WORK/hi.cmr" "$WORK/ht.cmr" "$WORK/hl.jsonl" applied
cmr-dump show -a "$WORK/hi.cmr" | grep -A1 '^img000	' >"$WORK/hi0"
cmp -s "$WORK/bi" "$WORK/hi0" && why "the head's modules changed no image"
end

begin "LoRA with the head's modules: interrupted and resumed gives the tuning of an uninterrupted run"
cmr-train -q -t 1 -m "$TINY" -o "$WORK/lhf" -b 8 --epochs 3 --lr 1e-2 --adapter lora --adapter-width 4 --multi-level 2 --inject 1 --inject-width 4 "$WORK/ti.cmr" "$WORK/tt.cmr"
cmr-train -q -t 1 -m "$TINY" -o "$WORK/lhh" -b 8 --epochs 3 --lr 1e-2 --adapter lora --adapter-width 4 --multi-level 2 --inject 1 --inject-width 4 --max-steps 7 "$WORK/ti.cmr" "$WORK/tt.cmr"
run cmr-train -q -t 1 --resume "$WORK/lhh" -b 8 --epochs 3 --lr 1e-2 "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 0
cmr-encode -m "$TINY" --tuning "$WORK/lhf" -o "$WORK/lf.cmr" "$WORK/ti.cmr" "$WORK/tt.cmr"
cmr-encode -m "$TINY" --tuning "$WORK/lhh" -o "$WORK/lh.cmr" "$WORK/ti.cmr" "$WORK/tt.cmr"
cmr-dump diff --max-abs 0 "$WORK/lf.cmr" "$WORK/lh.cmr" >/dev/null || why "the resumed tuning's embeddings differ"
end

begin "refusals of the head's modules: none without them, a width without an injection, one level, a damaged config"
run cmr-train -m "$TINY" -o "$WORK/x" --adapter none "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 2
expect_stderr_has "--adapter none: give --multi-level N or --inject N"
run cmr-train -m "$TINY" -o "$WORK/x" --multi-level 2 --inject-width 8 "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 2
expect_stderr_has "--inject-width goes with --inject N"
run cmr-train -m "$TINY" -o "$WORK/x" --multi-level 1 "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 2
run cmr-train -m "$TINY" -o "$WORK/x" --adapter none --adapter-width 4 --inject 1 "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 2
expect_stderr_has "--adapter none has no width"
expect_no_file "$WORK/x"
cp -r "$WORK/head" "$WORK/badh"
sed 's/"levels": 2/"levels": 1/' "$WORK/head/adapter_config.json" >"$WORK/badh/adapter_config.json"
run cmr-encode -m "$TINY" --tuning "$WORK/badh" "$WORK/ti.cmr"
expect_status 1
expect_stderr_has "levels 0 or at least 2"
sed 's/"inject": 1/"inject": 2/' "$WORK/head/adapter_config.json" >"$WORK/badh/adapter_config.json"
run cmr-encode -m "$TINY" --tuning "$WORK/badh" -o "$WORK/x.cmr" "$WORK/ti.cmr"
expect_status 1
expect_stderr_has "the towers have 2 and 2 layers (at most 2 levels and 1 injected)"
run cmr-train -m "$TINY" -o "$WORK/x" --multi-level 3 "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 1
expect_stderr_has "at most 2 levels"
expect_no_file "$WORK/x"
end
