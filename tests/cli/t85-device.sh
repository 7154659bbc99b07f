# t85-device.sh - the device path of cmr-encode and cmr-train (a model placed on a backend
# without host memory: weights, gradients and moments in its buffers), run on every machine
# through the devsim test backend (the reference's arithmetic behind pointers the host cannot
# dereference): its results must be the reference's bit for bit; then the refusals, and the
# CUDA backend's state on this machine.
. "$SRCDIR/tests/lib.sh"
MK=$BUILD/tests/mkclip

"$MK" model "$WORK/tiny" tiny
"$MK" images 24 32 7 >"$WORK/i.cmr"
"$MK" tokens 24 8 >"$WORK/t.cmr"

# the tensors of a safetensors file without its header (whose metadata names the arguments)
body() { n=$(od -An -tu8 -N8 "$1" | tr -d ' '); tail -c +$((9 + n)) "$1" | cksum; }
nolog() { sed 's/"pairs_per_s.*//' "$1"; }

begin "cmr-encode --backend devsim: image and text embeddings identical to the reference backend's, batch 1 and 5"
for b in 1 5; do
	cmr-encode -m "$WORK/tiny" --backend ref -b $b -o "$WORK/ref.cmr" "$WORK/i.cmr" "$WORK/t.cmr" 2>"$ERR" || why "ref: $(cat "$ERR")"
	run cmr-encode -m "$WORK/tiny" --backend devsim -b $b -o "$WORK/dev.cmr" "$WORK/i.cmr" "$WORK/t.cmr"
	expect_status 0
	cmr-dump diff --max-abs 0 "$WORK/ref.cmr" "$WORK/dev.cmr" >"$WORK/diff" || why "batch $b: $(tail -1 "$WORK/diff")"
	[ "$(grep -c '^img\|^txt' "$WORK/diff")" -eq 48 ] || why "batch $b: expected 48 embeddings compared"
done
end

begin "cmr-train --backend devsim, every parameter: losses, evaluations, model and optimiser state identical to ref's"
for be in ref devsim; do
	run cmr-train -q -t 1 -m "$WORK/tiny" -o "$WORK/full-$be" --backend $be -b 8 --steps 6 --save-every 3 \
		--eval-every 3 --lr 1e-3 --log "$WORK/full-$be.jsonl" --eval "$WORK/i.cmr" --eval "$WORK/t.cmr" "$WORK/i.cmr" "$WORK/t.cmr"
	expect_status 0
done
[ "$(nolog "$WORK/full-ref.jsonl")" = "$(nolog "$WORK/full-devsim.jsonl")" ] || why "the logs differ"
[ "$(grep -c '"eval"' "$WORK/full-devsim.jsonl")" -eq 2 ] || why "expected 2 evaluations"
for f in model.safetensors train-state.safetensors; do
	[ "$(body "$WORK/full-ref/$f")" = "$(body "$WORK/full-devsim/$f")" ] || why "$f differs"
done
end

begin "cmr-train --backend devsim: stopped at step 3 and resumed, the uninterrupted run's model bit for bit"
cmr-train -q -t 1 -m "$WORK/tiny" -o "$WORK/half" --backend devsim -b 8 --steps 6 --max-steps 3 --lr 1e-3 \
	"$WORK/i.cmr" "$WORK/t.cmr" 2>"$ERR" || why "$(cat "$ERR")"
run cmr-train -q -t 1 --resume "$WORK/half" --backend devsim -b 8 --steps 6 --lr 1e-3 "$WORK/i.cmr" "$WORK/t.cmr"
expect_status 0
[ "$(body "$WORK/half/model.safetensors")" = "$(body "$WORK/full-ref/model.safetensors")" ] || why "the resumed model differs"
end

begin "cmr-train --backend devsim, deep text and vision prompts initialised from words: tuning and embeddings identical to ref's"
for be in ref devsim; do
	run cmr-train -q -t 1 -m "$WORK/tiny" -o "$WORK/tun-$be" --backend $be -b 8 --steps 5 --lr 1e-2 --text-prompts 4 \
		--vision-prompts 2 --deep --prompt-init "a photo of a" --log "$WORK/tun-$be.jsonl" "$WORK/i.cmr" "$WORK/t.cmr"
	expect_status 0
	cmr-encode -q -m "$WORK/tiny" --tuning "$WORK/tun-$be" --backend $be -o "$WORK/te-$be.cmr" "$WORK/i.cmr" "$WORK/t.cmr" ||
		why "cmr-encode --tuning, $be"
done
[ "$(nolog "$WORK/tun-ref.jsonl")" = "$(nolog "$WORK/tun-devsim.jsonl")" ] || why "the logs differ"
[ "$(body "$WORK/tun-ref/adapter_model.safetensors")" = "$(body "$WORK/tun-devsim/adapter_model.safetensors")" ] ||
	why "the tuned prompts differ"
cmr-dump diff --max-abs 0 "$WORK/te-ref.cmr" "$WORK/te-devsim.cmr" >/dev/null || why "the tuned embeddings differ"
end

begin "not yet on a device backend: adapters and a prompt pool are usage errors naming what does run (exit 2)"
run cmr-train -q -m "$WORK/tiny" -o "$WORK/ad" --backend devsim --adapter lora "$WORK/i.cmr" "$WORK/t.cmr"
expect_status 2
expect_stderr_has "adapters and the heads' modules train on a host backend only"
run cmr-train -q -m "$WORK/tiny" -o "$WORK/ad" --backend devsim --multi-level 2 "$WORK/i.cmr" "$WORK/t.cmr"
expect_status 2
run cmr-train -q -m "$WORK/tiny" -o "$WORK/ad" --backend devsim --pool "$WORK/nopool" "$WORK/i.cmr" "$WORK/t.cmr"
expect_status 2
expect_stderr_has "a prompt pool is tuned on a host backend only"
[ -e "$WORK/ad" ] && why "an output was made"
end

begin "devsim is found by name for tests but not listed by --backend list"
run cmr-encode --backend list
expect_status 0
grep -q devsim "$OUT" && why "devsim is listed"
end
