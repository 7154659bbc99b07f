# t98-train.sh - cmr-train's numerics against the PyTorch debug state (tests/golden/train,
# made by tests/ref/train_reference.py): the loss and every gradient of mkclip's tiny model
# (quick_gelu and gelu) and the losses of 10 AdamW steps, on both backends; then cmr-train.
. "$SRCDIR/tests/lib.sh"
MK=$BUILD/tests/mkclip
G=$SRCDIR/tests/golden/train

"$MK" images 4 32 5 >"$WORK/i.cmr"
"$MK" tokens 4 6 >"$WORK/t.cmr"
for act in quick_gelu gelu; do
	"$MK" model "$WORK/$act" tiny --act $act
	for backend in $(backends); do
		begin "tiny $act, $backend backend: loss and all gradients within 1e-3 of PyTorch autograd, and 10 AdamW steps' losses"
		run "$BUILD/tests/traincheck" "$WORK/$act" "$WORK/i.cmr" "$WORK/t.cmr" "$G/tiny-$act.safetensors" $backend
		expect_status 0
		expect_stdout_has "ok  : all 78 gradients"
		[ "$(grep -c '^ok  : step' "$OUT")" -eq 10 ] || why "expected 10 step losses checked: $(grep FAIL "$OUT" | head -3)"
		end
	done
done

begin "the gradient check fails against the other activation's debug state (it can fail)"
run "$BUILD/tests/traincheck" "$WORK/gelu" "$WORK/i.cmr" "$WORK/t.cmr" "$G/tiny-quick_gelu.safetensors" blas
expect_status 1
expect_stdout_has "FAIL: grad "
end

# ---- cmr-train ----
"$MK" images 40 32 7 >"$WORK/ti.cmr"
"$MK" tokens 40 8 >"$WORK/tt.cmr"
TINY=$WORK/quick_gelu

begin "cmr-train: a run lowers the loss, writes a checkpoint cmr-encode reads, logs JSON lines, evaluates"
run cmr-train -q -t 1 -m "$TINY" -o "$WORK/out" -b 8 --epochs 6 --lr 1e-3 --log "$WORK/log.jsonl" --eval "$WORK/ti.cmr" --eval "$WORK/tt.cmr" "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 0
for f in config.json preprocessor_config.json model.safetensors train-state.safetensors; do
	[ -s "$WORK/out/$f" ] || why "no $f"
done
[ "$(grep -c '"loss"' "$WORK/log.jsonl")" -eq 30 ] || why "expected 30 step lines in the log"
first=$(grep '"loss"' "$WORK/log.jsonl" | head -1 | sed 's/.*"loss": \([0-9.]*\).*/\1/')
last=$(grep '"loss"' "$WORK/log.jsonl" | tail -1 | sed 's/.*"loss": \([0-9.]*\).*/\1/')
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a * 0.8) }' || why "loss $first -> $last did not fall by a fifth"
grep -q '"eval": {"images": 40, "texts": 40, "image_to_text": {"R@1": ' "$WORK/log.jsonl" || why "no evaluation (images, texts, image_to_text) in the log"
cmp -s "$TINY/config.json" "$WORK/out/config.json" || why "config.json not kept verbatim"
end

begin "cmr-train: a save that fails (a full disk) leaves nothing on a first save, and the previous checkpoint otherwise"
# a file size limit stands in for a full disk: the configs fit, the state and the model do not
run sh -c 'trap "" XFSZ; ulimit -f 8; exec cmr-train -q -t 1 -m "$1" -o "$2" -b 8 --epochs 6 --max-steps 2 "$3" "$4"' sh "$TINY" "$WORK/full" "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 1
expect_stderr_has "File too large (nothing was saved)"
expect_no_file "$WORK/full"
cmr-train -q -t 1 -m "$TINY" -o "$WORK/full" -b 8 --epochs 6 --max-steps 2 "$WORK/ti.cmr" "$WORK/tt.cmr"
cp -r "$WORK/full" "$WORK/full.before"
run sh -c 'trap "" XFSZ; ulimit -f 8; exec cmr-train -q -t 1 --resume "$1" -b 8 --epochs 6 --max-steps 3 "$2" "$3"' sh "$WORK/full" "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 1
expect_stderr_has "(the previous checkpoint is kept)"
diff -r "$WORK/full.before" "$WORK/full" >/dev/null || why "the checkpoint changed: $(ls "$WORK/full")"
run cmr-train -q -t 1 --resume "$WORK/full" -b 8 --epochs 6 --max-steps 3 "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 0
end

