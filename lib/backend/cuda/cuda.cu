// cuda/cuda.cu - the CUDA backend (backend.h's table): buffers in the device's memory, one
// stream, cuBLAS for every matrix product (fp32, or tensor cores on TF32 / bf16 roundings of
// fp32 operands: --precision), kernels of our own for the rest: layer norm, a fused attention
// that never writes the score matrix to memory (one block per query row: scores in shared
// memory, softmax, then the weighted sum of values), GELU, AdamW, the gathers and their
// backward passes. Every reduction has a fixed order (no atomics), so a run gives the same
// bits every time on one device. Host waits block (cudaDeviceScheduleBlockingSync) rather
// than spin. The images of patchify go through two pinned staging buffers, so the copy of a
// batch's pixels overlaps the work still queued from the batch before.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "../backend.h"
}

namespace {

// cuBLAS's entry points, from the library opened at start
struct {
	decltype(&cublasCreate_v2) create;
	decltype(&cublasSetStream_v2) set_stream;
	cublasStatus_t (*gemm)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void *,
			       const void *, cudaDataType, int, const void *, cudaDataType, int, const void *, void *,
			       cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t);
	decltype(&cublasGetStatusString) status;
} cb;

#define STR_(x) #x
#define STR(x) STR_(x)

int open_cublas(char *err, size_t errlen)
{
	static const char *const names[] = {
#ifdef CMR_CUBLAS_DIR
		CMR_CUBLAS_DIR "/libcublas.so." STR(CUBLAS_VER_MAJOR),
#endif
		"libcublas.so." STR(CUBLAS_VER_MAJOR), "libcublas.so"};
	void *h = NULL;
	const char *why = "";
	for (size_t i = 0; i < sizeof names / sizeof names[0] && !h; i++)
		if (!(h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL)))
			why = dlerror();
	if (!h) {
		snprintf(err, errlen, "--backend cuda: cuBLAS %d cannot be loaded (%s)", CUBLAS_VER_MAJOR, why);
		return -1;
	}
	cb.create = (decltype(cb.create))dlsym(h, "cublasCreate_v2");
	cb.set_stream = (decltype(cb.set_stream))dlsym(h, "cublasSetStream_v2");
	cb.gemm = (decltype(cb.gemm))dlsym(h, "cublasGemmEx");
	cb.status = (decltype(cb.status))dlsym(h, "cublasGetStatusString");
	if (!cb.create || !cb.set_stream || !cb.gemm || !cb.status) {
		snprintf(err, errlen, "--backend cuda: %s lacks the functions cmr calls", names[0]);
		return -1;
	}
	return 0;
}

struct state {
	int ready, device, precision;
	cudaStream_t s;
	cublasHandle_t blas;
	void *ws;           // scratch of the backward passes and reductions (grown on demand)
	size_t ws_size;
	unsigned char *pin[2]; // pinned staging of patchify's pixels, used in turn
	size_t pin_size[2];
	cudaEvent_t pin_done[2];
	unsigned char *dpx; // the pixels on the device
	size_t dpx_size;
	int turn;
	int *hlen;          // host copies of an attention call's segment lengths and offsets
	size_t hlen_cap;
} G;

[[noreturn]] void die(const char *what, const char *why)
{
	fprintf(stderr, "%s: cuda backend: %s: %s\n", program_invocation_short_name, what, why);
	exit(1);
}

