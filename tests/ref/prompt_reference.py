#!/usr/bin/python3
"""prompt_reference.py - the reference for cmr's prompt tuning (PyTorch autograd, Debian
python3-torch, in double): the prompted forward pass of a frozen CLIP and the gradients of
CLIP's symmetric InfoNCE loss with respect to the prompts only.

Placement, written here independently of cmr's batch layout, by concatenation:
  text (CoOp):  [start] [prompt 1..N] [token 1 .. T-1], position embeddings 0 .. T+N-1;
                a caption longer than context - N is cut to context - N tokens with its end
                token kept last; pooled at the end token (argmax id), now N rows later.
  vision (VPT): [class] [prompt 1..N] [patches], the prompts added after the position
                embeddings (they get none), before the pre-layernorm; pooled at the class token.
  deep:         before every layer l >= 1 the prompt rows are replaced by layer l's own set.

Usage: prompt_reference.py MODEL_DIR IMAGES.cmr TOKENS.cmr OUT.safetensors TEXT_N VISION_N DEEP SEED
Output tensors (F32): the prompts under their cmr names (prompt.text.embeddings [N, D],
prompt.vision.embeddings, prompt.<tower>.layers.<l> when deep), drawn N(0, 0.02) from SEED;
emb.image [B, P] and emb.text [B, P] (raw projections); loss [1]; grad.<prompt name> for
each; truncated [1] (captions cut). Run by tests/ref/make-prompt-goldens.sh; make check does
not run Python."""
import math
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import clip_reference as ref  # noqa: E402
from train_reference import write_safetensors  # noqa: E402

torch.set_grad_enabled(True)
torch.set_default_dtype(torch.float64)


def encoder(x, W, prefix, cfg, causal, deep, n):
    """clip_reference's encoder with deep prompts: rows 1..n replaced before layers >= 1"""
    layers = cfg["num_hidden_layers"]
    for l in range(layers):
        if l > 0 and deep is not None:
            x = torch.cat([x[:, :1], deep[l].unsqueeze(0), x[:, 1 + n:]], dim=1)
        one = dict(cfg, num_hidden_layers=1)
        Wl = {k.replace("%s.encoder.layers.%d." % (prefix, l), "%s.encoder.layers.0." % prefix): v
              for k, v in W.items() if k.startswith("%s.encoder.layers.%d." % (prefix, l))}
        x = ref.encoder(x, Wl, prefix, one, causal)
    return x


def encode_image(W, cfg, pre, img, P, deep):
    vc = cfg["vision_config"]
    h = ref.vision_rows(W, cfg, pre, img)
    n = 0 if P is None else P.shape[0]
    if n:
        h = torch.cat([h[:, :1], P.unsqueeze(0), h[:, 1:]], dim=1)
    eps = vc.get("layer_norm_eps", 1e-5)
    h = ref.layer_norm(h, W["vision_model.pre_layrnorm.weight"], W["vision_model.pre_layrnorm.bias"], eps)
    h = encoder(h, W, "vision_model", vc, False, deep, n)
    pooled = ref.layer_norm(h[:, 0], W["vision_model.post_layernorm.weight"], W["vision_model.post_layernorm.bias"],
                            eps)
    return F.linear(pooled, W["visual_projection.weight"])[0]


def encode_text(W, cfg, ids, P, deep):
    tc = cfg["text_config"]
    n = 0 if P is None else P.shape[0]
    ctx = tc["max_position_embeddings"]
    ids = ids.astype(np.int64)
    cut = 0
    if len(ids) + n > ctx:
        ids = np.concatenate([ids[:ctx - n - 1], ids[[ids.argmax()]]])
        cut = 1
    ids = torch.from_numpy(ids)
    tok = W["text_model.embeddings.token_embedding.weight"][ids]
    if n:
        tok = torch.cat([tok[:1], P, tok[1:]], dim=0)
    T = tok.shape[0]
    h = (tok + W["text_model.embeddings.position_embedding.weight"][:T]).unsqueeze(0)
    h = encoder(h, W, "text_model", tc, True, deep, n)
    h = ref.layer_norm(h, W["text_model.final_layer_norm.weight"], W["text_model.final_layer_norm.bias"],
                       tc.get("layer_norm_eps", 1e-5))
    at = int(ids.argmax())
    pooled = h[0, at + n if at > 0 else 0]
    return F.linear(pooled, W["text_projection.weight"]), cut


def main():
    model, imgs, toks, out = sys.argv[1:5]
    tn, vn, deep, seed = int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8])
    cfg, pre, W = ref.load_model(model)
    images = [a for _, _, a in ref.read_stream(imgs)]
    tokens = [a for _, _, a in ref.read_stream(toks)]
    rng = np.random.default_rng(seed)
    prompts = {}

    def draw(name, n, d):
        prompts[name] = torch.from_numpy((rng.standard_normal((n, d)) * 0.02).astype(np.float32).astype(np.float64))
        prompts[name].requires_grad_(True)
        return prompts[name]

    towers = {}
    for tower, n, key in (("text", tn, "text_config"), ("vision", vn, "vision_config")):
        if not n:
            towers[tower] = (None, None)
            continue
        d, L = cfg[key]["hidden_size"], cfg[key]["num_hidden_layers"]
        P = draw("prompt.%s.embeddings" % tower, n, d)
        dp = {l: draw("prompt.%s.layers.%d" % (tower, l), n, d) for l in range(1, L)} if deep else None
        towers[tower] = (P, dp)
    img = torch.stack([encode_image(W, cfg, pre, a, *towers["vision"]) for a in images])
    enc = [encode_text(W, cfg, t, *towers["text"]) for t in tokens]
    txt = torch.stack([e for e, _ in enc])
    cut = sum(c for _, c in enc)
    ni, nt = img / img.norm(dim=-1, keepdim=True), txt / txt.norm(dim=-1, keepdim=True)
    scale = W["logit_scale"].clamp(max=math.log(100)).exp()
    logits = scale * ni @ nt.t()
    labels = torch.arange(len(images))
    loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
    loss.backward()
    res = {name: p.detach().numpy().astype(np.float32) for name, p in prompts.items()}
    res["emb.image"] = img.detach().numpy().astype(np.float32)
    res["emb.text"] = txt.detach().numpy().astype(np.float32)
    res["loss"] = np.array([loss.item()], dtype=np.float32)
    res["truncated"] = np.array([cut], dtype=np.float32)
    for name, p in prompts.items():
        res["grad." + name] = p.grad.numpy().astype(np.float32)
    write_safetensors(out, res)
    print("%s: loss %.6f, %d prompt tensors, %d captions cut" % (out, loss.item(), len(prompts), cut))


if __name__ == "__main__":
    main()
