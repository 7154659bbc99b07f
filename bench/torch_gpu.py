#!/usr/bin/env python3
"""torch_gpu.py - the peer of cmr on a GPU in bench/gpu.sh: transformers' CLIPModel built from
the same checkpoint directory (mkclip's random ViT-B/32, model.safetensors), eager PyTorch with
its default (SDPA) attention, on cuda:0.
Usage: torch_gpu.py MODEL_DIR WHAT PRECISION BATCH
  WHAT: images (images/s of get-features passes at BATCH), texts (captions of 20 tokens/s),
        train (pairs/s of full training steps: both towers, CLIP's loss, backward, gradient
        clipping at 1, AdamW)
  PRECISION: fp32 (TF32 off), tf32, bf16 (weights and inputs bf16 for images/texts; autocast
        bf16 with fp32 weights and AdamW for train)
Prints "RATE" (items/s), the best of 3 timed rounds after 2 warm-up rounds, each round 10
batches (train: 5 steps), timed with torch.cuda.synchronize."""
import sys
import time

import torch
from transformers import CLIPModel


def main():
    d, what, prec, B = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    torch.backends.cuda.matmul.allow_tf32 = prec == "tf32"
    torch.backends.cudnn.allow_tf32 = prec == "tf32"
    dev = torch.device("cuda:0")
    model = CLIPModel.from_pretrained(d, attn_implementation="sdpa").to(dev)
    S = model.config.vision_config.image_size
    dt = torch.bfloat16 if prec == "bf16" else torch.float32
    px = torch.randn(B, 3, S, S, device=dev)
    ids = torch.randint(0, 49406, (B, 20), device=dev)
    ids[:, 0], ids[:, -1] = 49406, 49407
    if what != "train":
        model = model.to(dt).eval()
        px = px.to(dt)

        def images():
            with torch.no_grad():
                out = model.vision_model(pixel_values=px)
                return model.visual_projection(out[1])

        def texts():
            with torch.no_grad():
                out = model.text_model(input_ids=ids)
                return model.text_projection(out[1])

        fn, rounds = (images if what == "images" else texts), 10
    else:
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.2)

        def fn():
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=prec == "bf16"):
                loss = model(input_ids=ids, pixel_values=px, return_loss=True).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()

        rounds = 5
    best = 0.0
    for r in range(5):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(rounds):
            fn()
        torch.cuda.synchronize()
        if r >= 2:
            best = max(best, rounds * B / (time.perf_counter() - t0))
    print("%.1f" % best)


if __name__ == "__main__":
    main()
