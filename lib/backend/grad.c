/* backend/grad.c - plain backward passes, contrastive losses and AdamW (see grad.h). Loops as the
 * math reads, double accumulators; tests/unit/test_grad.c checks each against finite
 * differences. */
#include "backend/grad.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void cmr_linear_backward(const float *x, const float *W, const float *dy, float *dx, float *dW, float *db,
			 int M, int K, int N)
{
	if (dx)
		for (int m = 0; m < M; m++)
			for (int k = 0; k < K; k++) {
				double s = 0;
				for (int n = 0; n < N; n++)
					s += (double)dy[(size_t)m * N + n] * W[(size_t)n * K + k];
				dx[(size_t)m * K + k] += (float)s;
			}
	if (dW)
		for (int n = 0; n < N; n++)
			for (int k = 0; k < K; k++) {
				double s = 0;
				for (int m = 0; m < M; m++)
					s += (double)dy[(size_t)m * N + n] * x[(size_t)m * K + k];
				dW[(size_t)n * K + k] += (float)s;
			}
	if (db)
		for (int n = 0; n < N; n++) {
			double s = 0;
			for (int m = 0; m < M; m++)
				s += dy[(size_t)m * N + n];
			db[n] += (float)s;
		}
}

void cmr_layernorm_backward(const float *x, const float *g, const float *dy, float *dx, float *dg, float *db,
			    int M, int D, float eps)
{
	for (int m = 0; m < M; m++) {
		const float *r = x + (size_t)m * D, *d = dy + (size_t)m * D;
		double mean = 0, var = 0;
		for (int i = 0; i < D; i++)
			mean += r[i];
		mean /= D;
		for (int i = 0; i < D; i++)
			var += (r[i] - mean) * (r[i] - mean);
		var /= D;
		double inv = 1.0 / sqrt(var + eps);
		/* xhat = (x - mean) * inv; dxhat = dy * g;
		 * dx = inv * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) */
		double s1 = 0, s2 = 0;
		for (int i = 0; i < D; i++) {
			double xh = (r[i] - mean) * inv, dxh = (double)d[i] * g[i];
			s1 += dxh;
			s2 += dxh * xh;
			if (dg)
				dg[i] += (float)(d[i] * xh);
			if (db)
				db[i] += d[i];
		}
		s1 /= D;
		s2 /= D;
		if (dx)
			for (int i = 0; i < D; i++) {
				double xh = (r[i] - mean) * inv, dxh = (double)d[i] * g[i];
				dx[(size_t)m * D + i] += (float)(inv * (dxh - s1 - xh * s2));
			}
	}
}

void cmr_act_backward(const float *x, const float *dy, float *dx, size_t n, int kind)
{
	for (size_t i = 0; i < n; i++) {
		double t = x[i], dv;
		if (kind == 2) { /* relu */
			dv = t > 0;
		} else if (kind == 0) { /* x * sigmoid(1.702 x) */
			double s = 1.0 / (1.0 + exp(-1.702 * t));
			dv = s + t * 1.702 * s * (1 - s);
		} else { /* 0.5 x (1 + erf(x / sqrt 2)) */
			dv = 0.5 * (1 + erf(t / sqrt(2.0))) + t * exp(-0.5 * t * t) / sqrt(2 * M_PI);
		}
		dx[i] += (float)(dy[i] * dv);
	}
}

