/* backend.h - compute backends: a small table of operations that the model code calls, so
 * that a backend (plain C, OpenBLAS, CUDA) slots in without touching the tools. The plain
 * one is the oracle for the others. All matrices are row-major fp32. */
#ifndef CMR_BACKEND_H
#define CMR_BACKEND_H

#include <stddef.h>

typedef struct cmr_ops {
	const char *name;
	/* y[M, N] = x[M, K] . W[N, K]^T + b[N] (b may be NULL): PyTorch's Linear */
	void (*linear)(const float *x, const float *W, const float *b, float *y, int M, int K, int N);
	/* y[M, D] = layernorm of each row of x, times g plus b */
	void (*layernorm)(const float *x, const float *g, const float *b, float *y, int M, int D, float eps);
	/* Multi-head attention over nseg segments of rows: segment s is rows [start[s],
	 * start[s] + len[s]) of q, k, v, out [rows, H * Dh]; q already scaled; causal: row i
	 * attends to rows <= i of its segment. scratch holds at least maxlen * maxlen floats. */
	void (*attention)(const float *q, const float *k, const float *v, float *out, int nseg,
			  const int *start, const int *len, int H, int Dh, int causal, float *scratch);
	/* x = act(x) in place: 0 quick_gelu x * sigmoid(1.702 x), 1 gelu (erf) */
	void (*act)(float *x, size_t n, int kind);

	/* Backward passes (training), accumulating (+=) into the d* arrays; any may be NULL.
	 * Their semantics are grad.h's; the plain backend uses those functions. */
	void (*linear_bw)(const float *x, const float *W, const float *dy, float *dx, float *dW, float *db,
			  int M, int K, int N);
	void (*layernorm_bw)(const float *x, const float *g, const float *dy, float *dx, float *dg, float *db,
			     int M, int D, float eps);
	/* scratch holds at least 2 * maxlen * maxlen floats */
	void (*attention_bw)(const float *q, const float *k, const float *v, const float *dout, float *dq,
			     float *dk, float *dv, int nseg, const int *start, const int *len, int H, int Dh,
			     int causal, float *scratch);
	void (*act_bw)(const float *x, const float *dy, float *dx, size_t n, int kind);
} cmr_ops;

extern const cmr_ops cmr_ops_ref;  /* plain loops, double accumulation: obviously correct */
extern const cmr_ops cmr_ops_blas; /* OpenBLAS sgemm, fused row operations */

/* The backend called name ("ref", "blas"), or NULL. */
const cmr_ops *cmr_ops_find(const char *name);
/* Threads for the BLAS backend (OpenBLAS's pool). */
void cmr_ops_set_threads(int n);

/* 1 if this build was compiled with CUDA (make CUDA=1), else 0. */
int cmr_cuda_built(void);
/* Number of CUDA devices usable now (0 without a device, a driver or CUDA), and in buf the
 * first device's name or the reason there is none. */
int cmr_cuda_devices(char *buf, size_t cap);

#endif
