/* index.c - flat and IVF indexes: k-means (sgemm), SQ8 and PQ codes, the file format of
 * formats/cmr-index.md (memory-mapped, XXH3 per section, zstd keys), threaded top-k search
 * (sgemm blocks for f32, lookup tables for PQ), exact re-ranking. */
#include "util.h"
#include "index.h"

#include "atomic.h"
#include "backend/backend.h"
#include "format/stream.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cblas.h>
#include <xxhash.h>
#include <zstd.h>

#define MAGIC "\x89" "CMRIDX\n"
#define VERSION 1    /* what a file without PQ codes is written as */
#define VERSION_PQ 2 /* version 2 adds PQ codes (code 3), their codebooks and exact vectors */
#define HEADER_LEN 128
#define SECTION_LEN 32
enum { S_CENTROIDS = 1, S_LIST_OFF, S_VECTORS, S_SQ, S_ORD, S_KEYS, S_PROV, S_PQ, S_EXACT, S_PQ_SCALE, S_COUNT };

typedef struct {
	void *map;
	size_t size;
	/* owned arrays (built or merged indexes) */
	float *centroids, *sq, *pq, *pq_scale, *exact;
	uint64_t *list_off, *ord;
	void *vectors;   /* cmr_big_realloc'd, of vectors_bytes */
	size_t vectors_bytes;
	char *keyblob;
} priv_t;

#define fail cmr_errf

int cmr_vecs_push(cmr_vecs *vs, const float *v, uint32_t dim, const char *key)
{
	if (vs->n == 0 && vs->cap == 0)
		vs->dim = dim;
	if (dim != vs->dim)
		return -1;
	if (vs->n == vs->cap) {
		uint64_t cap = vs->cap ? 2 * vs->cap : 4096;
		float *nv = cmr_big_realloc(vs->v, vs->cap * dim * sizeof *nv, cap * dim * sizeof *nv);
		if (!nv)
			return -1;
		vs->v = nv;
		char **nk = realloc(vs->keys, cap * sizeof *nk);
		if (!nk)
			return -1;
		vs->keys = nk;
		vs->cap = cap;
	}
	memcpy(vs->v + vs->n * dim, v, dim * sizeof *v);
	if (!(vs->keys[vs->n] = strdup(key)))
		return -1;
	vs->n++;
	return 0;
}

void cmr_vecs_free(cmr_vecs *vs)
{
	for (uint64_t i = 0; i < vs->n; i++)
		free(vs->keys[i]);
	free(vs->keys);
	cmr_big_free(vs->v, vs->cap * vs->dim * sizeof *vs->v);
	memset(vs, 0, sizeof *vs);
}

static cmr_index *new_index(void)
{
	cmr_index *ix = calloc(1, sizeof *ix);
	if (ix && !(ix->priv = calloc(1, sizeof(priv_t)))) {
		free(ix);
		return NULL;
	}
	return ix;
}

void cmr_index_free(cmr_index *ix)
{
	if (!ix)
		return;
	priv_t *p = ix->priv;
	if (p) {
		if (p->map && p->map != MAP_FAILED)
			munmap(p->map, p->size);
		free(p->centroids);
		free(p->sq);
		free(p->pq);
		free(p->pq_scale);
		free(p->exact);
		free(p->list_off);
		free(p->ord);
		cmr_big_free(p->vectors, p->vectors_bytes);
		free(p->keyblob);
		free(p);
	}
	free(ix->keys);
	free(ix->provenance);
	free(ix);
}

/* keys from a blob of n NUL-terminated strings */
static int keys_from_blob(cmr_index *ix, char *blob, size_t len)
{
	ix->keys = malloc((ix->n + 1) * sizeof *ix->keys);
	if (!ix->keys)
		return -1;
	size_t at = 0;
	for (uint64_t i = 0; i < ix->n; i++) {
		char *nul = at < len ? memchr(blob + at, 0, len - at) : NULL;
		if (!nul)
			return -1;
		ix->keys[i] = blob + at;
		at = (size_t)(nul - blob) + 1;
	}
	return at == len ? 0 : -1;
}

static int set_keys(cmr_index *ix, char *const *keys)
{
	priv_t *p = ix->priv;
	size_t len = 0;
	for (uint64_t i = 0; i < ix->n; i++)
		len += strlen(keys[i]) + 1;
	if (!(p->keyblob = malloc(len + 1)))
		return -1;
	size_t at = 0;
	for (uint64_t i = 0; i < ix->n; i++) {
		size_t l = strlen(keys[i]) + 1;
		memcpy(p->keyblob + at, keys[i], l);
		at += l;
	}
	return keys_from_blob(ix, p->keyblob, len);
}

/* bytes of one stored row */
static size_t row_bytes(const cmr_index *ix)
{
	return ix->code == CMR_CODE_F32 ? (size_t)ix->dim * 4 : ix->code == CMR_CODE_SQ8 ? ix->dim : ix->pq_m;
}

static uint64_t quantizer_hash(const cmr_index *ix)
{
	if (ix->kind == CMR_INDEX_FLAT && ix->code == CMR_CODE_F32)
		return 0;
	XXH3_state_t *s = XXH3_createState();
	XXH3_64bits_reset(s);
	uint32_t h[4] = {ix->kind, ix->code, ix->dim, ix->nlist};
	XXH3_64bits_update(s, h, sizeof h);
	if (ix->centroids)
		XXH3_64bits_update(s, ix->centroids, (size_t)ix->nlist * ix->dim * sizeof(float));
	if (ix->sq)
		XXH3_64bits_update(s, ix->sq, 2 * (size_t)ix->dim * sizeof(float));
	if (ix->pq) {
		XXH3_64bits_update(s, &ix->pq_m, sizeof ix->pq_m);
		XXH3_64bits_update(s, ix->pq, (size_t)CMR_PQ_K * ix->dim * sizeof(float));
	}
	if (ix->pq_scale)
		XXH3_64bits_update(s, ix->pq_scale, (size_t)ix->nlist * sizeof(float));
	uint64_t v = XXH3_64bits_digest(s);
	XXH3_freeState(s);
	return v;
}

void cmr_index_row(const cmr_index *ix, uint64_t r, float *out)
{
	if (ix->code == CMR_CODE_F32) {
		memcpy(out, (const float *)ix->vectors + r * ix->dim, ix->dim * sizeof *out);
	} else if (ix->code == CMR_CODE_PQ) {
		/* the list's centroid (the row's list by bisection) plus the decoded residual */
		uint32_t M = ix->pq_m, ds = ix->dim / M;
		const uint8_t *c = (const uint8_t *)ix->vectors + r * M;
		for (uint32_t m = 0; m < M; m++)
			memcpy(out + (size_t)m * ds, ix->pq + ((size_t)m * CMR_PQ_K + c[m]) * ds, ds * sizeof *out);
		if (ix->list_off) {
			uint32_t lo = 0, hi = ix->nlist; /* the l with off[l] <= r < off[l + 1] */
			while (hi - lo > 1) {
				uint32_t mid = lo + (hi - lo) / 2;
				if (ix->list_off[mid] <= r)
					lo = mid;
				else
					hi = mid;
			}
			for (uint32_t d = 0; d < ix->dim; d++)
				out[d] += ix->pq_scale[lo] * ix->centroids[(size_t)lo * ix->dim + d];
		}
	} else {
		const uint8_t *c = (const uint8_t *)ix->vectors + r * ix->dim;
		for (uint32_t d = 0; d < ix->dim; d++)
			out[d] = ix->sq[d] + (float)c[d] * ix->sq[ix->dim + d];
	}
}

/* ---- building ---- */
static uint64_t rng_state;
static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* best[i] = argmax_c x_i . C_c over rows x [n, d], with the score in bestv */
static int assign(const cmr_ops *ops, const float *x, uint64_t n, const float *C, uint32_t k, uint32_t d,
		  uint32_t *best, float *bestv)
{
	const uint64_t chunk = 4096;
	float *s = malloc(chunk * k * sizeof *s);
	if (!s)
		return -1;
	for (uint64_t i0 = 0; i0 < n; i0 += chunk) {
		uint64_t m = n - i0 < chunk ? n - i0 : chunk;
		ops->matmul_nt(x + i0 * d, C, s, (int)m, (int)k, (int)d);
		/* the first best centroid of each row: its score by a vectorised max, then its index
		 * (rows shared out over the threads) */
#pragma omp parallel for schedule(static) if (m * k >= 65536)
		for (uint64_t i = 0; i < m; i++) {
			const float *r = s + i * k;
			float mx = r[0];
#pragma omp simd reduction(max : mx)
			for (uint32_t c = 1; c < k; c++)
				mx = r[c] > mx ? r[c] : mx;
			uint32_t b = 0;
			while (r[b] != mx && b + 1 < k)
				b++;
			best[i0 + i] = b;
			if (bestv)
				bestv[i0 + i] = r[b];
		}
	}
	free(s);
	return 0;
}