#define CK(x)                                                                                                         \
	do {                                                                                                          \
		cudaError_t e_ = (x);                                                                                 \
		if (e_ != cudaSuccess)                                                                                \
			die(#x, cudaGetErrorString(e_));                                                              \
	} while (0)
#define CB(x)                                                                                                         \
	do {                                                                                                          \
		cublasStatus_t e_ = (x);                                                                              \
		if (e_ != CUBLAS_STATUS_SUCCESS)                                                                      \
			die(#x, cb.status(e_));                                                           \
	} while (0)
#define LAUNCHED(what) CK(cudaPeekAtLastError())

int open_device(int device, int precision, char *err, size_t errlen)
{
	if (G.ready) {
		if (device != G.device) {
			snprintf(err, errlen, "the cuda backend is open on device %d already", G.device);
			return -1;
		}
		G.precision = precision;
		return 0;
	}
	int n = 0;
	cudaError_t e = cudaGetDeviceCount(&n);
	if (e != cudaSuccess || n == 0) {
		snprintf(err, errlen, "--backend cuda: no usable CUDA device (%s)",
			 e != cudaSuccess ? cudaGetErrorString(e) : "none found");
		return -1;
	}
	if (device < 0 || device >= n) {
		snprintf(err, errlen, "--device %d: this machine has %d CUDA device%s (0 to %d)", device, n,
			 n == 1 ? "" : "s", n - 1);
		return -1;
	}
	if ((e = cudaSetDevice(device)) != cudaSuccess ||
	    (e = cudaSetDeviceFlags(cudaDeviceScheduleBlockingSync)) != cudaSuccess ||
	    (e = cudaStreamCreateWithFlags(&G.s, cudaStreamNonBlocking)) != cudaSuccess ||
	    (e = cudaEventCreateWithFlags(&G.pin_done[0], cudaEventDisableTiming | cudaEventBlockingSync)) != cudaSuccess ||
	    (e = cudaEventCreateWithFlags(&G.pin_done[1], cudaEventDisableTiming | cudaEventBlockingSync)) != cudaSuccess) {
		snprintf(err, errlen, "--backend cuda: device %d: %s", device, cudaGetErrorString(e));
		return -1;
	}
	if (open_cublas(err, errlen) < 0)
		return -1;
	cublasStatus_t b = cb.create(&G.blas);
	if (b == CUBLAS_STATUS_SUCCESS)
		b = cb.set_stream(G.blas, G.s);
	if (b != CUBLAS_STATUS_SUCCESS) {
		snprintf(err, errlen, "--backend cuda: cuBLAS: %s", cb.status(b));
		return -1;
	}
	G.device = device, G.precision = precision, G.ready = 1;
	return 0;
}

// an operation before open: device 0 in fp32, or the reason it cannot be
void ensure(void)
{
	char err[256];
	if (!G.ready && open_device(0, CMR_PREC_FP32, err, sizeof err) < 0)
		die("start", err);
}

void *scratch(size_t bytes)
{
	if (bytes > G.ws_size) {
		if (G.ws)
			CK(cudaFreeAsync(G.ws, G.s));
		size_t n = bytes + bytes / 4;
		if (cudaMallocAsync(&G.ws, n, G.s) != cudaSuccess) {
			char why[96];
			snprintf(why, sizeof why, "%.1f MiB of scratch does not fit: make the batch smaller", n / 1048576.0);
			die("out of device memory", why);
		}
		G.ws_size = n;
	}
	return G.ws;
}

inline unsigned blocks(size_t n, unsigned t) { return (unsigned)((n + t - 1) / t); }

// ---- reductions ----
struct add_op {
	__device__ static float id() { return 0.0f; }
	__device__ static float f(float a, float b) { return a + b; }
};
struct max_op {
	__device__ static float id() { return -INFINITY; }
	__device__ static float f(float a, float b) { return fmaxf(a, b); }
};
template <class Op> __device__ float warp_reduce(float v)
{
	for (int o = 16; o > 0; o >>= 1)
		v = Op::f(v, __shfl_xor_sync(0xffffffffu, v, o));
	return v;
}
// the sum (max) over the block, in a fixed order, returned to every thread; red holds 32 floats
template <class Op> __device__ float block_reduce(float v, float *red)
{
	int w = threadIdx.x >> 5, l = threadIdx.x & 31, nw = (blockDim.x + 31) >> 5;
	v = warp_reduce<Op>(v);
	__syncthreads();
	if (l == 0)
		red[w] = v;
	__syncthreads();
	if (w == 0) {
		v = warp_reduce<Op>(l < nw ? red[l] : Op::id());
		if (l == 0)
			red[0] = v;
	}
	__syncthreads();
	return red[0];
}
__device__ float warp_sum(float v) { return warp_reduce<add_op>(v); }
__device__ float block_sum(float v, float *red) { return block_reduce<add_op>(v, red); }
__device__ float block_max(float v, float *red) { return block_reduce<max_op>(v, red); }

// ---- elementwise and rows ----
__global__ void k_bias_rows(float *y, const float *b, int M, int N)
{
	size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i < (size_t)M * N)
		y[i] = b[i % N];
}
__global__ void k_scale(float *x, size_t n, float a)
{
	size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n)
		x[i] *= a;
}
__global__ void k_add(float *y, const float *a, const float *b, size_t n)
{
	size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n)
		y[i] = a[i] + b[i];
}
__device__ float act_f(float t, int kind)
{
	return kind == 0 ? t / (1.0f + expf(-1.702f * t)) : kind == 1 ? 0.5f * t * (1.0f + erff(t * 0.70710678118654752f))
								      : fmaxf(t, 0.0f);
}
__global__ void k_act(float *x, size_t n, int kind)
{
	size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n)
		x[i] = act_f(x[i], kind);
}
__global__ void k_act_bw(const float *x, const float *dy, float *dx, size_t n, int kind)
{
	size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= n)
		return;
	float t = x[i], d;
	if (kind == 2) {
		d = t > 0 ? 1.0f : 0.0f;
	} else if (kind == 0) {
		float s = 1.0f / (1.0f + expf(-1.702f * t));
		d = s + t * 1.702f * s * (1.0f - s);
	} else {
		d = 0.5f * (1.0f + erff(t * 0.70710678118654752f)) + t * expf(-0.5f * t * t) * 0.3989422804014327f;
	}
	dx[i] += dy[i] * d;
}
// rows [n, D], one block per row: mode 0 gather, 1 gather-add, 2 set rows (tab NULL: zeros)
__global__ void k_rows(float *dst, const float *src, const int *idx, int D, int mode)
{
	int i = blockIdx.x, r = idx[i];
	if (r < 0)
		return;
	float *d = dst + (size_t)i * D;
	const float *s = src ? src + (size_t)r * D : NULL;
	for (int e = threadIdx.x; e < D; e += blockDim.x)
		d[e] = mode == 1 ? d[e] + s[e] : s ? s[e] : 0.0f;
}
// dst[idx[i]] += src[i], i in increasing order: one thread per column walks the rows, so each
// sum has the reference's order (and no atomics)
__global__ void k_scatter_add(float *dst, const float *src, const int *idx, int n, int D)
{
	int e = blockIdx.x * blockDim.x + threadIdx.x;
	if (e >= D)
		return;
	for (int i = 0; i < n; i++) {
		int r = idx[i];
		if (r >= 0)
			dst[(size_t)r * D + e] += src[(size_t)i * D + e];
	}
}
// db[n] += sum over rows of dy[m, n] (mode 0), or dg[n] += sum of dy * (x - mean_m) * inv_m
// (mode 1: layer norm's gain): blocks of 32 columns x 8 row lanes, summed in a fixed order
__global__ void k_colsum(const float *dy, const float *x, const float *stats, float *out, int M, int N, int mode)
{
	__shared__ float part[8][33];
	int n = blockIdx.x * 32 + threadIdx.x;
	float acc = 0;
	if (n < N)
		for (int m = threadIdx.y; m < M; m += 8) {
			float v = dy[(size_t)m * N + n];
			if (mode == 1)
				v *= (x[(size_t)m * N + n] - stats[2 * m]) * stats[2 * m + 1];
			acc += v;
		}
	part[threadIdx.y][threadIdx.x] = acc;
	__syncthreads();
	if (threadIdx.y == 0 && n < N) {
		float s = 0;
		for (int k = 0; k < 8; k++)
			s += part[k][threadIdx.x];
		out[n] += s;
	}
}

