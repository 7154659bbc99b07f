#!/bin/sh
# submit.sh - embed and index many image archives on a Slurm cluster: a job array with a
# task per archive (encode-index.sbatch), then the merge (merge.sbatch) once every task has
# succeeded. The outputs are those of the local pipeline, make -f pipelines/shards.mk.
#   MODEL=DIR [INDEX_OPTS=...] pipelines/slurm/submit.sh [--wait] [--max N] SHARDS.txt OUT
# SHARDS.txt lists the archives, one path per line (absolute, or relative to the directory
# the jobs run in: the submitting one). --max N runs at most N tasks at once; --wait returns
# when the merge has finished, with its status. Other sbatch options go in SBATCH_* variables
# (SBATCH_PARTITION, SBATCH_ACCOUNT, ...). The cmr tools must be on PATH on the nodes.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
wait= max=
PATH=$PATH:/usr/sbin
while [ $# -gt 0 ]; do
	case $1 in
	--wait) wait=--wait; shift ;;
	--max) max=%$2; shift 2 ;;
	--) shift; break ;;
	-*) echo "submit.sh: unknown option $1" >&2; exit 2 ;;
	*) break ;;
	esac
done
[ $# -eq 2 ] || { echo "usage: MODEL=DIR submit.sh [--wait] [--max N] SHARDS.txt OUT" >&2; exit 2; }
: "${MODEL:?set MODEL to the checkpoint directory}"
shards=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
n=$(grep -c . "$shards" || true)
[ "$n" -gt 0 ] || { echo "submit.sh: $1 lists no archives" >&2; exit 1; }
grep -qv . "$shards" && { echo "submit.sh: $1 has blank lines (task i takes line i + 1)" >&2; exit 1; }
mkdir -p "$2/logs"
export SHARDS="$shards" OUT="$2" MODEL INDEX_OPTS="${INDEX_OPTS:-}" CMR_PIPELINES="$here"
array=$(sbatch --parsable --array="0-$((n - 1))$max" -o "$2/logs/shard-%a.log" "$here/slurm/encode-index.sbatch")
array=${array%%;*}
echo "submit.sh: job array $array: $n shards" >&2
merge=$(sbatch --parsable --dependency="afterok:$array" --kill-on-invalid-dep=yes -o "$2/logs/merge.log" \
	"$here/slurm/merge.sbatch")
merge=${merge%%;*}
echo "submit.sh: merge job $merge -> $2/index.idx" >&2
[ -n "$wait" ] || exit 0
# sbatch --wait says 0 for a job cancelled because a task failed: ask for the job's state
while :; do
	state=$(scontrol show job "$merge" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')
	case $state in
	PENDING | RUNNING | CONFIGURING | COMPLETING | SUSPENDED | REQUEUED | "") sleep 1 ;;
	COMPLETED) exit 0 ;;
	*)
		echo "submit.sh: the merge job $merge ended $state$(scontrol show job "$merge" |
			sed -n 's/.*Reason=\([^ ]*\).*/ (\1)/p'); the tasks' logs are $2/logs/shard-*.log" >&2
		exit 1
		;;
	esac
done
