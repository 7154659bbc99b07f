# t30-dump.sh - cmr-dump: list, show, meta, and the .npy conversions (with NumPy-written files).
. "$SRCDIR/tests/lib.sh"
FIX=$SRCDIR/tests/fixtures
G=$SRCDIR/tests/golden/streams

begin "show prints every value of f32 records exactly"
run_sh "cmr-dump from-npy '$FIX/f32-3x4.npy' | cmr-dump show"
expect_status 0
printf '0\tgeneric\tf32\t[4]\n-1 -0.75 -0.5 -0.25\n1\tgeneric\tf32\t[4]\n0 0.25 0.5 0.75\n2\tgeneric\tf32\t[4]\n1 1.25 1.5 1.75\n' >"$WORK/want"
expect_stdout_file "$WORK/want"
end

begin "show -k picks records by key; -n limits values"
run_sh "cmr-dump show -k gradient -n 5 '$G/good-zstd.cmr'"
expect_status 0
printf 'gradient\timage\tu8\t[16,16,3]\n0 4 8\n16 20\n... (763 more values; -a shows all)\n' >"$WORK/want"
expect_stdout_file "$WORK/want"
end

begin "big-endian NumPy data are converted to little-endian"
run_sh "cmr-dump from-npy '$FIX/be-i4-2x3.npy' | cmr-dump show"
expect_status 0
expect_stdout_has "1 -2 3"
expect_stdout_has "40000 -50000 2147483647"
end

begin "f16 values are shown exactly"
run_sh "cmr-dump from-npy --key h '$FIX/f16-4.npy' | cmr-dump show"
expect_status 0
expect_stdout_has "1.5 -2 65504 5.96046448e-08"
end

begin "from-npy records keys, kind and provenance"
printf 'img1\nimg2\n' >"$WORK/keys"
run_sh "cmr-dump from-npy --kind image --keys '$WORK/keys' '$FIX/u8-2x2x2x3.npy' | cmr-dump list -H"
expect_status 0
expect_stdout_has "meta   provenance"
expect_stdout_has "tensor image       u8    [2,2,3]"
expect_stdout_has " img2"
end

begin "meta prints the provenance JSON"
run_sh "cmr-dump from-npy --key x '$FIX/f64-scalar.npy' | cmr-dump meta"
expect_status 0
expect_stdout_has '{"tool":"cmr-dump","version":"0.1.0","args":["from-npy","--key","x",'
expect_stdout_has '"inputs":['
end

begin "stream -> .npy -> stream is bit-identical (keys, metadata, payloads)"
printf 'a#0\nb#1\nc#2\n' >"$WORK/keys"
cmr-dump from-npy --kind embedding --keys "$WORK/keys" "$FIX/f32-3x4.npy" >"$WORK/s1.cmr"
run cmr-dump to-npy -o "$WORK/x.npy" --keys "$WORK/k2" --meta "$WORK/m.cmr" "$WORK/s1.cmr"
expect_status 0
cmr-dump from-npy --kind embedding --keys "$WORK/k2" --meta "$WORK/m.cmr" --no-provenance \
	"$WORK/x.npy" >"$WORK/s2.cmr"
expect_same "$WORK/s1.cmr" "$WORK/s2.cmr"
expect_same "$WORK/keys" "$WORK/k2"
end

begin ".npy -> stream -> .npy is bit-identical to NumPy's file"
for f in f32-3x4 be-i4-2x3 u8-2x2x2x3; do
	cmr-dump from-npy "$FIX/$f.npy" | cmr-dump to-npy -o "$WORK/$f.npy" || why "$f failed"
	case $f in be-*) continue ;; esac # converted to little-endian on purpose
	expect_same "$FIX/$f.npy" "$WORK/$f.npy"
done
cmr-dump from-npy --key s "$FIX/f64-scalar.npy" | cmr-dump to-npy -k s >"$WORK/s.npy"
expect_same "$FIX/f64-scalar.npy" "$WORK/s.npy"
end

begin "compressed streams convert to the same array"
cmr-dump from-npy -z 19 "$FIX/u8-2x2x2x3.npy" | cmr-dump to-npy -o "$WORK/z.npy"
expect_same "$FIX/u8-2x2x2x3.npy" "$WORK/z.npy"
end

