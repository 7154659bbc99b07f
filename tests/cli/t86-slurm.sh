# t86-slurm.sh - pipelines/slurm/ for real: a single-node Slurm cluster (slurmctld, slurmd,
# munge) started here by pipelines/slurm/local-cluster.sh, a job array embedding and indexing
# three image archives, the merge after it; the same files as the local make -j pipeline
# (pipelines/shards.mk). Skipped where the cluster cannot start (not root, no Slurm).
. "$SRCDIR/tests/lib.sh"
P=$SRCDIR/pipelines
MK=$BUILD/tests/mkclip
CL=$WORK/cluster
PORT=$((20000 + $$ % 20000))
export PORT
trap 'sh "$P/slurm/local-cluster.sh" stop "$CL" >/dev/null 2>&1; rm -rf "$WORK"' EXIT

names="the job array and the merge write what make -j writes
a task that fails: no merge, no index, the failure reported"
if ! sh "$P/slurm/local-cluster.sh" start "$CL" >"$WORK/conf" 2>"$WORK/why"; then
	echo "$names" | while read -r T_NAME; do skip "no local Slurm cluster: $(head -c 200 "$WORK/why")"; done
	exit 0
fi
export SLURM_CONF=$CL/slurm.conf

"$MK" model "$WORK/tiny" tiny
for s in 1 2 3; do
	"$BUILD/examples/mkshapes" --size 32 --prefix "s$s-" 6 "$s" >"$WORK/s$s.tar"
	echo "$WORK/s$s.tar"
done >"$WORK/shards.txt"
mkdir "$WORK/make" "$WORK/slurm"

begin "the job array and the merge write what make -j writes"
(cd "$WORK/make" && make -s -f "$P/shards.mk" -j2 MODEL="$WORK/tiny" SHARDS="$WORK/shards.txt" OUT=out) >"$WORK/make.log" 2>&1 ||
	why "make: $(tail -5 "$WORK/make.log")"
run sh -c "cd '$WORK/slurm' && MODEL='$WORK/tiny' timeout 300 sh '$P/slurm/submit.sh' --wait '$WORK/shards.txt' out"
expect_status 0
expect_stderr_has "job array"
for f in emb/00000.cmr emb/00001.cmr emb/00002.cmr idx/00002.idx index.idx; do
	[ -s "$WORK/slurm/out/$f" ] || why "Slurm wrote no out/$f: $(cat "$WORK/slurm/out/logs/"*.log 2>/dev/null | head -5)"
	expect_same "$WORK/make/out/$f" "$WORK/slurm/out/$f"
done
cmr-index info "$WORK/slurm/out/index.idx" >"$WORK/info" 2>&1
grep -Eq "^vectors +18$" "$WORK/info" || why "not 18 vectors: $(head -5 "$WORK/info")"
# the shards' order is the list's: the first hits of s1's first image are its own
cmr-query -k 1 "$WORK/slurm/out/index.idx" "$WORK/slurm/out/emb/00000.cmr" | head -1 | cut -f1,3 >"$WORK/self"
awk -F'\t' '$1 != $2 { exit 1 }' "$WORK/self" || why "a vector is not its own best hit: $(cat "$WORK/self")"
end

begin "a task that fails: no merge, no index, the failure reported"
{ echo "$WORK/s1.tar"; echo "$WORK/missing.tar"; } >"$WORK/bad.txt"
mkdir "$WORK/bad"
run sh -c "cd '$WORK/bad' && MODEL='$WORK/tiny' timeout 300 sh '$P/slurm/submit.sh' --wait '$WORK/bad.txt' out"
[ "$STATUS" -ne 0 ] || why "submit.sh --wait succeeded"
expect_no_file "$WORK/bad/out/index.idx" "$WORK/bad/out/idx/00001.idx" "$WORK/bad/out/emb/00001.cmr"
expect_stderr_has "the merge job"
[ -s "$WORK/bad/out/idx/00000.idx" ] || why "the good shard was not indexed"
grep -q "missing.tar" "$WORK/bad/out/logs/shard-1.log" || why "the task's log does not name the archive: $(cat "$WORK/bad/out/logs/shard-1.log")"
end
