/* backend/blas.c - the fast CPU backend: OpenBLAS sgemm for the linear layers and for attention
 * (per segment and head, on strided views, no copies), fused row loops for the rest. */
#include <math.h>
#include <string.h>

#include <cblas.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef __SSE2__
#include <immintrin.h>
#endif

#include "backend/backend.h"
#include "backend/grad.h"

/* Threads: one pool, OpenMP's. The sgemms are split into row blocks, one per thread, each
 * a single-threaded OpenBLAS call; the row loops and the (segment, head) pairs of attention
 * are shared out the same way. (OpenBLAS's own pool and OpenMP's would spin against each
 * other between the many small calls of a training step.) Every output element is computed
 * by one thread, and for a given thread count the results are the same bits on every run.
 * Between thread counts they differ in the last bits (about 1e-7 relative): a product's
 * rounding depends on the shape of the call that computes it, and the row blocks follow the
 * threads. Blocks of a fixed 128 rows would make results independent of the thread count,
 * but cost a quarter of a ViT-B/32 prompt-tuning step here (OpenBLAS packs the weights again
 * for every call): so cmr-train records the count and resumes only with it. Without OpenMP,
 * OpenBLAS's pool does the threading. */
static int n_threads = 0; /* 0: the number of cores */

static int threads(void)
{
#ifdef _OPENMP
	static int once;
	if (!once) {
		openblas_set_num_threads(1);
		once = 1;
	}
	return n_threads ? n_threads : omp_get_max_threads();
#else
	return 1;
#endif
}

/* threads for a loop of n rows of work w each: at least 16k multiply-adds per thread */
static int split(long long n, long long w)
{
	int t = threads();
	long long most = n * w / 16384;
	if (most < t)
		t = most > 1 ? (int)most : 1;
	if (t > n)
		t = n > 1 ? (int)n : 1;
	return t;
}

/* y[M, N] = x[M, K] . W[N, K]^T + b: bias first, then sgemm accumulates onto it */
static void blas_linear(const float *x, const float *W, const float *b, float *y, int M, int K, int N)
{
	int nt = split(M, (long long)K * N);
#pragma omp parallel for num_threads(nt) schedule(static)
	for (int t = 0; t < nt; t++) {
		int m0 = (int)((long long)M * t / nt), m1 = (int)((long long)M * (t + 1) / nt);
		if (b)
			for (int m = m0; m < m1; m++)
				memcpy(y + (size_t)m * N, b, (size_t)N * sizeof *y);
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m1 - m0, N, K, 1.0f, x + (size_t)m0 * K, K, W, K,
			    b ? 1.0f : 0.0f, y + (size_t)m0 * N, N);
	}
}

/* a row's mean and 1 / sqrt(variance + eps), in one pass (Welford would be slower; two sums
 * in double are exact enough for D <= 4096) */
static void row_stats(const float *r, int D, float eps, float *mu, float *inv)
{
	double s = 0, s2 = 0;
	for (int d = 0; d < D; d++) {
		s += r[d];
		s2 += (double)r[d] * r[d];
	}
	double mean = s / D, var = s2 / D - mean * mean;
	*mu = (float)mean;
	*inv = (float)(1.0 / sqrt((var > 0 ? var : 0) + eps));
}

static void blas_layernorm(const float *x, const float *g, const float *b, float *y, int M, int D, float eps)
{
#pragma omp parallel for num_threads(threads()) schedule(static) if (M >= 64)
	for (int m = 0; m < M; m++) {
		const float *r = x + (size_t)m * D;
		float *o = y + (size_t)m * D;
		float mu, inv;
		row_stats(r, D, eps, &mu, &inv);
		for (int d = 0; d < D; d++)
			o[d] = (r[d] - mu) * inv * g[d] + b[d];
	}
}

/* one (segment, head): scores, fused mask + softmax into P [L, L], out = P v */
static void attend(const float *q, const float *k, const float *v, float *out, int L, int D, int Dh, int causal,
		   float *P)
{
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, L, Dh, 1.0f, q, D, k, D, 0.0f, P, L);
	for (int i = 0; i < L; i++) {
		float *r = P + (size_t)i * L;
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
	if (out)
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L, Dh, L, 1.0f, P, L, v, D, 0.0f, out, D);
}

