# t50-man.sh - man pages: mandoc lint, and one page for every tool and format.
. "$SRCDIR/tests/lib.sh"
if ! command -v mandoc >/dev/null 2>&1; then
	begin "man pages lint clean"; skip "mandoc not installed"; exit 0
fi
for page in "$SRCDIR"/man/*.[157]; do
	begin "man page $(basename "$page") lints clean (mandoc -Tlint)"
	run mandoc -Tlint -Wwarning "$page"
	expect_status 0
	expect_stdout_empty
	end
done
begin "every tool has a man page documenting each of its options; cmr(7) mentions it"
for src in "$SRCDIR"/bin/*.c; do
	t=$(basename "$src" .c)
	[ -f "$SRCDIR/man/$t.1" ] || why "man/$t.1 missing"
	grep -q "$t" "$SRCDIR/man/cmr.7" || why "cmr.7 does not mention $t"
done
for src in "$SRCDIR"/bin/*.c; do
	t=$(basename "$src" .c)
	for opt in $("$BUILD/bin/$t" --help | grep -o -- '--[a-z][a-z0-9-]*' | sort -u); do
		case $opt in --help | --version | --verbose | --quiet) continue ;; esac
		grep -q -- "^\.[A-Za-z ,]*Fl ${opt#-}\( \|$\)" "$SRCDIR/man/$t.1" || why "$t.1 does not document $opt"
	done
done
for spec in "$SRCDIR"/formats/*.md; do
	f=$(basename "$spec" .md)
	[ -f "$SRCDIR/man/$f.5" ] || why "man/$f.5 missing for formats/$f.md"
done
end
