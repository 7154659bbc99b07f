#!/bin/sh
# run.sh - the test suite: C unit tests, fuzz corpus replay, golden streams, CLI tests,
# man page lint.  Usage: sh tests/run.sh BUILD_DIR [NAME...]: with names (t85-device ...), the
# unit tests and those shell tests only.
# Prints one line per test (PASS/FAIL/SKIP) as it finishes and closes with "N passed, N failed, N skipped".
# Exit status 1 if any test failed.
set -u
BUILD=${1:-build}
[ $# -gt 0 ] && shift
SRCDIR=$(cd "$(dirname "$0")/.." && pwd)
case $BUILD in /*) ;; *) BUILD=$SRCDIR/$BUILD ;; esac
export SRCDIR BUILD
export CMR_SRCDIR=$SRCDIR
export PATH="$BUILD/bin:$PATH"
export LC_ALL=C
# the sanitizer build: what third-party libraries never free is not a finding (tests/lsan.supp)
export LSAN_OPTIONS="suppressions=$SRCDIR/tests/lsan.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
RESULTS=$(mktemp)
trap 'rm -f "$RESULTS"' EXIT

# Each result line is shown as it comes (tee), and kept for the count.
# unit tests: the binary prints PASS:/FAIL: lines itself
{ "$BUILD/tests/unit" 2>&1 || echo "FAIL: unit tests exited with status $?"; } | tee -a "$RESULTS"

# shell tests: each file sources tests/lib.sh and prints PASS:/FAIL:/SKIP: lines
if [ $# -gt 0 ]; then set -- $(for n in "$@"; do echo "$SRCDIR/tests/cli/$n.sh"; done)
else set -- "$SRCDIR"/tests/cli/t*.sh; fi
for t in "$@"; do
	{ sh "$t" 2>&1 || echo "FAIL: $(basename "$t") exited with status $?"; } | tee -a "$RESULTS"
done

pass=$(grep -c '^PASS:' "$RESULTS")
fail=$(grep -c '^FAIL:' "$RESULTS")
skip=$(grep -c '^SKIP:' "$RESULTS")
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