// ---- layer norm: one block per row ----
// the row's mean and 1 / sqrt(var + eps), two passes
__device__ void row_stats(const float *r, int D, float eps, float *red, float *mean, float *inv)
{
	float s = 0;
	for (int d = threadIdx.x; d < D; d += blockDim.x)
		s += r[d];
	float m = block_sum(s, red) / D;
	s = 0;
	for (int d = threadIdx.x; d < D; d += blockDim.x)
		s += (r[d] - m) * (r[d] - m);
	*mean = m, *inv = rsqrtf(block_sum(s, red) / D + eps);
}

__global__ void k_layernorm(const float *x, const float *g, const float *b, float *y, int D, float eps)
{
	__shared__ float red[32];
	const float *r = x + (size_t)blockIdx.x * D;
	float mean, inv;
	row_stats(r, D, eps, red, &mean, &inv);
	float *o = y + (size_t)blockIdx.x * D;
	for (int d = threadIdx.x; d < D; d += blockDim.x)
		o[d] = (r[d] - mean) * inv * g[d] + b[d];
}
// dx += inv (g dy - mean(g dy) - xhat mean(g dy xhat)); the row's mean and inv into stats
__global__ void k_layernorm_bw(const float *x, const float *g, const float *dy, float *dx, float *stats, int D,
			       float eps)
{
	__shared__ float red[32];
	size_t o = (size_t)blockIdx.x * D;
	float mean, inv;
	row_stats(x + o, D, eps, red, &mean, &inv);
	if (threadIdx.x == 0)
		stats[2 * blockIdx.x] = mean, stats[2 * blockIdx.x + 1] = inv;
	if (!dx)
		return;
	float a = 0, c = 0;
	for (int d = threadIdx.x; d < D; d += blockDim.x) {
		float gd = g[d] * dy[o + d];
		a += gd;
		c += gd * (x[o + d] - mean) * inv;
	}
	a = block_sum(a, red) / D;
	c = block_sum(c, red) / D;
	for (int d = threadIdx.x; d < D; d += blockDim.x)
		dx[o + d] += inv * (g[d] * dy[o + d] - a - (x[o + d] - mean) * inv * c);
}

