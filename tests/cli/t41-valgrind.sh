# t41-valgrind.sh - cmr-encode and cmr-train (full, and prompts) of the tiny model under
# valgrind's memcheck: no uninitialised read, no invalid access. Skipped without valgrind
# and in sanitizer builds (make check-asan), which valgrind cannot run.
. "$SRCDIR/tests/lib.sh"
MK=$BUILD/tests/mkclip
begin "valgrind: cmr-encode and cmr-train (full; deep prompts) of the tiny model report no error"
if ! command -v valgrind >/dev/null 2>&1; then
	skip "valgrind not installed"
	exit 0
fi
if grep -q __asan_init "$BUILD/bin/cmr-encode"; then
	skip "a sanitizer build"
	exit 0
fi
"$MK" model "$WORK/tiny" tiny
"$MK" images 4 32 1 >"$WORK/i.cmr"
"$MK" tokens 4 2 >"$WORK/t.cmr"
# OMP_WAIT_POLICY set: the tools then do not restart themselves (valgrind would not follow)
VG="env OMP_WAIT_POLICY=PASSIVE valgrind -q --error-exitcode=99"
run $VG cmr-encode -t 1 -m "$WORK/tiny" -o "$WORK/e.cmr" "$WORK/i.cmr" "$WORK/t.cmr"
expect_status 0
expect_stderr_empty
run $VG cmr-train -q -t 1 -m "$WORK/tiny" -o "$WORK/full" -b 4 --steps 2 "$WORK/i.cmr" "$WORK/t.cmr"
expect_status 0
expect_stderr_empty
run $VG cmr-train -q -t 1 -m "$WORK/tiny" -o "$WORK/tun" -b 4 --steps 2 --text-prompts 2 --vision-prompts 2 --deep \
	"$WORK/i.cmr" "$WORK/t.cmr"
expect_status 0
expect_stderr_empty
end
