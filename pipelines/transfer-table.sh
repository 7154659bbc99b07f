#!/bin/sh
# transfer-table.sh OUT - the results of pipelines/transfer.mk as OUT/results.md and
# OUT/results.json: per target database and method, mean and spread (half the range) over the
# seeds of R@1/5/10 both ways, the source test set's text->image R@1 afterwards (forgetting),
# trainable parameters, bytes of the tuned result and training time. With METHODS in the
# environment (transfer.mk exports its), only those methods' rows.
set -eu
OUT=$1
r() { # FILE DIRECTION KEY: a number of cmr-eval's JSON
	sed -n "/\"$2\"/,/}/p" "$1" | sed -n "s/.*\"$3\": \([0-9.]*\).*/\1/p" | head -1
}
rows=$(mktemp)
trap 'rm -f "$rows"' EXIT
for d in "$OUT"/runs/*/*-s*; do
	[ -f "$d/row.txt" ] || continue
	t=$(basename "$(dirname "$d")")
	m=$(basename "$d" | sed 's/-s[0-9]*$//')
	case " ${METHODS:-$m} " in *" $m "*) ;; *) continue ;; esac # METHODS (make's): only those
	set -- $(cat "$d/row.txt")
	echo "$t $m $(r "$d/target.json" text_to_image R@1) $(r "$d/target.json" text_to_image R@5) $(r "$d/target.json" text_to_image R@10) $(r "$d/target.json" image_to_text R@1) $(r "$d/target.json" image_to_text R@5) $(r "$d/target.json" image_to_text R@10) $(r "$d/source.json" text_to_image R@1) $1 $2 $3" >>"$rows"
done
sort -k1,1 -k2,2 -s "$rows" | awk -v md="$OUT/results.md.tmp" -v js="$OUT/results.json.tmp" '
function flush() {
	if (!n) return
	line = sprintf("| %s | %s | %d |", t, m, n)
	j = sprintf("{\"target\": \"%s\", \"method\": \"%s\", \"seeds\": %d", t, m, n)
	split("t2i_R1 t2i_R5 t2i_R10 i2t_R1 i2t_R5 i2t_R10 source_t2i_R1", names, " ")
	for (c = 1; c <= 7; c++) {
		mean = sum[c] / n
		line = line sprintf(" %.1f ± %.1f |", mean, (hi[c] - lo[c]) / 2)
		j = j sprintf(", \"%s\": [%.2f, %.2f]", names[c], mean, (hi[c] - lo[c]) / 2)
	}
	line = line sprintf(" %d | %d | %.0f |", tr, by, secs / n)
	j = j sprintf(", \"trainable\": %d, \"bytes\": %d, \"seconds\": %.0f}", tr, by, secs / n)
	print line > md
	printf "%s%s", (nj++ ? ",\n  " : "  "), j > js
	n = 0; secs = 0
}
BEGIN {
	print "| target | method | seeds | t→i R@1 | t→i R@5 | t→i R@10 | i→t R@1 | i→t R@5 | i→t R@10 | source t→i R@1 after | trainable | bytes | train s |" > md
	print "|---|---|---|---|---|---|---|---|---|---|---|---|---|" > md
	printf "[\n" > js
}
{
	if ($1 != t || $2 != m) flush()
	t = $1; m = $2
	for (c = 1; c <= 7; c++) {
		v = $(c + 2); sum[c] = (n ? sum[c] : 0) + v
		if (!n || v < lo[c]) lo[c] = v
		if (!n || v > hi[c]) hi[c] = v
	}
	tr = $10; by = $11; secs += $12; n++
}
END { flush(); printf "\n]\n" > js }'
mv "$OUT/results.md.tmp" "$OUT/results.md"
mv "$OUT/results.json.tmp" "$OUT/results.json"
cat "$OUT/results.md"