// ---- attention: one block per (query row, head, segment) ----
// out[j] = a . m_j for j < n, a in shared memory, m_j row s0 + j of m at column hoff (a warp per j)
__device__ void row_dots(const float *a, const float *m, int s0, int n, int D, int hoff, int Dh, float *out)
{
	int w = threadIdx.x >> 5, l = threadIdx.x & 31, nw = blockDim.x >> 5;
	for (int j = w; j < n; j += nw) {
		const float *mj = m + (size_t)(s0 + j) * D + hoff;
		float d = 0;
		for (int e = l; e < Dh; e += 32)
			d += a[e] * mj[e];
		d = warp_sum(d);
		if (l == 0)
			out[j] = d;
	}
	__syncthreads();
}

// shared: the query row [Dh], the scores [maxlen], 32 for reductions
__device__ int softmax_row(const float *q, const float *k, int s0, int i, int n, int D, int hoff, int Dh, float *qs,
			   float *p, float *red)
{
	const float *qi = q + (size_t)(s0 + i) * D + hoff;
	for (int e = threadIdx.x; e < Dh; e += blockDim.x)
		qs[e] = qi[e];
	__syncthreads();
	row_dots(qs, k, s0, n, D, hoff, Dh, p);
	float mx = -INFINITY;
	for (int j = threadIdx.x; j < n; j += blockDim.x)
		mx = fmaxf(mx, p[j]);
	mx = block_max(mx, red);
	float sum = 0;
	for (int j = threadIdx.x; j < n; j += blockDim.x) {
		float e = expf(p[j] - mx);
		p[j] = e;
		sum += e;
	}
	sum = block_sum(sum, red);
	float inv = 1.0f / sum;
	for (int j = threadIdx.x; j < n; j += blockDim.x)
		p[j] *= inv;
	__syncthreads();
	return n;
}

__global__ void k_attention(const float *q, const float *k, const float *v, float *out, const int *start,
			    const int *len, int H, int Dh, int causal, int maxlen)
{
	extern __shared__ float sh[];
	int s = blockIdx.z, h = blockIdx.y, i = blockIdx.x, L = len[s];
	if (i >= L)
		return;
	int D = H * Dh, s0 = start[s], n = causal ? i + 1 : L;
	float *qs = sh, *p = sh + Dh, *red = p + maxlen;
	softmax_row(q, k, s0, i, n, D, h * Dh, Dh, qs, p, red);
	float *o = out + (size_t)(s0 + i) * D + h * Dh;
	for (int e = threadIdx.x; e < Dh; e += blockDim.x) {
		float acc = 0;
		for (int j = 0; j < n; j++)
			acc += p[j] * v[(size_t)(s0 + j) * D + h * Dh + e];
		o[e] = acc;
	}
}

// the backward pass by rows: P and dS = P (dP - sum P dP) into the scratch, dq += dS k
__global__ void k_attention_bw_rows(const float *q, const float *k, const float *v, const float *dout, float *dq,
				    float *P, float *dS, const int *start, const int *len, const size_t *off, int H,
				    int Dh, int causal, int maxlen)
{
	extern __shared__ float sh[];
	int s = blockIdx.z, h = blockIdx.y, i = blockIdx.x, L = len[s];
	if (i >= L)
		return;
	int D = H * Dh, s0 = start[s], n = causal ? i + 1 : L;
	float *qs = sh, *p = sh + Dh, *red = p + maxlen, *dp = red + 32;
	softmax_row(q, k, s0, i, n, D, h * Dh, Dh, qs, p, red);
	// dp_j = dout_i . v_j (the query row's slot now holds dout_i)
	const float *di = dout + (size_t)(s0 + i) * D + h * Dh;
	for (int e = threadIdx.x; e < Dh; e += blockDim.x)
		qs[e] = di[e];
	__syncthreads();
	row_dots(qs, v, s0, n, D, h * Dh, Dh, dp);
	float t = 0;
	for (int j = threadIdx.x; j < n; j += blockDim.x)
		t += p[j] * dp[j];
	t = block_sum(t, red);
	size_t row = off[s] + ((size_t)h * L + i) * L;
	for (int j = threadIdx.x; j < L; j += blockDim.x) {
		float ds = j < n ? p[j] * (dp[j] - t) : 0.0f;
		P[row + j] = j < n ? p[j] : 0.0f;
		dS[row + j] = ds;
		dp[j] = ds;
	}
	__syncthreads();
	float *dqi = dq + (size_t)(s0 + i) * D + h * Dh;
	for (int e = threadIdx.x; e < Dh; e += blockDim.x) {
		float acc = 0;
		for (int j = 0; j < n; j++)
			acc += dp[j] * k[(size_t)(s0 + j) * D + h * Dh + e];
		dqi[e] += acc;
	}
}

