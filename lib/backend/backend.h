/* backend/backend.h - compute backends: a table of operations, with the memory they work on, that
 * the model code calls, so that a backend (plain C, OpenBLAS, CUDA) slots in without
 * touching the model or the tools: the model allocates its work space through the backend
 * and does no arithmetic on its arrays itself. The plain one is the oracle for the others.
 * All matrices are row-major fp32. */
#ifndef CMR_BACKEND_H
#define CMR_BACKEND_H

#include <stddef.h>
#include <stdint.h>

/* What a backend can do. */
enum {
	CMR_OPS_HOST = 1,  /* its buffers are host memory: the model may give it host pointers (the
			    * mapped weights) and read its buffers; a device backend has not this */
	CMR_OPS_TRAIN = 2, /* it has the backward passes and the optimiser */
};

/* The arithmetic of matrix products (--precision): fp32 everywhere, or a device's tensor cores
 * on TF32 or bf16 roundings of fp32 operands (accumulating in fp32). */
enum { CMR_PREC_FP32 = 0, CMR_PREC_TF32 = 1, CMR_PREC_BF16 = 2 };

typedef struct cmr_ops {
	const char *name;
	const char *what; /* one line for --help and the man pages */
	unsigned caps;    /* CMR_OPS_* */
	/* a device backend's start on device (index) with a precision: 0, or -1 with a reason in err
	 * (no device, no driver, a device index that is not there); NULL: a CPU backend, which
	 * has device 0 and fp32 only */
	int (*open)(int device, int precision, char *err, size_t errlen);

	/* ---- memory: buffers the backend owns (device memory for a device backend) ---- */
	void *(*alloc)(size_t bytes); /* NULL when out of memory */
	void (*free)(void *p);
	void (*upload)(void *dst, const void *src, size_t bytes);   /* host -> backend */
	void (*download)(void *dst, const void *src, size_t bytes); /* backend -> host */
	void (*sync)(void);                                         /* wait for queued work */

	/* ---- the forward operations ---- */
	/* y[M, N] = x[M, K] . W[N, K]^T + b[N] (b may be NULL): PyTorch's Linear */
	void (*linear)(const float *x, const float *W, const float *b, float *y, int M, int K, int N);
	/* y[M, D] = layernorm of each row of x, times g plus b */
	void (*layernorm)(const float *x, const float *g, const float *b, float *y, int M, int D, float eps);
	/* Multi-head attention over nseg segments of rows: segment s is rows [start[s],
	 * start[s] + len[s]) of q, k, v, out [rows, H * Dh]; q already scaled; causal: row i
	 * attends to rows <= i of its segment. scratch holds at least maxlen * maxlen floats. */
	void (*attention)(const float *q, const float *k, const float *v, float *out, int nseg,
			  const int *start, const int *len, int H, int Dh, int causal, float *scratch);
	/* x = act(x) in place: 0 quick_gelu x * sigmoid(1.702 x), 1 gelu (erf),
	 * 2 relu */
	void (*act)(float *x, size_t n, int kind);

	/* ---- the glue between them: what the model would otherwise do on host arrays ---- */
	void (*zero)(float *x, size_t n);
	void (*copy)(float *dst, const float *src, size_t n);
	void (*scale)(float *x, size_t n, float a);                     /* x *= a */
	void (*add)(float *y, const float *a, const float *b, size_t n); /* y = a + b (y may be a or b) */
	/* rows [n, D]: dst[i] = src[idx[i]] */
	void (*gather)(float *dst, const float *src, const int *idx, int n, int D);
	/* dst[i] += tab[idx[i]] where idx[i] >= 0 (embedding sums) */
	void (*gather_add)(float *dst, const float *tab, const int *idx, int n, int D);
	/* dst[idx[i]] += src[i] where idx[i] >= 0, i in increasing order (their backward passes) */
	void (*scatter_add)(float *dst, const float *src, const int *idx, int n, int D);
	/* dst[i] = tab[idx[i]] where idx[i] >= 0, other rows unchanged; tab NULL: zeros (rows
	 * replaced: deep prompts, and their backward pass) */
	void (*set_rows)(float *dst, const float *tab, const int *idx, int n, int D);
	/* the normalised patches of B host images u8 [S, S, 3] as rows [B * (S/P)^2, 3 * P * P]
	 * in the patch convolution's (channel, y, x) order */
	void (*patchify)(float *out, const unsigned char *const *pixels, int B, int S, int P, const float *mean,
			 const float *std);
	/* C[M, N] = A[M, K] . B[N, K]^T: similarity scores (evaluation, k-means) */
	void (*matmul_nt)(const float *A, const float *B, float *C, int M, int N, int K);

	/* ---- training: backward passes accumulating (+=) into the d* arrays (any may be NULL;
	 * the semantics are grad.h's), the optimiser ---- */
	void (*linear_bw)(const float *x, const float *W, const float *dy, float *dx, float *dW, float *db,
			  int M, int K, int N);
	void (*layernorm_bw)(const float *x, const float *g, const float *dy, float *dx, float *dg, float *db,
			     int M, int D, float eps);
	/* scratch holds at least 2 * maxlen * maxlen floats */
	void (*attention_bw)(const float *q, const float *k, const float *v, const float *dout, float *dq,
			     float *dk, float *dv, int nseg, const int *start, const int *len, int H, int Dh,
			     int causal, float *scratch);
	void (*act_bw)(const float *x, const float *dy, float *dx, size_t n, int kind);
	/* the sum of squares, in double, in a fixed order */
	double (*sumsq)(const float *x, size_t n);
	/* one AdamW step: grad.h's cmr_adamw (plain, in double) for ref, a vectorised float one for blas */
	void (*adamw)(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1, float beta2,
		      float eps, float weight_decay, int64_t t);
	/* a device's free and total memory in bytes (for messages); NULL for a host backend */
	void (*meminfo)(size_t *free_bytes, size_t *total_bytes);
} cmr_ops;