/* spherical k-means on a sample of the rows */
static float *kmeans(const cmr_vecs *vs, const cmr_build_opts *o, char *err, size_t errlen)
{
	uint32_t k = o->nlist, d = vs->dim;
	uint64_t ns = o->sample ? o->sample : 256ull * k;
	if (ns > vs->n)
		ns = vs->n;
	if (vs->n < k) {
		uint64_t sug = (uint64_t)(4 * sqrt((double)vs->n));
		sug = sug < 1 ? 1 : sug > vs->n ? vs->n : sug;
		fail(err, errlen, "%llu vectors cannot train %u lists: fewer lists (about 4 sqrt(n): --ivf %llu), or "
				  "a flat index (no --ivf)", (unsigned long long)vs->n, k, (unsigned long long)sug);
		return NULL;
	}
	rng_state = o->seed * 0x9e3779b97f4a7c15ULL + 0x1234567;
	uint64_t *perm = malloc(vs->n * sizeof *perm);
	float *x = malloc(ns * d * sizeof *x), *C = malloc((size_t)k * d * sizeof *C), *sum = malloc((size_t)k * d * sizeof *sum);
	uint32_t *a = malloc(ns * sizeof *a), *cnt = malloc(k * sizeof *cnt);
	float *av = malloc(ns * sizeof *av);
	if (!perm || !x || !C || !sum || !a || !cnt || !av) {
		fail(err, errlen, "out of memory for k-means");
		goto out;
	}
	for (uint64_t i = 0; i < vs->n; i++)
		perm[i] = i;
	for (uint64_t i = 0; i < ns; i++) { /* partial Fisher-Yates: a seeded sample */
		uint64_t j = i + rnd() % (vs->n - i), t = perm[i];
		perm[i] = perm[j];
		perm[j] = t;
		memcpy(x + i * d, vs->v + perm[i] * d, d * sizeof *x);
	}
	for (uint32_t c = 0; c < k; c++) /* the first k of the sample */
		memcpy(C + (size_t)c * d, x + (size_t)c * d, d * sizeof *C);
	int iters = o->iters ? o->iters : 20;
	for (int it = 0; it < iters; it++) {
		if (o->progress)
			o->progress(o->progress_ctx, (uint64_t)it, (uint64_t)iters);
		if (assign(o->ops ? o->ops : &cmr_ops_blas, x, ns, C, k, d, a, av) < 0) {
			fail(err, errlen, "out of memory for k-means");
			goto out;
		}
		memset(sum, 0, (size_t)k * d * sizeof *sum);
		memset(cnt, 0, k * sizeof *cnt);
		for (uint64_t i = 0; i < ns; i++) {
			cnt[a[i]]++;
			for (uint32_t j = 0; j < d; j++)
				sum[(size_t)a[i] * d + j] += x[i * d + j];
		}
		for (uint32_t c = 0; c < k; c++) {
			if (cnt[c] == 0) { /* empty: restart at the sample point worst served */
				uint64_t w = 0;
				for (uint64_t i = 1; i < ns; i++)
					if (av[i] < av[w])
						w = i;
				memcpy(sum + (size_t)c * d, x + w * d, d * sizeof *sum);
				av[w] = INFINITY;
			}
			cmr_unit_rows(sum + (size_t)c * d, 1, (int)d);
		}
		memcpy(C, sum, (size_t)k * d * sizeof *C);
	}
	free(perm), free(x), free(sum), free(a), free(cnt), free(av);
	return C;
out:
	free(perm), free(x), free(C), free(sum), free(a), free(cnt), free(av);
	return NULL;
}

float *cmr_kmeans(const cmr_vecs *vs, const cmr_build_opts *o, char *err, size_t errlen)
{
	return kmeans(vs, o, err, errlen);
}

/* ---- product quantisation ---- */

/* codes [n, M] of the rows x [n, d] (lda d): for each subspace m the nearest of its 256
 * centroids C [M, 256, ds] by L2, argmax x.c - |c|^2 / 2 through sgemm; the first on ties */
static int pq_encode(const float *x, uint64_t n, uint32_t d, uint32_t M, const float *C, uint8_t *codes)
{
	uint32_t ds = d / M;
	const uint64_t chunk = 1024;
	float *sc = malloc(chunk * CMR_PQ_K * sizeof *sc), *half = malloc((size_t)M * CMR_PQ_K * sizeof *half);
	if (!sc || !half) {
		free(sc), free(half);
		return -1;
	}
	for (uint32_t m = 0; m < M; m++)
		for (uint32_t c = 0; c < CMR_PQ_K; c++) {
			const float *v = C + ((size_t)m * CMR_PQ_K + c) * ds;
			float nn = 0;
			for (uint32_t j = 0; j < ds; j++)
				nn += v[j] * v[j];
			half[m * CMR_PQ_K + c] = 0.5f * nn;
		}
	for (uint64_t i0 = 0; i0 < n; i0 += chunk) {
		uint64_t rows = n - i0 < chunk ? n - i0 : chunk;
		for (uint32_t m = 0; m < M; m++) {
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, CMR_PQ_K, (int)ds, 1.0f,
				    x + i0 * d + (size_t)m * ds, (int)d, C + (size_t)m * CMR_PQ_K * ds, (int)ds, 0.0f, sc,
				    CMR_PQ_K);
			const float *h = half + m * CMR_PQ_K;
			for (uint64_t i = 0; i < rows; i++) {
				const float *r = sc + i * CMR_PQ_K;
				uint32_t b = 0;
				float bv = r[0] - h[0];
				for (uint32_t c = 1; c < CMR_PQ_K; c++)
					if (r[c] - h[c] > bv)
						bv = r[c] - h[c], b = c;
				codes[(i0 + i) * M + m] = (uint8_t)b;
			}
		}
	}
	free(sc), free(half);
	return 0;
}

/* The sub-quantisers: k-means (L2, 256 centroids) in each of the M subspaces of the rows
 * x [n, d], seeded: the centroids start at distinct sample rows; an emptied centroid moves
 * to the row its subspace serves worst. [M, 256, d / M], malloc'd, or NULL. */
static float *pq_train(const float *x, uint64_t n, uint32_t d, uint32_t M, uint64_t seed, int iters)
{
	uint32_t ds = d / M, K = CMR_PQ_K;
	float *C = malloc((size_t)M * K * ds * sizeof *C), *sum = malloc((size_t)K * ds * sizeof *sum);
	float *best = malloc(n * sizeof *best);
	uint8_t *a = malloc(n * M);
	uint32_t *cnt = malloc(K * sizeof *cnt);
	uint64_t *perm = malloc(n * sizeof *perm);
	if (!C || !sum || !best || !a || !cnt || !perm)
		goto bad;
	rng_state = seed * 0x9e3779b97f4a7c15ULL + 0x7a3c5;
	for (uint64_t i = 0; i < n; i++)
		perm[i] = i;
	for (uint32_t c = 0; c < K; c++) { /* K distinct rows, the same in every subspace */
		uint64_t j = c + rnd() % (n - c), t = perm[c];
		perm[c] = perm[j], perm[j] = t;
	}
	for (uint32_t m = 0; m < M; m++)
		for (uint32_t c = 0; c < K; c++)
			memcpy(C + ((size_t)m * K + c) * ds, x + perm[c] * d + (size_t)m * ds, ds * sizeof *C);
	for (int it = 0; it < iters; it++) {
		if (pq_encode(x, n, d, M, C, a) < 0)
			goto bad;
		for (uint32_t m = 0; m < M; m++) {
			float *Cm = C + (size_t)m * K * ds;
			memset(sum, 0, (size_t)K * ds * sizeof *sum);
			memset(cnt, 0, K * sizeof *cnt);
			for (uint64_t i = 0; i < n; i++) {
				uint32_t c = a[i * M + m];
				const float *v = x + i * d + (size_t)m * ds;
				float *t = sum + (size_t)c * ds, dd = 0;
				cnt[c]++;
				for (uint32_t j = 0; j < ds; j++) {
					t[j] += v[j];
					float e = v[j] - Cm[(size_t)c * ds + j];
					dd += e * e;
				}
				best[i] = dd;
			}
			for (uint32_t c = 0; c < K; c++) {
				if (cnt[c]) {
					for (uint32_t j = 0; j < ds; j++)
						Cm[(size_t)c * ds + j] = sum[(size_t)c * ds + j] / (float)cnt[c];
					continue;
				}
				uint64_t w = 0; /* empty: the row served worst */
				for (uint64_t i = 1; i < n; i++)
					if (best[i] > best[w])
						w = i;
				memcpy(Cm + (size_t)c * ds, x + w * d + (size_t)m * ds, ds * sizeof *C);
				best[w] = 0;
			}
		}
	}
	free(sum), free(best), free(a), free(cnt), free(perm);
	return C;
bad:
	free(C), free(sum), free(best), free(a), free(cnt), free(perm);
	return NULL;
}

/* residuals of the rows rows[0..n) of vs from their lists' centroids (IVF), or the rows */
static void residuals(const cmr_index *ix, const cmr_vecs *vs, const uint32_t *list, const uint64_t *rows, uint64_t n,
		      float *out)
{
	uint32_t d = ix->dim;
	for (uint64_t i = 0; i < n; i++) {
		const float *v = vs->v + rows[i] * d;
		float *t = out + i * d;
		if (ix->kind == CMR_INDEX_IVF) {
			const float *c = ix->centroids + (size_t)list[rows[i]] * d;
			float sc = ix->pq_scale[list[rows[i]]];
			for (uint32_t j = 0; j < d; j++)
				t[j] = v[j] - sc * c[j];
		} else {
			memcpy(t, v, d * sizeof *t);
		}
	}
}

/* PQ: the sub-quantisers trained on a sample's residuals (or the quantiser's taken), then
 * every vector's residual encoded into its row */
