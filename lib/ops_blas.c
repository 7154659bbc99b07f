/* ops_blas.c - the fast CPU backend: OpenBLAS sgemm for the linear layers and for attention
 * (per segment and head, on strided views, no copies), fused row loops for the rest. */
#include <math.h>
#include <string.h>

#include <cblas.h>

#include "backend.h"

/* y[M, N] = x[M, K] . W[N, K]^T + b: bias first, then sgemm accumulates onto it */
static void blas_linear(const float *x, const float *W, const float *b, float *y, int M, int K, int N)
{
	if (b)
		for (int m = 0; m < M; m++)
			memcpy(y + (size_t)m * N, b, (size_t)N * sizeof *y);
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x, K, W, K, b ? 1.0f : 0.0f, y, N);
}

/* one pass for mean and variance (Welford would be slower; two sums in double are exact
 * enough for D <= 4096), then the scaled row */
static void blas_layernorm(const float *x, const float *g, const float *b, float *y, int M, int D, float eps)
{
	for (int m = 0; m < M; m++) {
		const float *r = x + (size_t)m * D;
		float *o = y + (size_t)m * D;
		double s = 0, s2 = 0;
		for (int d = 0; d < D; d++) {
			s += r[d];
			s2 += (double)r[d] * r[d];
		}
		double mean = s / D, var = s2 / D - mean * mean;
		float inv = (float)(1.0 / sqrt((var > 0 ? var : 0) + eps)), mu = (float)mean;
		for (int d = 0; d < D; d++)
			o[d] = (r[d] - mu) * inv * g[d] + b[d];
	}
}

static void blas_attention(const float *q, const float *k, const float *v, float *out, int nseg,
			   const int *start, const int *len, int H, int Dh, int causal, float *scratch)
{
	int D = H * Dh;
	for (int s = 0; s < nseg; s++) {
		int L = len[s];
		for (int h = 0; h < H; h++) {
			const float *qs = q + (size_t)start[s] * D + h * Dh;
			const float *ks = k + (size_t)start[s] * D + h * Dh;
			const float *vs = v + (size_t)start[s] * D + h * Dh;
			/* scores[L, L] = q_h . k_h^T */
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, L, Dh, 1.0f, qs, D, ks, D, 0.0f, scratch, L);
			for (int i = 0; i < L; i++) { /* fused mask + softmax */
				float *r = scratch + (size_t)i * L;
				int n = causal ? i + 1 : L;
				float mx = r[0];
				for (int j = 1; j < n; j++)
					mx = r[j] > mx ? r[j] : mx;
				float sum = 0;
				for (int j = 0; j < n; j++) {
					r[j] = expf(r[j] - mx);
					sum += r[j];
				}
				float inv = 1.0f / sum;
				for (int j = 0; j < n; j++)
					r[j] *= inv;
				for (int j = n; j < L; j++)
					r[j] = 0;
			}
			/* out_h[L, Dh] = P . v_h */
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L, Dh, L, 1.0f, scratch, L, vs, D, 0.0f,
				    out + (size_t)start[s] * D + h * Dh, D);
		}
	}
}

static void blas_act(float *x, size_t n, int kind)
{
	if (kind == 0)
		for (size_t i = 0; i < n; i++)
			x[i] = x[i] / (1.0f + expf(-1.702f * x[i]));
	else
		for (size_t i = 0; i < n; i++)
			x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
}

/* ---- backward ---- */

/* dx += dy . W [M, K]; dW += dy^T . x [N, K]; db += column sums of dy */
static void blas_linear_bw(const float *x, const float *W, const float *dy, float *dx, float *dW, float *db,
			   int M, int K, int N)
{
	if (dx)
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, K, N, 1.0f, dy, N, W, K, 1.0f, dx, K);
	if (dW)
		cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, K, M, 1.0f, dy, N, x, K, 1.0f, dW, K);
	if (db)
		for (int m = 0; m < M; m++) {
			const float *r = dy + (size_t)m * N;
			for (int n = 0; n < N; n++)
				db[n] += r[n];
		}
}

