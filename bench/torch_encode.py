#!/usr/bin/python3
"""torch_encode.py - the peer of cmr-encode in bench/encode.sh: the same CLIP forward passes
(tests/ref/clip_reference.py's, batched) in PyTorch on the CPU with a given thread count.
Usage: torch_encode.py MODEL_DIR THREADS NIMG NTXT TXTLEN  -> prints "images/s captions/s" """
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "ref"))
import clip_reference as ref  # noqa: E402
import json  # noqa: E402


def main():
    model, threads, nimg, ntxt, tlen = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    torch.set_num_threads(threads)
    cfg = json.load(open(model + "/config.json"))
    W = ref.read_safetensors(model + "/model.safetensors")
    vc, tc = cfg["vision_config"], cfg["text_config"]
    S, P = vc["image_size"], vc["patch_size"]
    x = torch.randn(nimg, 3, S, S)

    def images():
        pe = torch.nn.functional.conv2d(x, W["vision_model.embeddings.patch_embedding.weight"], stride=P)
        pe = pe.flatten(2).transpose(1, 2)
        cls = W["vision_model.embeddings.class_embedding"].view(1, 1, -1).expand(nimg, 1, -1)
        h = torch.cat([cls, pe], 1) + W["vision_model.embeddings.position_embedding.weight"]
        h = ref.layer_norm(h, W["vision_model.pre_layrnorm.weight"], W["vision_model.pre_layrnorm.bias"], 1e-5)
        h = ref.encoder(h, W, "vision_model", vc, causal=False)
        return torch.nn.functional.linear(
            ref.layer_norm(h[:, 0], W["vision_model.post_layernorm.weight"], W["vision_model.post_layernorm.bias"], 1e-5),
            W["visual_projection.weight"])

    ids = torch.randint(0, 49406, (ntxt, tlen))

    def texts():
        h = W["text_model.embeddings.token_embedding.weight"][ids] + W["text_model.embeddings.position_embedding.weight"][:tlen]
        h = ref.encoder(h, W, "text_model", tc, causal=True)
        h = ref.layer_norm(h[:, -1], W["text_model.final_layer_norm.weight"], W["text_model.final_layer_norm.bias"], 1e-5)
        return torch.nn.functional.linear(h, W["text_projection.weight"])

    rates = []
    for fn, n in ((images, nimg), (texts, ntxt)):
        fn()  # warm up
        best = 0
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            best = max(best, n / (time.perf_counter() - t0))
        rates.append(best)
    print("%.1f %.1f" % tuple(rates))


if __name__ == "__main__":
    main()
