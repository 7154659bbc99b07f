#!/usr/bin/python3
"""adapter_reference.py - the reference for cmr's adapters on a frozen CLIP (PyTorch
autograd, Debian python3-torch, in double), written from the papers' definitions,
independently of cmr's hook interface. In every layer of a tower with width r > 0:

  parallel   (AdaptFormer, Chen et al. 2022) beside the MLP, reading its input:
             x_out = x_mid + MLP(LN2 x_mid) + s * up(ReLU(down(LN2 x_mid)))
  sequential (Houlsby et al. 2019) on each block's output, before its residual sum:
             a' = a + s_a * up(GELU(down(a))),  a = attention(LN1 x)      (point attn_out)
             m' = m + s_m * up(GELU(down(m))),  m = MLP(LN2 x_mid)         (point mlp_out)
  lora       (Hu et al. 2021, alpha = r) on the attention's projections W of q, k, v (input
             LN1 x) and out (input the heads' output): x W^T + b + x A^T B^T, A = down, B = up,
             no biases, no scale (points q, k, v, o)

down [r, width] with a bias, up [width, r] with a bias, s a learnt scalar per layer and point.
With LEVELS > 0 and INJECT > 0, the head's modules (MASAN's multi-level attention and
cross-level injection as cmr builds them, lib/model/levels.h) on the pooled state c after the
final layer norm LN, before the projection, in both towers:

  levels     layers l_i = ceil((i + 1) L / n) - 1, u_i = LN(h_l_i[pool]),
             c += g * sum_i softmax_i(q . u_i / sqrt(d)) u_i
  inject     layers l_j = floor((j + 1) L / (n + 1)) - 1, U_j = LN(h_l_j) (every row of the
             sample), c += g * Wo sum_j softmax(U_j Wk^T Wq c / sqrt(r)) U_j Wv^T

Their values here are random (up not zero, gates open), so that every gradient is there.

Usage: adapter_reference.py MODEL_DIR IMAGES.cmr TOKENS.cmr OUT.safetensors TYPE VISION_R TEXT_R SEED
       [LEVELS INJECT INJECT_WIDTH]
(TYPE: parallel, sequential, lora, or none: the head's modules alone)
Output tensors (F32): every adapter tensor under its cmr name
adapters.<tower>.<point>.layers.<l>.{down.weight, down.bias, up.weight, up.bias, scale},
levels.<tower>.{query, gate}, inject.<tower>.{q,k,v,o}.weight, inject.<tower>.gate;
adapter [6] (type: 0 parallel, 1 sequential, 2 lora, 3 none; the two widths; levels, inject,
the injection's width); emb.image [B, P], emb.text [B, P] (raw projections); loss [1] (CLIP's
symmetric InfoNCE); grad.<name> for each adapter tensor.
Run by tests/ref/make-prompt-goldens.sh; make check does not run Python."""
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

POINTS = {"parallel": ["mlp"], "sequential": ["attn_out", "mlp_out"], "lora": ["q", "k", "v", "o"], "none": ["-"]}
TYPES = ["parallel", "sequential", "lora", "none"]
HEAD = {"levels": 0, "inject": 0, "width": 0}


def lora(A, name, x):
    """LoRA (Hu et al. 2021) with alpha = r: x A^T B^T"""
    return F.linear(F.linear(x, A[name + ".down.weight"]), A[name + ".up.weight"])


def module(A, name, x, act):
    return A[name + ".scale"] * F.linear(act(F.linear(x, A[name + ".down.weight"], A[name + ".down.bias"])),
                                         A[name + ".up.weight"], A[name + ".up.bias"])


