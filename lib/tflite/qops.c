/* tflite/qops.c - TFLite's quantised kernels: integer loops with its fixed-point rounding, and an exact dgemm fast path.
 *
 * The arithmetic is TFLite's reference arithmetic (tensorflow/lite/kernels/internal/common.h,
 * reference_ops, reference_integer_ops): int32 accumulation of zero-point-offset products,
 * requantisation by a 31-bit fixed-point multiplier and a power-of-two shift with gemmlowp's
 * rounding, clamping to the fused activation's range. The one float kernel is SOFTMAX, computed
 * as TFLite's optimised uint8/int8 kernel does (exponentials of the dequantised differences to
 * the row's maximum, then quantised to the output's scale).
 *
 * The fast convolution: im2col of (input - zero point) and the filter's (weight - zero point)
 * as doubles, one cblas_dgemm. Every product is at most 255 * 255 and a sum has at most 2^20
 * terms here, far below 2^53, so the double results are the exact integers the loops give: the
 * two paths are equal bit for bit (tests/unit/test_tflite.c), not merely close. dgemm rather
 * than an integer GEMM because OpenBLAS has no integer GEMM and Debian packages no C one. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "tflite/tflite.h"

/* an int32 accumulator as TFLite's wraps on every machine it runs on (C's int32 overflow is
 * undefined: the sums are made in int64 and wrapped here; only absurd models reach it) */
static inline int32_t wrap32(int64_t v) { return (int32_t)(uint32_t)(uint64_t)v; }
/* v + zero point, saturated (v may be near the int32 limits in an absurd model) */
static inline int32_t addzp(int32_t v, int32_t zp)
{
	int64_t r = (int64_t)v + zp;
	return r > INT32_MAX ? INT32_MAX : r < INT32_MIN ? INT32_MIN : (int32_t)r;
}

static inline int32_t srdhm(int32_t a, int32_t b)
{
	if (a == INT32_MIN && b == INT32_MIN)
		return INT32_MAX;
	int64_t ab = (int64_t)a * b;
	int64_t nudge = ab >= 0 ? (1 << 30) : (1 - (1 << 30));
	return (int32_t)((ab + nudge) / ((int64_t)1 << 31)); /* C division truncates, as gemmlowp's */
}

static inline int32_t rdbpot(int32_t x, int e)
{
	int32_t mask = (int32_t)(((int64_t)1 << e) - 1);
	int32_t rem = x & mask;
	int32_t thr = (mask >> 1) + (x < 0 ? 1 : 0);
	return (x >> e) + (rem > thr ? 1 : 0);
}

static inline int32_t mbqm(int32_t x, int32_t qm, int shift)
{
	/* TFLite requires shifts within [-31, 31]; absurd scales saturate there rather than overflow */
	int left = shift > 0 ? (shift > 31 ? 31 : shift) : 0, right = shift > 0 ? 0 : (-shift > 31 ? 31 : -shift);
	return rdbpot(srdhm((int32_t)((int64_t)x * ((int64_t)1 << left)), qm), right);
}

int32_t cmr_tfl_srdhm(int32_t a, int32_t b) { return srdhm(a, b); }
int32_t cmr_tfl_rdbpot(int32_t x, int e) { return rdbpot(x, e); }
int32_t cmr_tfl_mbqm(int32_t x, int32_t qm, int shift) { return mbqm(x, qm, shift); }

void cmr_tfl_quantize_multiplier(double m, int32_t *qm, int *shift)
{
	if (m == 0) {
		*qm = 0, *shift = 0;
		return;
	}
	double q = frexp(m, shift);
	int64_t qf = (int64_t)llround(q * (double)(1ll << 31));
	if (qf == (1ll << 31)) {
		qf /= 2;
		++*shift;
	}
	if (*shift < -31) {
		*shift = 0;
		qf = 0;
	}
	*qm = (int32_t)qf;
}

static int32_t qmin(int type) { return type == TFL_UINT8 ? 0 : -128; }
static int32_t qmax(int type) { return type == TFL_UINT8 ? 255 : 127; }