// then by columns: dk_j += sum_i dS_ij q_i, dv_j += sum_i P_ij dout_i
__global__ void k_attention_bw_cols(const float *q, const float *dout, float *dk, float *dv, const float *P,
				    const float *dS, const int *start, const int *len, const size_t *off, int H,
				    int Dh, int causal)
{
	int s = blockIdx.z, h = blockIdx.y, j = blockIdx.x, L = len[s];
	if (j >= L)
		return;
	int D = H * Dh, s0 = start[s], i0 = causal ? j : 0;
	size_t base = off[s] + (size_t)h * L * L;
	for (int e = threadIdx.x; e < Dh; e += blockDim.x) {
		float a = 0, b = 0;
		for (int i = i0; i < L; i++) {
			size_t at = base + (size_t)i * L + j, r = (size_t)(s0 + i) * D + h * Dh + e;
			a += dS[at] * q[r];
			b += P[at] * dout[r];
		}
		dk[(size_t)(s0 + j) * D + h * Dh + e] += a;
		dv[(size_t)(s0 + j) * D + h * Dh + e] += b;
	}
}

// ---- the rest ----
__global__ void k_patchify(float *out, const unsigned char *px, int B, int S, int P, float m0, float m1, float m2,
			   float s0, float s1, float s2)
{
	int g = S / P, np = g * g, K = 3 * P * P;
	size_t n = (size_t)B * np * K, i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= n)
		return;
	int col = (int)(i % K);
	size_t rowi = i / K;
	int b = (int)(rowi / np), pi = (int)(rowi % np), py = pi / g, pxx = pi % g;
	int ch = col / (P * P), y = (col / P) % P, x = col % P;
	unsigned char v = px[(size_t)b * S * S * 3 + ((size_t)(py * P + y) * S + (pxx * P + x)) * 3 + ch];
	float mean = ch == 0 ? m0 : ch == 1 ? m1 : m2, sd = ch == 0 ? s0 : ch == 1 ? s1 : s2;
	out[i] = ((float)v / 255.0f - mean) / sd;
}

__global__ void k_sumsq(const float *x, size_t n, double *part)
{
	__shared__ double sh[256];
	double s = 0;
	for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
		s += (double)x[i] * x[i];
	sh[threadIdx.x] = s;
	__syncthreads();
	for (int o = blockDim.x / 2; o > 0; o >>= 1) {
		if (threadIdx.x < o)
			sh[threadIdx.x] += sh[threadIdx.x + o];
		__syncthreads();
	}
	if (threadIdx.x == 0)
		part[blockIdx.x] = sh[0];
}

// the BLAS backend's sequence (PyTorch's single-tensor AdamW), in float
__global__ void k_adamw(float *p, const float *g, float *m, float *v, size_t n, float step, float c2s, float keep,
			float a1, float beta2, float a2, float eps)
{
	size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= n)
		return;
	float gi = g[i], mi = m[i] + a1 * (gi - m[i]), vi = beta2 * v[i] + a2 * gi * gi;
	m[i] = mi, v[i] = vi;
	p[i] = p[i] * keep - step * mi / (sqrtf(vi) / c2s + eps);
}

// ---- the table ----
void *cu_alloc(size_t bytes)
{
	ensure();
	void *p = NULL;
	if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) {
		(void)cudaGetLastError(); // out of memory is the caller's to report
		return NULL;
	}
	return p;
}
void cu_free(void *p)
{
	if (p)
		CK(cudaFree(p));
}
void cu_upload(void *dst, const void *src, size_t n)
{
	if (n)
		CK(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, G.s));
}
void cu_download(void *dst, const void *src, size_t n)
{
	if (n) {
		CK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, G.s));
		CK(cudaStreamSynchronize(G.s));
	}
}
void cu_sync(void)
{
	if (G.ready)
		CK(cudaStreamSynchronize(G.s));
}

