#!/usr/bin/python3
"""train_reference.py - the reference for cmr-train's gradients and optimizer (PyTorch autograd,
Debian python3-torch), in the manner of llm.c's test: for a checkpoint and a batch of paired
image and token records it writes a debug state with the loss, the gradient of every
parameter, and the losses of 10 AdamW steps on that batch.

The model is clip_reference.py's forward pass (transformers' CLIPModel). The loss is CLIP's
symmetric InfoNCE on L2-normalised embeddings with logit scale exp(min(t, ln 100)). The steps
follow OpenCLIP: AdamW (betas 0.9, 0.98, eps 1e-6, weight decay 0.2 on tensors of rank >= 2),
linear warm-up over 2 steps then cosine to 0 at step 10 from lr 1e-3, gradients clipped to
global norm 1, and the logit scale clamped to [0, ln 100] after each step.

Usage: train_reference.py MODEL_DIR IMAGES.cmr TOKENS.cmr OUT.safetensors
Output tensors (F32): loss [1]; grad.NAME for every parameter, except the token embedding,
whose nonzero rows are grad.NAME [n, D] with their ids in rows.NAME (I64 [n]); losses [10].
Run once by tests/ref/make-train-goldens.sh; make check does not run Python."""
import json
import math
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import clip_reference as ref  # noqa: E402

torch.set_grad_enabled(True)
torch.set_default_dtype(torch.float64)  # the reference in double: its own error is negligible

TOK = "text_model.embeddings.token_embedding.weight"


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, arr in tensors.items():
        b = arr.tobytes()
        header[name] = {"dtype": {np.float32: "F32", np.int64: "I64"}[arr.dtype.type],
                        "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def loss_fn(W, cfg, pre, images, tokens):
    img = torch.stack([ref.encode_image(W, cfg, pre, a) for a in images])
    txt = torch.stack([ref.encode_text(W, cfg, t) for t in tokens])
    img = img / img.norm(dim=-1, keepdim=True)
    txt = txt / txt.norm(dim=-1, keepdim=True)
    scale = W["logit_scale"].clamp(max=math.log(100)).exp()
    logits = scale * img @ txt.t()
    labels = torch.arange(len(images))
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


def main():
    model, imgs, toks, out = sys.argv[1:5]
    cfg = json.load(open(model + "/config.json"))
    try:
        pre = json.load(open(model + "/preprocessor_config.json"))
    except FileNotFoundError:
        pre = {}
    W = {k: v.double().requires_grad_(True) for k, v in ref.read_safetensors(model + "/model.safetensors").items()}
    images = [a for _, _, a in ref.read_stream(imgs)]
    tokens = [a for _, _, a in ref.read_stream(toks)]
    assert len(images) == len(tokens)
    # encode_image builds its input in float32; the model runs in double
    ref_torch_from_numpy = torch.from_numpy
    torch.from_numpy = lambda a: ref_torch_from_numpy(a.astype(np.float64) if a.dtype == np.float32 else a)

    res = {}
    loss = loss_fn(W, cfg, pre, images, tokens)
    loss.backward()
    res["loss"] = np.array([loss.item()], dtype=np.float32)
    for name, p in W.items():
        g = p.grad.numpy()
        if name == TOK:
            rows = np.nonzero(np.abs(g).sum(axis=1))[0]
            res["rows." + name] = rows.astype(np.int64)
            g = g[rows]
        res["grad." + name] = np.ascontiguousarray(g, dtype=np.float32).reshape(p.shape if name != TOK else g.shape)

    decay = [p for n, p in W.items() if p.dim() >= 2]
    no_decay = [p for n, p in W.items() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.2}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.98), eps=1e-6)
    losses = []
    for step in range(10):
        lr = 1e-3 * (step + 1) / 2 if step < 2 else 0.5 * (1 + math.cos(math.pi * (step - 2) / 8)) * 1e-3
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad()
        loss = loss_fn(W, cfg, pre, images, tokens)
        losses.append(loss.item())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(W.values()), 1.0)
        opt.step()
        with torch.no_grad():
            W["logit_scale"].clamp_(0, math.log(100))
    res["losses"] = np.array(losses, dtype=np.float32)
    write_safetensors(out, res)
    print("loss %.6f, 10-step losses %s" % (res["loss"][0], " ".join("%.5f" % x for x in losses)))


if __name__ == "__main__":
    main()
