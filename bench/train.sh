#!/bin/sh
# train.sh - cmr-train's step time (both towers forward and backward, InfoNCE, clipping,
# AdamW) at the size of the Flickr8k from-scratch baseline: two 3-layer towers of width 128
# (MLP 512, 4 heads), 64x64 images in 8x8 patches (65 tokens), captions of 20 tokens,
# projection 128, batch 128, at 1 and 2 threads, next to the same step in PyTorch on the CPU
# (bench/torch_train.py, Debian python3-torch, same threads) in the same run. Writes its
# section of bench/RESULTS.md. Needs a built tree (make check builds mkclip).
set -eu
. bench/lib.sh
PATH=$PWD/build/bin:$PATH
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
B=128
STEPS=10
flickr_cfg "$T/cfg.json"
build/tests/mkclip images $B 64 1 >"$T/i.cmr"
captions20 $B "$T"
rows=""
for th in 1 2; do
	# steps 3.. of a run of 2 + STEPS steps, from the log's clock
	cmr-train -t $th --config "$T/cfg.json" -o "$T/m" -b $B --steps $((STEPS + 2)) --log "$T/log" "$T/i.cmr" "$T/t.cmr" 2>"$T/err"
	c=$(awk -v s=$STEPS -v b=$B -F '"pairs_per_s": ' '/"loss"/ { n++; split($2, a, "}"); r[n] = a[1] }
		END { t2 = 2 * b / r[2]; tn = n * b / r[n]; printf "%.1f %.1f", s * b / (tn - t2), 1000 * (tn - t2) / s }' "$T/log")
	set -- $c $(OMP_NUM_THREADS=$th OPENBLAS_NUM_THREADS=$th /usr/bin/python3 bench/torch_train.py "$T/cfg.json" $th $B 20 $STEPS)
	rows="$rows| $th | $1 | $2 | $3 | $4 |
"
done
params=$(sed -n 's/.*; \([0-9.]*M\) parameters.*/\1/p' "$T/err")
section="<!-- train:begin -->
## cmr-train: one training step, batch $B, two 3-layer width-128 towers

Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //').
Date: $(date -u +%Y-%m-%d). Command: \`sh bench/train.sh\`. Model: the Flickr8k baseline's
(vision 64x64 in 8x8 patches = 65 tokens, text 20 tokens, width 128, 3 layers, MLP 512, 4 heads,
projection 128; $params parameters, $(echo '49408 * 128 / 1000000' | bc -l | cut -c1-4)M of them the token embedding). A step is both forward
passes, the symmetric InfoNCE loss, both backward passes, gradient clipping and AdamW on every
parameter. cmr: mean of steps 3 to $((STEPS + 2)) of a cmr-train run (its log's clock, data in memory).
Peer: the same step in PyTorch $(/usr/bin/python3 -c 'import torch; print(torch.__version__)') on the CPU
(bench/torch_train.py, batched, autograd, torch.optim.AdamW; mean of $STEPS steps after 2 warm-up
steps), OMP_NUM_THREADS and OPENBLAS_NUM_THREADS set to the thread count.

| threads | cmr pairs/s | cmr ms/step | PyTorch pairs/s | PyTorch ms/step |
|---|---|---|---|---|
$rows<!-- train:end -->"
write_section train "$section"
