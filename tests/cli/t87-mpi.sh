# t87-mpi.sh - data-parallel cmr-train over MPI (mpirun -np 2 on this machine): the losses of
# one process training with the same global batch, the same bits from run to run, resuming
# with the same number of processes, refusals. Skipped where mpirun or an MPI build is absent.
. "$SRCDIR/tests/lib.sh"
MK=$BUILD/tests/mkclip
# root in CI containers; more ranks than cores where a test asks for them
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
# under ASan (make check-asan): Open MPI's plugins stay loaded and stacks are unwound in full,
# so that tests/lsan.supp can name the memory MPI keeps to the end
export OMPI_MCA_mca_base_component_disable_dlclose=1
export LSAN_OPTIONS="${LSAN_OPTIONS:+$LSAN_OPTIONS:}fast_unwind_on_malloc=0"
losses() { grep -o '"loss": [-0-9.e]*' "$1" | cut -d' ' -f2; }
# the largest difference between two logs' losses, step by step (and their counts)
max_diff() {
	losses "$1" >"$WORK/l1"
	losses "$2" >"$WORK/l2"
	[ "$(wc -l <"$WORK/l1")" -eq "$3" ] && [ "$(wc -l <"$WORK/l2")" -eq "$3" ] || { echo "counts"; return; }
	paste "$WORK/l1" "$WORK/l2" | awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > m) m = d } END { printf "%.2g", m }'
}

# a checkpoint's tensors: the bytes after its header (which names the run's directory)
tensors() { tail -c +$(($(od -An -tu8 -N8 "$1") + 9)) "$1" >"$2"; }

why_skip=
if ! command -v mpirun >/dev/null 2>&1; then
	why_skip="no mpirun (make deps installs openmpi-bin)"
elif ! mpirun -np 2 cmr-train --version >"$WORK/v" 2>&1; then
	why_skip="mpirun -np 2 cmr-train fails: $(head -c 300 "$WORK/v")"
fi
if [ -n "$why_skip" ]; then
	for t in "the losses of one process" "prompt tuning" "the same bits" "resume" "refusals"; do
		T_NAME=$t
		skip "$why_skip"
	done
	exit 0
fi

"$MK" model "$WORK/tiny" tiny
"$MK" images 40 32 7 >"$WORK/ti.cmr"
"$MK" tokens 40 8 >"$WORK/tt.cmr"
DATA="$WORK/ti.cmr $WORK/tt.cmr"

begin "the losses of one process: mpirun -np 2 with the same global batch (9, split 4 + 5) within 1e-5 over 20 steps"
cmr-train -q -t 1 -m "$WORK/tiny" -o "$WORK/one" -b 9 --steps 20 --lr 1e-3 --log "$WORK/one.jsonl" $DATA
run mpirun -np 2 cmr-train -t 1 -m "$WORK/tiny" -o "$WORK/two" -b 9 --steps 20 --lr 1e-3 --log "$WORK/two.jsonl" $DATA
expect_status 0
expect_stderr_has "data parallel over 2 MPI processes"
[ "$(grep -c 'step 20 of 20' "$ERR")" -eq 1 ] || why "rank 0 alone should report: $(cat "$ERR")"
d=$(max_diff "$WORK/one.jsonl" "$WORK/two.jsonl" 20)
awk -v d="$d" 'BEGIN { exit !(d != "counts" && d <= 1e-5) }' || why "losses differ by $d"
cmr-encode -q -m "$WORK/two" "$WORK/ti.cmr" >"$WORK/e2.cmr" || why "cmr-encode cannot read the checkpoint"
end

begin "prompt tuning on a frozen model: mpirun -np 2 within 1e-5 of one process over 20 steps"
cmr-train -q -t 1 -m "$WORK/tiny" -o "$WORK/p1" -b 8 --steps 20 --lr 1e-2 --text-prompts 4 --vision-prompts 2 --deep --log "$WORK/p1.jsonl" $DATA
run mpirun -np 2 cmr-train -q -t 1 -m "$WORK/tiny" -o "$WORK/p2" -b 8 --steps 20 --lr 1e-2 --text-prompts 4 --vision-prompts 2 --deep --log "$WORK/p2.jsonl" $DATA
expect_status 0
d=$(max_diff "$WORK/p1.jsonl" "$WORK/p2.jsonl" 20)
awk -v d="$d" 'BEGIN { exit !(d != "counts" && d <= 1e-5) }' || why "losses differ by $d"
end

begin "the same bits: two mpirun -np 2 runs write the same losses and weights"
run mpirun -np 2 cmr-train -q -t 1 -m "$WORK/tiny" -o "$WORK/two-b" -b 9 --steps 20 --lr 1e-3 --log "$WORK/two-b.jsonl" $DATA
expect_status 0
losses "$WORK/two.jsonl" >"$WORK/a"
losses "$WORK/two-b.jsonl" >"$WORK/b"
expect_same "$WORK/a" "$WORK/b"
tensors "$WORK/two/model.safetensors" "$WORK/w1"
tensors "$WORK/two-b/model.safetensors" "$WORK/w2"
[ -s "$WORK/w1" ] || why "no tensors read"
expect_same "$WORK/w1" "$WORK/w2"
end

begin "resume: 10 steps, then --resume with the same -np goes on as the uninterrupted run"
run mpirun -np 2 cmr-train -q -t 1 -m "$WORK/tiny" -o "$WORK/half" -b 9 --steps 20 --max-steps 10 --lr 1e-3 --log "$WORK/half.jsonl" $DATA
expect_status 0
run mpirun -np 2 cmr-train -q -t 1 --resume "$WORK/half" -b 9 --steps 20 --lr 1e-3 --log "$WORK/half.jsonl" $DATA
expect_status 0
losses "$WORK/half.jsonl" >"$WORK/b"
expect_same "$WORK/a" "$WORK/b"
tensors "$WORK/half/model.safetensors" "$WORK/w2"
expect_same "$WORK/w1" "$WORK/w2"
end

begin "refusals: standard input, a batch smaller than the processes"
run sh -c "mpirun -np 2 cmr-train -q -t 1 -m '$WORK/tiny' -o '$WORK/x' -b 8 --steps 2 - '$WORK/tt.cmr' <'$WORK/ti.cmr'"
[ "$STATUS" -ne 0 ] || why "standard input accepted"
expect_stderr_has "must be files, not standard input"
run mpirun -np 3 cmr-train -q -t 1 -m "$WORK/tiny" -o "$WORK/x" -b 2 --steps 2 $DATA
[ "$STATUS" -ne 0 ] || why "a batch of 2 over 3 processes accepted"
expect_stderr_has "give each at least one pair"
expect_no_file "$WORK/x"
end
