#!/bin/sh
# caption.sh - captions/s of cmr-caption-ingest on the 35,460 Flickr8k captions, next to the
# Python reference tokenizer (tests/ref/clip_tokenizer.py: CLIP's algorithm with the regex
# module) on the same captions in the same run. Best of 3. Writes its section of
# bench/RESULTS.md. Needs ../shared, python3-regex, and a built tree.
set -eu
. bench/lib.sh
C=../shared/data/flickr8k/captions.token.txt
[ -f "$C" ] || { echo "caption.sh: $C is missing" >&2; exit 1; }
PATH=$PWD/build/bin:$PATH
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cut -f2 "$C" >"$T/caps.txt"
N=$(wc -l <"$T/caps.txt")
best() {
	b=0
	for i in 1 2 3; do
		t0=$(date +%s.%N)
		"$@" >/dev/null
		t1=$(date +%s.%N)
		r=$(echo "$N / ($t1 - $t0)" | bc -l)
		b=$(echo "if ($r > $b) $r else $b" | bc -l)
	done
	printf '%.0f' "$b"
}
c=$(best cmr-caption-ingest -f flickr "$C")
ct=$(best cmr-caption-ingest -f text "$T/caps.txt")
p=$(best sh -c "/usr/bin/python3 tests/ref/clip_tokenizer.py lib/text/clip/bpe_simple_vocab_16e6.txt.gz < '$T/caps.txt'")
section="<!-- caption:begin -->
## cmr-caption-ingest: captions/s (CLIP tokenization, $N Flickr8k captions)

Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //').
Date: $(date -u +%Y-%m-%d). Command: \`sh bench/caption.sh\` (best of 3, one thread, process
start and vocabulary loading included). Peer: tests/ref/clip_tokenizer.py (CLIP's
simple_tokenizer algorithm, Python $(/usr/bin/python3 -c 'import sys; print(sys.version.split()[0])'),
regex module, with its word cache) on the same captions, in the same run.

| tokenizer | captions/s |
|---|---|
| cmr-caption-ingest -f flickr (keys, records written) | $c |
| cmr-caption-ingest -f text | $ct |
| Python reference | $p |
<!-- caption:end -->"
write_section caption "$section"
