/* backend/ref.c - the plain backend: loops as the math reads, double accumulators. It is the
 * fallback and the oracle that the fast backends are tested against. */
#include <math.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/grad.h"

/* y[M, N] = x[M, K] . W[N, K]^T + b */
static void ref_linear(const float *x, const float *W, const float *b, float *y, int M, int K, int N)
{
	for (int m = 0; m < M; m++)
		for (int n = 0; n < N; n++) {
			double s = b ? b[n] : 0.0;
			for (int k = 0; k < K; k++)
				s += (double)x[(size_t)m * K + k] * W[(size_t)n * K + k];
			y[(size_t)m * N + n] = (float)s;
		}
}

static void ref_layernorm(const float *x, const float *g, const float *b, float *y, int M, int D, float eps)
{
	for (int m = 0; m < M; m++) {
		const float *r = x + (size_t)m * D;
		double mean = 0, var = 0;
		for (int d = 0; d < D; d++)
			mean += r[d];
		mean /= D;
		for (int d = 0; d < D; d++)
			var += (r[d] - mean) * (r[d] - mean);
		var /= D; /* biased, as torch.nn.LayerNorm */
		double inv = 1.0 / sqrt(var + eps);
		for (int d = 0; d < D; d++)
			y[(size_t)m * D + d] = (float)((r[d] - mean) * inv * g[d] + b[d]);
	}
}

static void ref_attention(const float *q, const float *k, const float *v, float *out, int nseg,
			  const int *start, const int *len, int H, int Dh, int causal, float *scratch)
{
	int D = H * Dh;
	for (int s = 0; s < nseg; s++)
		for (int h = 0; h < H; h++)
			for (int i = 0; i < len[s]; i++) {
				const float *qi = q + (size_t)(start[s] + i) * D + h * Dh;
				int n = causal ? i + 1 : len[s];
				double mx = -INFINITY, sum = 0;
				for (int j = 0; j < n; j++) {
					const float *kj = k + (size_t)(start[s] + j) * D + h * Dh;
					double d = 0;
					for (int e = 0; e < Dh; e++)
						d += (double)qi[e] * kj[e];
					scratch[j] = (float)d;
					mx = d > mx ? d : mx;
				}
				for (int j = 0; j < n; j++) {
					scratch[j] = (float)exp(scratch[j] - mx);
					sum += scratch[j];
				}
				float *o = out + (size_t)(start[s] + i) * D + h * Dh;
				for (int e = 0; e < Dh; e++) {
					double acc = 0;
					for (int j = 0; j < n; j++)
						acc += (double)scratch[j] * v[(size_t)(start[s] + j) * D + h * Dh + e];
					o[e] = (float)(acc / sum);
				}
			}
}

static void ref_act(float *x, size_t n, int kind)
{
	for (size_t i = 0; i < n; i++) {
		double t = x[i];
		x[i] = kind == 0   ? (float)(t / (1.0 + exp(-1.702 * t)))
		       : kind == 1 ? (float)(0.5 * t * (1.0 + erf(t / sqrt(2.0))))
				   : (float)(t > 0 ? t : 0);
	}
}

static void ref_matmul_nt(const float *A, const float *B, float *C, int M, int N, int K)
{
	ref_linear(A, B, NULL, C, M, K, N);
}

const cmr_ops cmr_ops_ref = {
	.name = "ref",
	.what = "plain loops with double accumulators: slow, the reference",
	.caps = CMR_OPS_HOST | CMR_OPS_TRAIN,
	CMR_HOST_OPS,
	.adamw = cmr_adamw,
	.linear = ref_linear,
	.layernorm = ref_layernorm,
	.attention = ref_attention,
	.act = ref_act,
	.matmul_nt = ref_matmul_nt,
	.linear_bw = cmr_linear_backward,
	.layernorm_bw = cmr_layernorm_backward,
	.attention_bw = cmr_attention_backward,
	.act_bw = cmr_act_backward,
};