static int32_t round_quant(float x, float scale, int32_t zp)
{
	float q = roundf(x / scale);
	q = q > 1e9f ? 1e9f : q < -1e9f ? -1e9f : q; /* far outside any 8-bit range; no overflow */
	return zp + (int32_t)q;
}


void cmr_tfl_act_range(int act, int type, float scale, int32_t zp, int32_t *lo, int32_t *hi)
{
	*lo = qmin(type), *hi = qmax(type);
	int32_t q0 = round_quant(0.0f, scale, zp);
	if (act == TFL_ACT_RELU) {
		*lo = q0 > *lo ? q0 : *lo;
	} else if (act == TFL_ACT_RELU6) {
		int32_t q6 = round_quant(6.0f, scale, zp);
		*lo = q0 > *lo ? q0 : *lo;
		*hi = q6 < *hi ? q6 : *hi;
	} else if (act == TFL_ACT_RELU_N1_TO_1) {
		int32_t a = round_quant(-1.0f, scale, zp), b = round_quant(1.0f, scale, zp);
		*lo = a > *lo ? a : *lo;
		*hi = b < *hi ? b : *hi;
	}
}

static inline int32_t ld(const cmr_qt *t, size_t i)
{
	return t->type == TFL_UINT8 ? (int32_t)((const uint8_t *)t->data)[i] : (int32_t)((const int8_t *)t->data)[i];
}

static inline void st(cmr_qt *t, size_t i, int32_t v)
{
	if (t->type == TFL_UINT8)
		((uint8_t *)t->data)[i] = (uint8_t)v;
	else
		((int8_t *)t->data)[i] = (int8_t)v;
}

static inline int32_t clamp(int32_t v, int32_t lo, int32_t hi) { return v < lo ? lo : v > hi ? hi : v; }

/* the padding before the first row or column (TFLite's ComputePaddingHeightWidth) */
static int pad_before(int padding, int in, int out, int k, int stride, int dil)
{
	if (padding == TFL_PAD_VALID)
		return 0;
	int eff = (k - 1) * dil + 1;
	int total = (out - 1) * stride + eff - in;
	return total > 0 ? total / 2 : 0;
}

static int32_t out_zp(const cmr_qt *t) { return t->zp[0]; }

/* per output channel c: the requantisation of the accumulator */
static void channel_multiplier(const cmr_qt *in, const cmr_qt *filt, const cmr_qt *out, int c, int32_t *qm, int32_t *sh)
{
	double s = (double)in->scale[0] * (double)filt->scale[filt->nq > 1 ? c : 0] / (double)out->scale[0];
	int e;
	cmr_tfl_quantize_multiplier(s, qm, &e);
	*sh = e;
}

size_t cmr_tfl_conv_scratch(const cmr_qt *in, const cmr_qt *filt, const cmr_qt *out)
{
	size_t K = (size_t)filt->h * filt->w * in->c, M = (size_t)out->h * out->w, N = (size_t)out->c;
	return M * K + M * N + N * K;
}

#define TFL_CHANNELS_MAX 65536