void cmr_attention_backward(const float *q, const float *k, const float *v, const float *dout, float *dq,
			    float *dk, float *dv, int nseg, const int *start, const int *len, int H, int Dh,
			    int causal, float *scratch)
{
	int D = H * Dh;
	for (int s = 0; s < nseg; s++)
		for (int h = 0; h < H; h++)
			for (int i = 0; i < len[s]; i++) {
				size_t ri = (size_t)(start[s] + i) * D + (size_t)h * Dh;
				int n = causal ? i + 1 : len[s];
				float *p = scratch, *dp = scratch + len[s];
				/* recompute the softmax row p */
				double mx = -INFINITY, sum = 0;
				for (int j = 0; j < n; j++) {
					size_t rj = (size_t)(start[s] + j) * D + (size_t)h * Dh;
					double d = 0;
					for (int e = 0; e < Dh; e++)
						d += (double)q[ri + e] * k[rj + e];
					p[j] = (float)d;
					mx = d > mx ? d : mx;
				}
				for (int j = 0; j < n; j++) {
					p[j] = (float)exp(p[j] - mx);
					sum += p[j];
				}
				for (int j = 0; j < n; j++)
					p[j] = (float)(p[j] / sum);
				/* out_i = sum_j p_j v_j: dv_j += p_j dout_i, dp_j = dout_i . v_j */
				double pdp = 0;
				for (int j = 0; j < n; j++) {
					size_t rj = (size_t)(start[s] + j) * D + (size_t)h * Dh;
					double d = 0;
					for (int e = 0; e < Dh; e++) {
						d += (double)dout[ri + e] * v[rj + e];
						dv[rj + e] += p[j] * dout[ri + e];
					}
					dp[j] = (float)d;
					pdp += p[j] * d;
				}
				/* softmax: ds_j = p_j (dp_j - sum_l p_l dp_l); s_j = q_i . k_j */
				for (int j = 0; j < n; j++) {
					size_t rj = (size_t)(start[s] + j) * D + (size_t)h * Dh;
					double ds = p[j] * (dp[j] - pdp);
					for (int e = 0; e < Dh; e++) {
						dq[ri + e] += (float)(ds * k[rj + e]);
						dk[rj + e] += (float)(ds * q[ri + e]);
					}
				}
			}
}

/* rows of a [B, P] to unit length into out, keeping the norms */
static void unit_rows(const float *a, int B, int P, double *out, double *norm)
{
	for (int b = 0; b < B; b++) {
		double s = 0;
		for (int p = 0; p < P; p++)
			s += (double)a[(size_t)b * P + p] * a[(size_t)b * P + p];
		norm[b] = sqrt(s);
		for (int p = 0; p < P; p++)
			out[(size_t)b * P + p] = a[(size_t)b * P + p] / norm[b];
	}
}

/* d(raw) from d(unit) through u = a / |a|: da = (du - u (u . du)) / |a| */
static void unit_backward(const double *u, const double *du, const double *norm, int B, int P, float *da)
{
	for (int b = 0; b < B; b++) {
		double dot = 0;
		for (int p = 0; p < P; p++)
			dot += u[(size_t)b * P + p] * du[(size_t)b * P + p];
		for (int p = 0; p < P; p++)
			da[(size_t)b * P + p] += (float)((du[(size_t)b * P + p] - u[(size_t)b * P + p] * dot) / norm[b]);
	}
}

/* the teacher's cosine similarities T [B, B] of its normalised image and text rows [B, Pt] */
static int teacher_sim(const float *timg, const float *ttxt, int B, int Pt, double *T)
{
	size_t bp = (size_t)B * Pt;
	double *a = malloc(bp * sizeof *a), *b = malloc(bp * sizeof *b), *na = malloc((size_t)B * sizeof *na),
	       *nb = malloc((size_t)B * sizeof *nb);
	int ok = a && b && na && nb;
	if (ok) {
		unit_rows(timg, B, Pt, a, na);
		unit_rows(ttxt, B, Pt, b, nb);
		for (int i = 0; i < B; i++)
			for (int j = 0; j < B; j++) {
				double d = 0;
				for (int p = 0; p < Pt; p++)
					d += a[(size_t)i * Pt + p] * b[(size_t)j * Pt + p];
				T[(size_t)i * B + j] = d;
			}
	}
	free(a), free(b), free(na), free(nb);
	return ok ? 0 : -1;
}

/* The cross-entropy core of InfoNCE and its soft forms: in direction 0 (image i -> texts) row
 * i of the logits S = exp(t) img_n . txt_n^T against the targets Q[0] row i (NULL: the
 * identity), weighted by w[0][i] (NULL: 1); in direction 1 (text i -> images) column i
 * against Q[1]'s column i (B x B, indexed [image, text]) with w[1][i]; each direction
 * averaged over B and halved. With no targets and no weights it is CLIP's loss exactly. */