cublasComputeType_t compute_type(void)
{
	return G.precision == CMR_PREC_TF32   ? CUBLAS_COMPUTE_32F_FAST_TF32
	       : G.precision == CMR_PREC_BF16 ? CUBLAS_COMPUTE_32F_FAST_16BF
					      : CUBLAS_COMPUTE_32F;
}
// column-major C[m, n] = beta C + op(A) op(B): the row-major products are their transposes
void gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const float *A, int lda, const float *B,
	  int ldb, float beta, float *C, int ldc)
{
	if (m <= 0 || n <= 0)
		return;
	const float one = 1.0f;
	CB(cb.gemm(G.blas, ta, tb, m, n, k, &one, A, CUDA_R_32F, lda, B, CUDA_R_32F, ldb, &beta, C, CUDA_R_32F,
			ldc, compute_type(), CUBLAS_GEMM_DEFAULT));
}

// y[M, N] = x[M, K] W[N, K]^T + b: column-major y^T = W^T' x^T
void cu_linear(const float *x, const float *W, const float *b, float *y, int M, int K, int N)
{
	if (b) {
		k_bias_rows<<<blocks((size_t)M * N, 256), 256, 0, G.s>>>(y, b, M, N);
		LAUNCHED("bias");
	}
	gemm(CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, W, K, x, K, b ? 1.0f : 0.0f, y, N);
}
void cu_matmul_nt(const float *A, const float *B, float *C, int M, int N, int K) { cu_linear(A, B, NULL, C, M, K, N); }

void cu_linear_bw(const float *x, const float *W, const float *dy, float *dx, float *dW, float *db, int M, int K, int N)
{
	if (dx) // dx^T [K, M] += W^T [K, N] dy^T [N, M]
		gemm(CUBLAS_OP_N, CUBLAS_OP_N, K, M, N, W, K, dy, N, 1.0f, dx, K);
	if (dW) // dW^T [K, N] += x^T [K, M] dy [M, N]
		gemm(CUBLAS_OP_N, CUBLAS_OP_T, K, N, M, x, K, dy, N, 1.0f, dW, K);
	if (db && M > 0) {
		k_colsum<<<blocks((size_t)N, 32), dim3(32, 8), 0, G.s>>>(dy, NULL, NULL, db, M, N, 0);
		LAUNCHED("bias gradient");
	}
}

unsigned row_threads(int D) { return D >= 256 ? 256 : D >= 128 ? 128 : 64; }

void cu_layernorm(const float *x, const float *g, const float *b, float *y, int M, int D, float eps)
{
	if (M <= 0)
		return;
	k_layernorm<<<M, row_threads(D), 0, G.s>>>(x, g, b, y, D, eps);
	LAUNCHED("layernorm");
}
void cu_layernorm_bw(const float *x, const float *g, const float *dy, float *dx, float *dg, float *db, int M, int D,
		     float eps)
{
	if (M <= 0)
		return;
	float *stats = (float *)scratch(2 * (size_t)M * sizeof(float));
	k_layernorm_bw<<<M, row_threads(D), 0, G.s>>>(x, g, dy, dx, stats, D, eps);
	LAUNCHED("layernorm backward");
	if (dg)
		k_colsum<<<blocks((size_t)D, 32), dim3(32, 8), 0, G.s>>>(dy, x, stats, dg, M, D, 1);
	if (db)
		k_colsum<<<blocks((size_t)D, 32), dim3(32, 8), 0, G.s>>>(dy, NULL, NULL, db, M, D, 0);
	LAUNCHED("layernorm parameter gradients");
}

// the segments' lengths on the host (a small copy per call): the grid's size, the scratch's offsets
int seg_lengths(const int *len, int nseg)
{
	if ((size_t)nseg > G.hlen_cap) {
		free(G.hlen);
		G.hlen_cap = (size_t)nseg * 2;
		if (!(G.hlen = (int *)malloc(G.hlen_cap * sizeof(int))))
			die("attention", "out of host memory");
	}
	CK(cudaMemcpyAsync(G.hlen, len, (size_t)nseg * sizeof(int), cudaMemcpyDeviceToHost, G.s));
	CK(cudaStreamSynchronize(G.s));
	int mx = 0;
	for (int s = 0; s < nseg; s++)
		mx = G.hlen[s] > mx ? G.hlen[s] : mx;
	return mx;
}
unsigned attn_threads(int Dh) { return Dh > 64 ? 128 : 64; }

