/* eval.c - ranks of correct items in both retrieval directions, in chunks of rows of the
 * backend's score products. */
#include "eval.h"

#include <stdlib.h>
#include <string.h>

/* rank of column c in row (n scores), ties broken by input order */
static uint32_t rank_of(const float *row, size_t n, size_t c)
{
	float s = row[c];
	uint32_t r = 1;
	for (size_t j = 0; j < n; j++)
		r += row[j] > s || (row[j] == s && j < c);
	return r;
}

int cmr_eval_ranks(const cmr_ops *ops, const float *img, size_t ni, const float *txt, size_t nt, int d,
		   const uint32_t *txt_img, uint32_t *i2t_rank, uint32_t *t2i_rank, size_t chunk)
{
	if (chunk == 0)
		chunk = 256;
	float *sim = malloc(chunk * (ni > nt ? ni : nt) * sizeof *sim + 1);
	if (!sim)
		return -1;
	/* text -> image: rows of texts against all images */
	for (size_t t0 = 0; t0 < nt; t0 += chunk) {
		size_t m = nt - t0 < chunk ? nt - t0 : chunk;
		/* sim[m, ni] = txt[t0 .. t0+m) . img^T */
		ops->matmul_nt(txt + t0 * (size_t)d, img, sim, (int)m, (int)ni, d);
		for (size_t t = 0; t < m; t++)
			t2i_rank[t0 + t] = rank_of(sim + t * ni, ni, txt_img[t0 + t]);
	}
	/* image -> text: rows of images against all texts; the best of the image's texts */
	for (size_t i = 0; i < ni; i++)
		i2t_rank[i] = UINT32_MAX;
	for (size_t i0 = 0; i0 < ni; i0 += chunk) {
		size_t m = ni - i0 < chunk ? ni - i0 : chunk;
		ops->matmul_nt(img + i0 * (size_t)d, txt, sim, (int)m, (int)nt, d);
		for (size_t t = 0; t < nt; t++) {
			size_t i = txt_img[t];
			if (i < i0 || i >= i0 + m)
				continue;
			uint32_t r = rank_of(sim + (i - i0) * nt, nt, t);
			if (r < i2t_rank[i])
				i2t_rank[i] = r;
		}
	}
	free(sim);
	for (size_t i = 0; i < ni; i++)
		if (i2t_rank[i] == UINT32_MAX)
			return -1;
	return 0;
}

double cmr_recall(const uint32_t *rank, size_t n, uint32_t k)
{
	size_t hits = 0;
	for (size_t i = 0; i < n; i++)
		hits += rank[i] <= k;
	return n ? 100.0 * (double)hits / (double)n : 0.0;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

double cmr_rank_median(const uint32_t *rank, size_t n)
{
	if (!n)
		return 0;
	uint32_t *c = malloc(n * sizeof *c);
	if (!c)
		return -1;
	memcpy(c, rank, n * sizeof *c);
	qsort(c, n, sizeof *c, cmp_u32);
	double m = n % 2 ? c[n / 2] : (c[n / 2 - 1] + (double)c[n / 2]) / 2;
	free(c);
	return m;
}

double cmr_rank_mean(const uint32_t *rank, size_t n)
{
	double s = 0;
	for (size_t i = 0; i < n; i++)
		s += rank[i];
	return n ? s / (double)n : 0;
}
