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
	for backend in ref blas; do
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