static double contrastive(const float *img, const float *txt, int B, int P, float t, const double *const Q[2],
			  const double *const w[2], float *dimg, float *dtxt, float *dt)
{
	size_t bp = (size_t)B * P;
	double *ui = malloc(bp * sizeof *ui), *ut = malloc(bp * sizeof *ut), *ni = malloc((size_t)B * sizeof *ni);
	double *nt = malloc((size_t)B * sizeof *nt), *S = malloc((size_t)B * B * sizeof *S), *G = calloc((size_t)B * B, sizeof *G);
	double *dui = calloc(bp, sizeof *dui), *dut = calloc(bp, sizeof *dut);
	double loss = NAN;
	if (!ui || !ut || !ni || !nt || !S || !G || !dui || !dut)
		goto out;
	unit_rows(img, B, P, ui, ni);
	unit_rows(txt, B, P, ut, nt);
	int clamped = t > (float)log(100.0);
	double scale = exp(clamped ? log(100.0) : t);
	for (int i = 0; i < B; i++)
		for (int j = 0; j < B; j++) {
			double d = 0;
			for (int p = 0; p < P; p++)
				d += ui[(size_t)i * P + p] * ut[(size_t)j * P + p];
			S[(size_t)i * B + j] = scale * d;
		}
	/* G = dloss/dS: rows (image -> text) and columns (text -> image), each averaged and halved */
	loss = 0;
	for (int dir = 0; dir < 2; dir++)
		for (int i = 0; i < B; i++) {
			double mx = -INFINITY, sum = 0, wi = w[dir] ? w[dir][i] : 1.0;
			for (int j = 0; j < B; j++) {
				double s = dir ? S[(size_t)j * B + i] : S[(size_t)i * B + j];
				mx = s > mx ? s : mx;
			}
			for (int j = 0; j < B; j++)
				sum += exp((dir ? S[(size_t)j * B + i] : S[(size_t)i * B + j]) - mx);
			if (!Q[dir]) {
				loss += wi * (mx + log(sum) - S[(size_t)i * B + i]) / (2.0 * B);
			} else { /* - sum_j q_j log p_j = sum_j q_j (lse - s_j) */
				double l = 0;
				for (int j = 0; j < B; j++) {
					size_t at = dir ? (size_t)j * B + i : (size_t)i * B + j;
					l += Q[dir][at] * (mx + log(sum) - S[at]);
				}
				loss += wi * l / (2.0 * B);
			}
			for (int j = 0; j < B; j++) {
				size_t at = dir ? (size_t)j * B + i : (size_t)i * B + j;
				double pj = exp(S[at] - mx) / sum, q = Q[dir] ? Q[dir][at] : (double)(i == j);
				double g = wi * (pj - q) / (2.0 * B);
				G[at] += g;
			}
		}
	/* S = scale * ui . ut^T */
	double dscale = 0;
	for (int i = 0; i < B; i++)
		for (int j = 0; j < B; j++) {
			double g = G[(size_t)i * B + j];
			dscale += g * S[(size_t)i * B + j] / scale;
			for (int p = 0; p < P; p++) {
				dui[(size_t)i * P + p] += g * scale * ut[(size_t)j * P + p];
				dut[(size_t)j * P + p] += g * scale * ui[(size_t)i * P + p];
			}
		}
	if (dimg)
		unit_backward(ui, dui, ni, B, P, dimg);
	if (dtxt)
		unit_backward(ut, dut, nt, B, P, dtxt);
	if (dt && !clamped)
		*dt += (float)(dscale * scale); /* d scale / d t = scale */
out:
	free(ui), free(ut), free(ni), free(nt), free(S), free(G), free(dui), free(dut);
	return loss;
}

double cmr_infonce(const float *img, const float *txt, int B, int P, float t, float *dimg, float *dtxt, float *dt)
{
	const double *const none[2] = {NULL, NULL};
	return contrastive(img, txt, B, P, t, none, none, dimg, dtxt, dt);
}

/* softmax over each row (dir 0) or column (dir 1) of T / tau, into R [B, B] */
static void soft_targets(const double *T, int B, double tau, int dir, double *R)
{
	for (int i = 0; i < B; i++) {
		double mx = -INFINITY, z = 0;
		for (int j = 0; j < B; j++)
			mx = fmax(mx, T[dir ? (size_t)j * B + i : (size_t)i * B + j] / tau);
		for (int j = 0; j < B; j++) {
			size_t at = dir ? (size_t)j * B + i : (size_t)i * B + j;
			z += R[at] = exp(T[at] / tau - mx);
		}
		for (int j = 0; j < B; j++)
			R[dir ? (size_t)j * B + i : (size_t)i * B + j] /= z;
	}
}

/* InfoNCE's cross-entropies against (1 - alpha) I + alpha softmax(T / tau) of the teacher's
 * similarities; *h (may be NULL) receives the targets' negative entropy term sum q log q / 2B */