def encoder(x, W, prefix, cfg, causal, A, tower, kind):
    B, S, D = x.shape
    H = cfg["num_attention_heads"]
    Dh = D // H
    eps = cfg.get("layer_norm_eps", 1e-5)
    mask = torch.full((S, S), float("-inf")).triu(1) if causal else None
    outs = []
    for l in range(cfg["num_hidden_layers"]):
        p = "%s.encoder.layers.%d." % (prefix, l)
        name = lambda point: "adapters.%s.%s.layers.%d" % (tower, point, l)  # noqa: E731
        on = A is not None and (name(POINTS[kind][0]) + ".down.weight") in A
        h = ref.layer_norm(x, W[p + "layer_norm1.weight"], W[p + "layer_norm1.bias"], eps)
        q = F.linear(h, W[p + "self_attn.q_proj.weight"], W[p + "self_attn.q_proj.bias"])
        k = F.linear(h, W[p + "self_attn.k_proj.weight"], W[p + "self_attn.k_proj.bias"])
        v = F.linear(h, W[p + "self_attn.v_proj.weight"], W[p + "self_attn.v_proj.bias"])
        if on and kind == "lora":
            q, k, v = q + lora(A, name("q"), h), k + lora(A, name("k"), h), v + lora(A, name("v"), h)
        q = q * Dh ** -0.5
        q, k, v = (t.view(B, S, H, Dh).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-1, -2)
        if mask is not None:
            scores = scores + mask
        a = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(B, S, D)
        o = F.linear(a, W[p + "self_attn.out_proj.weight"], W[p + "self_attn.out_proj.bias"])
        a = o + lora(A, name("o"), a) if on and kind == "lora" else o
        if on and kind == "sequential":
            a = a + module(A, name("attn_out"), a, F.gelu)
        x = x + a
        h = ref.layer_norm(x, W[p + "layer_norm2.weight"], W[p + "layer_norm2.bias"], eps)
        m = F.linear(ref.act(F.linear(h, W[p + "mlp.fc1.weight"], W[p + "mlp.fc1.bias"]),
                             cfg.get("hidden_act", "quick_gelu")), W[p + "mlp.fc2.weight"], W[p + "mlp.fc2.bias"])
        if on and kind == "sequential":
            m = m + module(A, name("mlp_out"), m, F.gelu)
        if on and kind == "parallel":
            m = m + module(A, name("mlp"), h, F.relu)
        x = x + m
        outs.append(x)
    return outs


