# lib.sh - helpers for the shell tests (sourced).  A test is:
#   begin "what it checks"
#   run CMD ARGS...           # runs, capturing status, stdout and stderr
#   expect_status 0
#   expect_stdout_has "text"
#   end
# Checks accumulate; end prints PASS: or FAIL: with the reasons.  skip "why" skips.
set -u
T_FAILED=0
T_NAME=
T_FILE=$(basename "$0" .sh)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
OUT=$WORK/.out
ERR=$WORK/.err
STATUS=0

begin() { T_NAME=$1; T_FAILED=0; T_WHY=; }
why() { T_FAILED=1; T_WHY="$T_WHY
    $*"; }
end() {
	if [ "$T_FAILED" -eq 0 ]; then echo "PASS: $T_FILE: $T_NAME"
	else echo "FAIL: $T_FILE: $T_NAME$T_WHY"; fi
}
skip() { echo "SKIP: $T_FILE: $T_NAME ($*)"; }

# run CMD...: status in $STATUS, output in $OUT and $ERR
run() { "$@" >"$OUT" 2>"$ERR"; STATUS=$?; }
# run_sh 'pipeline': the same through sh -c
run_sh() { sh -c "$1" >"$OUT" 2>"$ERR"; STATUS=$?; }

expect_status() {
	[ "$STATUS" -eq "$1" ] || why "exit status $STATUS, expected $1; stderr: $(head -c 400 "$ERR")"
}
expect_stdout_has() { grep -qF -- "$1" "$OUT" || why "stdout lacks '$1': $(head -c 300 "$OUT")"; }
expect_stderr_has() { grep -qF -- "$1" "$ERR" || why "stderr lacks '$1': $(head -c 300 "$ERR")"; }
expect_stdout_empty() { [ ! -s "$OUT" ] || why "stdout not empty: $(head -c 200 "$OUT")"; }
expect_stderr_empty() { [ ! -s "$ERR" ] || why "stderr not empty: $(head -c 300 "$ERR")"; }
expect_stdout_file() { cmp -s "$OUT" "$1" || why "stdout differs from $1: $(diff "$1" "$OUT" | head -5)"; }
expect_stderr_file() { cmp -s "$ERR" "$1" || why "stderr differs from $1: $(diff "$1" "$ERR" | head -5)"; }
expect_same() { cmp -s "$1" "$2" || why "$1 and $2 differ"; }
expect_no_file() { for f in "$@"; do [ ! -e "$f" ] || why "$f exists"; done; }

SHARED=$SRCDIR/../shared
have_shared() { [ -d "$SHARED/data" ]; }

# the backends that can start here (--backend list's third column "ok"): a device backend
# without its device is left out (t85-device.sh says so in a SKIP line)
backends() { cmr-encode --backend list | awk -F'\t' '$3 == "ok" { print $1 }'; }