void cu_attention(const float *q, const float *k, const float *v, float *out, int nseg, const int *start,
		  const int *len, int H, int Dh, int causal, float *unused)
{
	(void)unused;
	if (nseg <= 0)
		return;
	int maxlen = seg_lengths(len, nseg);
	if (maxlen <= 0)
		return;
	size_t sh = ((size_t)Dh + maxlen + 32) * sizeof(float);
	k_attention<<<dim3(maxlen, H, nseg), attn_threads(Dh), sh, G.s>>>(q, k, v, out, start, len, H, Dh, causal,
									    maxlen);
	LAUNCHED("attention");
}

void cu_attention_bw(const float *q, const float *k, const float *v, const float *dout, float *dq, float *dk,
		     float *dv, int nseg, const int *start, const int *len, int H, int Dh, int causal, float *unused)
{
	(void)unused;
	if (nseg <= 0)
		return;
	int maxlen = seg_lengths(len, nseg);
	if (maxlen <= 0)
		return;
	// P and dS of every (segment, head) in the scratch, after the offsets
	size_t total = 0, *hoff = (size_t *)malloc((size_t)nseg * sizeof *hoff);
	if (!hoff)
		die("attention backward", "out of host memory");
	for (int s = 0; s < nseg; s++) {
		hoff[s] = total;
		total += (size_t)H * G.hlen[s] * G.hlen[s];
	}
	size_t offb = ((size_t)nseg * sizeof(size_t) + 255) / 256 * 256;
	char *ws = (char *)scratch(offb + 2 * total * sizeof(float));
	size_t *doff = (size_t *)ws;
	float *P = (float *)(ws + offb), *dS = P + total;
	CK(cudaMemcpyAsync(doff, hoff, (size_t)nseg * sizeof *hoff, cudaMemcpyHostToDevice, G.s));
	CK(cudaStreamSynchronize(G.s)); // hoff is pageable and freed now
	free(hoff);
	size_t sh = ((size_t)Dh + 2 * (size_t)maxlen + 32) * sizeof(float);
	k_attention_bw_rows<<<dim3(maxlen, H, nseg), attn_threads(Dh), sh, G.s>>>(q, k, v, dout, dq, P, dS, start, len,
										    doff, H, Dh, causal, maxlen);
	LAUNCHED("attention backward (rows)");
	k_attention_bw_cols<<<dim3(maxlen, H, nseg), attn_threads(Dh), 0, G.s>>>(q, dout, dk, dv, P, dS, start, len,
										   doff, H, Dh, causal);
	LAUNCHED("attention backward (columns)");
}

void cu_act(float *x, size_t n, int kind)
{
	if (!n)
		return;
	k_act<<<blocks(n, 256), 256, 0, G.s>>>(x, n, kind);
	LAUNCHED("activation");
}
void cu_act_bw(const float *x, const float *dy, float *dx, size_t n, int kind)
{
	if (!n)
		return;
	k_act_bw<<<blocks(n, 256), 256, 0, G.s>>>(x, dy, dx, n, kind);
	LAUNCHED("activation backward");
}
void cu_zero(float *x, size_t n)
{
	if (n)
		CK(cudaMemsetAsync(x, 0, n * sizeof *x, G.s));
}
void cu_copy(float *dst, const float *src, size_t n)
{
	if (n && dst != src)
		CK(cudaMemcpyAsync(dst, src, n * sizeof *dst, cudaMemcpyDeviceToDevice, G.s));
}
void cu_scale(float *x, size_t n, float a)
{
	if (!n)
		return;
	k_scale<<<blocks(n, 256), 256, 0, G.s>>>(x, n, a);
	LAUNCHED("scale");
}
void cu_add(float *y, const float *a, const float *b, size_t n)
{
	if (!n)
		return;
	k_add<<<blocks(n, 256), 256, 0, G.s>>>(y, a, b, n);
	LAUNCHED("add");
}
void rows(float *dst, const float *src, const int *idx, int n, int D, int mode)
{
	if (n <= 0)
		return;
	k_rows<<<n, D >= 256 ? 256 : 128, 0, G.s>>>(dst, src, idx, D, mode);
	LAUNCHED("rows");
}
void cu_gather(float *dst, const float *src, const int *idx, int n, int D) { rows(dst, src, idx, n, D, 0); }
void cu_gather_add(float *dst, const float *tab, const int *idx, int n, int D) { rows(dst, tab, idx, n, D, 1); }
void cu_set_rows(float *dst, const float *tab, const int *idx, int n, int D) { rows(dst, tab, idx, n, D, 2); }
void cu_scatter_add(float *dst, const float *src, const int *idx, int n, int D)
{
	if (n <= 0)
		return;
	k_scatter_add<<<blocks((size_t)D, 64), 64, 0, G.s>>>(dst, src, idx, n, D);
	LAUNCHED("scatter-add");
}

