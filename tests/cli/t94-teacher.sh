# t94-teacher.sh - class-wise learning and soft contrastive transfer from a teacher (issue 19; cmr-train --labels,
# --teacher-images/--teacher-texts and the teacher's terms): the teacher's streams cover the
# training data or are refused, each term trains, relaxed labels at alpha 0 are InfoNCE bit for
# bit, and a teacher equal to the student leaves it unchanged. The losses' values and
# gradients against PyTorch are tests/unit/test_grad.c's (tests/golden/soft).
. "$SRCDIR/tests/lib.sh"
MK=$BUILD/tests/mkclip
"$MK" model "$WORK/tiny" tiny
"$MK" model "$WORK/teach" tiny --seed 9
"$MK" images 40 32 7 >"$WORK/ti.cmr"
"$MK" tokens 40 8 >"$WORK/tt.cmr"
TINY=$WORK/tiny
cmr-encode -q -m "$WORK/teach" -o "$WORK/Ti.emb" "$WORK/ti.cmr"
cmr-encode -q -m "$WORK/teach" -o "$WORK/Tt.emb" "$WORK/tt.cmr"
T="--teacher-images $WORK/Ti.emb --teacher-texts $WORK/Tt.emb"
loss_falls() { # LOG: the first step's loss above the last's
	first=$(sed -n 2p "$1" | sed 's/.*"loss": \([0-9.]*\).*/\1/')
	last=$(grep '"loss"' "$1" | tail -1 | sed 's/.*"loss": \([0-9.]*\).*/\1/')
	awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a) }' || why "$2: loss $first -> $last did not fall"
}

begin "each teacher term trains beside InfoNCE, the loss falls; the teacher is named on standard error"
for term in soft-labels relaxed-margin selective distill-kl distill-mse; do
	run cmr-train -t 1 -m "$TINY" -o "$WORK/$term" -b 8 --epochs 4 --lr 1e-3 $T --$term 1 --log "$WORK/$term.jsonl" "$WORK/ti.cmr" "$WORK/tt.cmr"
	expect_status 0
	expect_stderr_has "a teacher's embeddings of 40 images and their captions, 16 values each"
	loss_falls "$WORK/$term.jsonl" "$term"
done
end

begin "--soft-labels with --soft-alpha 0 and --base-weight 0 is InfoNCE: the same model bit for bit"
cmr-train -q -t 1 -m "$TINY" -o "$WORK/plain" -b 8 --epochs 3 --lr 1e-3 --log "$WORK/plain.jsonl" "$WORK/ti.cmr" "$WORK/tt.cmr"
run cmr-train -q -t 1 -m "$TINY" -o "$WORK/a0" -b 8 --epochs 3 --lr 1e-3 $T --soft-labels 1 --soft-alpha 0 --base-weight 0 "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 0
cmr-encode -m "$WORK/plain" -o "$WORK/p.cmr" "$WORK/ti.cmr" "$WORK/tt.cmr"
cmr-encode -m "$WORK/a0" -o "$WORK/a.cmr" "$WORK/ti.cmr" "$WORK/tt.cmr"
cmr-dump diff --max-abs 0 "$WORK/p.cmr" "$WORK/a.cmr" >/dev/null || why "alpha 0 is not InfoNCE"
run cmr-train -q -t 1 -m "$TINY" -o "$WORK/a5" -b 8 --epochs 3 --lr 1e-3 $T --soft-labels 1 --soft-alpha 0.5 --base-weight 0 "$WORK/ti.cmr" "$WORK/tt.cmr"
cmr-encode -m "$WORK/a5" -o "$WORK/a5.cmr" "$WORK/ti.cmr" "$WORK/tt.cmr"
cmr-dump diff --max-abs 0 "$WORK/p.cmr" "$WORK/a5.cmr" >/dev/null 2>&1 && why "alpha 0.5 changed nothing"
end

begin "a teacher equal to the student: --distill-mse alone has a zero loss and a gradient at float rounding (the first step's, against about 1 for InfoNCE)"
cmr-encode -q -m "$TINY" -o "$WORK/Si.emb" "$WORK/ti.cmr"
cmr-encode -q -m "$TINY" -o "$WORK/St.emb" "$WORK/tt.cmr"
run cmr-train -q -t 1 -m "$TINY" -o "$WORK/self" -b 8 --steps 1 --teacher-images "$WORK/Si.emb" --teacher-texts "$WORK/St.emb" --distill-mse 1 --base-weight 0 --log "$WORK/self.jsonl" "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 0
# measured: loss 0.000000, grad_norm 1.1e-6 (the teacher's rows are the student's in F32)
g=$(sed -n 2p "$WORK/self.jsonl" | sed 's/.*"grad_norm": \([0-9.e+-]*\).*/\1/')
sed -n 2p "$WORK/self.jsonl" | grep -q '"loss": 0.000000,' || why "a loss: $(sed -n 2p "$WORK/self.jsonl")"
awk -v g="$g" 'BEGIN { exit !(g < 1e-5) }' || why "gradient norm $g"
g1=$(sed -n 2p "$WORK/plain.jsonl" | sed 's/.*"grad_norm": \([0-9.e+-]*\).*/\1/')
awk -v g="$g1" 'BEGIN { exit !(g > 0.1) }' || why "InfoNCE's first gradient norm is only $g1"
end