int cmr_tfl_conv(const cmr_tfl_op *op, const cmr_qt *in, const cmr_qt *filt, const int32_t *bias, cmr_qt *out,
		 int fast, double *scratch, char *err, size_t errlen)
{
	int H = in->h, W = in->w, C = in->c, KH = filt->h, KW = filt->w, OH = out->h, OW = out->w, OC = out->c;
	if (filt->n != OC || filt->c != C || OC > TFL_CHANNELS_MAX) {
		snprintf(err, errlen, "CONV_2D: filter [%d,%d,%d,%d] for input channels %d and output channels %d", filt->n,
			 KH, KW, filt->c, C, OC);
		return -1;
	}
	int ph = pad_before(op->padding, H, OH, KH, op->stride_h, op->dil_h);
	int pw = pad_before(op->padding, W, OW, KW, op->stride_w, op->dil_w);
	int32_t izp = in->zp[0], ozp = out_zp(out), lo, hi;
	cmr_tfl_act_range(op->act, out->type, out->scale[0], ozp, &lo, &hi);
	int32_t *qm = malloc((size_t)OC * 3 * sizeof *qm), *wzp = qm + OC, *sh = wzp + OC;
	if (!qm) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (int oc = 0; oc < OC; oc++) {
		channel_multiplier(in, filt, out, oc, &qm[oc], &sh[oc]);
		wzp[oc] = filt->zp[filt->nq > 1 ? oc : 0];
	}
	size_t K = (size_t)KH * KW * C, M = (size_t)OH * OW;
	if (!fast) { /* the reference: TFLite's loops */
		for (int oy = 0; oy < OH; oy++)
			for (int ox = 0; ox < OW; ox++)
				for (int oc = 0; oc < OC; oc++) {
					int64_t acc = bias ? bias[oc] : 0;
					for (int ky = 0; ky < KH; ky++) {
						int iy = oy * op->stride_h - ph + ky * op->dil_h;
						if (iy < 0 || iy >= H)
							continue;
						for (int kx = 0; kx < KW; kx++) {
							int ix = ox * op->stride_w - pw + kx * op->dil_w;
							if (ix < 0 || ix >= W)
								continue;
							size_t ib = ((size_t)iy * W + ix) * C, fb = (((size_t)oc * KH + ky) * KW + kx) * C;
							for (int c = 0; c < C; c++)
								acc += (ld(in, ib + c) - izp) * (ld(filt, fb + c) - wzp[oc]);
						}
					}
					int32_t v = addzp(mbqm(wrap32(acc), qm[oc], sh[oc]), ozp);
					st(out, ((size_t)oy * OW + ox) * OC + oc, clamp(v, lo, hi));
				}
		free(qm);
		return 0;
	}
	double *A = scratch, *Cm = scratch + M * K, *B = Cm + M * (size_t)OC;
#pragma omp parallel for schedule(static) num_threads(cmr_ops_threads())
	for (int oc = 0; oc < OC; oc++)
		for (size_t k = 0; k < K; k++)
			B[(size_t)oc * K + k] = ld(filt, (size_t)oc * K + k) - wzp[oc];
	/* one block of output rows per thread: im2col, dgemm, requantisation */
	int nblk = cmr_ops_threads();
	if ((size_t)nblk > M)
		nblk = (int)M;
#pragma omp parallel for schedule(static) num_threads(nblk)
	for (int blk = 0; blk < nblk; blk++) {
		size_t r0 = M * (size_t)blk / (size_t)nblk, r1 = M * (size_t)(blk + 1) / (size_t)nblk;
		for (size_t m = r0; m < r1; m++) {
			int oy = (int)(m / (size_t)OW), ox = (int)(m % (size_t)OW);
			double *row = A + m * K;
			for (int ky = 0; ky < KH; ky++) {
				int iy = oy * op->stride_h - ph + ky * op->dil_h;
				for (int kx = 0; kx < KW; kx++) {
					int ix = ox * op->stride_w - pw + kx * op->dil_w;
					double *r = row + ((size_t)ky * KW + kx) * C;
					if (iy < 0 || iy >= H || ix < 0 || ix >= W) {
						memset(r, 0, (size_t)C * sizeof *r);
						continue;
					}
					size_t base = ((size_t)iy * W + ix) * C;
					for (int c = 0; c < C; c++)
						r[c] = ld(in, base + c) - izp;
				}
			}
		}
		if (r1 > r0)
			cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)(r1 - r0), OC, (int)K, 1.0, A + r0 * K,
				    (int)K, B, (int)K, 0.0, Cm + r0 * OC, OC);
		for (size_t m = r0; m < r1; m++)
			for (int oc = 0; oc < OC; oc++) {
				int32_t acc = wrap32((bias ? bias[oc] : 0) + (int64_t)Cm[m * OC + oc]);
				st(out, m * OC + oc, clamp(addzp(mbqm(acc, qm[oc], sh[oc]), ozp), lo, hi));
			}
	}
	free(qm);
	return 0;
}