extern const cmr_ops cmr_ops_ref;  /* plain loops, double accumulation: obviously correct */
extern const cmr_ops cmr_ops_blas; /* OpenBLAS sgemm, fused row operations */
/* For tests, found by name but not listed: the reference behind buffers the host cannot read
 * (devsim.c), so that the device path of the model and the tools runs on any machine. */
extern const cmr_ops cmr_ops_devsim;
#ifdef CMR_CUDA
extern const cmr_ops cmr_ops_cuda; /* cuBLAS and kernels of our own (backend/cuda/cuda.cu) */
#endif
/* Opens ops on device with precision (the tools' --backend, --device, --precision): 0, or -1
 * with the reason in err. */
int cmr_ops_open(const cmr_ops *ops, int device, int precision, char *err, size_t errlen);

/* The backends of this build, NULL-terminated, the reference first: what --backend takes. */
extern const cmr_ops *const cmr_backends[];
/* The backend called name, or NULL. */
const cmr_ops *cmr_ops_find(const char *name);
/* "ref, blas": the names, for messages. */
const char *cmr_ops_names(void);
/* Threads for the BLAS backend (OpenBLAS's pool). */
void cmr_ops_set_threads(int n);
/* The threads the BLAS backend uses (its results are bit-identical for a given count). */
int cmr_ops_threads(void);

/* The host implementations of the memory and glue operations, shared by the CPU backends. */
void *cmr_host_alloc(size_t bytes);
void cmr_host_free(void *p);
void cmr_host_memcpy(void *dst, const void *src, size_t bytes);
void cmr_host_sync(void);
void cmr_host_zero(float *x, size_t n);
void cmr_host_copy(float *dst, const float *src, size_t n);
void cmr_host_scale(float *x, size_t n, float a);
void cmr_host_add(float *y, const float *a, const float *b, size_t n);
void cmr_host_gather(float *dst, const float *src, const int *idx, int n, int D);
void cmr_host_gather_add(float *dst, const float *tab, const int *idx, int n, int D);
void cmr_host_scatter_add(float *dst, const float *src, const int *idx, int n, int D);
void cmr_host_set_rows(float *dst, const float *tab, const int *idx, int n, int D);
void cmr_host_patchify(float *out, const unsigned char *const *pixels, int B, int S, int P, const float *mean,
		       const float *std);
double cmr_host_sumsq(const float *x, size_t n);
/* The initialisers of a CPU backend's table for all of them (AdamW is each backend's own:
 * grad.h's plain cmr_adamw for ref). */
#define CMR_HOST_OPS                                                                             \
	.alloc = cmr_host_alloc, .free = cmr_host_free, .upload = cmr_host_memcpy,              \
	.download = cmr_host_memcpy, .sync = cmr_host_sync, .zero = cmr_host_zero,              \
	.copy = cmr_host_copy, .scale = cmr_host_scale, .add = cmr_host_add,                    \
	.gather = cmr_host_gather, .gather_add = cmr_host_gather_add,                           \
	.scatter_add = cmr_host_scatter_add, .set_rows = cmr_host_set_rows,                     \
	.patchify = cmr_host_patchify, .sumsq = cmr_host_sumsq

/* 1 if this build was compiled with CUDA (make CUDA=1), else 0. */
int cmr_cuda_built(void);
/* Number of CUDA devices usable now (0 without a device, a driver or CUDA), and in buf the
 * first device's name or the reason there is none. */
int cmr_cuda_devices(char *buf, size_t cap);

#endif