static int pq_build(cmr_index *ix, const cmr_vecs *vs, const cmr_build_opts *o, const uint32_t *list,
		    const uint64_t *rowof, char *err, size_t errlen)
{
	priv_t *p = ix->priv;
	uint32_t d = ix->dim, M = ix->pq_m;
	if (!(p->pq = malloc((size_t)CMR_PQ_K * d * sizeof(float))))
		return fail(err, errlen, "out of memory");
	ix->pq = p->pq;
	const uint64_t chunk = 4096;
	uint64_t ns = o->quantizer ? 0 : o->sample ? o->sample : 65536;
	ns = ns > vs->n ? vs->n : ns;
	uint64_t nb = ns > chunk ? ns : chunk;
	uint64_t *rows = malloc(nb * sizeof *rows);
	float *x = malloc(nb * d * sizeof *x);
	uint8_t *codes = malloc(chunk * M);
	int rc = -1;
	if (!rows || !x || !codes) {
		fail(err, errlen, "out of memory");
		goto out;
	}
	if (ix->kind == CMR_INDEX_IVF) {
		if (!(p->pq_scale = malloc((size_t)ix->nlist * sizeof(float)))) {
			fail(err, errlen, "out of memory");
			goto out;
		}
		ix->pq_scale = p->pq_scale;
	}
	if (o->quantizer) {
		memcpy(p->pq, o->quantizer->pq, (size_t)CMR_PQ_K * d * sizeof(float));
		if (p->pq_scale)
			memcpy(p->pq_scale, o->quantizer->pq_scale, (size_t)ix->nlist * sizeof(float));
	} else {
		if (ns < CMR_PQ_K) {
			fail(err, errlen, "%llu vectors cannot train PQ's 256 centroids per sub-quantiser: index at least 256, "
				 "or train a quantizer on more (--train-only) and build with --quantizer",
			     (unsigned long long)vs->n);
			goto out;
		}
		uint64_t *perm = malloc(vs->n * sizeof *perm);
		if (!perm) {
			fail(err, errlen, "out of memory");
			goto out;
		}
		rng_state = o->seed * 0x9e3779b97f4a7c15ULL + 0x51ed;
		for (uint64_t i = 0; i < vs->n; i++)
			perm[i] = i;
		for (uint64_t i = 0; i < ns; i++) { /* a seeded sample */
			uint64_t j = i + rnd() % (vs->n - i), t = perm[i];
			perm[i] = perm[j], perm[j] = t;
		}
		memcpy(rows, perm, ns * sizeof *rows);
		free(perm);
		if (p->pq_scale) { /* each list's mean cosine over the sample (1 for a list it misses) */
			double *sum = calloc((size_t)ix->nlist, sizeof *sum);
			uint64_t *cnt = calloc((size_t)ix->nlist, sizeof *cnt);
			if (!sum || !cnt) {
				free(sum), free(cnt);
				fail(err, errlen, "out of memory");
				goto out;
			}
			for (uint64_t i = 0; i < ns; i++) {
				uint32_t l = list[rows[i]];
				sum[l] += cblas_sdot((int)d, vs->v + rows[i] * d, 1, ix->centroids + (size_t)l * d, 1);
				cnt[l]++;
			}
			for (uint32_t l = 0; l < ix->nlist; l++)
				p->pq_scale[l] = cnt[l] ? (float)(sum[l] / (double)cnt[l]) : 1.0f;
			free(sum), free(cnt);
		}
		residuals(ix, vs, list, rows, ns, x);
		float *C = pq_train(x, ns, d, M, o->seed, o->iters ? o->iters : 25);
		if (!C) {
			fail(err, errlen, "out of memory training the sub-quantisers");
			goto out;
		}
		memcpy(p->pq, C, (size_t)CMR_PQ_K * d * sizeof(float));
		free(C);
	}
	for (uint64_t i0 = 0; i0 < vs->n; i0 += chunk) {
		uint64_t m = vs->n - i0 < chunk ? vs->n - i0 : chunk;
		for (uint64_t i = 0; i < m; i++)
			rows[i] = i0 + i;
		residuals(ix, vs, list, rows, m, x);
		if (pq_encode(x, m, d, M, p->pq, codes) < 0) {
			fail(err, errlen, "out of memory");
			goto out;
		}
		for (uint64_t i = 0; i < m; i++)
			memcpy((uint8_t *)p->vectors + rowof[i0 + i] * M, codes + i * M, M);
	}
	rc = 0;
out:
	free(rows), free(x), free(codes);
	return rc;
}

/* rows [n, width bytes] moved in place so that row i lands at rowof[i], following each
 * cycle once (a row's width of scratch, a bit per row) */
static int permute_rows(char *rows, uint64_t n, size_t width, const uint64_t *rowof)
{
	uint64_t *seen = calloc(n / 64 + 1, sizeof *seen);
	char *tmp = malloc(width), *tmp2 = malloc(width);
	if (!seen || !tmp || !tmp2) {
		free(seen), free(tmp), free(tmp2);
		return -1;
	}
	for (uint64_t i = 0; i < n; i++) {
		if (seen[i / 64] >> (i % 64) & 1 || rowof[i] == i)
			continue;
		memcpy(tmp, rows + i * width, width); /* carried along the cycle from i */
		uint64_t at = i;
		do {
			uint64_t to = rowof[at];
			memcpy(tmp2, rows + to * width, width);
			memcpy(rows + to * width, tmp, width);
			memcpy(tmp, tmp2, width);
			seen[at / 64] |= (uint64_t)1 << (at % 64);
			at = to;
		} while (at != i);
	}
	free(seen), free(tmp), free(tmp2);
	return 0;
}

static cmr_index *build(const cmr_vecs *vs, cmr_vecs *take, const cmr_build_opts *o, const char *provenance,
			char *err, size_t errlen);

cmr_index *cmr_index_build(const cmr_vecs *vs, const cmr_build_opts *o, const char *provenance, char *err,
			   size_t errlen)
{
	return build(vs, NULL, o, provenance, err, errlen);
}

cmr_index *cmr_index_build_take(cmr_vecs *vs, const cmr_build_opts *o, const char *provenance, char *err,
				size_t errlen)
{
	return build(vs, vs, o, provenance, err, errlen);
}