static double teacher_ce(const float *img, const float *txt, int B, int P, float t, const float *timg,
			 const float *ttxt, int Pt, float alpha, float tau, float *dimg, float *dtxt, float *dt, double *h)
{
	double *T = malloc((size_t)B * B * sizeof *T), *Q0 = malloc((size_t)B * B * sizeof *Q0),
	       *Q1 = malloc((size_t)B * B * sizeof *Q1);
	double loss = NAN;
	if (T && Q0 && Q1 && teacher_sim(timg, ttxt, B, Pt, T) == 0) {
		soft_targets(T, B, tau, 0, Q0);
		soft_targets(T, B, tau, 1, Q1);
		for (int i = 0; i < B; i++) /* (1 - alpha) I + alpha softmax: exactly I at alpha 0 */
			for (int j = 0; j < B; j++) {
				size_t at = (size_t)i * B + j;
				Q0[at] = (1.0 - alpha) * (i == j) + alpha * Q0[at];
				Q1[at] = (1.0 - alpha) * (i == j) + alpha * Q1[at];
			}
		const double *const Q[2] = {Q0, Q1}, *const none[2] = {NULL, NULL};
		loss = contrastive(img, txt, B, P, t, Q, none, dimg, dtxt, dt);
		if (h) {
			*h = 0;
			for (size_t i = 0; i < (size_t)B * B; i++)
				*h += ((Q0[i] > 0 ? Q0[i] * log(Q0[i]) : 0) + (Q1[i] > 0 ? Q1[i] * log(Q1[i]) : 0)) / (2.0 * B);
		}
	}
	free(T), free(Q0), free(Q1);
	return loss;
}

double cmr_soft_labels(const float *img, const float *txt, int B, int P, float t, const float *timg,
		       const float *ttxt, int Pt, float alpha, float tau, float *dimg, float *dtxt, float *dt)
{
	return teacher_ce(img, txt, B, P, t, timg, ttxt, Pt, alpha, tau, dimg, dtxt, dt, NULL);
}

double cmr_selective(const float *img, const float *txt, int B, int P, float t, const float *timg, const float *ttxt,
		     int Pt, float tau, float *dimg, float *dtxt, float *dt)
{
	double *T = malloc((size_t)B * B * sizeof *T), *w = malloc(2 * (size_t)B * sizeof *w);
	double loss = NAN;
	if (T && w && teacher_sim(timg, ttxt, B, Pt, T) == 0) {
		for (int dir = 0; dir < 2; dir++)
			for (int i = 0; i < B; i++) { /* the teacher's margin of the positive over the best negative */
				double neg = -INFINITY;
				for (int j = 0; j < B; j++)
					if (j != i)
						neg = fmax(neg, dir ? T[(size_t)j * B + i] : T[(size_t)i * B + j]);
				double m = T[(size_t)i * B + i] - neg;
				w[(size_t)dir * B + i] = B < 2 || m >= 0 ? 1.0 : exp(m / tau);
			}
		const double *const none[2] = {NULL, NULL}, *const wt[2] = {w, w + B};
		loss = contrastive(img, txt, B, P, t, none, wt, dimg, dtxt, dt);
	}
	free(T), free(w);
	return loss;
}

double cmr_distill_kl(const float *img, const float *txt, int B, int P, float t, const float *timg, const float *ttxt,
		      int Pt, float tau, float *dimg, float *dtxt, float *dt)
{
	/* KL(q || p) = CE(q, p) - H(q), q the teacher's softmax (alpha 1): its entropy a constant */
	double h = 0, ce = teacher_ce(img, txt, B, P, t, timg, ttxt, Pt, 1.0f, tau, dimg, dtxt, dt, &h);
	return ce + h;
}

double cmr_supcon(const float *img, const float *txt, int B, int P, float t, const int *label, float *dimg,
		  float *dtxt, float *dt)
{
	double *Q0 = malloc((size_t)B * B * sizeof *Q0), *Q1 = malloc((size_t)B * B * sizeof *Q1);
	double loss = NAN;
	if (Q0 && Q1) {
		for (int i = 0; i < B; i++) { /* row i: the texts of image i's class, equally */
			int n = 0;
			for (int j = 0; j < B; j++)
				n += label[j] == label[i];
			for (int j = 0; j < B; j++) {
				double q = label[j] == label[i] ? 1.0 / n : 0.0;
				Q0[(size_t)i * B + j] = q;
				Q1[(size_t)j * B + i] = q; /* column i: the images of text i's class */
			}
		}
		const double *const Q[2] = {Q0, Q1}, *const none[2] = {NULL, NULL};
		loss = contrastive(img, txt, B, P, t, Q, none, dimg, dtxt, dt);
	}
	free(Q0), free(Q1);
	return loss;
}

