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

double cmr_infonce(const float *img, const float *txt, int B, int P, float t, float *dimg, float *dtxt, float *dt)
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
			double mx = -INFINITY, sum = 0;
			for (int j = 0; j < B; j++) {
				double s = dir ? S[(size_t)j * B + i] : S[(size_t)i * B + j];
				mx = s > mx ? s : mx;
			}
			for (int j = 0; j < B; j++)
				sum += exp((dir ? S[(size_t)j * B + i] : S[(size_t)i * B + j]) - mx);
			loss += (mx + log(sum) - S[(size_t)i * B + i]) / (2.0 * B);
			for (int j = 0; j < B; j++) {
				double pj = exp((dir ? S[(size_t)j * B + i] : S[(size_t)i * B + j]) - mx) / sum;
				double g = (pj - (i == j)) / (2.0 * B);
				G[dir ? (size_t)j * B + i : (size_t)i * B + j] += g;
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
