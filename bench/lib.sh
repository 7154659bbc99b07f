# lib.sh - sourced by the bench scripts.
# write_section NAME TEXT: replaces (or appends) the section NAME of bench/RESULTS.md, which
# TEXT must wrap in "<!-- NAME:begin -->" ... "<!-- NAME:end -->", and prints it.
write_section() {
	R=bench/RESULTS.md
	[ -f "$R" ] || printf '# Benchmark results\n\nWritten by the scripts in bench/; each owns one section.\n' >"$R"
	if grep -q "<!-- $1:begin -->" "$R"; then
		awk -v s="$2" -v b="<!-- $1:begin -->" -v e="<!-- $1:end -->" \
			'$0 == b { print s; skip = 1 } $0 == e { skip = 0; next } !skip' "$R" >"$R.tmp"
	else
		cp "$R" "$R.tmp"
		printf '\n%s\n' "$2" >>"$R.tmp"
	fi
	mv "$R.tmp" "$R"
	sed -n "/<!-- $1:begin -->/,/<!-- $1:end -->/p" "$R"
}
