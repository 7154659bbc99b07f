/* backend/grad.h - backward passes of the forward operations (backend.h), the contrastive losses and
 * the AdamW update: the plain, obviously correct CPU versions that cmr-train will build on
 * and that faster ones will be tested against. Gradients are accumulated (+=) into the d*
 * arrays, so that shared parameters sum their contributions. Row-major fp32; shapes noted. */
#ifndef CMR_GRAD_H
#define CMR_GRAD_H

#include <stddef.h>
#include <stdint.h>

/* y[M, N] = x[M, K] . W[N, K]^T + b:  dx += dy . W,  dW += dy^T . x,  db += sum_rows dy.
 * Any of dx, dW, db may be NULL (frozen or not needed). */
void cmr_linear_backward(const float *x, const float *W, const float *dy, float *dx, float *dW, float *db,
			 int M, int K, int N);

/* y = (x - mean) / sqrt(var + eps) * g + b per row of x [M, D] */
void cmr_layernorm_backward(const float *x, const float *g, const float *dy, float *dx, float *dg, float *db,
			    int M, int D, float eps);

/* y = act(x) elementwise (0 quick_gelu, 1 gelu): dx += dy * act'(x) */
void cmr_act_backward(const float *x, const float *dy, float *dx, size_t n, int kind);

/* The attention of backend.h (q already scaled): given dout, accumulates dq, dk, dv.
 * scratch holds at least 2 * maxlen floats. */
void cmr_attention_backward(const float *q, const float *k, const float *v, const float *dout, float *dq,
			    float *dk, float *dv, int nseg, const int *start, const int *len, int H, int Dh,
			    int causal, float *scratch);

/* Symmetric InfoNCE (CLIP's loss) on raw embeddings img [B, P] and txt [B, P], pair i being
 * the positive of row i: the embeddings are L2-normalised, logits = exp(t) * img_n . txt_n^T,
 * loss = (CE(logits rows) + CE(logits columns)) / 2, t being the log logit scale, clamped
 * to ln(100) as CLIP does (no gradient through the clamp). Returns the loss; accumulates
 * dimg, dtxt (through the normalisation) and *dt (may be NULL). */
double cmr_infonce(const float *img, const float *txt, int B, int P, float t, float *dimg, float *dtxt, float *dt);

/* VSE++ hinge loss with the hardest negatives (Faghri et al.) on L2-normalised embeddings:
 * sum over i of [m - s(i,i) + max_j!=i s(i,j)]+ + [m - s(i,i) + max_j!=i s(j,i)]+. */
double cmr_vse_hardest(const float *img, const float *txt, int B, int P, float margin, float *dimg, float *dtxt);

/* One AdamW step (decoupled weight decay) on n parameters, step t >= 1. */
void cmr_adamw(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1, float beta2,
	       float eps, float weight_decay, int64_t t);

#endif