def head(outs, pool, lnw, lnb, eps, A, tower):
    """the pooled state after the final layer norm, with the head's modules: [d]"""
    ln = lambda t: ref.layer_norm(t, lnw, lnb, eps)  # noqa: E731
    L = len(outs)
    c = ln(outs[-1][0, pool])
    out = c
    n = HEAD["levels"]
    if n:
        n = min(n, L)
        layers = [math.ceil((i + 1) * L / n) - 1 for i in range(n)]
        u = torch.stack([ln(outs[l][0, pool]) for l in layers])
        a = torch.softmax(u @ A["levels.%s.query" % tower] / math.sqrt(u.shape[1]), dim=0)
        out = out + A["levels.%s.gate" % tower] * (a[:, None] * u).sum(0)
    n = HEAD["inject"]
    if n:
        n = min(n, L - 1)
        layers = [(j + 1) * L // (n + 1) - 1 for j in range(n)]
        p = "inject.%s." % tower
        q = F.linear(c, A[p + "q.weight"])
        o = 0
        for l in layers:
            U = ln(outs[l][0])
            K, V = F.linear(U, A[p + "k.weight"]), F.linear(U, A[p + "v.weight"])
            o = o + torch.softmax(K @ q / math.sqrt(q.shape[0]), dim=0) @ V
        out = out + A[p + "gate"] * F.linear(o, A[p + "o.weight"])
    return out


def encode_image(W, cfg, pre, img, A, kind):
    vc = cfg["vision_config"]
    h = ref.vision_rows(W, cfg, pre, img)
    eps = vc.get("layer_norm_eps", 1e-5)
    h = ref.layer_norm(h, W["vision_model.pre_layrnorm.weight"], W["vision_model.pre_layrnorm.bias"], eps)
    outs = encoder(h, W, "vision_model", vc, False, A, "vision", kind)
    pooled = head(outs, 0, W["vision_model.post_layernorm.weight"], W["vision_model.post_layernorm.bias"], eps, A,
                  "vision")
    return F.linear(pooled, W["visual_projection.weight"])


def encode_text(W, cfg, ids, A, kind):
    tc = cfg["text_config"]
    ids = torch.from_numpy(ids.astype(np.int64))
    T = ids.shape[0]
    h = (W["text_model.embeddings.token_embedding.weight"][ids] +
         W["text_model.embeddings.position_embedding.weight"][:T]).unsqueeze(0)
    outs = encoder(h, W, "text_model", tc, True, A, "text", kind)
    pooled = head(outs, int(ids.argmax()), W["text_model.final_layer_norm.weight"],
                  W["text_model.final_layer_norm.bias"], tc.get("layer_norm_eps", 1e-5), A, "text")
    return F.linear(pooled, W["text_projection.weight"])


def main():
    model, imgs, toks, out, kind = sys.argv[1:6]
    vr, tr, seed = int(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8])
    if len(sys.argv) > 9:
        HEAD["levels"], HEAD["inject"], HEAD["width"] = (int(a) for a in sys.argv[9:12])
    cfg, pre, W = ref.load_model(model)
    images = [a for _, _, a in ref.read_stream(imgs)]
    tokens = [a for _, _, a in ref.read_stream(toks)]
    rng = np.random.default_rng(seed)
    A = {}

    def draw(name, shape, std):
        A[name] = torch.from_numpy((rng.standard_normal(shape) * std).astype(np.float32).astype(np.float64))
        A[name].requires_grad_(True)

    for tower, r, key in (("vision", vr, "vision_config"), ("text", tr, "text_config")):
        d, L = cfg[key]["hidden_size"], cfg[key]["num_hidden_layers"]
        for l in range(L if r and kind != "none" else 0):
            for point in POINTS[kind]:
                n = "adapters.%s.%s.layers.%d" % (tower, point, l)
                draw(n + ".down.weight", (r, d), 1 / math.sqrt(d))
                if kind != "lora":
                    draw(n + ".down.bias", (r,), 0.1)
                draw(n + ".up.weight", (d, r), 1 / math.sqrt(r))
                if kind != "lora":
                    draw(n + ".up.bias", (d,), 0.1)
                    draw(n + ".scale", (1,), 0.5)
        if HEAD["levels"]:
            draw("levels.%s.query" % tower, (d,), 1.0)
            draw("levels.%s.gate" % tower, (1,), 0.5)
        if HEAD["inject"]:
            w = min(HEAD["width"], d)
            for x in "qkv":
                draw("inject.%s.%s.weight" % (tower, x), (w, d), 1 / math.sqrt(d))
            draw("inject.%s.o.weight" % tower, (d, w), 1 / math.sqrt(w))
            draw("inject.%s.gate" % tower, (1,), 0.5)
    img = torch.stack([encode_image(W, cfg, pre, a, A, kind) for a in images])
    txt = torch.stack([encode_text(W, cfg, t, A, kind) for t in tokens])
    ni, nt = img / img.norm(dim=-1, keepdim=True), txt / txt.norm(dim=-1, keepdim=True)
    logits = W["logit_scale"].clamp(max=math.log(100)).exp() * ni @ nt.t()
    labels = torch.arange(len(images))
    loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
    loss.backward()
    res = {name: t.detach().numpy().astype(np.float32) for name, t in A.items()}
    res["adapter"] = np.array([TYPES.index(kind), vr, tr] +
                              ([HEAD["levels"], HEAD["inject"], HEAD["width"]] if len(sys.argv) > 9 else []),
                              dtype=np.float32)
    res["emb.image"] = img.detach().numpy().astype(np.float32)
    res["emb.text"] = txt.detach().numpy().astype(np.float32)
    res["loss"] = np.array([loss.item()], dtype=np.float32)
    for name, t in A.items():
        res["grad." + name] = t.grad.numpy().astype(np.float32)
    write_safetensors(out, res)
    print("%s: %s adapters, widths vision %d text %d, levels %d, inject %d (width %d): loss %.6f, %d tensors" %
          (out, kind, vr, tr, HEAD["levels"], HEAD["inject"], HEAD["width"], loss.item(), len(A)))


if __name__ == "__main__":
    main()