int cmr_tfl_depthwise(const cmr_tfl_op *op, const cmr_qt *in, const cmr_qt *filt, const int32_t *bias, cmr_qt *out,
		      int fast, char *err, size_t errlen)
{
	int H = in->h, W = in->w, C = in->c, KH = filt->h, KW = filt->w, OH = out->h, OW = out->w, OC = out->c;
	int mult = op->depth_mult;
	if (filt->n != 1 || filt->c != OC || OC != C * mult) {
		snprintf(err, errlen, "DEPTHWISE_CONV_2D: filter [%d,%d,%d,%d] for %d input channels x %d", filt->n, KH, KW,
			 filt->c, C, mult);
		return -1;
	}
	int ph = pad_before(op->padding, H, OH, KH, op->stride_h, op->dil_h);
	int pw = pad_before(op->padding, W, OW, KW, op->stride_w, op->dil_w);
	int32_t izp = in->zp[0], ozp = out_zp(out), lo, hi;
	cmr_tfl_act_range(op->act, out->type, out->scale[0], ozp, &lo, &hi);
	int32_t qm[4096], sh[4096];
	if (OC > 4096) {
		snprintf(err, errlen, "DEPTHWISE_CONV_2D: %d channels, at most 4096", OC);
		return -1;
	}
	for (int oc = 0; oc < OC; oc++)
		channel_multiplier(in, filt, out, oc, &qm[oc], &sh[oc]);
	if (fast && mult == 1) {
		/* the zero-point-offset values as int32 once, then per output pixel one pass over the
		 * channels per tap (contiguous in input and filter: vectorised). Unsigned sums wrap as
		 * the loops' int64 sums wrapped to int32 do: the same values, bit for bit */
		size_t nx = (size_t)H * W * C, nw = (size_t)KH * KW * OC;
		int32_t *xi = malloc((nx + nw) * sizeof *xi), *wf = xi + nx;
		if (!xi) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
#pragma omp parallel for schedule(static) num_threads(cmr_ops_threads())
		for (size_t i = 0; i < nx; i++)
			xi[i] = ld(in, i) - izp;
		for (size_t i = 0; i < nw; i++)
			wf[i] = ld(filt, i) - filt->zp[filt->nq > 1 ? (int)(i % (size_t)OC) : 0];
#pragma omp parallel for schedule(static) num_threads(cmr_ops_threads())
		for (int oy = 0; oy < OH; oy++) {
			uint32_t acc[4096];
			for (int ox = 0; ox < OW; ox++) {
				for (int oc = 0; oc < OC; oc++)
					acc[oc] = bias ? (uint32_t)bias[oc] : 0;
				for (int ky = 0; ky < KH; ky++) {
					int iy = oy * op->stride_h - ph + ky * op->dil_h;
					if (iy < 0 || iy >= H)
						continue;
					for (int kx = 0; kx < KW; kx++) {
						int ix = ox * op->stride_w - pw + kx * op->dil_w;
						if (ix < 0 || ix >= W)
							continue;
						const int32_t *x = xi + ((size_t)iy * W + ix) * C, *w = wf + ((size_t)ky * KW + kx) * OC;
						for (int oc = 0; oc < OC; oc++)
							acc[oc] += (uint32_t)x[oc] * (uint32_t)w[oc];
					}
				}
				for (int oc = 0; oc < OC; oc++) {
					int32_t v = addzp(mbqm((int32_t)acc[oc], qm[oc], sh[oc]), ozp);
					st(out, ((size_t)oy * OW + ox) * OC + oc, clamp(v, lo, hi));
				}
			}
		}
		free(xi);
		return 0;
	}
	for (int oy = 0; oy < OH; oy++)
		for (int ox = 0; ox < OW; ox++)
			for (int oc = 0; oc < OC; oc++) {
				int ic = oc / mult;
				int32_t wzp = filt->zp[filt->nq > 1 ? oc : 0];
				int64_t acc = bias ? bias[oc] : 0;
				for (int ky = 0; ky < KH; ky++) {
					int iy = oy * op->stride_h - ph + ky * op->dil_h;
					if (iy < 0 || iy >= H)
						continue;
					for (int kx = 0; kx < KW; kx++) {
						int ix = ox * op->stride_w - pw + kx * op->dil_w;
						if (ix < 0 || ix >= W)
							continue;
						acc += (ld(in, ((size_t)iy * W + ix) * C + ic) - izp) *
						       (ld(filt, ((size_t)ky * KW + kx) * OC + oc) - wzp);
					}
				}
				int32_t v = addzp(mbqm(wrap32(acc), qm[oc], sh[oc]), ozp);
				st(out, ((size_t)oy * OW + ox) * OC + oc, clamp(v, lo, hi));
			}
	return 0;
}

