#!/usr/bin/python3
"""soft_reference.py - the reference for cmr's soft contrastive transfer and distillation
losses (lib/backend/grad.h; Zeng et al. 2025, Kim et al. 2021, CLIP-KD), in PyTorch autograd
(Debian python3-torch), double precision, written from their definitions independently of
cmr's code. Student embeddings img, txt [B, P] with log logit scale t; teacher embeddings
timg, ttxt [B, Pt] (Pt != P) and, for the MSE term, mimg, mtxt [B, P]. With u, v, a, b the
unit rows, S = exp(t) u v^T, T = a b^T:

  soft_labels(alpha, tau)  1/2 [CE_rows(S; (1-alpha) I + alpha softmax_rows(T/tau))
                                + CE_cols(S; (1-alpha) I + alpha softmax_cols(T/tau))]
  selective(tau)           InfoNCE with row i weighted min(1, exp((T_ii - max_j!=i T_ij)/tau)),
                           column i by min(1, exp((T_ii - max_j!=i T_ji)/tau))
  distill_kl(tau)          1/2 [mean_i KL(softmax(T_i./tau) || softmax(S_i.)) + columns]
  distill_mse              mean over the 2B rows of |unit(s) - unit(m)|^2
  supcon(labels)           1/2 [CE_rows(S; M / rowsum M) + CE_cols(S; M / colsum M)],
                           M_ij = [label_i == label_j]
  relaxed_margin(sigma, d) w = exp(-|a_i - b_j|^2 / sigma), D_ij = |u_i - v_j|,
                           h = D / rowmean(D) (columns: / colmean(D)),
                           1/2 (rows + cols) of 1/(B(B-1)) sum_{i!=j} w h^2 + (1-w) relu(d - h)^2

Usage: soft_reference.py OUT.safetensors SEED
Output (F32): img, txt, t [1], timg, ttxt, mimg, mtxt, labels [B], params [alpha, tau, sel_tau,
kl_tau, sigma, delta], and for each loss NAME: NAME.loss [1], NAME.dimg, NAME.dtxt, NAME.dt [1].
Run by tests/ref/make-soft-goldens.sh; make check does not run Python."""
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from train_reference import write_safetensors  # noqa: E402

torch.set_default_dtype(torch.float64)
B, P, PT = 6, 8, 12
ALPHA, TAU, SEL_TAU, KL_TAU, SIGMA, DELTA = 0.4, 0.1, 0.05, 0.07, 1.0, 1.0


def unit(x):
    return x / x.norm(dim=-1, keepdim=True)


def ce(S, Q):
    """mean over rows of -sum_j Q_ij log softmax_j(S_ij)"""
    return -(Q * F.log_softmax(S, dim=1)).sum(1).mean()


def soft_labels(img, txt, t, timg, ttxt):
    S, T = t.exp() * unit(img) @ unit(txt).t(), unit(timg) @ unit(ttxt).t()
    eye = torch.eye(B)
    qr = (1 - ALPHA) * eye + ALPHA * torch.softmax(T / TAU, dim=1)
    qc = (1 - ALPHA) * eye + ALPHA * torch.softmax(T.t() / TAU, dim=1)
    return (ce(S, qr) + ce(S.t(), qc)) / 2


def selective(img, txt, t, timg, ttxt):
    S, T = t.exp() * unit(img) @ unit(txt).t(), unit(timg) @ unit(ttxt).t()
    off = T - 1e9 * torch.eye(B)
    wr = torch.clamp(torch.exp((T.diag() - off.max(1).values) / SEL_TAU), max=1)
    wc = torch.clamp(torch.exp((T.diag() - off.max(0).values) / SEL_TAU), max=1)
    lr = -F.log_softmax(S, dim=1).diag()
    lc = -F.log_softmax(S.t(), dim=1).diag()
    return ((wr * lr).mean() + (wc * lc).mean()) / 2


def distill_kl(img, txt, t, timg, ttxt):
    S, T = t.exp() * unit(img) @ unit(txt).t(), unit(timg) @ unit(ttxt).t()
    kl = lambda s, q: (q * (q.log() - F.log_softmax(s, dim=1))).sum(1).mean()  # noqa: E731
    return (kl(S, torch.softmax(T / KL_TAU, dim=1)) + kl(S.t(), torch.softmax(T.t() / KL_TAU, dim=1))) / 2


def distill_mse(img, txt, t, mimg, mtxt):
    return ((unit(img) - unit(mimg)) ** 2).sum() / (2 * B) + ((unit(txt) - unit(mtxt)) ** 2).sum() / (2 * B)


LABELS = torch.tensor([0, 1, 0, 2, 1, 0])


def supcon(img, txt, t, timg, ttxt):
    S = t.exp() * unit(img) @ unit(txt).t()
    M = (LABELS[:, None] == LABELS[None, :]).double()
    return (ce(S, M / M.sum(1, keepdim=True)) + ce(S.t(), M.t() / M.t().sum(1, keepdim=True))) / 2


def relaxed_margin(img, txt, t, timg, ttxt):
    u, v, a, b = unit(img), unit(txt), unit(timg), unit(ttxt)
    w = torch.exp(-torch.cdist(a, b) ** 2 / SIGMA)
    D = torch.cdist(u, v)
    off = 1 - torch.eye(B)

    def part(h, w):
        return (off * (w * h ** 2 + (1 - w) * F.relu(DELTA - h) ** 2)).sum() / (B * (B - 1))
    return (part(D / D.mean(1, keepdim=True), w) + part(D.t() / D.t().mean(1, keepdim=True), w.t())) / 2


def main():
    out, seed = sys.argv[1], int(sys.argv[2])
    rng = np.random.default_rng(seed)
    draw = lambda *s: torch.from_numpy(rng.standard_normal(s).astype(np.float32).astype(np.float64))  # noqa: E731
    img, txt = draw(B, P), draw(B, P)
    # a teacher that agrees with the student in part, and one of the student's size for the MSE
    timg, ttxt = draw(B, PT), draw(B, PT)
    mimg, mtxt = img + 0.5 * draw(B, P), txt + 0.5 * draw(B, P)
    t = torch.tensor([2.3])
    res = {"img": img, "txt": txt, "t": t, "timg": timg, "ttxt": ttxt, "mimg": mimg, "mtxt": mtxt,
           "labels": LABELS.double(),
           "params": torch.tensor([ALPHA, TAU, SEL_TAU, KL_TAU, SIGMA, DELTA])}
    res = {k: v.numpy().astype(np.float32) for k, v in res.items()}
    for name, fn, ta, tb in (("soft_labels", soft_labels, timg, ttxt), ("selective", selective, timg, ttxt),
                             ("distill_kl", distill_kl, timg, ttxt), ("distill_mse", distill_mse, mimg, mtxt),
                             ("relaxed_margin", relaxed_margin, timg, ttxt), ("supcon", supcon, timg, ttxt)):
        i, x, s = img.clone().requires_grad_(True), txt.clone().requires_grad_(True), t.clone().requires_grad_(True)
        loss = fn(i, x, s, ta, tb)
        loss.backward()
        res[name + ".loss"] = np.array([loss.item()], dtype=np.float32)
        res[name + ".dimg"] = i.grad.numpy().astype(np.float32)
        res[name + ".dtxt"] = x.grad.numpy().astype(np.float32)
        res[name + ".dt"] = (s.grad if s.grad is not None else torch.zeros(1)).numpy().astype(np.float32)
        print("%s: %s %.6f" % (out, name, loss.item()))
    write_safetensors(out, res)


if __name__ == "__main__":
    main()
