#!/usr/bin/python3
"""pool_reference.py - the reference for cmr's prompt pool and description terms (APSE-IPIK,
L2P's key pull; PyTorch autograd, Debian python3-torch, in double), written from the papers'
definitions, independently of cmr's code:

  query   the frozen vision tower without prompts: the class token's state after the
          post-layernorm, before the projection [B, width]
  select  cos(query, key) for every key; each image takes the K best, best first (equal
          scores: the lower id first)
  insert  the chosen prompts' rows [K * L, width], in that order, after the class token,
          after the position embeddings, before the pre-layernorm (prompt_reference's VPT
          placement)
  loss    Lclip(I, T)                                   CLIP's symmetric InfoNCE, captions
        + sum_v  wc * Lclip(I_v, D_v) + wt * Ltrip(I_v, D_v)   each perspective v of the
          descriptions over the images that have one; Ltrip VSE++'s hardest-negative hinge
          both ways, summed over the images, margin m
        - lambda * mean_{b, j} cos(key[sel[b, j]], query[b])   (the keys' only gradient)

Usage: pool_reference.py MODEL_DIR IMAGES.cmr TOKENS.cmr DESCS.cmr OUT.safetensors
                         SIZE LENGTH TOPK SEED WC WT MARGIN LAMBDA
The descriptions' keys are <image key>#<perspective>. Output tensors (F32):
prompt.vision.pool [SIZE * LENGTH, width] and prompt.vision.keys [SIZE, width], drawn
uniform(-1, 1) from SEED (APSE-IPIK's initialisation); pool [3] (SIZE, LENGTH, TOPK);
weights [4] (WC, WT, MARGIN, LAMBDA); query [B, width]; select [B, TOPK] (ids as floats);
emb.image [B, P] (prompted), emb.text [B, P]; loss [1] and its parts loss.captions,
loss.descriptions, loss.pull; grad.prompt.vision.pool, grad.prompt.vision.keys. Run by
tests/ref/make-prompt-goldens.sh; make check does not run Python."""
import math
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import clip_reference as ref  # noqa: E402
from prompt_reference import encoder, encode_text  # noqa: E402
from train_reference import write_safetensors  # noqa: E402

torch.set_grad_enabled(True)
torch.set_default_dtype(torch.float64)


def vision(W, cfg, pre, img, P):
    """(pooled state after the post-layernorm, projection) of one image with prompt rows P (or None)"""
    vc = cfg["vision_config"]
    h = ref.vision_rows(W, cfg, pre, img)
    n = 0 if P is None else P.shape[0]
    if n:
        h = torch.cat([h[:, :1], P.unsqueeze(0), h[:, 1:]], dim=1)
    eps = vc.get("layer_norm_eps", 1e-5)
    h = ref.layer_norm(h, W["vision_model.pre_layrnorm.weight"], W["vision_model.pre_layrnorm.bias"], eps)
    h = encoder(h, W, "vision_model", vc, False, None, n)
    pooled = ref.layer_norm(h[:, 0], W["vision_model.post_layernorm.weight"], W["vision_model.post_layernorm.bias"],
                            eps)[0]
    return pooled, F.linear(pooled, W["visual_projection.weight"])


def unit(x):
    return x / x.norm(dim=-1, keepdim=True)


def clip_loss(img, txt, scale):
    logits = scale * unit(img) @ unit(txt).t()
    labels = torch.arange(img.shape[0])
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


def triplet(img, txt, margin):
    """VSE++ (Faghri et al. 2018), max of hinges: for each image its hardest negative text and
    for each text its hardest negative image, summed"""
    S = unit(img) @ unit(txt).t()
    pos = S.diag()
    off = torch.eye(S.shape[0], dtype=torch.bool)
    neg = S.masked_fill(off, -math.inf)
    return (margin + neg.max(dim=1).values - pos).clamp(min=0).sum() + \
        (margin + neg.max(dim=0).values - pos).clamp(min=0).sum()


def main():
    model, imgs, toks, descs, out = sys.argv[1:6]
    size, length, topk, seed = (int(a) for a in sys.argv[6:10])
    wc, wt, margin, lam = (float(a) for a in sys.argv[10:14])
    cfg, pre, W = ref.load_model(model)
    images = ref.read_stream(imgs)
    tokens = [a for _, _, a in ref.read_stream(toks)]
    width = cfg["vision_config"]["hidden_size"]
    rng = np.random.default_rng(seed)

    def draw(n):
        t = torch.from_numpy(rng.uniform(-1, 1, (n, width)).astype(np.float32).astype(np.float64))
        return t.requires_grad_(True)

    pool, keys = draw(size * length), draw(size)
    with torch.no_grad():
        query = torch.stack([vision(W, cfg, pre, a, None)[0] for _, _, a in images])
    cos = unit(query) @ unit(keys).t()
    sel = []
    for b in range(len(images)):
        c = cos[b].detach().numpy()
        order = sorted(range(size), key=lambda p: (-c[p], p))  # best first, the lower id on ties
        sel.append(order[:topk])
    img = torch.stack([vision(W, cfg, pre, a, torch.cat([pool[p * length:(p + 1) * length] for p in sel[b]]))[1]
                       for b, (_, _, a) in enumerate(images)])
    txt = torch.stack([encode_text(W, cfg, t, None, None)[0] for t in tokens])
    scale = W["logit_scale"].clamp(max=math.log(100)).exp()
    l_cap = clip_loss(img, txt, scale)
    # descriptions by perspective, over the images that have one
    row = {k: b for b, (k, _, _) in enumerate(images)}
    views = {}
    for key, _, ids in ref.read_stream(descs):
        image, persp = key.rsplit("#", 1)
        views.setdefault(persp, []).append((row[image], ids))
    l_desc = torch.zeros(())
    for persp in sorted(views):
        rows = [b for b, _ in views[persp]]
        d = torch.stack([encode_text(W, cfg, ids, None, None)[0] for _, ids in views[persp]])
        l_desc = l_desc + wc * clip_loss(img[rows], d, scale) + wt * triplet(img[rows], d, margin)
    l_pull = -lam * torch.stack([cos[b, p] for b in range(len(images)) for p in sel[b]]).mean()
    loss = l_cap + l_desc + l_pull
    loss.backward()
    f32 = lambda t: t.detach().numpy().astype(np.float32)  # noqa: E731
    res = {"prompt.vision.pool": f32(pool), "prompt.vision.keys": f32(keys),
           "pool": np.array([size, length, topk], dtype=np.float32),
           "weights": np.array([wc, wt, margin, lam], dtype=np.float32),
           "query": f32(query), "select": np.array(sel, dtype=np.float32),
           "emb.image": f32(img), "emb.text": f32(txt),
           "loss": np.array([loss.item()], dtype=np.float32),
           "loss.captions": np.array([l_cap.item()], dtype=np.float32),
           "loss.descriptions": np.array([l_desc.item()], dtype=np.float32),
           "loss.pull": np.array([l_pull.item()], dtype=np.float32),
           "grad.prompt.vision.pool": f32(pool.grad), "grad.prompt.vision.keys": f32(keys.grad)}
    write_safetensors(out, res)
    print("%s: loss %.6f (captions %.6f, descriptions %.6f over %d perspectives, pull %.6f); selections %s" %
          (out, loss.item(), l_cap.item(), l_desc.item(), len(views), l_pull.item(), sel))


if __name__ == "__main__":
    main()