static cmr_index *build(const cmr_vecs *vs, cmr_vecs *take, const cmr_build_opts *o, const char *provenance,
			char *err, size_t errlen)
{
	cmr_index *ix = new_index();
	if (!ix) {
		fail(err, errlen, "out of memory");
		return NULL;
	}
	priv_t *p = ix->priv;
	const cmr_index *q = o->quantizer;
	ix->kind = q ? q->kind : o->kind;
	ix->code = q ? q->code : o->code;
	ix->nlist = ix->kind == CMR_INDEX_IVF ? (q ? q->nlist : o->nlist) : 0;
	ix->dim = q ? q->dim : vs->dim;
	ix->n = vs->n;
	uint32_t d = ix->dim;
	if (vs->n && vs->dim != d) {
		fail(err, errlen, "vectors have dimension %u, the quantizer %u", vs->dim, d);
		goto bad;
	}
	if (provenance && !(ix->provenance = strdup(provenance)))
		goto oom;
	/* coarse quantiser */
	if (ix->kind == CMR_INDEX_IVF) {
		p->centroids = malloc((size_t)ix->nlist * d * sizeof(float));
		if (!p->centroids)
			goto oom;
		if (q) {
			memcpy(p->centroids, q->centroids, (size_t)ix->nlist * d * sizeof(float));
		} else {
			float *C = kmeans(vs, o, err, errlen);
			if (!C)
				goto bad;
			memcpy(p->centroids, C, (size_t)ix->nlist * d * sizeof(float));
			free(C);
		}
		ix->centroids = p->centroids;
	}
	if (ix->code == CMR_CODE_PQ) {
		ix->pq_m = q ? q->pq_m : o->pq_m;
		if (!ix->pq_m || d % ix->pq_m) {
			fail(err, errlen, "%u sub-quantisers do not divide the dimension %u: give --pq a divisor of it",
			     ix->pq_m, d);
			goto bad;
		}
	}
	/* SQ8 parameters: per-dimension range */
	if (ix->code == CMR_CODE_SQ8) {
		p->sq = malloc(2 * (size_t)d * sizeof(float));
		if (!p->sq)
			goto oom;
		if (q) {
			memcpy(p->sq, q->sq, 2 * (size_t)d * sizeof(float));
		} else {
			for (uint32_t j = 0; j < d; j++) {
				float lo = INFINITY, hi = -INFINITY;
				for (uint64_t i = 0; i < vs->n; i++) {
					float v = vs->v[i * d + j];
					lo = v < lo ? v : lo;
					hi = v > hi ? v : hi;
				}
				if (vs->n == 0)
					lo = -1, hi = 1;
				p->sq[j] = lo;
				p->sq[d + j] = hi > lo ? (hi - lo) / 255.0f : 1.0f;
			}
		}
		ix->sq = p->sq;
	}
	/* rows grouped by list, in input order within a list */
	uint32_t *list = calloc(vs->n + 1, sizeof *list);
	p->ord = malloc((vs->n + 1) * sizeof *p->ord);
	p->list_off = calloc((size_t)ix->nlist + 2, sizeof *p->list_off);
	size_t rb = row_bytes(ix);
	/* taking an f32 array: its rows are permuted in place below, no second copy */
	int taking = take && ix->code == CMR_CODE_F32 && vs->v;
	p->vectors = taking ? NULL : cmr_big_realloc(NULL, 0, p->vectors_bytes = vs->n * rb + 1);
	uint64_t *rowof = malloc((vs->n + 1) * sizeof *rowof);
	if (!list || !p->ord || !p->list_off || (!taking && !p->vectors) || !rowof) {
		free(list), free(rowof);
		goto oom;
	}
	if (ix->kind == CMR_INDEX_IVF && vs->n && assign(o->ops ? o->ops : &cmr_ops_blas, vs->v, vs->n, ix->centroids, ix->nlist, d, list, NULL) < 0) {
		free(list), free(rowof);
		goto oom;
	}
	uint32_t nl = ix->kind == CMR_INDEX_IVF ? ix->nlist : 1;
	for (uint64_t i = 0; i < vs->n; i++)
		p->list_off[list[i] + 1]++;
	for (uint32_t l = 0; l < nl; l++)
		p->list_off[l + 1] += p->list_off[l];
	uint64_t *fill = malloc((nl + 1) * sizeof *fill);
	if (!fill) {
		free(list), free(rowof);
		goto oom;
	}
	memcpy(fill, p->list_off, nl * sizeof *fill);
	for (uint64_t i = 0; i < vs->n; i++) {
		uint64_t r = rowof[i] = fill[list[i]]++;
		p->ord[r] = i;
	}
	free(fill);
	if (ix->code == CMR_CODE_PQ && pq_build(ix, vs, o, list, rowof, err, errlen) < 0) {
		free(list), free(rowof);
		goto bad;
	}
	if (taking) {
		if (permute_rows((char *)take->v, vs->n, rb, rowof) < 0) {
			free(list), free(rowof);
			goto oom;
		}
		p->vectors = take->v, p->vectors_bytes = take->cap * take->dim * sizeof(float);
		take->v = NULL, take->cap = 0; /* its keys stay */
	}
	for (uint64_t i = 0; i < vs->n && ix->code != CMR_CODE_PQ && !taking; i++) {
		uint64_t r = rowof[i];
		const float *v = vs->v + i * d;
		if (ix->code == CMR_CODE_F32) {
			memcpy((float *)p->vectors + r * d, v, d * sizeof(float));
		} else {
			uint8_t *c = (uint8_t *)p->vectors + r * d;
			for (uint32_t j = 0; j < d; j++) {
				float t = roundf((v[j] - p->sq[j]) / p->sq[d + j]);
				c[j] = (uint8_t)(t < 0 ? 0 : t > 255 ? 255 : t);
			}
		}
	}
	free(rowof);
	free(list);
	if (o->keep_exact && ix->code == CMR_CODE_PQ) {
		if (!(p->exact = malloc(vs->n * d * sizeof(float) + 1)))
			goto oom;
		if (vs->n) /* none for a quantizer alone */
			memcpy(p->exact, vs->v, vs->n * d * sizeof(float));
		ix->exact = p->exact;
	}
	ix->vectors = p->vectors;
	ix->ord = p->ord;
	ix->list_off = ix->kind == CMR_INDEX_IVF ? p->list_off : NULL;
	if (set_keys(ix, vs->keys) < 0)
		goto oom;
	ix->quantizer_hash = quantizer_hash(ix);
	return ix;
oom:
	fail(err, errlen, "out of memory");
bad:
	cmr_index_free(ix);
	return NULL;
}

cmr_index *cmr_index_merge(const cmr_index *const *in, int n, const char *provenance, char *err, size_t errlen)
{
	const cmr_index *a = in[0];
	for (int j = 1; j < n; j++)
		if (in[j]->kind != a->kind || in[j]->code != a->code || in[j]->dim != a->dim || in[j]->nlist != a->nlist ||
		    in[j]->quantizer_hash != a->quantizer_hash) {
			fail(err, errlen, "index %d differs from the first in kind, code, dimension or quantizer "
				 "(build shards with --quantizer to merge them)", j + 1);
			return NULL;
		}
	for (int j = 1; j < n; j++)
		if (!in[j]->exact != !a->exact) {
			fail(err, errlen, "index %d %s exact vectors and the first %s: build every shard with or every "
				 "shard without --keep-exact", j + 1, in[j]->exact ? "keeps" : "does not keep",
			     a->exact ? "does" : "does not");
			return NULL;
		}
	cmr_index *ix = new_index();
	if (!ix) {
		fail(err, errlen, "out of memory");
		return NULL;
	}
	priv_t *p = ix->priv;
	ix->kind = a->kind, ix->code = a->code, ix->dim = a->dim, ix->nlist = a->nlist, ix->pq_m = a->pq_m;
	for (int j = 0; j < n; j++)
		ix->n += in[j]->n;
	uint32_t d = ix->dim, nl = ix->kind == CMR_INDEX_IVF ? ix->nlist : 1;
	size_t esize = row_bytes(ix);
	p->vectors = cmr_big_realloc(NULL, 0, p->vectors_bytes = ix->n * esize + 1);
	p->ord = malloc((ix->n + 1) * sizeof *p->ord);
	p->list_off = calloc((size_t)nl + 1, sizeof *p->list_off);
	char **keys = malloc((ix->n + 1) * sizeof *keys);
	if (!p->vectors || !p->ord || !p->list_off || !keys || (provenance && !(ix->provenance = strdup(provenance)))) {
		free(keys);
		cmr_index_free(ix);
		fail(err, errlen, "out of memory");
		return NULL;
	}
	if (a->centroids && (p->centroids = malloc((size_t)ix->nlist * d * sizeof(float))))
		memcpy(p->centroids, a->centroids, (size_t)ix->nlist * d * sizeof(float));
	if (a->sq && (p->sq = malloc(2 * (size_t)d * sizeof(float))))
		memcpy(p->sq, a->sq, 2 * (size_t)d * sizeof(float));
	if (a->pq && (p->pq = malloc((size_t)CMR_PQ_K * d * sizeof(float))))
		memcpy(p->pq, a->pq, (size_t)CMR_PQ_K * d * sizeof(float));
	if (a->pq_scale && (p->pq_scale = malloc((size_t)ix->nlist * sizeof(float))))
		memcpy(p->pq_scale, a->pq_scale, (size_t)ix->nlist * sizeof(float));
	ix->centroids = p->centroids, ix->sq = p->sq, ix->pq = p->pq, ix->pq_scale = p->pq_scale;
	if (a->exact) { /* in ordinal order: the shards' one after another */
		p->exact = malloc(ix->n * d * sizeof(float) + 1);
		uint64_t at = 0;
		for (int j = 0; p->exact && j < n; at += in[j]->n, j++)
			memcpy(p->exact + at * d, in[j]->exact, in[j]->n * d * sizeof(float));
		ix->exact = p->exact;
	}
	if ((a->centroids && !p->centroids) || (a->sq && !p->sq) || (a->pq && !p->pq) || (a->pq_scale && !p->pq_scale) ||
	    (a->exact && !p->exact)) {
		cmr_index_free(ix);
		fail(err, errlen, "out of memory");
		return NULL;
	}
	uint64_t r = 0, base = 0;
	for (uint32_t l = 0; l < nl; l++) {
		base = 0;
		for (int j = 0; j < n; j++) {
			uint64_t r0 = in[j]->list_off ? in[j]->list_off[l] : 0;
			uint64_t r1 = in[j]->list_off ? in[j]->list_off[l + 1] : in[j]->n;
			memcpy((char *)p->vectors + r * esize, (const char *)in[j]->vectors + r0 * esize, (r1 - r0) * esize);
			for (uint64_t s = r0; s < r1; s++)
				p->ord[r++] = base + in[j]->ord[s];
			base += in[j]->n;
		}
		p->list_off[l + 1] = r;
	}
	base = 0;
	for (int j = 0; j < n; j++) {
		for (uint64_t i = 0; i < in[j]->n; i++)
			keys[base + i] = in[j]->keys[i];
		base += in[j]->n;
	}
	ix->vectors = p->vectors;
	ix->ord = p->ord;
	ix->list_off = ix->kind == CMR_INDEX_IVF ? p->list_off : NULL;
	int rc = set_keys(ix, keys);
	free(keys);
	if (rc < 0) {
		cmr_index_free(ix);
		fail(err, errlen, "out of memory");
		return NULL;
	}
	ix->quantizer_hash = quantizer_hash(ix);
	return ix;
}

/* ---- file ---- */
#define st32 cmr_st32
#define st64 cmr_st64
#define ld32 cmr_ld32
#define ld64 cmr_ld64