begin "cmr-train: its --eval figures are cmr-eval's on cmr-encode's embeddings of the checkpoint"
cmr-encode -m "$WORK/out" -o "$WORK/ei.cmr" "$WORK/ti.cmr" && cmr-encode -m "$WORK/out" -o "$WORK/et.cmr" "$WORK/tt.cmr"
run cmr-eval --json "$WORK/ei.cmr" "$WORK/et.cmr"
expect_status 0
r1=$(grep '"eval"' "$WORK/log.jsonl" | sed 's/.*"text_to_image": {"R@1": \([0-9.]*\).*/\1/')
grep -q "\"R@1\": $(printf '%.2f' "$r1" | sed 's/\.\?0*$//')" "$OUT" || why "text->image R@1 $r1 not in cmr-eval's $(tr -d '\n ' <"$OUT" | head -c 300)"
end

begin "cmr-train: interrupted with --max-steps and resumed gives the model of an uninterrupted run"
cmr-train -q -t 1 -m "$TINY" -o "$WORK/half" -b 8 --epochs 6 --lr 1e-3 --max-steps 13 "$WORK/ti.cmr" "$WORK/tt.cmr"
run cmr-train -q -t 1 --resume "$WORK/half" -b 8 --epochs 6 --lr 1e-3 "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 0
cmr-encode -m "$WORK/half" "$WORK/ti.cmr" "$WORK/tt.cmr" >"$WORK/h.cmr"
cmr-encode -m "$WORK/out" "$WORK/ti.cmr" "$WORK/tt.cmr" >"$WORK/f.cmr"
run cmr-dump diff --max-abs 0 "$WORK/f.cmr" "$WORK/h.cmr"
expect_status 0
end

begin "cmr-train: a save cut between its renames (new state, old model) resumes from the checkpoint before it, to the uninterrupted model"
cmr-train -q -t 1 -m "$TINY" -o "$WORK/c13" -b 8 --epochs 6 --lr 1e-3 --max-steps 13 "$WORK/ti.cmr" "$WORK/tt.cmr"
cmr-train -q -t 1 -m "$TINY" -o "$WORK/c14" -b 8 --epochs 6 --lr 1e-3 --max-steps 14 "$WORK/ti.cmr" "$WORK/tt.cmr"
# what a kill after "state -> state.prev, new state -> state" and before "new model ->
# model" leaves (with the new model under its temporary name, which the kill cannot remove)
cp "$WORK/c13/train-state.safetensors" "$WORK/c13/train-state.prev.safetensors"
cp "$WORK/c14/train-state.safetensors" "$WORK/c13/train-state.safetensors"
run cmr-train -t 1 --resume "$WORK/c13" -b 8 --epochs 6 --lr 1e-3 "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 0
expect_stderr_has "the last save was cut short; resuming from the checkpoint before it (step 13)"
cmr-encode -m "$WORK/c13" "$WORK/ti.cmr" "$WORK/tt.cmr" >"$WORK/c.cmr"
run cmr-dump diff --max-abs 0 "$WORK/f.cmr" "$WORK/c.cmr"
expect_status 0
expect_no_file "$WORK/c13/train-state.prev.safetensors"
ls "$WORK/c13" | grep -q 'tmp\.' && why "temporary files left: $(ls "$WORK/c13")"
end

