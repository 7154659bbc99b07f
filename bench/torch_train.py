#!/usr/bin/python3
"""torch_train.py - the peer of cmr-train in bench/train.sh: the same training step (both CLIP
towers forward, symmetric InfoNCE with the learnt scale, backward, gradient clipping to norm
1, AdamW with weight decay on matrices) in PyTorch on the CPU, batched, from
tests/ref/clip_reference.py's layers, with the model of CONFIG.json randomly initialised.
Usage: torch_train.py CONFIG.json THREADS BATCH TXTLEN STEPS -> prints "pairs/s ms/step"
(the mean over the steps after 2 warm-up steps)."""
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "ref"))
import clip_reference as ref  # noqa: E402

torch.set_grad_enabled(True)


def params(cfg):
    vc, tc, P = cfg["vision_config"], cfg["text_config"], cfg["projection_dim"]
    W = {}

    def tower(pre, c):
        D, Fm = c["hidden_size"], c["intermediate_size"]
        for l in range(c["num_hidden_layers"]):
            p = "%s.encoder.layers.%d." % (pre, l)
            for n in ("layer_norm1", "layer_norm2"):
                W[p + n + ".weight"], W[p + n + ".bias"] = torch.ones(D), torch.zeros(D)
            for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
                W[p + "self_attn." + n + ".weight"] = torch.randn(D, D) * D ** -0.5
                W[p + "self_attn." + n + ".bias"] = torch.zeros(D)
            W[p + "mlp.fc1.weight"], W[p + "mlp.fc1.bias"] = torch.randn(Fm, D) * D ** -0.5, torch.zeros(Fm)
            W[p + "mlp.fc2.weight"], W[p + "mlp.fc2.bias"] = torch.randn(D, Fm) * Fm ** -0.5, torch.zeros(D)

    D, S, Pt = vc["hidden_size"], vc["image_size"], vc["patch_size"]
    W["vision_model.embeddings.class_embedding"] = torch.randn(D) * 0.02
    W["vision_model.embeddings.patch_embedding.weight"] = torch.randn(D, 3, Pt, Pt) * 0.02
    W["vision_model.embeddings.position_embedding.weight"] = torch.randn((S // Pt) ** 2 + 1, D) * 0.02
    for n in ("pre_layrnorm", "post_layernorm"):
        W["vision_model.%s.weight" % n], W["vision_model.%s.bias" % n] = torch.ones(D), torch.zeros(D)
    tower("vision_model", vc)
    W["visual_projection.weight"] = torch.randn(P, D) * D ** -0.5
    Dt = tc["hidden_size"]
    W["text_model.embeddings.token_embedding.weight"] = torch.randn(tc["vocab_size"], Dt) * 0.02
    W["text_model.embeddings.position_embedding.weight"] = torch.randn(tc["max_position_embeddings"], Dt) * 0.02
    W["text_model.final_layer_norm.weight"], W["text_model.final_layer_norm.bias"] = torch.ones(Dt), torch.zeros(Dt)
    tower("text_model", tc)
    W["text_projection.weight"] = torch.randn(P, Dt) * Dt ** -0.5
    W["logit_scale"] = torch.tensor(math.log(1 / 0.07))
    for v in W.values():
        v.requires_grad_(True)
    return W


def main():
    cfg = json.load(open(sys.argv[1]))
    threads, B, T, steps = (int(a) for a in sys.argv[2:6])
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    vc, tc = cfg["vision_config"], cfg["text_config"]
    S, P = vc["image_size"], vc["patch_size"]
    W = params(cfg)
    x = torch.randn(B, 3, S, S)
    ids = torch.randint(0, 49406, (B, T))
    labels = torch.arange(B)
    decay = [p for p in W.values() if p.dim() >= 2]
    other = [p for p in W.values() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.2}, {"params": other, "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.9, 0.98), eps=1e-6)

    def step():
        pe = F.conv2d(x, W["vision_model.embeddings.patch_embedding.weight"], stride=P).flatten(2).transpose(1, 2)
        cls = W["vision_model.embeddings.class_embedding"].view(1, 1, -1).expand(B, 1, -1)
        h = torch.cat([cls, pe], 1) + W["vision_model.embeddings.position_embedding.weight"]
        h = ref.layer_norm(h, W["vision_model.pre_layrnorm.weight"], W["vision_model.pre_layrnorm.bias"], 1e-5)
        h = ref.encoder(h, W, "vision_model", vc, causal=False)
        img = F.linear(ref.layer_norm(h[:, 0], W["vision_model.post_layernorm.weight"],
                                      W["vision_model.post_layernorm.bias"], 1e-5), W["visual_projection.weight"])
        t = W["text_model.embeddings.token_embedding.weight"][ids] + W["text_model.embeddings.position_embedding.weight"][:T]
        t = ref.encoder(t, W, "text_model", tc, causal=True)
        txt = F.linear(ref.layer_norm(t[:, -1], W["text_model.final_layer_norm.weight"],
                                      W["text_model.final_layer_norm.bias"], 1e-5), W["text_projection.weight"])
        img = img / img.norm(dim=-1, keepdim=True)
        txt = txt / txt.norm(dim=-1, keepdim=True)
        logits = W["logit_scale"].clamp(max=math.log(100)).exp() * img @ txt.t()
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(W.values()), 1.0)
        opt.step()

    for _ in range(2):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    dt = (time.perf_counter() - t0) / steps
    print("%.1f %.1f" % (B / dt, 1000 * dt))


if __name__ == "__main__":
    main()
