#!/usr/bin/python3
"""clip_reference.py - an independent CLIP forward pass in PyTorch (Debian python3-torch), the
reference cmr-encode's goldens come from. It reads the Hugging Face checkpoint directory
(config.json, model.safetensors, preprocessor_config.json) and a cmr stream of image or token
records with its own small readers, and writes the L2-normalised embeddings as .npy + keys.

It follows transformers' CLIPModel: patch convolution without bias, class token, position
embeddings, pre_layrnorm, pre-LN encoder layers (q scaled by head_dim^-0.5 after its
projection, softmax attention, out_proj, fc1, quick_gelu or erf gelu, fc2), post_layernorm
of the class token and visual_projection; the text tower with a causal mask, final_layer_norm
and pooling at argmax(input_ids) (the end token), then text_projection.

Usage: clip_reference.py MODEL_DIR IN.cmr OUT.npy OUT.keys
Run once to make the committed goldens (tests/ref/make-encode-goldens.sh); make check does
not run Python."""
import json
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

torch.set_grad_enabled(False)


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    dt = {"F32": np.float32, "F16": np.float16, "BF16": None, "I64": np.int64}
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        arr = np.frombuffer(data[b:e], dtype=dt[info["dtype"]]).reshape(info["shape"])
        out[name] = torch.from_numpy(arr.astype(np.float32))
    return out


def read_stream(path):
    """The records of a cmr stream (formats/cmr-stream.md, version 1), checksums not checked."""
    dtypes = {1: np.uint8, 6: np.int32, 9: np.float32}
    data = open(path, "rb").read()
    off, recs = 0, []
    while off < len(data):
        assert data[off:off + 4] == b"\x89CMR", "bad magic at %d" % off
        rtype = data[off + 5]
        hlen, flags, kind = struct.unpack_from("<HHH", data, off + 6)
        dtype, rank = data[off + 12], data[off + 13]
        klen = struct.unpack_from("<H", data, off + 14)[0]
        dims = struct.unpack_from("<4I", data, off + 16)[:rank]
        raw, stored = struct.unpack_from("<QQ", data, off + 32)
        assert flags & 1 == 0, "compressed payloads are not read here"
        key = data[off + hlen:off + hlen + klen].decode("utf-8")
        p = off + hlen + klen
        if rtype == 1:
            recs.append((key, kind, np.frombuffer(data[p:p + stored], dtype=dtypes[dtype]).reshape(dims)))
        off = p + stored + 8
    return recs


def layer_norm(x, w, b, eps):
    return F.layer_norm(x, (x.shape[-1],), w, b, eps)


def act(x, kind):
    return x * torch.sigmoid(1.702 * x) if kind == "quick_gelu" else F.gelu(x)


def encoder(x, W, prefix, cfg, causal):
    # x: (B, S, D)
    B, S, D = x.shape
    H = cfg["num_attention_heads"]
    Dh = D // H
    eps = cfg.get("layer_norm_eps", 1e-5)
    mask = torch.full((S, S), float("-inf")).triu(1) if causal else None
    for l in range(cfg["num_hidden_layers"]):
        p = "%s.encoder.layers.%d." % (prefix, l)
        h = layer_norm(x, W[p + "layer_norm1.weight"], W[p + "layer_norm1.bias"], eps)
        q = F.linear(h, W[p + "self_attn.q_proj.weight"], W[p + "self_attn.q_proj.bias"]) * Dh ** -0.5
        k = F.linear(h, W[p + "self_attn.k_proj.weight"], W[p + "self_attn.k_proj.bias"])
        v = F.linear(h, W[p + "self_attn.v_proj.weight"], W[p + "self_attn.v_proj.bias"])
        q, k, v = (t.view(B, S, H, Dh).transpose(1, 2) for t in (q, k, v))  # (B, H, S, Dh)
        scores = q @ k.transpose(-1, -2)
        if mask is not None:
            scores = scores + mask
        a = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(B, S, D)
        x = x + F.linear(a, W[p + "self_attn.out_proj.weight"], W[p + "self_attn.out_proj.bias"])
        h = layer_norm(x, W[p + "layer_norm2.weight"], W[p + "layer_norm2.bias"], eps)
        h = act(F.linear(h, W[p + "mlp.fc1.weight"], W[p + "mlp.fc1.bias"]), cfg.get("hidden_act", "quick_gelu"))
        x = x + F.linear(h, W[p + "mlp.fc2.weight"], W[p + "mlp.fc2.bias"])
    return x


