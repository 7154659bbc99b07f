#!/bin/sh
# transfer-plot.sh OUT - the transfer benchmark's results (OUT/results.json, written by
# transfer-table.sh) as OUT/results.svg: text->image R@1 on each target database's test set
# against the trainable parameters of each method (log scale; zero-shot, which trains nothing,
# at the left edge), one colour per target, the seeds' spread as a bar. Plain SVG from awk.
set -eu
OUT=$1
tr -d '\n' <"$OUT/results.json" | sed 's/},/}\n/g' | awk -v out="$OUT/results.svg.tmp" '
function num(key,   s) { # the first number after "key":
	s = $0
	if (!match(s, "\"" key "\": \\[?[0-9.]+")) return 0
	s = substr(s, RSTART, RLENGTH); sub(/.*: \[?/, "", s); return s + 0
}
function spread(key,   s) { # the second number of "key": [mean, spread]
	s = $0
	if (!match(s, "\"" key "\": \\[[0-9.]+, [0-9.]+")) return 0
	s = substr(s, RSTART, RLENGTH); sub(/.*, /, "", s); return s + 0
}
function str(key,   s) {
	s = $0
	if (!match(s, "\"" key "\": \"[^\"]*\"")) return ""
	s = substr(s, RSTART, RLENGTH); sub(/.*: "/, "", s); sub(/"$/, "", s); return s
}
function x(p) { return L + (p > 0 ? (log(p) / log(10) - X0) / (X1 - X0) : -0.07) * W }
function y(r) { return T + (1 - r / 100) * H }
{
	t = str("target"); m = str("method")
	if (t == "") next
	n++; tg[n] = t; me[n] = m; p[n] = num("trainable"); r[n] = num("t2i_R1"); sp[n] = spread("t2i_R1")
	if (!(t in col)) { ord[++nt] = t; col[t] = palette[nt] }
}
BEGIN {
	split("#1b6ca8 #d1495b #2e933c #edae49 #6a4c93 #00798c #8c564b #444444", palette, " ")
	L = 90; T = 40; W = 560; H = 330; X0 = 2; X1 = 7
}
END {
	printf "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" font-size=\"11\">\n", L + W + 170, T + H + 60 > out
	printf "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n" > out
	printf "<text x=\"%d\" y=\"22\" font-size=\"14\">text→image R@1 on each target database vs trainable parameters</text>\n", L > out
	for (k = 0; k <= 100; k += 20) {
		printf "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", L, L + W, y(k), y(k) > out
		printf "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%d</text>\n", L - 6, y(k) + 4, k > out
	}
	for (e = X0; e <= X1; e++) {
		printf "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%d\" y2=\"%d\" stroke=\"#ddd\"/>\n", x(10 ^ e), x(10 ^ e), T, T + H > out
		printf "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">1e%d</text>\n", x(10 ^ e), T + H + 16, e > out
	}
	printf "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">0</text>\n", x(0), T + H + 16 > out
	printf "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">trainable parameters (log scale; zero-shot at 0)</text>\n", L + W / 2, T + H + 36 > out
	printf "<text transform=\"translate(18 %d) rotate(-90)\" text-anchor=\"middle\">R@1 (%%), mean of seeds, bar: spread</text>\n", T + H / 2 > out
	for (i = 1; i <= n; i++) {
		cx = x(p[i]); cy = y(r[i]); c = col[tg[i]]
		if (sp[i] > 0)
			printf "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>\n", cx, cx, y(r[i] - sp[i]), y(r[i] + sp[i]), c > out
		printf "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"%s\"><title>%s %s: %.1f, %d parameters</title></circle>\n", cx, cy, c, tg[i], me[i], r[i], p[i] > out
		printf "<text x=\"%.1f\" y=\"%.1f\" fill=\"%s\" font-size=\"9\">%s</text>\n", cx + 6, cy - 4, c, me[i] > out
	}
	for (k = 1; k <= nt; k++) {
		printf "<circle cx=\"%d\" cy=\"%d\" r=\"5\" fill=\"%s\"/>\n", L + W + 20, T + 10 + 18 * k, col[ord[k]] > out
		printf "<text x=\"%d\" y=\"%d\">%s</text>\n", L + W + 30, T + 14 + 18 * k, ord[k] > out
	}
	printf "</svg>\n" > out
}'
mv "$OUT/results.svg.tmp" "$OUT/results.svg"
