# t10-contract.sh - the command-line contract every cmr tool keeps (help, version, usage
# errors, terminals, stdin, missing files).
. "$SRCDIR/tests/lib.sh"
TOOLS=$(cd "$SRCDIR/bin" && ls *.c | sed "s/\.c$//")
FIX=$SRCDIR/tests/fixtures

for tool in $TOOLS; do
	begin "$tool --help prints usage on stdout, exit 0"
	run $tool --help
	expect_status 0
	expect_stdout_has "Usage: $tool"
	expect_stdout_has "--version"
	expect_stderr_empty
	end

	begin "$tool -h is --help"
	run $tool -h
	expect_status 0
	expect_stdout_has "Usage: $tool"
	end

	begin "$tool --version names tool, version and stream format"
	run $tool --version
	expect_status 0
	expect_stdout_has "$tool (cmr) "
	expect_stdout_has "stream format version 1"
	expect_stdout_has "backends: cpu"
	end

	begin "$tool: unknown option is a usage error (exit 2, prog: message)"
	run $tool --no-such-option
	expect_status 2
	expect_stderr_has "$tool: "
	expect_stderr_has "Try '$tool --help'"
	expect_stdout_empty
	end

	begin "$tool has a man page"
	[ -f "$SRCDIR/man/$tool.1" ] || why "man/$tool.1 missing"
	end
done

begin "bad option value is a usage error naming the option"
run cmr-dump show -n lots
expect_status 2
expect_stderr_has "cmr-dump: --limit: 'lots' is not an integer"
end

begin "option out of range is a usage error"
run cmr-dump from-npy -z 99 "$FIX/f32-3x4.npy"
expect_status 2
expect_stderr_has "--compress: 99 is outside 0..19"
end

begin "missing input file: exit 1, names the file"
run cmr-dump list "$WORK/nope.cmr"
expect_status 1
expect_stderr_has "cmr-dump: $WORK/nope.cmr: No such file or directory"
end

begin "a directory as input is refused"
run cmr-dump list "$WORK"
expect_status 1
expect_stderr_has "is a directory"
end

begin "'-' and no argument both read standard input"
cmr-dump from-npy "$FIX/f32-3x4.npy" >"$WORK/a.cmr"
run_sh "cmr-dump verify - < '$WORK/a.cmr'"
expect_status 0
expect_stdout_has "4 records ok"
run_sh "cmr-dump verify < '$WORK/a.cmr'"
expect_stdout_has "4 records ok"
end

if command -v script >/dev/null 2>&1; then
	begin "binary output to a terminal is refused (exit 2), nothing written"
	run script -qec "cmr-dump from-npy '$FIX/f32-3x4.npy'" /dev/null
	expect_status 2
	expect_stdout_has "refusing to write binary data to a terminal"
	grep -q 'CMR' "$OUT" && why "binary data reached the terminal"
	end

	begin "binary input from a terminal is refused"
	run script -qec "cmr-dump list" /dev/null
	expect_status 2
	expect_stdout_has "refusing to read binary data from a terminal"
	end
else
	begin "binary output to a terminal is refused"; skip "script(1) not installed"
fi

begin "write error on stdout is reported (exit 1)"
if [ -w /dev/full ]; then
	run_sh "cmr-dump from-npy '$FIX/f32-3x4.npy' > /dev/full"
	expect_status 1
	expect_stderr_has "No space left on device"
	end
else
	skip "no /dev/full"
fi

begin "closed pipe ends quietly, as if by SIGPIPE (status 141)"
cmr-dump from-npy "$FIX/f32-3x4.npy" >"$WORK/one.cmr"
cp "$WORK/one.cmr" "$WORK/big.cmr"
for i in 1 2 3 4 5 6 7 8 9 10 11 12; do cat "$WORK/big.cmr" "$WORK/big.cmr" >"$WORK/b2" && mv "$WORK/b2" "$WORK/big.cmr"; done
run_sh "{ cmr-dump show '$WORK/big.cmr'; echo \$? >'$WORK/st'; } | head -n 1"
expect_status 0
expect_stderr_empty
[ "$(cat "$WORK/st")" = 141 ] || why "status $(cat "$WORK/st"), expected 141"
end