def load_model(model):
    """(config.json, preprocessor_config.json or {}, the weights in double) of a model directory:
    the tuning references' start"""
    cfg = json.load(open(model + "/config.json"))
    try:
        pre = json.load(open(model + "/preprocessor_config.json"))
    except FileNotFoundError:
        pre = {}
    return cfg, pre, {k: v.double() for k, v in read_safetensors(model + "/model.safetensors").items()}


def vision_rows(W, cfg, pre, img):
    """one image's rows in double, [1, 1 + patches, width]: the class token and the patches
    with their position embeddings, before any prompt row and the pre-layernorm"""
    vc = cfg["vision_config"]
    mean = torch.tensor(pre.get("image_mean", [0.48145466, 0.4578275, 0.40821073])).view(3, 1, 1)
    std = torch.tensor(pre.get("image_std", [0.26862954, 0.26130258, 0.27577711])).view(3, 1, 1)
    x = torch.from_numpy(img.astype(np.float64)).permute(2, 0, 1) / 255.0
    x = ((x - mean) / std).unsqueeze(0)
    pe = F.conv2d(x, W["vision_model.embeddings.patch_embedding.weight"], stride=vc["patch_size"])
    pe = pe.flatten(2).transpose(1, 2)
    cls = W["vision_model.embeddings.class_embedding"].view(1, 1, -1)
    return torch.cat([cls, pe], dim=1) + W["vision_model.embeddings.position_embedding.weight"].unsqueeze(0)


def encode_image(W, cfg, pre, img):
    vc = cfg["vision_config"]
    mean = torch.tensor(pre.get("image_mean", [0.48145466, 0.4578275, 0.40821073])).view(3, 1, 1)
    std = torch.tensor(pre.get("image_std", [0.26862954, 0.26130258, 0.27577711])).view(3, 1, 1)
    x = torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1) / 255.0  # (3, H, W)
    x = ((x - mean) / std).unsqueeze(0)
    P = vc["patch_size"]
    pe = F.conv2d(x, W["vision_model.embeddings.patch_embedding.weight"], stride=P)  # (1, D, g, g)
    pe = pe.flatten(2).transpose(1, 2)  # (1, g*g, D)
    cls = W["vision_model.embeddings.class_embedding"].view(1, 1, -1)
    h = torch.cat([cls, pe], dim=1) + W["vision_model.embeddings.position_embedding.weight"].unsqueeze(0)
    eps = vc.get("layer_norm_eps", 1e-5)
    h = layer_norm(h, W["vision_model.pre_layrnorm.weight"], W["vision_model.pre_layrnorm.bias"], eps)
    h = encoder(h, W, "vision_model", vc, causal=False)
    pooled = layer_norm(h[:, 0], W["vision_model.post_layernorm.weight"], W["vision_model.post_layernorm.bias"], eps)
    return F.linear(pooled, W["visual_projection.weight"])[0]


def encode_text(W, cfg, ids):
    tc = cfg["text_config"]
    ids = torch.from_numpy(ids.astype(np.int64)).unsqueeze(0)
    T = ids.shape[1]
    h = W["text_model.embeddings.token_embedding.weight"][ids] + \
        W["text_model.embeddings.position_embedding.weight"][:T].unsqueeze(0)
    h = encoder(h, W, "text_model", tc, causal=True)
    h = layer_norm(h, W["text_model.final_layer_norm.weight"], W["text_model.final_layer_norm.bias"],
                   tc.get("layer_norm_eps", 1e-5))
    pooled = h[0, ids[0].argmax()]
    return F.linear(pooled, W["text_projection.weight"])


def main():
    model, inp, out_npy, out_keys = sys.argv[1:5]
    cfg = json.load(open(model + "/config.json"))
    try:
        pre = json.load(open(model + "/preprocessor_config.json"))
    except FileNotFoundError:
        pre = {}
    W = read_safetensors(model + "/model.safetensors")
    embs, keys = [], []
    for key, kind, arr in read_stream(inp):
        e = encode_image(W, cfg, pre, arr) if kind == 1 else encode_text(W, cfg, arr)
        embs.append((e / e.norm()).numpy().astype(np.float32))
        keys.append(key)
    np.save(out_npy, np.stack(embs))
    with open(out_keys, "w") as f:
        f.writelines(k + "\n" for k in keys)


if __name__ == "__main__":
    main()
