/* backend/devsim.c - a stand-in for a device backend, for tests: the reference's arithmetic
 * behind buffers the host cannot read. Its pointers have bit 62 flipped (not canonical on
 * x86-64 and arm64, so dereferencing one faults) and every operation flips it back, so a
 * model or tool that touches backend memory from the host, or hands a host array to an
 * operation that expects the backend's, crashes here instead of on a GPU. Its results are
 * the reference's bit for bit. It has no CMR_OPS_HOST: what runs on it runs the device path. */
#include <stdint.h>

#include "backend/backend.h"

#define FLIP ((uintptr_t)1 << 62)

/* backend pointer <-> host pointer (NULL stays NULL: optional arguments) */
static void *H(const void *p) { return p ? (void *)((uintptr_t)p ^ FLIP) : NULL; }
#define F(p) ((float *)H(p))
#define I(p) ((const int *)H(p))

static const cmr_ops *const R = &cmr_ops_ref;

static void *ds_alloc(size_t bytes)
{
	void *p = R->alloc(bytes);
	return p ? H(p) : NULL;
}
static void ds_free(void *p) { R->free(H(p)); }
static void ds_upload(void *dst, const void *src, size_t n) { R->upload(H(dst), src, n); }
static void ds_download(void *dst, const void *src, size_t n) { R->download(dst, H(src), n); }
static void ds_sync(void) {}

static void ds_linear(const float *x, const float *W, const float *b, float *y, int M, int K, int N)
{
	R->linear(F(x), F(W), F(b), F(y), M, K, N);
}
static void ds_layernorm(const float *x, const float *g, const float *b, float *y, int M, int D, float eps)
{
	R->layernorm(F(x), F(g), F(b), F(y), M, D, eps);
}
static void ds_attention(const float *q, const float *k, const float *v, float *out, int nseg, const int *start,
			 const int *len, int H_, int Dh, int causal, float *scratch)
{
	/* start and len are the uploaded layout's: the backend's memory */
	R->attention(F(q), F(k), F(v), F(out), nseg, I(start), I(len), H_, Dh, causal, F(scratch));
}
static void ds_act(float *x, size_t n, int kind) { R->act(F(x), n, kind); }
static void ds_zero(float *x, size_t n) { R->zero(F(x), n); }
static void ds_copy(float *dst, const float *src, size_t n) { R->copy(F(dst), F(src), n); }
static void ds_scale(float *x, size_t n, float a) { R->scale(F(x), n, a); }
static void ds_add(float *y, const float *a, const float *b, size_t n) { R->add(F(y), F(a), F(b), n); }
static void ds_gather(float *dst, const float *src, const int *idx, int n, int D)
{
	R->gather(F(dst), F(src), I(idx), n, D);
}
static void ds_gather_add(float *dst, const float *tab, const int *idx, int n, int D)
{
	R->gather_add(F(dst), F(tab), I(idx), n, D);
}
static void ds_scatter_add(float *dst, const float *src, const int *idx, int n, int D)
{
	R->scatter_add(F(dst), F(src), I(idx), n, D);
}
static void ds_set_rows(float *dst, const float *tab, const int *idx, int n, int D)
{
	R->set_rows(F(dst), F(tab), I(idx), n, D);
}
static void ds_patchify(float *out, const unsigned char *const *pixels, int B, int S, int P, const float *mean,
			const float *std)
{
	/* the pixels, mean and std are the host's (the batch as the caller has it) */
	R->patchify(F(out), pixels, B, S, P, mean, std);
}
static void ds_matmul_nt(const float *A, const float *B, float *C, int M, int N, int K)
{
	R->matmul_nt(F(A), F(B), F(C), M, N, K);
}
static void ds_linear_bw(const float *x, const float *W, const float *dy, float *dx, float *dW, float *db, int M,
			 int K, int N)
{
	R->linear_bw(F(x), F(W), F(dy), F(dx), F(dW), F(db), M, K, N);
}
static void ds_layernorm_bw(const float *x, const float *g, const float *dy, float *dx, float *dg, float *db, int M,
			    int D, float eps)
{
	R->layernorm_bw(F(x), F(g), F(dy), F(dx), F(dg), F(db), M, D, eps);
}
static void ds_attention_bw(const float *q, const float *k, const float *v, const float *dout, float *dq, float *dk,
			    float *dv, int nseg, const int *start, const int *len, int H_, int Dh, int causal,
			    float *scratch)
{
	R->attention_bw(F(q), F(k), F(v), F(dout), F(dq), F(dk), F(dv), nseg, I(start), I(len), H_, Dh, causal,
			F(scratch));
}
static void ds_act_bw(const float *x, const float *dy, float *dx, size_t n, int kind)
{
	R->act_bw(F(x), F(dy), F(dx), n, kind);
}
static double ds_sumsq(const float *x, size_t n) { return R->sumsq(F(x), n); }
static void ds_adamw(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1, float beta2,
		     float eps, float weight_decay, int64_t t)
{
	R->adamw(F(p), F(g), F(m), F(v), n, lr, beta1, beta2, eps, weight_decay, t);
}

const cmr_ops cmr_ops_devsim = {
	.name = "devsim",
	.what = "for tests: the reference behind memory the host cannot read, as a GPU's",
	.caps = CMR_OPS_TRAIN,
	.alloc = ds_alloc,
	.free = ds_free,
	.upload = ds_upload,
	.download = ds_download,
	.sync = ds_sync,
	.linear = ds_linear,
	.layernorm = ds_layernorm,
	.attention = ds_attention,
	.act = ds_act,
	.zero = ds_zero,
	.copy = ds_copy,
	.scale = ds_scale,
	.add = ds_add,
	.gather = ds_gather,
	.gather_add = ds_gather_add,
	.scatter_add = ds_scatter_add,
	.set_rows = ds_set_rows,
	.patchify = ds_patchify,
	.matmul_nt = ds_matmul_nt,
	.linear_bw = ds_linear_bw,
	.layernorm_bw = ds_layernorm_bw,
	.attention_bw = ds_attention_bw,
	.act_bw = ds_act_bw,
	.sumsq = ds_sumsq,
	.adamw = ds_adamw,
};