int cmr_index_write(const cmr_index *ix, const char *path, char *err, size_t errlen)
{
	priv_t *p = ix->priv;
	uint32_t d = ix->dim;
	size_t keylen = 0;
	for (uint64_t i = 0; i < ix->n; i++)
		keylen += strlen(ix->keys[i]) + 1;
	(void)p;
	/* the keys, compressed */
	size_t bound = ZSTD_compressBound(keylen);
	void *zkeys = malloc(bound + 1);
	char *blob = malloc(keylen + 1);
	if (!zkeys || !blob) {
		free(zkeys);
		free(blob);
		return fail(err, errlen, "out of memory");
	}
	size_t at = 0;
	for (uint64_t i = 0; i < ix->n; i++) {
		size_t l = strlen(ix->keys[i]) + 1;
		memcpy(blob + at, ix->keys[i], l);
		at += l;
	}
	size_t zlen = ZSTD_compress(zkeys, bound, blob, keylen, 3);
	free(blob);
	if (ZSTD_isError(zlen)) {
		free(zkeys);
		return fail(err, errlen, "zstd: %s", ZSTD_getErrorName(zlen));
	}
	typedef struct { uint32_t id, flags; const void *data; uint64_t len; } sec_t;
	sec_t sec[S_COUNT];
	int ns = 0;
	if (ix->centroids)
		sec[ns++] = (sec_t){S_CENTROIDS, 0, ix->centroids, (uint64_t)ix->nlist * d * 4};
	if (ix->list_off)
		sec[ns++] = (sec_t){S_LIST_OFF, 0, ix->list_off, ((uint64_t)ix->nlist + 1) * 8};
	sec[ns++] = (sec_t){S_VECTORS, 0, ix->vectors, ix->n * row_bytes(ix)};
	if (ix->sq)
		sec[ns++] = (sec_t){S_SQ, 0, ix->sq, 2ull * d * 4};
	if (ix->pq)
		sec[ns++] = (sec_t){S_PQ, 0, ix->pq, (uint64_t)CMR_PQ_K * d * 4};
	if (ix->exact)
		sec[ns++] = (sec_t){S_EXACT, 0, ix->exact, ix->n * d * 4};
	if (ix->pq_scale)
		sec[ns++] = (sec_t){S_PQ_SCALE, 0, ix->pq_scale, (uint64_t)ix->nlist * 4};
	sec[ns++] = (sec_t){S_ORD, 0, ix->ord, ix->n * 8};
	sec[ns++] = (sec_t){S_KEYS, 1, zkeys, zlen};
	if (ix->provenance)
		sec[ns++] = (sec_t){S_PROV, 0, ix->provenance, strlen(ix->provenance)};
	size_t tlen = HEADER_LEN + (size_t)ns * SECTION_LEN;
	uint8_t *hdr = calloc(1, tlen);
	if (!hdr) {
		free(zkeys);
		return fail(err, errlen, "out of memory");
	}
	memcpy(hdr, MAGIC, 8);
	st32(hdr + 8, ix->code == CMR_CODE_PQ ? VERSION_PQ : VERSION);
	st32(hdr + 12, HEADER_LEN);
	st32(hdr + 16, ix->kind);
	st32(hdr + 20, ix->code);
	st32(hdr + 24, d);
	st32(hdr + 28, ix->nlist);
	st64(hdr + 32, ix->n);
	st32(hdr + 40, 1); /* metric: inner product */
	st32(hdr + 44, (uint32_t)ns);
	st64(hdr + 48, ix->quantizer_hash);
	st32(hdr + 56, ix->pq_m);
	uint64_t off = (tlen + 63) / 64 * 64;
	for (int i = 0; i < ns; i++) {
		uint8_t *e = hdr + HEADER_LEN + i * SECTION_LEN;
		st32(e, sec[i].id);
		st32(e + 4, sec[i].flags);
		st64(e + 8, off);
		st64(e + 16, sec[i].len);
		st64(e + 24, XXH3_64bits(sec[i].data, sec[i].len));
		off = (off + sec[i].len + 63) / 64 * 64;
	}
	/* the header checksum covers bytes 0..119 and the section table */
	XXH3_state_t *xs = XXH3_createState();
	XXH3_64bits_reset(xs);
	XXH3_64bits_update(xs, hdr, 120);
	XXH3_64bits_update(xs, hdr + HEADER_LEN, (size_t)ns * SECTION_LEN);
	st64(hdr + 120, XXH3_64bits_digest(xs));
	XXH3_freeState(xs);
	cmr_atomic af;
	if (cmr_atomic_open(&af, path, err, errlen) < 0) {
		free(hdr);
		free(zkeys);
		return -1;
	}
	FILE *f = af.f;
	int bad = 0;
	static const uint8_t zero[64];
	{
		uint64_t pos = tlen;
		bad |= fwrite(hdr, 1, tlen, f) != tlen;
		for (int i = 0; i < ns && !bad; i++) {
			uint64_t want = ld64(hdr + HEADER_LEN + i * SECTION_LEN + 8);
			bad |= want > pos && fwrite(zero, 1, want - pos, f) != want - pos;
			bad |= sec[i].len && fwrite(sec[i].data, 1, sec[i].len, f) != sec[i].len;
			pos = want + sec[i].len;
		}
	}
	int e = errno;
	free(hdr);
	free(zkeys);
	if (bad) {
		cmr_atomic_abort(&af);
		return fail(err, errlen, "%s: %s", path, strerror(e ? e : EIO));
	}
	return cmr_atomic_commit(&af, err, errlen);
}

/* every field of the file at h (size bytes, 8-aligned) checked against the others: a
 * checksum is no defence against a crafted file, so the structure is what is trusted */
