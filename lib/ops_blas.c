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

const cmr_ops cmr_ops_blas = {"blas", blas_linear, blas_layernorm, blas_attention, blas_act};


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
