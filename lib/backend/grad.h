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

/* Soft contrastive transfer from a teacher (Zeng et al. 2025; cmr-train(1)): the teacher's
 * embeddings timg [B, Pt], ttxt [B, Pt] (row i of each: pair i; Pt may differ from P) give
 * its cosine similarities T [B, B]; the student's are the logits S = exp(t) img_n . txt_n^T.
 * Each returns the loss (NAN when out of memory) and accumulates the student's gradients.
 *   soft labels: InfoNCE's cross-entropies against (1 - alpha) I + alpha softmax(T / tau)
 *     (rows for image -> text, columns for text -> image); alpha = 0 is cmr_infonce exactly;
 *   selective: InfoNCE with each row (column) weighted by min(1, exp(m / tau)), m the
 *     teacher's margin T_ii - max_{j != i} T_ij (T_ii - max_{j != i} T_ji): the pairs the
 *     teacher finds ambiguous weigh less;
 *   distill KL: CLIP-KD's KL(softmax(T / tau) || softmax(S)) over rows and columns, averaged
 *     and halved (zero, with a zero gradient, for a teacher equal to the student at tau =
 *     1 / exp(t));
 *   distill MSE: the mean over both modalities' rows of |s_n - t_n|^2 (needs Pt = P);
 *   relaxed margin (Kim et al. 2021's relaxed contrastive loss, across modalities): w_ij =
 *     exp(-|a_i - b_j|^2 / sigma) on the teacher's unit rows, d_ij = |u_i - v_j| on the
 *     student's, h_ij = d_ij / mean_k d_ik (rows; columns: / mean_k d_kj), L = 1/2 (rows +
 *     columns) of 1 / (B (B - 1)) sum_{i != j} [w h^2 + (1 - w) [delta - h]+^2]. */
double cmr_soft_labels(const float *img, const float *txt, int B, int P, float t, const float *timg,
		       const float *ttxt, int Pt, float alpha, float tau, float *dimg, float *dtxt, float *dt);
double cmr_selective(const float *img, const float *txt, int B, int P, float t, const float *timg, const float *ttxt,
		     int Pt, float tau, float *dimg, float *dtxt, float *dt);
double cmr_distill_kl(const float *img, const float *txt, int B, int P, float t, const float *timg, const float *ttxt,
		      int Pt, float tau, float *dimg, float *dtxt, float *dt);
double cmr_distill_mse(const float *img, const float *txt, int B, int P, const float *timg, const float *ttxt,
		       float *dimg, float *dtxt);
double cmr_relaxed_margin(const float *img, const float *txt, int B, int P, const float *timg, const float *ttxt,
			  int Pt, float sigma, float delta, float *dimg, float *dtxt);

/* Class-wise learning across modalities (supervised contrastive, Khosla et al. 2020, over
 * image-text pairs): label [B] each pair's class; InfoNCE's cross-entropies against targets
 * spread equally over the texts (images) of the row's class. All labels distinct: cmr_infonce
 * exactly. */
double cmr_supcon(const float *img, const float *txt, int B, int P, float t, const int *label, float *dimg,
		  float *dtxt, float *dt);

/* VSE++ hinge loss with the hardest negatives (Faghri et al.) on L2-normalised embeddings:
 * sum over i of [m - s(i,i) + max_j!=i s(i,j)]+ + [m - s(i,i) + max_j!=i s(j,i)]+. */
double cmr_vse_hardest(const float *img, const float *txt, int B, int P, float margin, float *dimg, float *dtxt);

/* One AdamW step (decoupled weight decay) on n parameters, step t >= 1. */
void cmr_adamw(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1, float beta2,
	       float eps, float weight_decay, int64_t t);

#endif