static int parse(cmr_index *ix, const uint8_t *h, size_t size, const char *path, char *err, size_t errlen)
{
	priv_t *p = ix->priv;
	if (size < HEADER_LEN)
		return fail(err, errlen, "%s: %zu bytes: truncated (a header is %d)", path, size, HEADER_LEN);
	if (memcmp(h, MAGIC, 8) != 0)
		return fail(err, errlen, "%s: not a cmr index (bad magic)", path);
	uint32_t version = ld32(h + 8), hlen = ld32(h + 12);
	if (version != VERSION && version != VERSION_PQ)
		return fail(err, errlen, "%s: unsupported index version %u (this reader knows %d and %d)", path, version,
			    VERSION, VERSION_PQ);
	ix->kind = ld32(h + 16), ix->code = ld32(h + 20), ix->dim = ld32(h + 24), ix->nlist = ld32(h + 28);
	ix->pq_m = ld32(h + 56);
	ix->n = ld64(h + 32);
	uint32_t metric = ld32(h + 40), ns = ld32(h + 44);
	ix->quantizer_hash = ld64(h + 48);
	if (hlen < HEADER_LEN || hlen > 4096 || hlen % 8 || ns > 64 || (uint64_t)hlen + (uint64_t)ns * SECTION_LEN > size)
		return fail(err, errlen, "%s: truncated or corrupt header", path);
	XXH3_state_t *xs = XXH3_createState();
	if (!xs)
		return fail(err, errlen, "out of memory");
	XXH3_64bits_reset(xs);
	XXH3_64bits_update(xs, h, 120);
	XXH3_64bits_update(xs, h + hlen, (size_t)ns * SECTION_LEN);
	uint64_t sum = XXH3_64bits_digest(xs);
	XXH3_freeState(xs);
	if (sum != ld64(h + 120))
		return fail(err, errlen, "%s: header checksum mismatch: the file is corrupt", path);
	if ((ix->kind != CMR_INDEX_FLAT && ix->kind != CMR_INDEX_IVF) ||
	    (ix->code != CMR_CODE_F32 && ix->code != CMR_CODE_SQ8 && !(ix->code == CMR_CODE_PQ && version >= VERSION_PQ)) ||
	    metric != 1 || ix->dim == 0 || ix->dim > 65536 || (ix->kind == CMR_INDEX_IVF) != (ix->nlist > 0) ||
	    ix->n > (1ull << 40) || ix->nlist > (1u << 24))
		return fail(err, errlen, "%s: unknown kind %u, code %u or metric %u, or bad dimension %u or list count %u",
			    path, ix->kind, ix->code, metric, ix->dim, ix->nlist);
	if ((ix->code == CMR_CODE_PQ) != (ix->pq_m != 0) || (ix->pq_m && (ix->pq_m > ix->dim || ix->dim % ix->pq_m)))
		return fail(err, errlen, "%s: %u PQ sub-quantisers for code %u and dimension %u: corrupt", path, ix->pq_m,
			    ix->code, ix->dim);
	uint64_t want[S_COUNT] = {0, (uint64_t)ix->nlist * ix->dim * 4, ((uint64_t)ix->nlist + 1) * 8,
			    ix->n * row_bytes(ix), 2ull * ix->dim * 4, ix->n * 8, 0, 0,
			    (uint64_t)CMR_PQ_K * ix->dim * 4, ix->n * ix->dim * 4, (uint64_t)ix->nlist * 4};
	const void *data[S_COUNT] = {0};
	uint64_t len[S_COUNT] = {0};
	for (uint32_t i = 0; i < ns; i++) {
		const uint8_t *e = h + hlen + i * SECTION_LEN;
		uint32_t id = ld32(e), flags = ld32(e + 4);
		uint64_t off = ld64(e + 8), l = ld64(e + 16);
		if (off > size || l > size - off)
			return fail(err, errlen, "%s: section %u lies beyond the end of the file (%zu bytes): truncated", path, id,
				    size);
		if (off % 64 || off < (uint64_t)hlen + (uint64_t)ns * SECTION_LEN)
			return fail(err, errlen, "%s: section %u at offset %llu: not 64-byte aligned after the section table", path,
				    id, (unsigned long long)off);
		if (XXH3_64bits(h + off, l) != ld64(e + 24))
			return fail(err, errlen, "%s: section %u checksum mismatch: the file is corrupt", path, id);
		if (id >= S_COUNT || id == 0 || (version < VERSION_PQ && id >= S_PQ))
			continue; /* a later version's section */
		if (data[id])
			return fail(err, errlen, "%s: section %u occurs twice", path, id);
		if ((flags & 1) != (id == S_KEYS) || (want[id] && l != want[id]))
			return fail(err, errlen, "%s: section %u has %llu bytes, %llu expected", path, id, (unsigned long long)l,
				    (unsigned long long)want[id]);
		data[id] = h + off;
		len[id] = l;
	}
	if (!data[S_VECTORS] || !data[S_ORD] || !data[S_KEYS] || (ix->kind == CMR_INDEX_IVF && (!data[S_CENTROIDS] || !data[S_LIST_OFF])) ||
	    (ix->code == CMR_CODE_SQ8 && !data[S_SQ]) || (ix->code == CMR_CODE_PQ && !data[S_PQ]) ||
	    (ix->code == CMR_CODE_PQ && ix->kind == CMR_INDEX_IVF && !data[S_PQ_SCALE]))
		return fail(err, errlen, "%s: a required section is missing", path);
	if ((ix->code != CMR_CODE_PQ && (data[S_PQ] || data[S_EXACT] || data[S_PQ_SCALE])) ||
	    (ix->kind != CMR_INDEX_IVF && data[S_PQ_SCALE]))
		return fail(err, errlen, "%s: PQ sections in an index of kind %u and code %u: corrupt", path, ix->kind,
			    ix->code);
	ix->centroids = data[S_CENTROIDS];
	ix->list_off = data[S_LIST_OFF];
	ix->vectors = data[S_VECTORS];
	ix->sq = data[S_SQ];
	ix->pq = data[S_PQ];
	ix->exact = data[S_EXACT];
	ix->pq_scale = ix->code == CMR_CODE_PQ ? data[S_PQ_SCALE] : NULL;
	ix->ord = data[S_ORD];
	if (ix->list_off) { /* monotone, from 0 to n: every list inside the vectors */
		if (ix->list_off[0] != 0 || ix->list_off[ix->nlist] != ix->n)
			return fail(err, errlen, "%s: inverted lists do not cover the %llu vectors", path, (unsigned long long)ix->n);
		for (uint32_t l = 0; l < ix->nlist; l++)
			if (ix->list_off[l] > ix->list_off[l + 1])
				return fail(err, errlen, "%s: inverted list %u ends at row %llu, before it starts (%llu): corrupt",
					    path, l, (unsigned long long)ix->list_off[l + 1], (unsigned long long)ix->list_off[l]);
	}
	for (uint64_t i = 0; ix->centroids && i < (uint64_t)ix->nlist * ix->dim; i++)
		if (!isfinite(ix->centroids[i]))
			return fail(err, errlen, "%s: centroid %llu has a value that is not finite", path,
				    (unsigned long long)(i / ix->dim));
	for (size_t i = 0; ix->pq && i < (size_t)CMR_PQ_K * ix->dim; i++)
		if (!isfinite(ix->pq[i]))
			return fail(err, errlen, "%s: PQ centroid value %zu is not finite", path, i);
	for (uint32_t l = 0; ix->pq_scale && l < ix->nlist; l++)
		if (!isfinite(ix->pq_scale[l]))
			return fail(err, errlen, "%s: the PQ residual scale of list %u is not finite", path, l);
	for (uint32_t d = 0; ix->sq && d < ix->dim; d++)
		if (!isfinite(ix->sq[d]) || !isfinite(ix->sq[ix->dim + d]) || ix->sq[ix->dim + d] < 0)
			return fail(err, errlen, "%s: SQ8 range of dimension %u is not finite and non-negative", path, d);
	for (uint64_t r = 0; r < ix->n; r++)
		if (ix->ord[r] >= ix->n)
			return fail(err, errlen, "%s: row %llu has ordinal %llu, beyond %llu", path, (unsigned long long)r,
				    (unsigned long long)ix->ord[r], (unsigned long long)ix->n);
	/* the keys: n NUL-terminated keys of at most CMR_KEY_MAX bytes, so the declared size is
	 * bounded before anything is allocated (a small frame can declare gigabytes) */
	unsigned long long raw = ZSTD_getFrameContentSize(data[S_KEYS], len[S_KEYS]);
	if (raw == ZSTD_CONTENTSIZE_ERROR || raw == ZSTD_CONTENTSIZE_UNKNOWN)
		return fail(err, errlen, "%s: the keys section is not a zstd frame that declares its size", path);
	if (raw < ix->n || raw > ix->n * (uint64_t)(CMR_KEY_MAX + 1))
		return fail(err, errlen, "%s: the keys section declares %llu bytes, which %llu keys cannot have: corrupt", path,
			    raw, (unsigned long long)ix->n);
	if (!(p->keyblob = malloc(raw + 1)))
		return fail(err, errlen, "%s: out of memory for %llu bytes of keys", path, raw);
	if (ZSTD_decompress(p->keyblob, raw, data[S_KEYS], len[S_KEYS]) != raw || keys_from_blob(ix, p->keyblob, raw) < 0)
		return fail(err, errlen, "%s: the keys section is corrupt", path);
	for (uint64_t i = 0; i < ix->n; i++) {
		const char *why;
		if (cmr_key_check(ix->keys[i], strlen(ix->keys[i]), &why) < 0)
			return fail(err, errlen, "%s: key of ordinal %llu: %s", path, (unsigned long long)i, why);
	}
	if (data[S_PROV]) {
		if (!(ix->provenance = malloc(len[S_PROV] + 1)))
			return fail(err, errlen, "out of memory");
		memcpy(ix->provenance, data[S_PROV], len[S_PROV]);
		ix->provenance[len[S_PROV]] = 0;
	}
	return 0;
}

cmr_index *cmr_index_open(const char *path, char *err, size_t errlen)
{
	cmr_index *ix = new_index();
	if (!ix) {
		fail(err, errlen, "out of memory");
		return NULL;
	}
	priv_t *p = ix->priv;
	if (!(p->map = cmr_map_file(path, HEADER_LEN, "an index (a header is 128 bytes)", &p->size, err, errlen)))
		goto bad;
	if (parse(ix, p->map, p->size, path, err, errlen) < 0)
		goto bad;
	return ix;
bad:
	cmr_index_free(ix);
	return NULL;
}

cmr_index *cmr_index_from_memory(const void *buf, size_t size, const char *name, char *err, size_t errlen)
{
	if ((uintptr_t)buf % 8) {
		fail(err, errlen, "%s: the buffer is not 8-byte aligned", name);
		return NULL;
	}
	cmr_index *ix = new_index();
	if (!ix) {
		fail(err, errlen, "out of memory");
		return NULL;
	}
	if (parse(ix, buf, size, name, err, errlen) < 0) {
		cmr_index_free(ix);
		return NULL;
	}
	return ix;
}

/* ---- search ---- */
typedef struct {
	float *s;
	uint64_t *o;
	int n, k;
} heap;

/* a is worse than b: lower score, or equal score and larger ordinal */
static int worse(float sa, uint64_t oa, float sb, uint64_t ob) { return sa < sb || (sa == sb && oa > ob); }

static void heap_push(heap *h, float s, uint64_t o)
{
	if (!(s == s))
		return; /* NaN */
	if (h->n == h->k) {
		if (!worse(h->s[0], h->o[0], s, o))
			return;
		/* replace the root and sift down */
		int i = 0;
		for (;;) {
			int l = 2 * i + 1, r = l + 1, m = i;
			float ms = s;
			uint64_t mo = o;
			if (l < h->n && worse(h->s[l], h->o[l], ms, mo))
				m = l, ms = h->s[l], mo = h->o[l];
			if (r < h->n && worse(h->s[r], h->o[r], ms, mo))
				m = r;
			if (m == i)
				break;
			h->s[i] = h->s[m];
			h->o[i] = h->o[m];
			i = m;
		}
		h->s[i] = s;
		h->o[i] = o;
		return;
	}
	int i = h->n++;
	while (i > 0) {
		int parent = (i - 1) / 2;
		if (!worse(s, o, h->s[parent], h->o[parent]))
			break;
		h->s[i] = h->s[parent];
		h->o[i] = h->o[parent];
		i = parent;
	}
	h->s[i] = s;
	h->o[i] = o;
}

#define SEARCH_QB 16 /* queries whose coarse scores and PQ tables one sgemm makes */

typedef struct {
	const cmr_index *ix;
	const float *q;
	uint64_t q0, q1;
	int k, nprobe, rerank;
	const float *pqt; /* PQ: the codebooks slice-major (pq_transpose) */
	uint64_t *ho;
	float *hs;
	int rc;
} job_t;

/* Writes the heap's hits best first (insertion sort: k is small), then the missing ones. */
static void finish(heap *h, uint64_t *ho, float *hs)
{
	int n = h->n;
	for (int i = 0; i < n; i++) {
		float s = h->s[i];
		uint64_t o = h->o[i];
		int at = i;
		while (at > 0 && worse(hs[at - 1], ho[at - 1], s, o)) {
			hs[at] = hs[at - 1];
			ho[at] = ho[at - 1];
			at--;
		}
		hs[at] = s;
		ho[at] = o;
	}
	for (int i = n; i < h->k; i++) {
		ho[i] = UINT64_MAX;
		hs[i] = -INFINITY;
	}
	h->n = 0;
}

