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

begin "--device and --precision on a CPU backend are usage errors naming cuda; a bad precision too"
run cmr-encode -m "$WORK/tiny" --precision bf16 -o "$WORK/x.cmr" "$WORK/i.cmr"
expect_status 2
expect_stderr_has "the blas backend computes in fp32 (tf32 and bf16 are for cuda)"
run cmr-train -q -m "$WORK/tiny" -o "$WORK/x" --backend ref --device 1 "$WORK/i.cmr" "$WORK/t.cmr"
expect_status 2
expect_stderr_has "--device 1: the ref backend runs on the host"
run cmr-encode -m "$WORK/tiny" --backend ref --precision fp16 "$WORK/i.cmr"
expect_status 2
expect_stderr_has "'fp16' is not fp32, tf32 or bf16"
[ -e "$WORK/x.cmr" ] || [ -e "$WORK/x" ] && why "an output was made"
end

begin "a batch whose work space does not fit: exit 1 naming the batch that does (measured by trying)"
if grep -q __asan_init "$BUILD/bin/cmr-encode"; then
	skip "a sanitizer build reserves more address space than the limit"
else
	run sh -c 'ulimit -v 300000; exec cmr-encode -t 1 -m "$1" -b 4096 -o "$2" "$3"' sh "$WORK/tiny" "$WORK/x.cmr" "$WORK/t.cmr"
	expect_status 1
	expect_stderr_has "out of host memory for a batch of 4096; a batch of"
	expect_stderr_has "fits: give -b"
	[ -e "$WORK/x.cmr" ] && why "an output was made"
	end
fi

# ---- the CUDA backend: in builds with CUDA, on a machine with a GPU (make check-cuda needs it) ----
cuda=$(cmr-encode --backend list | awk -F'\t' '$1 == "cuda" { print $3 }')
if [ -z "$cuda" ]; then
	T_NAME="the cuda backend"; skip "this build has no CUDA (nvcc was not found: make CUDA=1)"
	[ "${CMR_REQUIRE_CUDA:-0}" = 1 ] && { begin "make check-cuda needs a CUDA build"; why "no cuda backend"; end; }
elif [ "$cuda" != ok ]; then
	T_NAME="the cuda backend"; skip "${cuda#unavailable: }"
	[ "${CMR_REQUIRE_CUDA:-0}" = 1 ] && { begin "make check-cuda needs a usable GPU"; why "$cuda"; end; }
	begin "--backend cuda without a usable device: exit 1 with the reason, no output"
	run cmr-encode -m "$WORK/tiny" --backend cuda -o "$WORK/x.cmr" "$WORK/i.cmr"
	expect_status 1
	expect_stderr_has "no usable CUDA device"
	[ -e "$WORK/x.cmr" ] && why "an output was made"
	end
else
	# fp32: within 1e-5 of the reference (relative norms); tf32 and bf16 products within 1e-2
	for p in fp32:1e-5 tf32:1e-2 bf16:1e-2; do
		prec=${p%%:*} tol=${p#*:}
		begin "cmr-encode --backend cuda --precision $prec: embeddings within $tol of the reference (relative norm), batch 1 and 5"
		for b in 1 5; do
			cmr-encode -q -m "$WORK/tiny" --backend ref -b $b -o "$WORK/ref.cmr" "$WORK/i.cmr" "$WORK/t.cmr"
			run cmr-encode -m "$WORK/tiny" --backend cuda --precision $prec -b $b -o "$WORK/cu.cmr" "$WORK/i.cmr" "$WORK/t.cmr"
			expect_status 0
			cmr-dump diff --max-rel-norm $tol "$WORK/ref.cmr" "$WORK/cu.cmr" >"$WORK/diff" || why "batch $b: $(tail -1 "$WORK/diff")"
		done
		end
	done
	begin "cmr-train --backend cuda: 6 steps of full training and of deep prompts, losses within 1e-5 (1 + loss) of the reference's; the same bits run to run"
	for m in full prompts; do
		set -- ; [ $m = prompts ] && set -- --text-prompts 4 --vision-prompts 2 --deep
		for be in ref cuda cuda2; do
			cmr-train -q -t 1 -m "$WORK/tiny" -o "$WORK/c-$m-$be" --backend ${be%2} -b 8 --steps 6 --lr 1e-3 \
				--log "$WORK/c-$m-$be.jsonl" "$@" "$WORK/i.cmr" "$WORK/t.cmr" 2>"$ERR" || why "$m $be: $(cat "$ERR")"
		done
		paste -d' ' "$WORK/c-$m-ref.jsonl" "$WORK/c-$m-cuda.jsonl" | awk -v m=$m '
			/"loss"/ { split($0, a, "\"loss\": "); split(a[2], x, ","); split(a[3], y, ",");
				   d = x[1] - y[1]; if (d < 0) d = -d; if (d > 1e-5 * (1 + x[1])) { print m ": step loss " x[1] " vs " y[1]; bad = 1 } }
			END { exit bad }' >"$WORK/cmp" || why "$(cat "$WORK/cmp")"
		[ "$(sed 's/"pairs_per_s.*//' "$WORK/c-$m-cuda.jsonl")" = "$(sed 's/"pairs_per_s.*//' "$WORK/c-$m-cuda2.jsonl")" ] ||
			why "$m: two cuda runs differ"
	done
	end
	begin "--device: a device that is not there is an error naming how many there are"
	run cmr-encode -m "$WORK/tiny" --backend cuda --device 1023 -o "$WORK/x.cmr" "$WORK/i.cmr"
	expect_status 1
	expect_stderr_has "--device 1023: this machine has"
	end
fi