int cmr_tfl_add(const cmr_tfl_op *op, const cmr_qt *a, const cmr_qt *b, cmr_qt *out, char *err, size_t errlen)
{
	size_t n = (size_t)out->n * out->h * out->w * out->c;
	if ((size_t)a->n * a->h * a->w * a->c != n || (size_t)b->n * b->h * b->w * b->c != n) {
		snprintf(err, errlen, "ADD: operands of different shapes (broadcasting is not supported)");
		return -1;
	}
	const int left = 20;
	double twice = 2.0 * (double)(a->scale[0] > b->scale[0] ? a->scale[0] : b->scale[0]);
	int32_t m1, m2, mo;
	int s1, s2, so;
	cmr_tfl_quantize_multiplier((double)a->scale[0] / twice, &m1, &s1);
	cmr_tfl_quantize_multiplier((double)b->scale[0] / twice, &m2, &s2);
	cmr_tfl_quantize_multiplier(twice / ((double)(1 << left) * (double)out->scale[0]), &mo, &so);
	int32_t lo, hi, ozp = out_zp(out);
	cmr_tfl_act_range(op->act, out->type, out->scale[0], ozp, &lo, &hi);
#pragma omp parallel for schedule(static) num_threads(cmr_ops_threads())
	for (size_t i = 0; i < n; i++) {
		int32_t x = (ld(a, i) - a->zp[0]) * (1 << left), y = (ld(b, i) - b->zp[0]) * (1 << left);
		int32_t sx = mbqm(x, m1, s1), sy = mbqm(y, m2, s2);
		int32_t v = addzp(mbqm(wrap32((int64_t)sx + sy), mo, so), ozp);
		st(out, i, clamp(v, lo, hi));
	}
	return 0;
}

static int same_quant(const cmr_qt *a, const cmr_qt *b)
{
	return a->type == b->type && a->scale[0] == b->scale[0] && a->zp[0] == b->zp[0];
}

int cmr_tfl_avgpool(const cmr_tfl_op *op, const cmr_qt *in, cmr_qt *out, char *err, size_t errlen)
{
	if (!same_quant(in, out)) {
		snprintf(err, errlen, "AVERAGE_POOL_2D: the input and output are quantised differently");
		return -1;
	}
	int H = in->h, W = in->w, C = in->c, OH = out->h, OW = out->w, FH = op->filter_h, FW = op->filter_w;
	int ph = pad_before(op->padding, H, OH, FH, op->stride_h, 1), pw = pad_before(op->padding, W, OW, FW, op->stride_w, 1);
	int32_t lo, hi;
	cmr_tfl_act_range(op->act, out->type, out->scale[0], out_zp(out), &lo, &hi);
	for (int oy = 0; oy < OH; oy++)
		for (int ox = 0; ox < OW; ox++)
			for (int c = 0; c < C; c++) {
				int64_t acc = 0, count = 0;
				for (int fy = 0; fy < FH; fy++) {
					int iy = oy * op->stride_h - ph + fy;
					if (iy < 0 || iy >= H)
						continue;
					for (int fx = 0; fx < FW; fx++) {
						int ix = ox * op->stride_w - pw + fx;
						if (ix < 0 || ix >= W)
							continue;
						acc += ld(in, ((size_t)iy * W + ix) * C + c);
						count++;
					}
				}
				if (!count) {
					snprintf(err, errlen, "AVERAGE_POOL_2D: a window holds no input");
					return -1;
				}
				acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
				st(out, ((size_t)oy * OW + ox) * C + c, clamp((int32_t)acc, lo, hi));
			}
	return 0;
}