static float sq8_dot(const cmr_index *ix, const float *qs, float qmin, uint64_t r)
{
	const uint8_t *c = (const uint8_t *)ix->vectors + r * ix->dim;
	float s = qmin;
	for (uint32_t d = 0; d < ix->dim; d++)
		s += qs[d] * (float)c[d];
	return s;
}

/* The codebooks slice-major for the tables: pqt [M, ds, 256] from [M, 256, ds]. */
static float *pq_transpose(const cmr_index *ix)
{
	uint32_t M = ix->pq_m, ds = ix->dim / M;
	float *t = malloc((size_t)CMR_PQ_K * ix->dim * sizeof *t);
	for (uint32_t m = 0; t && m < M; m++)
		for (uint32_t c = 0; c < CMR_PQ_K; c++)
			for (uint32_t e = 0; e < ds; e++)
				t[((size_t)m * ds + e) * CMR_PQ_K + c] = ix->pq[((size_t)m * CMR_PQ_K + c) * ds + e];
	return t;
}

/* PQ's lookup tables of nb queries q [nb, dim]: T [nb, M, 256], T[i][m][c] = q_i's m-th slice
 * . centroid c of sub-quantiser m, summed over the slice in order; the inner loop runs over
 * the 256 centroids (pqt slice-major), which the compiler vectorises */
static void pq_tables(const cmr_index *ix, const float *pqt, const float *q, int nb, float *T)
{
	uint32_t M = ix->pq_m, ds = ix->dim / M;
	for (int i = 0; i < nb; i++)
		for (uint32_t m = 0; m < M; m++) {
			const float *qm = q + (size_t)i * ix->dim + (size_t)m * ds;
			float *t = T + ((size_t)i * M + m) * CMR_PQ_K;
			for (uint32_t c = 0; c < CMR_PQ_K; c++)
				t[c] = 0;
			for (uint32_t e = 0; e < ds; e++) {
				const float *row = pqt + ((size_t)m * ds + e) * CMR_PQ_K, qe = qm[e];
				for (uint32_t c = 0; c < CMR_PQ_K; c++)
					t[c] += qe * row[c];
			}
		}
}

/* A list's rows by asymmetric distance: base (the query's score with the list's centroid)
 * plus one table entry per sub-quantiser, four running sums in a fixed order; rows whose
 * score cannot enter the heap go no further. */
static void pq_scan(const cmr_index *ix, const float *T, float base, uint64_t r0, uint64_t r1, heap *h)
{
	uint32_t M = ix->pq_m;
	const uint8_t *codes = (const uint8_t *)ix->vectors;
	float thr = h->n < h->k ? -INFINITY : h->s[0];
	for (uint64_t r = r0; r < r1; r++) {
		const uint8_t *c = codes + r * M;
		float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
		uint32_t m = 0;
		for (; m + 4 <= M; m += 4) {
			s0 += T[(size_t)m * CMR_PQ_K + c[m]];
			s1 += T[(size_t)(m + 1) * CMR_PQ_K + c[m + 1]];
			s2 += T[(size_t)(m + 2) * CMR_PQ_K + c[m + 2]];
			s3 += T[(size_t)(m + 3) * CMR_PQ_K + c[m + 3]];
		}
		for (; m < M; m++)
			s0 += T[(size_t)m * CMR_PQ_K + c[m]];
		float sc = base + ((s0 + s1) + (s2 + s3));
		if (sc >= thr) {
			heap_push(h, sc, ix->ord[r]);
			thr = h->n < h->k ? -INFINITY : h->s[0];
		}
	}
}

static void *search_job(void *arg)
{
	job_t *j = arg;
	const cmr_index *ix = j->ix;
	uint32_t d = ix->dim;
	const uint64_t chunk = 4096;
	int R = j->rerank > j->k ? j->rerank : j->k; /* candidates: the re-ranked ones */
	heap h = {malloc((size_t)R * sizeof(float)), malloc((size_t)R * sizeof(uint64_t)), 0, R};
	heap hk = {malloc((size_t)j->k * sizeof(float)), malloc((size_t)j->k * sizeof(uint64_t)), 0, j->k};
	float *buf = malloc(chunk * sizeof(float) + 64);
	float *qs = malloc(d * sizeof(float));
	/* per block of SEARCH_QB queries (fixed by the query's position, so that the products
	 * do not depend on the threads): the coarse scores and the PQ tables, by sgemm */
	size_t tsz = (size_t)ix->pq_m * CMR_PQ_K;
	float *cb = malloc((size_t)SEARCH_QB * ix->nlist * sizeof *cb + 64);
	float *Tb = ix->code == CMR_CODE_PQ ? malloc(SEARCH_QB * tsz * sizeof *Tb) : NULL;
	uint64_t *co = malloc((size_t)R * sizeof *co);
	float *cs = malloc((size_t)R * sizeof *cs);
	int *probe = malloc(((size_t)j->nprobe + 1) * sizeof *probe);
	if (!h.s || !h.o || !hk.s || !hk.o || !buf || !qs || !probe || !co || !cs || !cb || (ix->code == CMR_CODE_PQ && !Tb)) {
		j->rc = -1;
		goto out;
	}
	for (uint64_t qi = j->q0; qi < j->q1; qi++) {
		const float *q = j->q + qi * d;
		uint64_t bi = (qi - j->q0) % SEARCH_QB; /* j->q0 is a multiple of SEARCH_QB */
		if (bi == 0) {
			int nb = (int)(j->q1 - qi < SEARCH_QB ? j->q1 - qi : SEARCH_QB);
			if (ix->kind == CMR_INDEX_IVF)
				cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, (int)ix->nlist, (int)d, 1.0f, q, (int)d,
					    ix->centroids, (int)d, 0.0f, cb, (int)ix->nlist);
			if (Tb)
				pq_tables(ix, j->pqt, q, nb, Tb);
		}
		const float *cs_q = cb + bi * ix->nlist, *T = Tb ? Tb + bi * tsz : NULL;
		h.n = 0;
		float qmin = 0;
		if (ix->code == CMR_CODE_SQ8)
			for (uint32_t e = 0; e < d; e++) {
				qs[e] = q[e] * ix->sq[d + e];
				qmin += q[e] * ix->sq[e];
			}
		uint32_t nl = ix->kind == CMR_INDEX_IVF ? ix->nlist : 1;
		int np = 1;
		if (ix->kind == CMR_INDEX_IVF) {
			/* the nprobe lists whose centroids score highest */
			np = 0;
			for (uint32_t l = 0; l < nl; l++) {
				if (np == j->nprobe && cs_q[l] <= cs_q[probe[np - 1]])
					continue;
				int at = np < j->nprobe ? np++ : np - 1;
				while (at > 0 && cs_q[probe[at - 1]] < cs_q[l]) {
					probe[at] = probe[at - 1];
					at--;
				}
				probe[at] = (int)l;
			}
		} else {
			probe[0] = 0;
		}
		for (int pi = 0; pi < np; pi++) {
			uint64_t r0 = ix->list_off ? ix->list_off[probe[pi]] : 0, r1 = ix->list_off ? ix->list_off[probe[pi] + 1] : ix->n;
			if (ix->code == CMR_CODE_F32) {
				for (uint64_t c0 = r0; c0 < r1; c0 += chunk) {
					uint64_t rows = r1 - c0 < chunk ? r1 - c0 : chunk;
					cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)rows, (int)d, 1.0f, (const float *)ix->vectors + c0 * d,
						    (int)d, q, 1, 0.0f, buf, 1);
					for (uint64_t r = 0; r < rows; r++)
						heap_push(&h, buf[r], ix->ord[c0 + r]);
				}
			} else if (ix->code == CMR_CODE_PQ) {
				pq_scan(ix, T, ix->kind == CMR_INDEX_IVF ? ix->pq_scale[probe[pi]] * cs_q[probe[pi]] : 0.0f, r0, r1,
					&h);
			} else {
				for (uint64_t r = r0; r < r1; r++)
					heap_push(&h, sq8_dot(ix, qs, qmin, r), ix->ord[r]);
			}
		}
		if (R == j->k) {
			finish(&h, j->ho + qi * j->k, j->hs + qi * j->k);
			continue;
		}
		/* re-ranking: the R candidates' exact scores (the vectors in ordinal order) */
		finish(&h, co, cs);
		hk.n = 0;
		for (int i = 0; i < R && co[i] != UINT64_MAX; i++)
			heap_push(&hk, cblas_sdot((int)d, q, 1, ix->exact + co[i] * d, 1), co[i]);
		finish(&hk, j->ho + qi * j->k, j->hs + qi * j->k);
	}
out:
	free(h.s), free(h.o), free(hk.s), free(hk.o);
	free(buf);
	free(qs);
	free(cb), free(Tb);
	free(co), free(cs);
	free(probe);
	return NULL;
}

/* Flat f32 search: fixed blocks of FLAT_QB queries by FLAT_RB rows, one sgemm each, so that
 * a score comes from the same product whatever the number of threads (FAISS's
 * IndexFlatIP blocks the same way: every query of a block shares one pass over the rows).
 * The threads share out a block's row chunks (contiguous runs), each keeping a heap per
 * query; the heaps are merged in the caller. The top k under the total order (score,
 * ordinal) is one set, so the merge order does not matter. */
#define FLAT_QB 1024
#define FLAT_RB 1024