begin "cmr-train: the same -t gives the same bits; another -t differs in the last bits only; --resume refuses another -t, naming it"
for t in 1 2 2; do
	rm -rf "$WORK/thr"
	cmr-train -q -t $t -m "$TINY" -o "$WORK/thr" -b 16 --steps 4 --max-steps 3 --lr 1e-3 "$WORK/ti.cmr" "$WORK/tt.cmr"
	cmr-encode -m "$WORK/thr" "$WORK/ti.cmr" "$WORK/tt.cmr" >"$WORK/thr$t.cmr.new"
	[ -e "$WORK/thr$t.cmr" ] && { cmp -s "$WORK/thr$t.cmr" "$WORK/thr$t.cmr.new" || why "-t $t twice: different bits"; }
	mv "$WORK/thr$t.cmr.new" "$WORK/thr$t.cmr"
done
# measured: 3.8e-7 at most between -t 1 and -t 2 (tiny, batch 16)
run cmr-dump diff --max-abs 1e-6 "$WORK/thr1.cmr" "$WORK/thr2.cmr"
expect_status 0
run cmr-train -q -t 1 --resume "$WORK/thr" -b 16 --steps 4 --lr 1e-3 "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 1
expect_stderr_has "the run being resumed used 2 threads, this one 1: the results depend on the thread count in their last bits, so give -t 2"
run cmr-train -q -t 2 --resume "$WORK/thr" -b 16 --steps 4 --lr 1e-3 "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 0
end

begin "cmr-train: --resume refuses a different batch, naming what differs"
cmr-train -q -t 1 -m "$TINY" -o "$WORK/r2" -b 8 --epochs 6 --max-steps 2 "$WORK/ti.cmr" "$WORK/tt.cmr"
run cmr-train --resume "$WORK/r2" -b 4 --epochs 6 "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 1
expect_stderr_has "--batch 8"
end

begin "cmr-train: --resume refuses a model saved at another step than its training state"
cp "$WORK/half/model.safetensors" "$WORK/r2/model.safetensors"
run cmr-train --resume "$WORK/r2" -b 8 --epochs 6 "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 1
expect_stderr_has "model.safetensors is at step 30"
expect_stderr_has "train-state.safetensors at step 2"
end

begin "cmr-train: SIGTERM mid-run finishes the step, saves a resumable checkpoint, exits 143"
cmr-train -t 1 -m "$TINY" -o "$WORK/sig" -b 8 --epochs 100000 "$WORK/ti.cmr" "$WORK/tt.cmr" 2>"$WORK/sig.err" &
pid=$!
sleep 1
kill -TERM $pid
wait $pid
STATUS=$?
expect_status 143
grep -q "interrupted by signal 15 at step [1-9][0-9]* of 500000; the checkpoint is saved" "$WORK/sig.err" || why "stderr: $(cat "$WORK/sig.err")"
n=$(sed -n 's/.*at step \([0-9]*\) of.*/\1/p' "$WORK/sig.err")
run cmr-train -q -t 1 --resume "$WORK/sig" -b 8 --epochs 100000 --max-steps $((n + 2)) --log "$WORK/sig.jsonl" "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 0
grep -q "^{\"step\": $((n + 2)), " "$WORK/sig.jsonl" || why "the resumed run did not take steps $((n + 1)) and $((n + 2))"
[ "$(grep -c '"loss"' "$WORK/sig.jsonl")" -eq 2 ] || why "expected 2 steps after resuming"
end

begin "cmr-train: --freeze keeps the matching tensors bit-identical and trains the rest"
run cmr-train -q -t 1 -m "$TINY" -o "$WORK/fz" -b 8 --steps 3 --freeze 'vision_model.*' --freeze visual_projection.weight "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 0
cmr-encode -m "$TINY" "$WORK/ti.cmr" >"$WORK/a.cmr"
cmr-encode -m "$WORK/fz" "$WORK/ti.cmr" >"$WORK/b.cmr"
cmr-dump diff --max-abs 0 "$WORK/a.cmr" "$WORK/b.cmr" >/dev/null || why "image embeddings changed with the vision tower frozen"
cmr-encode -m "$TINY" "$WORK/tt.cmr" >"$WORK/a.cmr"
cmr-encode -m "$WORK/fz" "$WORK/tt.cmr" >"$WORK/b.cmr"
cmr-dump diff --max-abs 0 "$WORK/a.cmr" "$WORK/b.cmr" >/dev/null 2>&1 && why "text embeddings did not change"
end