/* runs the body over the nseg * H (segment, head) pairs on the OpenMP threads, each with its
 * own scratch of per floats (the caller's when there is one thread) */
#define FOR_PAIRS(per, ...)                                                                    \
	do {                                                                                   \
		int nt_ = threads(), np_ = nseg * H;                                           \
		if (nt_ > np_)                                                                 \
			nt_ = np_;                                                             \
		float *many_ = nt_ > 1 ? malloc((size_t)nt_ * (per) * sizeof(float)) : NULL;   \
		if (!many_)                                                                    \
			nt_ = 1;                                                               \
		_Pragma("omp parallel num_threads(nt_)")                                       \
		{                                                                              \
			float *sc_ = scratch;                                                  \
			if (nt_ > 1)                                                           \
				sc_ = many_ + (size_t)omp_thread() * (per);                    \
			_Pragma("omp for schedule(static)")                                    \
			for (int p_ = 0; p_ < np_; p_++) {                                     \
				int s = p_ / H, h = p_ % H;                                    \
				__VA_ARGS__                                                    \
			}                                                                      \
		}                                                                              \
		free(many_);                                                                   \
	} while (0)

static int omp_thread(void)
{
#ifdef _OPENMP
	return omp_get_thread_num();
#else
	return 0;
#endif
}

static int max_len(const int *len, int nseg)
{
	int m = 0;
	for (int s = 0; s < nseg; s++)
		m = len[s] > m ? len[s] : m;
	return m;
}

static void blas_attention(const float *q, const float *k, const float *v, float *out, int nseg,
			   const int *start, const int *len, int H, int Dh, int causal, float *scratch)
{
	int D = H * Dh, ml = max_len(len, nseg);
	FOR_PAIRS((size_t)ml * ml, {
		size_t o = (size_t)start[s] * D + (size_t)h * Dh;
		attend(q + o, k + o, v + o, out + o, len[s], D, Dh, causal, sc_);
	});
}

static void blas_act(float *x, size_t n, int kind)
{
	long long N = (long long)n;
	if (kind == 2) {
		for (long long i = 0; i < N; i++)
			x[i] = x[i] > 0 ? x[i] : 0;
	} else if (kind == 0) {
#pragma omp parallel for num_threads(threads()) schedule(static) if (N >= 65536)
		for (long long i = 0; i < N; i++)
			x[i] = x[i] / (1.0f + expf(-1.702f * x[i]));
	} else {
#pragma omp parallel for num_threads(threads()) schedule(static) if (N >= 65536)
		for (long long i = 0; i < N; i++)
			x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
	}
}

/* ---- backward ---- */

/* dx += dy . W [M, K]; dW += dy^T . x [N, K]; db += column sums of dy */
/* dx += dy . W [M, K] in blocks of rows; dW += dy^T . x [N, K] and db in blocks of
 * output features */
static void blas_linear_bw(const float *x, const float *W, const float *dy, float *dx, float *dW, float *db,
			   int M, int K, int N)
{
	if (dx) {
		int nt = split(M, (long long)K * N);
#pragma omp parallel for num_threads(nt) schedule(static)
		for (int t = 0; t < nt; t++) {
			int m0 = (int)((long long)M * t / nt), m1 = (int)((long long)M * (t + 1) / nt);
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m1 - m0, K, N, 1.0f, dy + (size_t)m0 * N, N, W,
				    K, 1.0f, dx + (size_t)m0 * K, K);
		}
	}
	if (dW || db) {
		int nt = split(N, (long long)K * M);
#pragma omp parallel for num_threads(nt) schedule(static)
		for (int t = 0; t < nt; t++) {
			int n0 = (int)((long long)N * t / nt), n1 = (int)((long long)N * (t + 1) / nt);
			if (dW)
				cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n1 - n0, K, M, 1.0f, dy + n0, N, x, K, 1.0f,
					    dW + (size_t)n0 * K, K);
			if (db)
				for (int m = 0; m < M; m++) {
					const float *r = dy + (size_t)m * N;
					for (int n = n0; n < n1; n++)
						db[n] += r[n];
				}
		}
	}
}

