/* backend/host.c - what the CPU backends share: host memory, the glue operations between the
 * model's layers (plain loops: the same arithmetic as the model did inline before they were
 * backend operations), and the registry of backends. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"

void *cmr_host_alloc(size_t bytes) { return malloc(bytes ? bytes : 1); }
void cmr_host_free(void *p) { free(p); }
void cmr_host_memcpy(void *dst, const void *src, size_t bytes)
{
	if (dst != src && bytes)
		memcpy(dst, src, bytes);
}
void cmr_host_sync(void) {}
void cmr_host_zero(float *x, size_t n) { memset(x, 0, n * sizeof *x); }
void cmr_host_copy(float *dst, const float *src, size_t n) { cmr_host_memcpy(dst, src, n * sizeof *dst); }

void cmr_host_scale(float *x, size_t n, float a)
{
	for (size_t i = 0; i < n; i++)
		x[i] *= a;
}

void cmr_host_add(float *y, const float *a, const float *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		y[i] = a[i] + b[i];
}

void cmr_host_gather(float *dst, const float *src, const int *idx, int n, int D)
{
	for (int i = 0; i < n; i++)
		memcpy(dst + (size_t)i * D, src + (size_t)idx[i] * D, (size_t)D * sizeof *dst);
}

void cmr_host_gather_add(float *dst, const float *tab, const int *idx, int n, int D)
{
	for (int i = 0; i < n; i++)
		if (idx[i] >= 0)
			for (int d = 0; d < D; d++)
				dst[(size_t)i * D + d] += tab[(size_t)idx[i] * D + d];
}

void cmr_host_scatter_add(float *dst, const float *src, const int *idx, int n, int D)
{
	for (int i = 0; i < n; i++)
		if (idx[i] >= 0)
			for (int d = 0; d < D; d++)
				dst[(size_t)idx[i] * D + d] += src[(size_t)i * D + d];
}

void cmr_host_set_rows(float *dst, const float *tab, const int *idx, int n, int D)
{
	for (int i = 0; i < n; i++)
		if (idx[i] >= 0) {
			if (tab)
				memcpy(dst + (size_t)i * D, tab + (size_t)idx[i] * D, (size_t)D * sizeof *dst);
			else
				memset(dst + (size_t)i * D, 0, (size_t)D * sizeof *dst);
		}
}

void cmr_host_patchify(float *out, const unsigned char *const *pixels, int B, int S, int P, const float *mean,
		       const float *std)
{
	int g = S / P, np = g * g, K = 3 * P * P;
	for (int b = 0; b < B; b++)
		for (int py = 0; py < g; py++)
			for (int px = 0; px < g; px++) {
				float *row = out + ((size_t)b * np + (size_t)py * g + px) * K;
				for (int ch = 0; ch < 3; ch++)
					for (int y = 0; y < P; y++)
						for (int x = 0; x < P; x++) {
							unsigned char v = pixels[b][((size_t)(py * P + y) * S + (px * P + x)) * 3 + ch];
							row[(ch * P + y) * P + x] = ((float)v / 255.0f - mean[ch]) / std[ch];
						}
			}
}

double cmr_host_sumsq(const float *x, size_t n)
{
	double s = 0;
	for (size_t i = 0; i < n; i++)
		s += (double)x[i] * x[i];
	return s;
}

const cmr_ops *const cmr_backends[] = {&cmr_ops_ref, &cmr_ops_blas,
#ifdef CMR_CUDA
				       &cmr_ops_cuda,
#endif
				       NULL};

int cmr_ops_open(const cmr_ops *ops, int device, int precision, char *err, size_t errlen)
{
	if (ops->open)
		return ops->open(device, precision, err, errlen);
	if (device != 0) {
		snprintf(err, errlen, "--device %d: the %s backend runs on the host (--device is for cuda)", device,
			 ops->name);
		return -1;
	}
	if (precision != CMR_PREC_FP32) {
		snprintf(err, errlen, "--precision %s: the %s backend computes in fp32 (tf32 and bf16 are for cuda)",
			 precision == CMR_PREC_TF32 ? "tf32" : "bf16", ops->name);
		return -1;
	}
	return 0;
}

const cmr_ops *cmr_ops_find(const char *name)
{
	for (int i = 0; cmr_backends[i]; i++)
		if (strcmp(cmr_backends[i]->name, name) == 0)
			return cmr_backends[i];
	if (strcmp(name, cmr_ops_devsim.name) == 0) /* for tests, not listed */
		return &cmr_ops_devsim;
	return NULL;
}

const char *cmr_ops_names(void)
{
	static char buf[256];
	if (!buf[0])
		for (int i = 0; cmr_backends[i]; i++) {
			size_t l = strlen(buf);
			snprintf(buf + l, sizeof buf - l, "%s%s", i ? ", " : "", cmr_backends[i]->name);
		}
	return buf;
}