begin "cmr-train: training only the projections keeps moments of those alone, and resumes only with the same --train"
run cmr-train -q -t 1 -m "$TINY" -o "$WORK/pj" -b 8 --epochs 2 --max-steps 2 --train visual_projection.weight --train text_projection.weight "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 0
# 2 x (16 x 32) floats of moments per projection: a few KB, not the 2 x 6.5 MB of the whole model
size=$(wc -c <"$WORK/pj/train-state.safetensors")
[ "$size" -lt 20000 ] || why "train-state.safetensors is $size bytes"
grep -a -q 'exp_avg/visual_projection.weight' "$WORK/pj/train-state.safetensors" || why "no moments named for visual_projection.weight"
run cmr-train --resume "$WORK/pj" -b 8 --epochs 2 --train visual_projection.weight "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 1
expect_stderr_has "holds 'exp_avg/text_projection.weight', which this run does not train: the run being resumed trained 2 parameter tensors, this one 1"
run cmr-train -q -t 1 --resume "$WORK/pj" -b 8 --epochs 2 --train visual_projection.weight --train text_projection.weight "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 0
end

begin "cmr-train: from --config (random init) with the VSE++ loss"
sed 's/"hidden_act": "quick_gelu"/"hidden_act": "gelu"/g' "$TINY/config.json" >"$WORK/cfg.json"
run cmr-train -q -t 1 --config "$WORK/cfg.json" -o "$WORK/vse" -b 8 --steps 4 --loss vse --log "$WORK/v.jsonl" "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 0
[ "$(grep -c '"loss"' "$WORK/v.jsonl")" -eq 4 ] || why "expected 4 steps"
run cmr-encode -m "$WORK/vse" "$WORK/ti.cmr"
expect_status 0
end

begin "cmr-train --config and cmr-encode -m: every config field is range-checked, naming it (negative, huge, fractional, wrapped sizes and a bad eps were accepted)"
bad_config() { # sed expression, expected message
	sed "$1" "$TINY/config.json" >"$WORK/bad.json"
	[ "$(cmp -s "$TINY/config.json" "$WORK/bad.json"; echo $?)" = 1 ] || why "'$1' changed nothing"
	run cmr-train -q -t 1 --config "$WORK/bad.json" -o "$WORK/badrun" -b 8 --steps 1 "$WORK/ti.cmr" "$WORK/tt.cmr"
	expect_status 1
	expect_stderr_has "$2"
	expect_no_file "$WORK/badrun"
	mkdir -p "$WORK/badm"
	cp "$TINY/model.safetensors" "$WORK/badm/"
	cp "$WORK/bad.json" "$WORK/badm/config.json"
	run cmr-encode -m "$WORK/badm" -o "$WORK/bad.cmr" "$WORK/ti.cmr"
	expect_status 1
	expect_stderr_has "$2"
	expect_no_file "$WORK/bad.cmr"
}
bad_config 's/"max_position_embeddings": 77/"max_position_embeddings": -1/' "text_config.max_position_embeddings is -1, outside 2 to 16384"
bad_config 's/"vocab_size": 49408/"vocab_size": -5/' "text_config.vocab_size is -5, outside 1 to 4194304"
bad_config 's/"projection_dim": 16/"projection_dim": -1/' "json: projection_dim is -1, outside 1 to 16384"
bad_config '0,/"num_hidden_layers": 2/s//"num_hidden_layers": 1000000000/' "text_config.num_hidden_layers is 1000000000, outside 0 to 256"
bad_config '0,/"num_hidden_layers": 2/s//"num_hidden_layers": 1e9/' "text_config.num_hidden_layers must be a whole number"
bad_config '0,/"hidden_size": 32/s//"hidden_size": 4294967328/' "text_config.hidden_size is 4294967328, outside 1 to 16384"
bad_config '0,/"layer_norm_eps": 1e-05/s//"layer_norm_eps": -1/' "text_config.layer_norm_eps must be a number above 0 and at most 1"
bad_config 's/"patch_size": 8/"patch_size": 0/' "vision_config.patch_size is 0, outside 1 to 4096"
end