/* dx row by row; dg and db column by column (each summed over the rows in order) */
static void blas_layernorm_bw(const float *x, const float *g, const float *dy, float *dx, float *dg, float *db,
			      int M, int D, float eps)
{
	float *st = malloc(2 * (size_t)M * sizeof *st + 1); /* mean and 1/sd of each row */
	if (!st) {
		cmr_layernorm_backward(x, g, dy, dx, dg, db, M, D, eps);
		return;
	}
#pragma omp parallel for num_threads(threads()) schedule(static) if (M >= 64)
	for (int m = 0; m < M; m++) {
		const float *r = x + (size_t)m * D, *d = dy + (size_t)m * D;
		float mu, inv;
		row_stats(r, D, eps, &mu, &inv);
		st[2 * m] = mu;
		st[2 * m + 1] = inv;
		if (!dx)
			continue;
		float s1 = 0, sx = 0;
		for (int i = 0; i < D; i++) {
			float xh = (r[i] - mu) * inv, dxh = d[i] * g[i];
			s1 += dxh;
			sx += dxh * xh;
		}
		s1 /= (float)D;
		sx /= (float)D;
		float *o = dx + (size_t)m * D;
		for (int i = 0; i < D; i++)
			o[i] += inv * (d[i] * g[i] - s1 - (r[i] - mu) * inv * sx);
	}
	if (dg || db) {
#pragma omp parallel for num_threads(threads()) schedule(static) if (M >= 64)
		for (int i = 0; i < D; i++) {
			float a = 0, c = 0;
			for (int m = 0; m < M; m++) {
				float d = dy[(size_t)m * D + i];
				a += d * (x[(size_t)m * D + i] - st[2 * m]) * st[2 * m + 1];
				c += d;
			}
			if (dg)
				dg[i] += a;
			if (db)
				db[i] += c;
		}
	}
	free(st);
}

/* per segment and head: P = softmax(q k^T) recomputed, dv += P^T dout, dP = dout v^T,
 * dS = P * (dP - rowsum(P * dP)), dq += dS k, dk += dS^T q */
/* per segment and head: P = softmax(q k^T) recomputed, dv += P^T dout, dP = dout v^T,
 * dS = P * (dP - rowsum(P * dP)), dq += dS k, dk += dS^T q */
static void blas_attention_bw(const float *q, const float *k, const float *v, const float *dout, float *dq,
			      float *dk, float *dv, int nseg, const int *start, const int *len, int H, int Dh,
			      int causal, float *scratch)
{
	int D = H * Dh, ml = max_len(len, nseg);
	FOR_PAIRS(2 * (size_t)ml * ml, {
		int L = len[s];
		float *P = sc_, *dP = sc_ + (size_t)L * L;
		size_t o = (size_t)start[s] * D + (size_t)h * Dh;
		attend(q + o, k + o, NULL, NULL, L, D, Dh, causal, P);
		cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, L, Dh, L, 1.0f, P, L, dout + o, D, 1.0f, dv + o, D);
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, L, Dh, 1.0f, dout + o, D, v + o, D, 0.0f, dP, L);
		for (int i = 0; i < L; i++) {
			float *pp = P + (size_t)i * L, *d = dP + (size_t)i * L, pd = 0;
			for (int j = 0; j < L; j++)
				pd += pp[j] * d[j];
			for (int j = 0; j < L; j++)
				d[j] = pp[j] * (d[j] - pd);
		}
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L, Dh, L, 1.0f, dP, L, k + o, D, 1.0f, dq + o, D);
		cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, L, Dh, L, 1.0f, dP, L, q + o, D, 1.0f, dk + o, D);
	});
}

static void blas_act_bw(const float *x, const float *dy, float *dx, size_t n, int kind)
{
	long long N = (long long)n;
	if (kind == 2) {
		for (long long i = 0; i < N; i++)
			dx[i] += x[i] > 0 ? dy[i] : 0;
	} else if (kind == 0) {
#pragma omp parallel for num_threads(threads()) schedule(static) if (N >= 65536)
		for (long long i = 0; i < N; i++) {
			float s = 1.0f / (1.0f + expf(-1.702f * x[i]));
			dx[i] += dy[i] * (s + x[i] * 1.702f * s * (1.0f - s));
		}
	} else {
#pragma omp parallel for num_threads(threads()) schedule(static) if (N >= 65536)
		for (long long i = 0; i < N; i++) {
			float t = x[i];
			dx[i] += dy[i] * (0.5f * (1.0f + erff(t * 0.70710678118654752f)) +
					  t * expf(-0.5f * t * t) * 0.39894228040143268f);
		}
	}
}

