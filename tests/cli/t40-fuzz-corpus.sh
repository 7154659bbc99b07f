# t40-fuzz-corpus.sh - replays the fuzz corpora (tests/fuzz/corpus/) through the fuzz targets
# without libFuzzer; under make check-asan this runs them with the sanitizers.
. "$SRCDIR/tests/lib.sh"
for target in stream npy tok image tuning index model caption tokfiles state kv labels tflite wordvec knowledge; do
	begin "fuzz corpus replay: $target"
	set -- "$SRCDIR"/tests/fuzz/corpus/$target/*
	[ -e "$1" ] || why "corpus tests/fuzz/corpus/$target is empty"
	# caption, state, labels: a fatal error returns to the harness by longjmp and leaves its memory
	lsan=
	case $target in caption | state | labels) lsan="ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" ;; esac
	run env $lsan "$BUILD/tests/fuzz-replay" $target "$@"
	expect_status 0
	expect_stdout_has "replayed $# inputs"
	end
done
