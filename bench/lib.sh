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

# captions20 N DIR: DIR/t.cmr, N token records img000#0.. of 20 tokens (start, 18 seeded
# ids, end), the captions of mkclip's images (needs python3-numpy and a built cmr-dump).
captions20() {
	awk -v n="$1" 'BEGIN { srand(3); for (i = 0; i < n; i++) { printf "49406"; for (j = 0; j < 18; j++) printf " %d", int(rand() * 49000); print " 49407" } }' >"$2/ids.txt"
	/usr/bin/python3 -c "
import numpy as np
np.save('$2/ids.npy', np.loadtxt('$2/ids.txt', dtype=np.int32))"
	awk -v n="$1" 'BEGIN { for (i = 0; i < n; i++) printf "img%03d#0\n", i }' >"$2/keys"
	build/bin/cmr-dump from-npy --kind tokens --keys "$2/keys" "$2/ids.npy" >"$2/t.cmr"
}

# flickr_cfg FILE: the Flickr8k from-scratch baseline's model size (bench/train.sh's)
flickr_cfg() {
	cat >"$1" <<'J'
{"projection_dim": 128,
 "text_config": {"hidden_size": 128, "num_hidden_layers": 3, "num_attention_heads": 4, "intermediate_size": 512,
   "vocab_size": 49408, "max_position_embeddings": 32, "hidden_act": "quick_gelu"},
 "vision_config": {"hidden_size": 128, "num_hidden_layers": 3, "num_attention_heads": 4, "intermediate_size": 512,
   "image_size": 64, "patch_size": 8, "hidden_act": "quick_gelu"}}
J
}

# Timing for the scripts that run each figure RUNS times (index.sh, ivfpq.sh):
# timeit OUT_FILE CMD...: runs CMD RUNS times, appending each run's seconds to OUT_FILE;
# rate N FILE: "best (worst)" of N / seconds; secs FILE: "best (worst)" seconds;
# recall EXACT.tsv GOT.tsv: the share of GOT's (query, hit) pairs that EXACT has (cmr-query TSV).
now() { date +%s.%N; }
timeit() {
	o=$1
	shift
	for _ in $(seq "$RUNS"); do
		t0=$(now)
		"$@"
		t1=$(now)
		echo "$t1 - $t0" | bc -l >>"$o"
	done
}
rate() { sort -g "$2" | awk -v n="$1" 'NR == 1 { b = n / $1 } { w = n / $1 } END { printf "%.0f (%.0f)", b, w }'; }
secs() { sort -g "$1" | awk 'NR == 1 { b = $1 } { w = $1 } END { printf "%.1f (%.1f)", b, w }'; }
recall() { awk -F'\t' 'NR == FNR { a[$1 " " $3] = 1; next } ($1 " " $3) in a { h++ } END { printf "%.4f", h / FNR }' "$1" "$2"; }