static void blas_layernorm_bw(const float *x, const float *g, const float *dy, float *dx, float *dg, float *db,
			      int M, int D, float eps)
{
	for (int m = 0; m < M; m++) {
		const float *r = x + (size_t)m * D, *d = dy + (size_t)m * D;
		double s = 0, s2 = 0;
		for (int i = 0; i < D; i++) {
			s += r[i];
			s2 += (double)r[i] * r[i];
		}
		double mean = s / D, var = s2 / D - mean * mean;
		float inv = (float)(1.0 / sqrt((var > 0 ? var : 0) + eps)), mu = (float)mean;
		float s1 = 0, sx = 0;
		for (int i = 0; i < D; i++) {
			float xh = (r[i] - mu) * inv, dxh = d[i] * g[i];
			s1 += dxh;
			sx += dxh * xh;
			if (dg)
				dg[i] += d[i] * xh;
			if (db)
				db[i] += d[i];
		}
		s1 /= (float)D;
		sx /= (float)D;
		if (dx) {
			float *o = dx + (size_t)m * D;
			for (int i = 0; i < D; i++)
				o[i] += inv * (d[i] * g[i] - s1 - (r[i] - mu) * inv * sx);
		}
	}
}

/* per segment and head: P = softmax(q k^T) recomputed, dv += P^T dout, dP = dout v^T,
 * dS = P * (dP - rowsum(P * dP)), dq += dS k, dk += dS^T q */
static void blas_attention_bw(const float *q, const float *k, const float *v, const float *dout, float *dq,
			      float *dk, float *dv, int nseg, const int *start, const int *len, int H, int Dh,
			      int causal, float *scratch)
{
	int D = H * Dh;
	for (int s = 0; s < nseg; s++) {
		int L = len[s];
		float *P = scratch, *dP = scratch + (size_t)L * L;
		for (int h = 0; h < H; h++) {
			size_t o = (size_t)start[s] * D + (size_t)h * Dh;
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, L, Dh, 1.0f, q + o, D, k + o, D, 0.0f, P, L);
			for (int i = 0; i < L; i++) {
				float *r = P + (size_t)i * L;
				int n = causal ? i + 1 : L;
				float mx = r[0], sum = 0;
				for (int j = 1; j < n; j++)
					mx = r[j] > mx ? r[j] : mx;
				for (int j = 0; j < n; j++) {
					r[j] = expf(r[j] - mx);
					sum += r[j];
				}
				float inv = 1.0f / sum;
				for (int j = 0; j < n; j++)
					r[j] *= inv;
				for (int j = n; j < L; j++)
					r[j] = 0;
			}
			cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, L, Dh, L, 1.0f, P, L, dout + o, D, 1.0f, dv + o, D);
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, L, Dh, 1.0f, dout + o, D, v + o, D, 0.0f, dP, L);
			for (int i = 0; i < L; i++) {
				float *p = P + (size_t)i * L, *d = dP + (size_t)i * L, pd = 0;
				for (int j = 0; j < L; j++)
					pd += p[j] * d[j];
				for (int j = 0; j < L; j++)
					d[j] = p[j] * (d[j] - pd);
			}
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L, Dh, L, 1.0f, dP, L, k + o, D, 1.0f, dq + o, D);
			cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, L, Dh, L, 1.0f, dP, L, q + o, D, 1.0f, dk + o, D);
		}
	}
}

static void blas_act_bw(const float *x, const float *dy, float *dx, size_t n, int kind)
{
	if (kind == 0)
		for (size_t i = 0; i < n; i++) {
			float s = 1.0f / (1.0f + expf(-1.702f * x[i]));
			dx[i] += dy[i] * (s + x[i] * 1.702f * s * (1.0f - s));
		}
	else
		for (size_t i = 0; i < n; i++) {
			float t = x[i];
			dx[i] += dy[i] * (0.5f * (1.0f + erff(t * 0.70710678118654752f)) +
					  t * expf(-0.5f * t * t) * 0.39894228040143268f);
		}
}

const cmr_ops cmr_ops_blas = {"blas",
			      blas_linear,
			      blas_layernorm,
			      blas_attention,
			      blas_act,
			      blas_linear_bw,
			      blas_layernorm_bw,
			      blas_attention_bw,
			      blas_act_bw};


void cmr_ops_set_threads(int n)
{
	openblas_set_num_threads(n);
}

const cmr_ops *cmr_ops_find(const char *name)
{
	if (strcmp(name, "ref") == 0)
		return &cmr_ops_ref;
	if (strcmp(name, "blas") == 0)
		return &cmr_ops_blas;
	return NULL;
}
