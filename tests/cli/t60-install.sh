# t60-install.sh - make install puts tools and man pages where man(1) finds them.
. "$SRCDIR/tests/lib.sh"
begin "make install PREFIX=... DESTDIR=...: tools run and man pages open"
run make -s -C "$SRCDIR" BUILD="$BUILD" install PREFIX=/usr DESTDIR="$WORK/root"
expect_status 0
P=$WORK/root/usr
[ -x "$P/bin/cmr-dump" ] || why "bin/cmr-dump not installed"
run "$P/bin/cmr-dump" --help
expect_status 0
for page in man1/cmr-dump.1 man5/cmr-stream.5 man7/cmr.7; do
	[ -f "$P/share/man/$page" ] || why "$page not installed"
done
if command -v man >/dev/null 2>&1; then
	for name in cmr-dump cmr-stream cmr; do
		run env MANPAGER=cat MANWIDTH=80 man -M "$P/share/man" "$name"
		expect_status 0
		grep -q "$name" "$OUT" || why "man $name shows nothing"
	done
fi
end