/* C[M, N] = A . B^T: row blocks of A, as linear */
static void blas_matmul_nt(const float *A, const float *B, float *C, int M, int N, int K)
{
	blas_linear(A, B, NULL, C, M, K, N);
}

/* AdamW in float, PyTorch's sequence (torch.optim.AdamW, single-tensor): p *= 1 - lr wd;
 * m += (1 - b1) (g - m); v = b2 v + (1 - b2) g^2; p -= (lr / c1) m / (sqrt(v) / sqrt(c2) + eps),
 * with c1, c2 the bias corrections (computed once, in double). One pass over the four arrays,
 * four elements at a time with SSE (every x86-64 has it; sqrt and division are correctly
 * rounded in both forms, so the vector and scalar paths give the same bits); the plain one,
 * cmr_adamw, works in double element by element. Elementwise: the same bits on any number
 * of threads. */
static void blas_adamw(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1, float beta2,
		       float eps, float weight_decay, int64_t t)
{
	const float step = (float)(lr / (1.0 - pow(beta1, (double)t)));
	const float c2s = (float)sqrt(1.0 - pow(beta2, (double)t));
	const float keep = 1.0f - lr * weight_decay, a1 = 1.0f - beta1, a2 = 1.0f - beta2;
	long long nv = 0;
#ifdef __SSE2__
	nv = (long long)(n / 4);
#pragma omp parallel for schedule(static) if (nv >= 65536)
	for (long long b = 0; b < nv; b++) {
		size_t i = (size_t)b * 4;
		__m128 gi = _mm_loadu_ps(g + i), mi = _mm_loadu_ps(m + i), vi = _mm_loadu_ps(v + i);
		mi = _mm_add_ps(mi, _mm_mul_ps(_mm_set1_ps(a1), _mm_sub_ps(gi, mi)));
		vi = _mm_add_ps(_mm_mul_ps(_mm_set1_ps(beta2), vi), _mm_mul_ps(_mm_mul_ps(_mm_set1_ps(a2), gi), gi));
		_mm_storeu_ps(m + i, mi);
		_mm_storeu_ps(v + i, vi);
		__m128 den = _mm_add_ps(_mm_div_ps(_mm_sqrt_ps(vi), _mm_set1_ps(c2s)), _mm_set1_ps(eps));
		__m128 pi = _mm_mul_ps(_mm_loadu_ps(p + i), _mm_set1_ps(keep));
		_mm_storeu_ps(p + i, _mm_sub_ps(pi, _mm_div_ps(_mm_mul_ps(_mm_set1_ps(step), mi), den)));
	}
#endif
	for (size_t i = (size_t)nv * 4; i < n; i++) {
		float gi = g[i], mi = m[i] + a1 * (gi - m[i]), vi = beta2 * v[i] + a2 * gi * gi;
		m[i] = mi, v[i] = vi;
		p[i] = p[i] * keep - step * mi / (sqrtf(vi) / c2s + eps);
	}
}

const cmr_ops cmr_ops_blas = {
	.name = "blas",
	.what = "OpenBLAS sgemm and OpenMP row loops (the default)",
	.caps = CMR_OPS_HOST | CMR_OPS_TRAIN,
	CMR_HOST_OPS,
	.linear = blas_linear,
	.layernorm = blas_layernorm,
	.attention = blas_attention,
	.act = blas_act,
	.matmul_nt = blas_matmul_nt,
	.linear_bw = blas_linear_bw,
	.layernorm_bw = blas_layernorm_bw,
	.attention_bw = blas_attention_bw,
	.act_bw = blas_act_bw,
	.adamw = blas_adamw,
};

int cmr_ops_threads(void)
{
	return threads();
}

void cmr_ops_set_threads(int n)
{
	n_threads = n;
#ifdef _OPENMP
	omp_set_num_threads(n); /* also for the loops outside the backend (AdamW) */
	(void)threads();
#else
	openblas_set_num_threads(n);
#endif
}