typedef struct {
	const cmr_index *ix;
	const float *q; /* the block's queries */
	uint64_t m;     /* queries in the block */
	uint64_t c0, c1; /* row chunks [c0, c1) */
	heap *h;        /* [m] */
	float *buf;     /* [FLAT_QB * FLAT_RB] */
} flat_job;

static void *flat_job_run(void *arg)
{
	flat_job *j = arg;
	const cmr_index *ix = j->ix;
	uint32_t d = ix->dim;
	for (uint64_t c = j->c0; c < j->c1; c++) {
		uint64_t r0 = c * FLAT_RB, rows = ix->n - r0 < FLAT_RB ? ix->n - r0 : FLAT_RB;
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)j->m, (int)rows, (int)d, 1.0f, j->q, (int)d,
			    (const float *)ix->vectors + r0 * d, (int)d, 0.0f, j->buf, (int)rows);
		const uint64_t *ord = ix->ord + r0;
		for (uint64_t i = 0; i < j->m; i++) {
			heap *h = &j->h[i];
			const float *row = j->buf + i * rows;
			/* most scores are below the k-th best so far: one comparison each */
			float thr = h->n < h->k ? -INFINITY : h->s[0];
			for (uint64_t r = 0; r < rows; r++)
				if (row[r] >= thr) {
					heap_push(h, row[r], ord[r]);
					thr = h->n < h->k ? -INFINITY : h->s[0];
				}
		}
	}
	return NULL;
}

static int flat_search(const cmr_index *ix, const float *q, uint64_t nq, int k, int threads, uint64_t *hits_ord,
		       float *hits_score)
{
	uint64_t nchunks = (ix->n + FLAT_RB - 1) / FLAT_RB;
	if ((uint64_t)threads > nchunks)
		threads = nchunks ? (int)nchunks : 1;
	uint64_t qb = nq < FLAT_QB ? nq : FLAT_QB;
	flat_job *jobs = calloc((size_t)threads, sizeof *jobs);
	pthread_t *th = calloc((size_t)threads, sizeof *th);
	int rc = jobs && th ? 0 : -1;
	for (int t = 0; !rc && t < threads; t++) {
		jobs[t].ix = ix;
		jobs[t].h = calloc(qb + 1, sizeof *jobs[t].h);
		jobs[t].buf = malloc(qb * FLAT_RB * sizeof(float) + 64);
		if (!jobs[t].h || !jobs[t].buf)
			rc = -1;
		for (uint64_t i = 0; !rc && i < qb; i++) {
			jobs[t].h[i] = (heap){malloc((size_t)k * sizeof(float)), malloc((size_t)k * sizeof(uint64_t)), 0, k};
			if (!jobs[t].h[i].s || !jobs[t].h[i].o)
				rc = -1;
		}
	}
	for (uint64_t b0 = 0; !rc && b0 < nq; b0 += FLAT_QB) {
		uint64_t m = nq - b0 < FLAT_QB ? nq - b0 : FLAT_QB;
		for (int t = 0; t < threads; t++) {
			flat_job *j = &jobs[t];
			j->q = q + b0 * ix->dim, j->m = m;
			j->c0 = nchunks * (uint64_t)t / (uint64_t)threads, j->c1 = nchunks * (uint64_t)(t + 1) / (uint64_t)threads;
			for (uint64_t i = 0; i < m; i++)
				j->h[i].n = 0;
		}
		int started = 1;
		for (int t = 1; t < threads; t++, started++)
			if (pthread_create(&th[t], NULL, flat_job_run, &jobs[t]) != 0)
				break;
		flat_job_run(&jobs[0]);
		for (int t = 1; t < threads; t++) {
			if (t < started)
				pthread_join(th[t], NULL);
			else
				flat_job_run(&jobs[t]); /* no thread: do it here */
		}
		for (uint64_t i = 0; i < m; i++) {
			heap *h = &jobs[0].h[i];
			for (int t = 1; t < threads; t++)
				for (int e = 0; e < jobs[t].h[i].n; e++)
					heap_push(h, jobs[t].h[i].s[e], jobs[t].h[i].o[e]);
			finish(h, hits_ord + (b0 + i) * (uint64_t)k, hits_score + (b0 + i) * (uint64_t)k);
		}
	}
	for (int t = 0; jobs && t < threads; t++) {
		for (uint64_t i = 0; jobs[t].h && i < qb; i++) {
			free(jobs[t].h[i].s);
			free(jobs[t].h[i].o);
		}
		free(jobs[t].h);
		free(jobs[t].buf);
	}
	free(jobs);
	free(th);
	return rc;
}

int cmr_index_search(const cmr_index *ix, const float *q, uint64_t nq, int k, const cmr_search_params *sp,
		     int threads, uint64_t *hits_ord, float *hits_score)
{
	int nprobe = sp ? sp->nprobe : 1, rerank = sp && sp->rerank > k ? sp->rerank : 0;
	if (k < 1 || (rerank && (ix->code != CMR_CODE_PQ || !ix->exact)))
		return -1;
	if (nprobe < 1)
		nprobe = 1;
	if (ix->kind == CMR_INDEX_IVF && (uint32_t)nprobe > ix->nlist)
		nprobe = (int)ix->nlist;
	if (threads < 1)
		threads = 1;
	if (ix->kind == CMR_INDEX_FLAT && ix->code == CMR_CODE_F32)
		return flat_search(ix, q, nq, k, threads, hits_ord, hits_score);
	if ((uint64_t)threads > nq)
		threads = nq ? (int)nq : 1;
	job_t *jobs = calloc((size_t)threads, sizeof *jobs);
	pthread_t *th = calloc((size_t)threads, sizeof *th);
	float *pqt = ix->code == CMR_CODE_PQ ? pq_transpose(ix) : NULL;
	if (!jobs || !th || (ix->code == CMR_CODE_PQ && !pqt)) {
		free(jobs), free(th), free(pqt);
		return -1;
	}
	/* threads take whole blocks of 64 queries, so that the split of the queries, and so the
	 * results, do not depend on the number of threads */
	uint64_t nb = (nq + 63) / 64;
	for (int t = 0; t < threads; t++) {
		uint64_t q0 = nb * (uint64_t)t / (uint64_t)threads * 64, q1 = nb * (uint64_t)(t + 1) / (uint64_t)threads * 64;
		jobs[t] = (job_t){ix, q, q0 < nq ? q0 : nq, q1 < nq ? q1 : nq, k, nprobe, rerank, pqt, hits_ord, hits_score, 0};
		if (t > 0 && pthread_create(&th[t], NULL, search_job, &jobs[t]) != 0)
			jobs[t].rc = -2;
	}
	search_job(&jobs[0]);
	int rc = jobs[0].rc;
	for (int t = 1; t < threads; t++) {
		if (jobs[t].rc == -2) {
			search_job(&jobs[t]); /* no thread: do it here */
		} else {
			pthread_join(th[t], NULL);
		}
		rc |= jobs[t].rc;
	}
	free(jobs), free(th), free(pqt);
	return rc ? -1 : 0;
}

/* Shards searched as one: each shard's top k, its ordinals moved past the shards before it,
 * merged per query by score (higher first) then ordinal (smaller first), the order one
 * index's search gives: the hits of the merge of the shards (cmr_index_merge) in that order. */
int cmr_index_search_shards(const cmr_index *const *ix, int nshards, const float *q, uint64_t nq, int k,
			    const cmr_search_params *sp, int threads, uint64_t *hits_ord, float *hits_score)
{
	if (k < 1 || nshards < 1)
		return -1;
	if (nshards == 1)
		return cmr_index_search(ix[0], q, nq, k, sp, threads, hits_ord, hits_score);
	size_t nk = (size_t)nq * (size_t)k;
	uint64_t *so = malloc((nk + 1) * sizeof *so), *mo = malloc((size_t)k * sizeof *mo);
	float *ss = malloc((nk + 1) * sizeof *ss), *ms = malloc((size_t)k * sizeof *ms);
	if (!so || !ss || !mo || !ms) {
		free(so), free(ss), free(mo), free(ms);
		return -1;
	}
	for (size_t i = 0; i < nk; i++)
		hits_ord[i] = UINT64_MAX, hits_score[i] = -INFINITY;
	uint64_t base = 0;
	int rc = 0;
	for (int s = 0; s < nshards && rc == 0; base += ix[s]->n, s++) {
		if ((rc = cmr_index_search(ix[s], q, nq, k, sp, threads, so, ss)) < 0)
			break;
		for (uint64_t i = 0; i < nq; i++) {
			/* two lists, each best first, merged; a shard's ordinals all exceed the
			 * earlier shards', so on equal scores the earlier list's hit goes first */
			const uint64_t *ao = hits_ord + i * k, *bo = so + i * k;
			const float *as = hits_score + i * k, *bs = ss + i * k;
			int a = 0, b = 0;
			for (int r = 0; r < k; r++) {
				int take_b = bo[b] != UINT64_MAX && (ao[a] == UINT64_MAX || bs[b] > as[a]);
				if (take_b)
					mo[r] = bo[b] + base, ms[r] = bs[b], b++;
				else
					mo[r] = ao[a], ms[r] = as[a], a++;
			}
			memcpy(hits_ord + i * k, mo, (size_t)k * sizeof *mo);
			memcpy(hits_score + i * k, ms, (size_t)k * sizeof *ms);
		}
	}
	free(so), free(ss), free(mo), free(ms);
	return rc;
}
