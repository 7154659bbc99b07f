#!/bin/sh
# gpu.sh - the CUDA backend on a GPU next to PyTorch on the same GPU in the same run: ViT-B/32
# (mkclip's random b32 checkpoint, 224 px) image embeddings/s at batch 256, captions of 20
# tokens/s at batch 256, and a full training step (both towers, InfoNCE, backward, clipping,
# AdamW) at batch 128, in fp32 and bf16. Writes the "gpu" section of bench/RESULTS.md.
# Usage: sh bench/gpu.sh [BUILD_DIR]   (python3 with torch and transformers: PYTHON=...)
# cmr-encode is timed as whole processes over N and 3N inputs: the steady rate is 2N over the
# difference (process start, CUDA's start, reading the weights and uploading them cancel),
# and the whole process's rate over 3N is shown beside it. cmr-train: the mean of steps 3..12
# from its log's clock. PyTorch: bench/torch_gpu.py, the passes alone (model in memory).
set -u
. bench/lib.sh
BUILD=${1:-build}
case $BUILD in /*) ;; *) BUILD=$PWD/$BUILD ;; esac
PATH=$BUILD/bin:$PATH
PY=${PYTHON:-python3}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
MK=$BUILD/tests/mkclip
NI=1024 NT=4096 BT=128 STEPS=10
"$MK" model "$T/b32" b32 || exit 1
"$MK" images $NI 224 1 >"$T/i1.cmr" && "$MK" images $((3 * NI)) 224 2 >"$T/i3.cmr" || exit 1
"$MK" tokens $NT 1 20 >"$T/t1.cmr" && "$MK" tokens $((3 * NT)) 2 20 >"$T/t3.cmr" || exit 1
"$MK" images $((2 * BT)) 224 3 >"$T/ti.cmr" && "$MK" tokens $((2 * BT)) 3 20 >"$T/tt.cmr" || exit 1

secs1() { # seconds of one run of CMD, or "fail" (its error kept in $T/err)
	t0=$(now)
	"$@" >/dev/null 2>"$T/err" || { echo fail; return; }
	t1=$(now)
	echo "$t1 - $t0" | bc -l
}
best3() { # the least seconds of 3 runs of CMD
	b=
	for _ in 1 2 3; do
		s=$(secs1 "$@")
		[ "$s" = fail ] && { echo fail; return; }
		[ -z "$b" ] || [ "$(echo "$s < $b" | bc -l)" = 1 ] && b=$s
	done
	echo "$b"
}
encode_rates() { # PRECISION N SMALL LARGE: "steady whole" items/s
	a=$(best3 cmr-encode -q -m "$T/b32" --backend cuda --precision $1 -b 256 "$3")
	b=$(best3 cmr-encode -q -m "$T/b32" --backend cuda --precision $1 -b 256 "$4")
	if [ "$a" = fail ] || [ "$b" = fail ]; then
		echo "failed: $(tail -1 "$T/err" | cut -c1-120 | tr '|' '/') | -"
		return
	fi
	echo "$2 $a $b" | awk '{ printf "%.0f | %.0f", 2 * $1 / ($3 - $2), 3 * $1 / $3 }'
}
train_rate() { # PRECISION: pairs/s and ms/step of steps 3..12
	if ! cmr-train -q -m "$T/b32" --backend cuda --precision $1 -o "$T/run-$1" -b $BT --steps $((STEPS + 2)) \
		--lr 1e-5 --log "$T/log-$1" "$T/ti.cmr" "$T/tt.cmr" 2>"$T/err"; then
		echo "failed: $(tail -1 "$T/err" | cut -c1-120 | tr '|' '/') | -"
		return
	fi
	awk -v s=$STEPS -v b=$BT -F '"pairs_per_s": ' '/"loss"/ { n++; split($2, a, "}"); r[n] = a[1] }
		END { t2 = 2 * b / r[2]; tn = n * b / r[n]; printf "%.1f | %.1f", s * b / (tn - t2), 1000 * (tn - t2) / s }' "$T/log-$1"
}
peer() { # WHAT PRECISION BATCH
	r=$("$PY" bench/torch_gpu.py "$T/b32" "$@" 2>"$T/perr") || r="failed: $(tail -1 "$T/perr" | cut -c1-100 | tr '|' '/')"
	echo "$r"
}

rows=""
for p in bf16 fp32; do
	ie=$(encode_rates $p $NI "$T/i1.cmr" "$T/i3.cmr")
	te=$(encode_rates $p $NT "$T/t1.cmr" "$T/t3.cmr")
	rows="$rows| $p | images/s, batch 256 | $ie | $(peer images $p 256) |
| $p | captions/s (20 tokens), batch 256 | $te | $(peer texts $p 256) |
"
	tr_=$(train_rate $p)
	pt=$(peer train $p $BT)
	rows="$rows| $p | training pairs/s (ms/step), batch $BT | ${tr_%% |*} | (${tr_##*| } ms) | $pt |
"
done
gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
section="<!-- gpu:begin -->
## The CUDA backend on a GPU: ViT-B/32 encode and train, next to PyTorch on the same GPU

GPU: $gpu; $(nproc) CPU cores. Date: $(date -u +%Y-%m-%d). Command: \`sh bench/gpu.sh\`
(tests/cuda/device-check.sh), build $(git rev-parse --short HEAD 2>/dev/null || echo '?').
Model: mkclip's random ViT-B/32 (224 px, 151M parameters, the same model.safetensors for both).
cmr: cmr-encode --backend cuda --precision P -b 256 as whole processes over N and 3N inputs
(N = $NI images, $NT captions of 20 tokens): \"steady\" is 2N over the difference of the two
times (start, CUDA's start, reading and uploading the weights cancel), \"whole\" 3N over the
larger run's time; best of 3 each. Training: cmr-train --backend cuda, every parameter, mean
of steps 3 to $((STEPS + 2)) from its log. bf16: products on tensor cores from bf16 roundings of
fp32 operands, fp32 elsewhere. Peer: PyTorch $("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null),
transformers $("$PY" -c 'import transformers; print(transformers.__version__)' 2>/dev/null)
CLIPModel (SDPA attention), eager, bench/torch_gpu.py: bf16 weights and inputs for the
encoders, autocast bf16 for training; the passes alone, best of 3 rounds after 2 warm-ups.

| precision | what | cmr steady | cmr whole process | PyTorch |
|---|---|---|---|---|
$rows<!-- gpu:end -->"
write_section gpu "$section"