begin "to-npy refuses records of different shapes; no file is left behind"
cmr-dump from-npy "$FIX/f32-3x4.npy" >"$WORK/m1.cmr"
cmr-dump from-npy "$FIX/u8-2x2x2x3.npy" >"$WORK/m2.cmr"
run_sh "cat '$WORK/m1.cmr' '$WORK/m2.cmr' | cmr-dump to-npy -o '$WORK/mixed.npy' --keys '$WORK/mk'"
expect_status 1
expect_stderr_has "record 5 (key '0'): u8 [2,2,3] differs from the first record's f32 [4]"
expect_stderr_has "hint: "
expect_no_file "$WORK/mixed.npy" "$WORK/mk"
ls "$WORK" | grep -q tmp && why "temporary file left: $(ls "$WORK")"
end

begin "to-npy -o replaces an existing file only on success"
echo precious >"$WORK/keep.npy"
run cmr-dump to-npy -o "$WORK/keep.npy" "$G/bad-checksum.cmr"
expect_status 1
[ "$(cat "$WORK/keep.npy")" = precious ] || why "existing file was damaged"
end

begin "from-npy refuses Fortran order, complex dtypes and a wrong key count"
run cmr-dump from-npy "$FIX/fortran.npy"
expect_status 1
expect_stderr_has "fortran.npy: Fortran-ordered arrays are not supported"
run cmr-dump from-npy "$FIX/complex.npy"
expect_status 1
expect_stderr_has "dtype '<c8' is not supported"
printf 'only-one\n' >"$WORK/k1"
run cmr-dump from-npy --keys "$WORK/k1" "$FIX/f32-3x4.npy"
expect_status 1
expect_stderr_has "has 1 keys but"
end

begin "from-npy: a truncated .npy names the row"
head -c 150 "$FIX/f32-3x4.npy" >"$WORK/t.npy"
run cmr-dump from-npy -o "$WORK/t.cmr" "$WORK/t.npy"
expect_status 1
expect_stderr_has "t.npy: truncated data: row 1 of 3 is incomplete"
expect_no_file "$WORK/t.cmr"
end

begin "from-npy: keys file with a bad key names the line"
printf 'a\n\nc\n' >"$WORK/kb"
run cmr-dump from-npy --keys "$WORK/kb" "$FIX/f32-3x4.npy"
expect_status 1
expect_stderr_has "kb: line 2: bad key: empty"
end

begin "SIGTERM during a write removes the temporary file"
mkfifo "$WORK/fifo"
( head -c 128 "$FIX/f32-3x4.npy"; sleep 3 ) >"$WORK/fifo" &
feeder=$!
cmr-dump from-npy -o "$WORK/int.cmr" "$WORK/fifo" 2>/dev/null &
pid=$!
i=0
while [ $i -lt 50 ] && ! ls "$WORK" | grep -q 'int.cmr.tmp'; do sleep 0.1; i=$((i + 1)); done
ls "$WORK" | grep -q 'int.cmr.tmp' || why "no temporary file appeared"
kill -TERM $pid
wait $pid 2>/dev/null
st=$?
[ $st -eq 143 ] || why "status $st, expected 143 (SIGTERM)"
ls "$WORK" | grep -q 'int.cmr' && why "left behind: $(ls "$WORK" | grep int.cmr)"
kill $feeder 2>/dev/null
wait $feeder 2>/dev/null
end

begin "a mistyped command is a usage error (exit 2), not a missing file; a non-stream input says how streams are made"
run cmr-dump lst nothing.cmr
expect_status 2
expect_stderr_has "'lst' is neither a command (list, show, meta, verify, diff, to-npy, from-npy) nor a file"
printf 'hello world\n' >"$WORK/plain.txt"
run cmr-dump list "$WORK/plain.txt"
expect_status 1
expect_stderr_has "not a cmr stream (streams are made by cmr-decode from images, cmr-caption-ingest from captions, cmr-dump from-npy from arrays)"
end

begin "list --json: one JSON object per record with the columns' fields"
cmr-dump from-npy "$FIX/f32-3x4.npy" >"$WORK/j.cmr"
run cmr-dump list --json "$WORK/j.cmr"
expect_status 0
[ "$(wc -l <"$OUT")" -eq 4 ] || why "$(wc -l <"$OUT") lines, 4 expected (provenance and 3 rows)"
expect_stdout_has '"index":1,"offset":'
expect_stdout_has ',"type":"tensor","kind":"generic","dtype":"f32","shape":[4],"bytes":16,"stored":16,"key":"1"}'
end
