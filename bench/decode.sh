#!/bin/sh
# decode.sh - images/s of cmr-decode on fullres.tar (150 photos, ~500x375) and one Flickr8k
# shard (1000 photos, 224x224) at 1 and 2 threads, next to PIL (python3-pil) doing the same
# decode + bicubic resize + crop in the same run. Best of 3 runs each. Writes its section of
# bench/RESULTS.md. Needs ../shared and a built tree (make). Run from the top of the tree.
set -eu
. bench/lib.sh
S=../shared/data
[ -d "$S" ] || { echo "decode.sh: ../shared/data is missing" >&2; exit 1; }
PATH=$PWD/build/bin:$PATH
best() { # best images/s of 3 runs of: cmr-decode ARGS (counting records)
	b=0
	for i in 1 2 3; do
		t0=$(date +%s.%N)
		cmr-decode "$@" >/dev/null
		t1=$(date +%s.%N)
		r=$(echo "$N / ($t1 - $t0)" | bc -l)
		b=$(echo "if ($r > $b) $r else $b" | bc -l)
	done
	printf '%.0f' "$b"
}
pbest() {
	b=0
	for i in 1 2 3; do
		r=$(/usr/bin/python3 bench/pil_decode.py "$@")
		b=$(echo "if ($r > $b) $r else $b" | bc -l)
	done
	printf '%.0f' "$b"
}
rows=""
for a in flickr8k-fullres/fullres.tar flickr8k/train-0.tar; do
	N=$(tar tf "$S/$a" | grep -ci '\.jpe\?g$')
	c1=$(best -j 1 "$S/$a")
	c2=$(best -j 2 "$S/$a")
	p1=$(pbest "$S/$a" 224 1)
	p2=$(pbest "$S/$a" 224 2)
	rows="$rows| $a ($N images) | $c1 | $c2 | $p1 | $p2 |
"
done
section="<!-- decode:begin -->
## cmr-decode: images/s (decode + CLIP resize to 224 + center crop)

Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/{print $2}') GiB.
Date: $(date -u +%Y-%m-%d). Command: \`sh bench/decode.sh\` (best of 3 runs, output to /dev/null,
archive read included). Peer: PIL $(/usr/bin/python3 -c 'import PIL; print(PIL.__version__)')
(Debian python3-pil, the same libjpeg-turbo) running bench/pil_decode.py, 1 and 2 processes.

| archive | cmr-decode -j 1 | cmr-decode -j 2 | PIL, 1 process | PIL, 2 processes |
|---|---|---|---|---|
$rows<!-- decode:end -->"
write_section decode "$section"
