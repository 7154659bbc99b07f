#!/bin/sh
# tune.sh - what tuning a few tensors of a frozen model costs next to fine-tuning all of it:
# cmr-train on a ViT-B/32-shaped CLIP (tests/tools/mkclip b32, 151M parameters), batch 32,
# captions of 20 tokens, training only the two projections, or 8 text and 8 vision prompts on
# the frozen model (cmr-tuning(5)), or adapters of width 16 (parallel, sequential, LoRA), or
# the head's modules (multi-level attention over 4 layers, injection from 2, alone and beside
# LoRA), vs
# every parameter: peak RSS
# (GNU time's maximum resident set) and the mean step time (steps 3..N from the log's
# clock), in the same run. Writes its section of bench/RESULTS.md. Needs a built tree (make
# check builds mkclip), /usr/bin/time, python3-numpy.
set -eu
. bench/lib.sh
PATH=$PWD/build/bin:$PATH
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
B=32
STEPS=${STEPS:-3}
TH=${TH:-2}
build/tests/mkclip model "$T/b32" b32
build/tests/mkclip images $B 224 1 >"$T/i.cmr"
captions20 $B "$T"
load=$(cut -d' ' -f1-3 /proc/loadavg)
measure() { # label, cmr-train options...
	label=$1
	shift
	/usr/bin/time -f %M -o "$T/rss" cmr-train -q -t $TH -m "$T/b32" -o "$T/out" -b $B --steps $((STEPS + 2)) \
		--log "$T/log" "$@" "$T/i.cmr" "$T/t.cmr"
	ms=$(awk -v s=$STEPS -v b=$B -F '"pairs_per_s": ' '/"loss"/ { n++; split($2, a, "}"); r[n] = a[1] }
		END { t2 = 2 * b / r[2]; tn = n * b / r[n]; printf "%.0f", 1000 * (tn - t2) / s }' "$T/log")
	rss=$(awk '{ printf "%.2f", $1 / 1048576 }' "$T/rss")
	echo "$label $ms $rss"
}
set -- $(measure proj --train visual_projection.weight --train text_projection.weight) \
	$(measure full) $(measure prompts --text-prompts 8 --vision-prompts 8) \
	$(measure recompute --text-prompts 8 --vision-prompts 8 --recompute) \
	$(measure parallel --adapter parallel) $(measure sequential --adapter sequential) $(measure lora --adapter lora) \
	$(measure head --multi-level 4 --inject 2) $(measure lorahead --adapter lora --multi-level 4 --inject 2)
ratio=$(awk -v a="$2" -v b="$5" 'BEGIN { printf "%.2f", a / b }')
pratio=$(awk -v a="$8" -v b="$5" 'BEGIN { printf "%.2f", a / b }')
rratio=$(awk -v a="${11}" -v b="$5" 'BEGIN { printf "%.2f", a / b }')
aratio=$(awk -v a="${14}" -v b="${17}" -v c="${20}" -v f="$5" 'BEGIN { printf "%.2f, %.2f and %.2f", a / f, b / f, c / f }')
section="<!-- tune:begin -->
## cmr-train: tuning the projections, prompts or adapters of a frozen ViT-B/32 vs fine-tuning all of it

Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load
before the run $load. Date: $(date -u +%Y-%m-%d). Command: \`sh bench/tune.sh\` (STEPS=$STEPS, TH=$TH).
Model: mkclip's b32 (ViT-B/32 shape: vision 12 x 768, text 12 x 512, 151M parameters, F32
safetensors), batch $B, 224x224 images, captions of 20 tokens, $TH threads, InfoNCE. Step time:
mean of steps 3 to $((STEPS + 2)) (cmr-train's log); peak RSS: GNU time's maximum resident set
of the whole run (the mapped checkpoint's pages count).

| what is trained | ms/step | peak RSS (GiB) |
|---|---|---|
| \`visual_projection.weight\`, \`text_projection.weight\` (0.66M) | $2 | $3 |
| every parameter (151M) | $5 | $6 |
| 8 text + 8 vision prompts, base frozen (10k) | $8 | $9 |
| the same, \`--recompute\` (x_in and x_mid kept; q, k, v and fc1's output recomputed) | ${11} | ${12} |
| \`--adapter parallel\`, width 16 (0.51M) | ${14} | ${15} |
| \`--adapter sequential\`, width 16 (1.01M) | ${17} | ${18} |
| \`--adapter lora\`, rank 16 (1.97M) | ${20} | ${21} |
| \`--multi-level 4 --inject 2\` alone (0.33M) | ${23} | ${24} |
| \`--adapter lora\` with them (2.30M) | ${26} | ${27} |

Step time of the projections-only run: $ratio of the full one; of the prompt tuning: $pratio
(its backward pass crosses every layer of both towers for the input gradients, without weight
gradients; it keeps x_in, q, k, v, x_mid and fc1's output per layer, not the linear layers'
inputs, which only weight gradients read); with \`--recompute\`: $rratio. Adapters (parallel,
sequential, LoRA): $aratio of the full step (every activation kept, as for full
fine-tuning: a module reads them; no weight gradient of the base). The head's modules alone
walk back no layer (they read the frozen layers' outputs, kept as copies): $(awk -v a="${23}" -v f="$5" 'BEGIN { printf "%.2f", a / f }') of the full
step.
<!-- tune:end -->"
write_section tune "$section"