double cmr_distill_mse(const float *img, const float *txt, int B, int P, const float *timg, const float *ttxt,
		       float *dimg, float *dtxt)
{
	size_t bp = (size_t)B * P;
	double *u = malloc(2 * bp * sizeof *u), *a = malloc(2 * bp * sizeof *a), *nu = malloc(2 * (size_t)B * sizeof *nu),
	       *na = malloc(2 * (size_t)B * sizeof *na), *du = calloc(2 * bp, sizeof *du);
	double loss = NAN;
	if (u && a && nu && na && du) {
		unit_rows(img, B, P, u, nu);
		unit_rows(txt, B, P, u + bp, nu + B);
		unit_rows(timg, B, P, a, na);
		unit_rows(ttxt, B, P, a + bp, na + B);
		loss = 0; /* the mean over both modalities' B rows of |u - a|^2 */
		for (size_t i = 0; i < 2 * bp; i++) {
			double d = u[i] - a[i];
			loss += d * d / (2.0 * B);
			du[i] = 2 * d / (2.0 * B);
		}
		if (dimg)
			unit_backward(u, du, nu, B, P, dimg);
		if (dtxt)
			unit_backward(u + bp, du + bp, nu + B, B, P, dtxt);
	}
	free(u), free(a), free(nu), free(na), free(du);
	return loss;
}

double cmr_relaxed_margin(const float *img, const float *txt, int B, int P, const float *timg, const float *ttxt,
			  int Pt, float sigma, float delta, float *dimg, float *dtxt)
{
	size_t bp = (size_t)B * P, BB = (size_t)B * B;
	double *ui = malloc(bp * sizeof *ui), *ut = malloc(bp * sizeof *ut), *ni = malloc((size_t)B * sizeof *ni),
	       *nt = malloc((size_t)B * sizeof *nt), *T = malloc(BB * sizeof *T), *d = malloc(BB * sizeof *d),
	       *gd = calloc(BB, sizeof *gd), *dui = calloc(bp, sizeof *dui), *dut = calloc(bp, sizeof *dut);
	double loss = NAN;
	if (B < 2 || !ui || !ut || !ni || !nt || !T || !d || !gd || !dui || !dut || teacher_sim(timg, ttxt, B, Pt, T) < 0)
		goto out;
	unit_rows(img, B, P, ui, ni);
	unit_rows(txt, B, P, ut, nt);
	/* d[i, j] = |u_i - v_j| (student, across modalities); the teacher's weight
	 * w = exp(-|a_i - b_j|^2 / sigma) = exp(-(2 - 2 T) / sigma) on unit rows */
	for (int i = 0; i < B; i++)
		for (int j = 0; j < B; j++) {
			double s = 0;
			for (int p = 0; p < P; p++) {
				double e = ui[(size_t)i * P + p] - ut[(size_t)j * P + p];
				s += e * e;
			}
			d[(size_t)i * B + j] = sqrt(fmax(s, 1e-12));
		}
	loss = 0;
	double N = (double)B * (B - 1);
	for (int dir = 0; dir < 2; dir++) /* rows: an image's distances to the texts; columns: a text's */
		for (int i = 0; i < B; i++) {
			double mu = 0, sf = 0;
			for (int k = 0; k < B; k++)
				mu += d[dir ? (size_t)k * B + i : (size_t)i * B + k];
			mu /= B;
			for (int j = 0; j < B; j++) {
				if (j == i)
					continue;
				size_t at = dir ? (size_t)j * B + i : (size_t)i * B + j;
				double w = exp(-(2.0 - 2.0 * T[at]) / sigma), h = d[at] / mu, r = delta - h > 0 ? delta - h : 0;
				loss += (w * h * h + (1 - w) * r * r) / (2.0 * N);
				double f1 = (2 * w * h - 2 * (1 - w) * r) / (2.0 * N); /* d/dh */
				gd[at] += f1 / mu;    /* through h = d / mu, d itself */
				sf += f1 * d[at] / (mu * mu); /* and through mu */
			}
			for (int k = 0; k < B; k++)
				gd[dir ? (size_t)k * B + i : (size_t)i * B + k] -= sf / B;
		}
	for (int i = 0; i < B; i++) /* d = |u_i - v_j|: dd/du_i = (u_i - v_j) / d */
		for (int j = 0; j < B; j++) {
			double g = gd[(size_t)i * B + j] / d[(size_t)i * B + j];
			for (int p = 0; p < P; p++) {
				double e = ui[(size_t)i * P + p] - ut[(size_t)j * P + p];
				dui[(size_t)i * P + p] += g * e;
				dut[(size_t)j * P + p] -= g * e;
			}
		}
	if (dimg)
		unit_backward(ui, dui, ni, B, P, dimg);
	if (dtxt)
		unit_backward(ut, dut, nt, B, P, dtxt);
out:
	free(ui), free(ut), free(ni), free(nt), free(T), free(d), free(gd), free(dui), free(dut);
	return loss;
}