int cmr_tfl_mean_hw(const cmr_qt *in, cmr_qt *out, char *err, size_t errlen)
{
	int H = in->h, W = in->w, C = in->c;
	int64_t num = (int64_t)H * W;
	if (out->c != C || (size_t)out->n * out->h * out->w != 1) {
		snprintf(err, errlen, "MEAN: output of %d channels for an input of %d", out->c, C);
		return -1;
	}
	int32_t qm;
	int sh;
	cmr_tfl_quantize_multiplier((double)in->scale[0] / (double)out->scale[0], &qm, &sh);
	for (int c = 0; c < C; c++) {
		int64_t sum = 0;
		for (int64_t i = 0; i < num; i++)
			sum += ld(in, (size_t)i * C + c) - in->zp[0];
		int64_t acc = mbqm(wrap32(sum), qm, sh);
		acc = acc > 0 ? (acc + num / 2) / num : (acc - num / 2) / num;
		st(out, (size_t)c, clamp(addzp((int32_t)acc, out_zp(out)), qmin(out->type), qmax(out->type)));
	}
	return 0;
}

int cmr_tfl_softmax(float beta, const cmr_qt *in, cmr_qt *out, char *err, size_t errlen)
{
	int rows = in->n * in->h * in->w, C = in->c;
	if (rows != out->n * out->h * out->w || C != out->c || C > 65536) {
		snprintf(err, errlen, "SOFTMAX: output shape differs from the input's");
		return -1;
	}
	float e[65536];
	for (int r = 0; r < rows; r++) {
		int32_t mx = qmin(in->type);
		for (int c = 0; c < C; c++) {
			int32_t v = ld(in, (size_t)r * C + c);
			mx = v > mx ? v : mx;
		}
		float sum = 0;
		for (int c = 0; c < C; c++) {
			e[c] = expf(beta * in->scale[0] * (float)(ld(in, (size_t)r * C + c) - mx));
			sum += e[c];
		}
		for (int c = 0; c < C; c++) {
			int32_t v = round_quant(e[c] / sum, out->scale[0], out_zp(out));
			st(out, (size_t)r * C + c, clamp(v, qmin(out->type), qmax(out->type)));
		}
	}
	return 0;
}

int cmr_tfl_requantize(const cmr_qt *in, cmr_qt *out, char *err, size_t errlen)
{
	(void)err, (void)errlen;
	size_t n = (size_t)in->n * in->h * in->w * in->c;
	int32_t qm;
	int sh;
	cmr_tfl_quantize_multiplier((double)in->scale[0] / (double)out->scale[0], &qm, &sh);
#pragma omp parallel for schedule(static) num_threads(cmr_ops_threads())
	for (size_t i = 0; i < n; i++) {
		int32_t v = addzp(mbqm(ld(in, i) - in->zp[0], qm, sh), out_zp(out));
		st(out, i, clamp(v, qmin(out->type), qmax(out->type)));
	}
	return 0;
}

void cmr_tfl_quantize_f32(const float *x, size_t n, cmr_qt *out)
{
	for (size_t i = 0; i < n; i++)
		st(out, i, clamp(round_quant(x[i], out->scale[0], out_zp(out)), qmin(out->type), qmax(out->type)));
}

void cmr_tfl_dequantize(const cmr_qt *in, size_t n, float *out)
{
	for (size_t i = 0; i < n; i++)
		out[i] = in->scale[0] * (float)(ld(in, i) - in->zp[0]);
}