begin "refusals: a term without a teacher, a teacher without a term, one stream, keys not covered, widths for --distill-mse, a teacher term as --loss"
run cmr-train -m "$TINY" -o "$WORK/x" --soft-labels 1 "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 2
expect_stderr_has "learn from a teacher: give --teacher-images and --teacher-texts"
run cmr-train -m "$TINY" -o "$WORK/x" $T "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 2
expect_stderr_has "the teacher's embeddings are for a term"
run cmr-train -m "$TINY" -o "$WORK/x" --teacher-images "$WORK/Ti.emb" --distill-kl 1 "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 2
expect_stderr_has "give the teacher's embeddings of both"
run cmr-train -m "$TINY" -o "$WORK/x" --soft-alpha 0.3 --selective 1 $T "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 2
run cmr-train -m "$TINY" -o "$WORK/x" --loss soft-labels "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 2
expect_stderr_has "is not infonce or vse"
"$MK" images 20 32 7 >"$WORK/half.cmr"
cmr-encode -q -m "$WORK/teach" -o "$WORK/Th.emb" "$WORK/half.cmr"
run cmr-train -m "$TINY" -o "$WORK/x" --teacher-images "$WORK/Th.emb" --teacher-texts "$WORK/Tt.emb" --selective 1 "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 1
expect_stderr_has "20 of the 40 training images have no teacher embedding (the first: 'img020')"
run cmr-train -m "$TINY" -o "$WORK/x" --teacher-images "$WORK/ti.cmr" --teacher-texts "$WORK/Tt.emb" --selective 1 "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 1
expect_stderr_has "a image record, not an embedding"
# a teacher of another width: 40 embeddings of 12 ones, as a .npy written by hand
h="{'descr': '<f4', 'fortran_order': False, 'shape': (40, 12), }"
{
	printf '\223NUMPY\001\000'
	pad=$((128 - 10 - ${#h} - 1))
	printf "\\$(printf %03o $(( (${#h} + pad + 1) % 256 )))\\$(printf %03o $(( (${#h} + pad + 1) / 256 )))"
	printf '%s%*s\n' "$h" $pad ''
	i=0
	while [ $i -lt 480 ]; do printf '\000\000\200\077'; i=$((i + 1)); done
} >"$WORK/w12.npy"
awk 'BEGIN { for (i = 0; i < 40; i++) printf "img%03d\n", i }' >"$WORK/ikeys"
cmr-dump from-npy --kind embedding --keys "$WORK/ikeys" -o "$WORK/w12.emb" "$WORK/w12.npy" || why "from-npy failed"
run cmr-train -m "$TINY" -o "$WORK/x" --teacher-images "$WORK/w12.emb" --teacher-texts "$WORK/Tt.emb" --distill-mse 1 "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 1
expect_stderr_has "an embedding of 16 values where the teacher's others have 12"
expect_no_file "$WORK/x"
end

# ---- class-wise learning (the source model of a soft transfer) ----
awk 'BEGIN { print "# key, class"; for (i = 0; i < 40; i++) printf "img%03d\tc%d\n", i, i % 4 }' >"$WORK/lab.tsv"
awk 'BEGIN { for (i = 0; i < 40; i++) printf "img%03d\tclass %d\n", i, i }' >"$WORK/own.tsv"

begin "cmr-train --labels: 4 classes, the class-wise term trains, the loss falls; every pair its own class with --base-weight 0 is InfoNCE bit for bit"
run cmr-train -t 1 -m "$TINY" -o "$WORK/cls" -b 8 --epochs 4 --lr 1e-3 --labels "$WORK/lab.tsv" --log "$WORK/cls.jsonl" "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 0
expect_stderr_has "4 classes over the 40 training images"
loss_falls "$WORK/cls.jsonl" "class"
run cmr-train -q -t 1 -m "$TINY" -o "$WORK/own" -b 8 --epochs 3 --lr 1e-3 --labels "$WORK/own.tsv" --base-weight 0 "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 0
cmr-encode -m "$WORK/own" -o "$WORK/o.cmr" "$WORK/ti.cmr" "$WORK/tt.cmr"
cmr-dump diff --max-abs 0 "$WORK/p.cmr" "$WORK/o.cmr" >/dev/null || why "distinct classes are not InfoNCE"
end

begin "refusals of --labels: an image without a class, a malformed line, a second class, --class-weight alone"
head -30 "$WORK/lab.tsv" >"$WORK/short.tsv"
run cmr-train -m "$TINY" -o "$WORK/x" --labels "$WORK/short.tsv" "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 1
expect_stderr_has "11 of the 40 training images have no class (the first: 'img029')"
printf 'img000 c1\n' >"$WORK/bad.tsv"
run cmr-train -m "$TINY" -o "$WORK/x" --labels "$WORK/bad.tsv" "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 1
expect_stderr_has "bad.tsv:1: not KEY<TAB>CLASS"
{ cat "$WORK/lab.tsv"; printf 'img003\tc0\n'; } >"$WORK/dup.tsv"
run cmr-train -m "$TINY" -o "$WORK/x" --labels "$WORK/dup.tsv" "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 1
expect_stderr_has "dup.tsv:42: a second class for 'img003'"
run cmr-train -m "$TINY" -o "$WORK/x" --class-weight 2 "$WORK/ti.cmr" "$WORK/tt.cmr"
expect_status 2
expect_stderr_has "give --labels FILE"
expect_no_file "$WORK/x"
end