begin "cmr-train: a token id outside the vocabulary and a caption key given twice are refused before the first step, naming them"
# one caption, ids 49406 60000 49407, as a .npy (numpy's format 1.0, written by hand)
h="{'descr': '<i4', 'fortran_order': False, 'shape': (1, 3), }"
hdr="$h$(printf '%*s' $((64 - (10 + ${#h} + 1) % 64)) '')"
{ printf '\223NUMPY\001\000'; printf "\\$(printf %03o $((${#hdr} + 1)))\\000"; printf '%s\n' "$hdr"
  printf '\376\300\000\000\140\352\000\000\377\300\000\000'; } >"$WORK/oov.npy"
echo 'img000#0' >"$WORK/oov.keys"
cmr-dump from-npy --kind tokens --keys "$WORK/oov.keys" "$WORK/oov.npy" >"$WORK/oov.cmr"
run cmr-train -q -t 1 -m "$TINY" -o "$WORK/oov" -b 8 --steps 1 "$WORK/ti.cmr" "$WORK/tt.cmr" "$WORK/oov.cmr"
expect_status 1
expect_stderr_has "oov.cmr: record 1 (key 'img000#0'), byte "
expect_stderr_has ": token 1 is id 60000, outside the model's vocabulary of 49408"
expect_no_file "$WORK/oov"
run cmr-train -q -t 1 -m "$TINY" -o "$WORK/dup" -b 8 --steps 1 "$WORK/ti.cmr" "$WORK/tt.cmr" "$WORK/tt.cmr"
expect_status 1
expect_stderr_has "the training streams hold two captions with the key 'img000#0'"
expect_no_file "$WORK/dup"
end

begin "cmr-train: an image of the wrong size is refused, naming stream, record and key, and nothing is written"
"$MK" images 3 64 1 >"$WORK/big.cmr"
run cmr-train -m "$TINY" -o "$WORK/bad" -b 2 "$WORK/big.cmr" "$WORK/tt.cmr"
expect_status 1
expect_stderr_has "big.cmr: record 0 (key 'img000'), byte 0: the image is u8 [64, 64, 3]"
expect_stderr_has "cmr-decode -s 32"
expect_no_file "$WORK/bad"
end

begin "cmr-train: CMR_PROGRESS=1 draws the shared progress line (steps, rate, time left, loss) and the --log-every lines stay"
run env CMR_PROGRESS=1 cmr-train -t 1 -m "$TINY" -o "$WORK/prog" -b 8 --steps 150 --log-every 50 "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 0
tr '\r' '\n' <"$ERR" | grep -qE '^cmr-train: [0-9]+/150 steps, [0-9.]+/s, [0-9]+:[0-9]+ left, epoch [0-9.]+ loss [0-9.]+' || why "no progress line: $(tr '\r' '\n' <"$ERR" | head -5)"
[ "$(tr '\r' '\n' <"$ERR" | grep -c '^.*step [0-9]*/150 epoch')" -eq 3 ] || why "expected the lines of steps 50, 100, 150"
end

begin "cmr-train: usage errors exit 2"
run cmr-train -o "$WORK/x" "$WORK/ti.cmr"
expect_status 2
run cmr-train -m "$TINY" "$WORK/ti.cmr"
expect_status 2
run cmr-train -m "$TINY" -o "$WORK/x" --loss hinge "$WORK/ti.cmr"
expect_status 2
end

begin "cmr-train: a batch larger than the data is a clear error"
run cmr-train -m "$TINY" -o "$WORK/x" -b 64 "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 1
expect_stderr_has "--batch 64 is more than the 40 images"
end