void cu_patchify(float *out, const unsigned char *const *pixels, int B, int S, int P, const float *mean,
		 const float *std)
{
	size_t one = (size_t)S * S * 3, n = (size_t)B * one;
	if (!n)
		return;
	int t = G.turn;
	G.turn ^= 1;
	CK(cudaEventSynchronize(G.pin_done[t])); // this buffer's last copy has left it
	if (n > G.pin_size[t]) {
		if (G.pin[t])
			CK(cudaFreeHost(G.pin[t]));
		G.pin[t] = NULL;
		CK(cudaMallocHost((void **)&G.pin[t], n));
		G.pin_size[t] = n;
	}
	for (int b = 0; b < B; b++)
		memcpy(G.pin[t] + b * one, pixels[b], one);
	if (n > G.dpx_size) { // the device buffer, read by the kernel before the next copy
		if (G.dpx)
			CK(cudaFreeAsync(G.dpx, G.s));
		CK(cudaMallocAsync((void **)&G.dpx, n, G.s));
		G.dpx_size = n;
	}
	CK(cudaMemcpyAsync(G.dpx, G.pin[t], n, cudaMemcpyHostToDevice, G.s));
	CK(cudaEventRecord(G.pin_done[t], G.s));
	size_t total = (size_t)B * (S / P) * (S / P) * 3 * P * P;
	k_patchify<<<blocks(total, 256), 256, 0, G.s>>>(out, G.dpx, B, S, P, mean[0], mean[1], mean[2], std[0], std[1],
							std[2]);
	LAUNCHED("patchify");
}

double cu_sumsq(const float *x, size_t n)
{
	if (!n)
		return 0;
	enum { NB = 256 };
	double *part = (double *)scratch(NB * sizeof(double)), h[NB];
	k_sumsq<<<NB, 256, 0, G.s>>>(x, n, part);
	LAUNCHED("sum of squares");
	cu_download(h, part, sizeof h);
	double s = 0;
	for (int i = 0; i < NB; i++)
		s += h[i];
	return s;
}

void cu_adamw(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1, float beta2, float eps,
	      float weight_decay, int64_t t)
{
	if (!n)
		return;
	const float step = (float)(lr / (1.0 - pow(beta1, (double)t)));
	const float c2s = (float)sqrt(1.0 - pow(beta2, (double)t));
	const float keep = 1.0f - lr * weight_decay;
	k_adamw<<<blocks(n, 256), 256, 0, G.s>>>(p, g, m, v, n, step, c2s, keep, 1.0f - beta1, beta2, 1.0f - beta2, eps);
	LAUNCHED("adamw");
}

void cu_meminfo(size_t *free_bytes, size_t *total_bytes)
{
	ensure();
	if (cudaMemGetInfo(free_bytes, total_bytes) != cudaSuccess)
		*free_bytes = *total_bytes = 0;
}

} // namespace

extern "C" const cmr_ops cmr_ops_cuda = {
	/* .name = */ "cuda",
	/* .what = */ "NVIDIA GPU: cuBLAS (fp32, tf32 or bf16: --precision) and fused kernels",
	/* .caps = */ CMR_OPS_TRAIN,
	/* .open = */ open_device,
	/* .alloc = */ cu_alloc,
	/* .free = */ cu_free,
	/* .upload = */ cu_upload,
	/* .download = */ cu_download,
	/* .sync = */ cu_sync,
	/* .linear = */ cu_linear,
	/* .layernorm = */ cu_layernorm,
	/* .attention = */ cu_attention,
	/* .act = */ cu_act,
	/* .zero = */ cu_zero,
	/* .copy = */ cu_copy,
	/* .scale = */ cu_scale,
	/* .add = */ cu_add,
	/* .gather = */ cu_gather,
	/* .gather_add = */ cu_gather_add,
	/* .scatter_add = */ cu_scatter_add,
	/* .set_rows = */ cu_set_rows,
	/* .patchify = */ cu_patchify,
	/* .matmul_nt = */ cu_matmul_nt,
	/* .linear_bw = */ cu_linear_bw,
	/* .layernorm_bw = */ cu_layernorm_bw,
	/* .attention_bw = */ cu_attention_bw,
	/* .act_bw = */ cu_act_bw,
	/* .sumsq = */ cu_sumsq,
	/* .adamw = */ cu_adamw,
	/* .meminfo = */ cu_meminfo,
};