begin "-o onto a FIFO (or a device such as /dev/null) writes into it: it is not replaced by a renamed file"
rm -f "$WORK/ofifo"
mkfifo "$WORK/ofifo"
cat "$WORK/ofifo" >"$WORK/ofifo.out" &
pid=$!
run cmr-dump from-npy -o "$WORK/ofifo" "$FIX/f32-3x4.npy"
wait $pid
expect_status 0
[ -p "$WORK/ofifo" ] || why "the FIFO was replaced"
run cmr-dump verify "$WORK/ofifo.out"
expect_status 0
ls "$WORK"/ofifo.tmp.* >/dev/null 2>&1 && why "a temporary file was left"
end

begin "threads wait passively: a tool started without OMP_WAIT_POLICY runs with PASSIVE; a user's setting is kept"
for want in PASSIVE ACTIVE; do
	rm -f "$WORK/fifo"
	mkfifo "$WORK/fifo"
	if [ $want = PASSIVE ]; then
		env -u OMP_WAIT_POLICY cmr-caption-ingest "$WORK/fifo" >/dev/null &
	else
		OMP_WAIT_POLICY=ACTIVE cmr-caption-ingest "$WORK/fifo" >/dev/null &
	fi
	pid=$!
	sleep 0.3
	got=$(tr '\0' '\n' </proc/$pid/environ | sed -n 's/^OMP_WAIT_POLICY=//p')
	echo 'a caption' >"$WORK/fifo"
	wait $pid
	[ "$got" = $want ] || why "OMP_WAIT_POLICY is '$got' in the running tool, expected $want"
done
end

begin "progress lines: none into a file by default; with CMR_PROGRESS=1 (for logs) cmr-index's k-means, cmr-encode and cmr-decode draw theirs"
"$BUILD/tests/mkvec" 3000 16 8 0.5 1 >"$WORK/pv.cmr"
run cmr-index --ivf 8 -o "$WORK/p.ivf" "$WORK/pv.cmr"
expect_stderr_empty
run env CMR_PROGRESS=1 cmr-index --ivf 8 -o "$WORK/p.ivf" "$WORK/pv.cmr"
expect_status 0
expect_stderr_has "cmr-index: 20/20 k-means iterations, "
"$BUILD/tests/mkclip" model "$WORK/tiny" tiny
"$BUILD/tests/mkclip" images 3 32 1 >"$WORK/pi.cmr"
run cmr-encode -m "$WORK/tiny" -o "$WORK/pe.cmr" "$WORK/pi.cmr"
expect_stderr_empty
run env CMR_PROGRESS=1 cmr-encode -m "$WORK/tiny" -o "$WORK/pe.cmr" "$WORK/pi.cmr"
expect_stderr_has "cmr-encode: 3 embeddings, "
mkdir "$WORK/pj"
"$BUILD/tests/mkjpeg" rgb 40 30 "$WORK/pj/a.jpg"
"$BUILD/tests/mkjpeg" gray 30 40 "$WORK/pj/b.jpg"
run env CMR_PROGRESS=1 cmr-decode -s 32 -o "$WORK/pd.cmr" "$WORK/pj"
expect_status 0
expect_stderr_has "cmr-decode: 2 images, "
if command -v script >/dev/null 2>&1; then # a terminal, but CMR_PROGRESS=0
	script -qec "env CMR_PROGRESS=0 cmr-index --ivf 8 -o '$WORK/p3.ivf' '$WORK/pv.cmr'" /dev/null >"$WORK/tty.txt" 2>&1
	grep -q "k-means" "$WORK/tty.txt" && why "CMR_PROGRESS=0 drew a line"
fi
end