double cmr_vse_hardest(const float *img, const float *txt, int B, int P, float margin, float *dimg, float *dtxt)
{
	size_t bp = (size_t)B * P;
	double *ui = malloc(bp * sizeof *ui), *ut = malloc(bp * sizeof *ut), *ni = malloc((size_t)B * sizeof *ni);
	double *nt = malloc((size_t)B * sizeof *nt), *S = malloc((size_t)B * B * sizeof *S);
	double *dui = calloc(bp, sizeof *dui), *dut = calloc(bp, sizeof *dut);
	double loss = NAN;
	if (!ui || !ut || !ni || !nt || !S || !dui || !dut)
		goto out;
	unit_rows(img, B, P, ui, ni);
	unit_rows(txt, B, P, ut, nt);
	for (int i = 0; i < B; i++)
		for (int j = 0; j < B; j++) {
			double d = 0;
			for (int p = 0; p < P; p++)
				d += ui[(size_t)i * P + p] * ut[(size_t)j * P + p];
			S[(size_t)i * B + j] = d;
		}
	loss = 0;
	for (int i = 0; i < B; i++) {
		/* hardest negative text for image i, hardest negative image for text i */
		int jt = -1, ji = -1;
		for (int j = 0; j < B; j++) {
			if (j == i)
				continue;
			if (jt < 0 || S[(size_t)i * B + j] > S[(size_t)i * B + jt])
				jt = j;
			if (ji < 0 || S[(size_t)j * B + i] > S[(size_t)ji * B + i])
				ji = j;
		}
		if (jt < 0)
			continue;
		double pos = S[(size_t)i * B + i];
		double a = margin - pos + S[(size_t)i * B + jt], b = margin - pos + S[(size_t)ji * B + i];
		/* d S entries: (i, i) -1 per active term; (i, jt) +1; (ji, i) +1 */
		int terms[2][2] = {{i, jt}, {ji, i}};
		double vals[2] = {a, b};
		for (int h = 0; h < 2; h++) {
			if (vals[h] <= 0)
				continue;
			loss += vals[h];
			int r = terms[h][0], c = terms[h][1];
			for (int p = 0; p < P; p++) {
				/* +S[r, c] */
				dui[(size_t)r * P + p] += ut[(size_t)c * P + p];
				dut[(size_t)c * P + p] += ui[(size_t)r * P + p];
				/* -S[i, i] */
				dui[(size_t)i * P + p] -= ut[(size_t)i * P + p];
				dut[(size_t)i * P + p] -= ui[(size_t)i * P + p];
			}
		}
	}
	if (dimg)
		unit_backward(ui, dui, ni, B, P, dimg);
	if (dtxt)
		unit_backward(ut, dut, nt, B, P, dtxt);
out:
	free(ui), free(ut), free(ni), free(nt), free(S), free(dui), free(dut);
	return loss;
}

void cmr_adamw(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1, float beta2,
	       float eps, float weight_decay, int64_t t)
{
	double c1 = 1.0 - pow(beta1, (double)t), c2 = 1.0 - pow(beta2, (double)t);
	long long N = (long long)n;
	/* elementwise: the same result on any number of threads */
#pragma omp parallel for schedule(static) if (N >= 65536)
	for (long long i = 0; i < N; i++) {
		m[i] = beta1 * m[i] + (1 - beta1) * g[i];
		v[i] = beta2 * v[i] + (1 - beta2) * g[i] * g[i];
		double mh = m[i] / c1, vh = v[i] / c2;
		/* decoupled weight decay, as torch.optim.AdamW: p -= lr * (wd * p + mh / (sqrt(vh) + eps)) */
		p[i] -= (float)(lr * (weight_decay * p[i] + mh / (sqrt(vh) + eps)));
	}
}
