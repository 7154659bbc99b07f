/* eval.c - ranks of correct items in both retrieval directions, in chunks of rows of the
 * backend's score products; zero-shot classification. */
#include "eval.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* LAPACK (OpenBLAS exports it; no header is installed for the Fortran interface) */
void dsyev_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w, double *work,
	    const int *lwork, int *info);

double cmr_effective_rank(const float *x, size_t n, int d)
{
	if (n < 2 || d < 1)
		return -1;
	double *mu = calloc((size_t)d, sizeof *mu), *C = calloc((size_t)d * d, sizeof *C), *w = malloc((size_t)d * sizeof *w);
	int lwork = -1, info = 0;
	double q, r = -1;
	double *work = NULL;
	if (!mu || !C || !w)
		goto out;
	for (size_t i = 0; i < n; i++)
		for (int j = 0; j < d; j++)
			mu[j] += x[i * d + j];
	for (int j = 0; j < d; j++)
		mu[j] /= (double)n;
	for (size_t i = 0; i < n; i++) /* the lower triangle (column-major: the upper of C) */
		for (int a = 0; a < d; a++) {
			double xa = x[i * d + a] - mu[a];
			for (int b = 0; b <= a; b++)
				C[(size_t)a * d + b] += xa * (x[i * d + b] - mu[b]);
		}
	dsyev_("N", "U", &d, C, &d, w, &q, &lwork, &info); /* the work size */
	if (info != 0 || !(work = malloc((size_t)(lwork = (int)q) * sizeof *work)))
		goto out;
	dsyev_("N", "U", &d, C, &d, w, work, &lwork, &info);
	if (info != 0)
		goto out;
	double sum = 0, h = 0;
	for (int j = 0; j < d; j++) /* singular values of the centred rows: sqrt of the eigenvalues */
		sum += w[j] = w[j] > 0 ? sqrt(w[j]) : 0;
	if (!(sum > 0))
		goto out;
	for (int j = 0; j < d; j++)
		if (w[j] > 0)
			h -= w[j] / sum * log(w[j] / sum);
	r = exp(h);
out:
	free(mu), free(C), free(w), free(work);
	return r;
}

/* rank of column c in row (n scores), ties broken by input order */
static uint32_t rank_of(const float *row, size_t n, size_t c)
{
	float s = row[c];
	uint32_t r = 1;
	for (size_t j = 0; j < n; j++)
		r += row[j] > s || (row[j] == s && j < c);
	return r;
}

/* The scores of m queries against all candidates into sim [m, candidates]: dir 0, texts
 * [q0, q0 + m) against every image; dir 1, images [q0, q0 + m) against every text. */
typedef int (*score_fn)(const void *ctx, int dir, size_t q0, size_t m, float *sim);

/* Re-ranking (fusion): the top k of a row by the first score, re-ordered by first +
 * beta x second; the rest keep their places. */
typedef struct {
	score_fn score; /* the second score */
	const void *ctx;
	float beta;
	size_t k;
	size_t *heap; /* [k]: the row's top k by the first score */
	size_t nheap;
	long row; /* the row the heap is of (LONG_MIN: none) */
} fusion;

/* a ahead of b by the first score: higher, or the same and earlier */
static int ahead(const float *row, size_t a, size_t b)
{
	return row[a] > row[b] || (row[a] == row[b] && a < b);
}

/* the k best of row (n scores) into f->heap: a heap whose top is the worst of them */
static void top_k(fusion *f, const float *row, size_t n)
{
	size_t *h = f->heap, m = 0;
	for (size_t j = 0; j < n; j++) {
		if (m == f->k) {
			if (!ahead(row, j, h[0]))
				continue;
			h[0] = j; /* replace the worst, sift down */
			for (size_t i = 0;;) {
				size_t l = 2 * i + 1, r = l + 1, w = i;
				if (l < m && ahead(row, h[w], h[l]))
					w = l;
				if (r < m && ahead(row, h[w], h[r]))
					w = r;
				if (w == i)
					break;
				size_t t = h[i];
				h[i] = h[w], h[w] = t, i = w;
			}
			continue;
		}
		size_t i = m++; /* sift up */
		h[i] = j;
		while (i > 0 && ahead(row, h[(i - 1) / 2], h[i])) {
			size_t p = (i - 1) / 2, t = h[i];
			h[i] = h[p], h[p] = t, i = p;
		}
	}
	f->nheap = m;
}

/* the rank of c in row after re-ranking (row_id names the row for the heap's cache) */
static uint32_t rank_fused(fusion *f, long row_id, const float *row, const float *sec, size_t n, size_t c)
{
	uint32_t r = rank_of(row, n, c);
	if (r > f->k)
		return r;
	if (f->row != row_id) {
		top_k(f, row, n);
		f->row = row_id;
	}
	double fc = (double)row[c] + (double)f->beta * sec[c];
	r = 1;
	for (size_t i = 0; i < f->nheap; i++) {
		size_t j = f->heap[i];
		double fj = (double)row[j] + (double)f->beta * sec[j];
		r += j != c && (fj > fc || (fj == fc && j < c));
	}
	return r;
}

/* both directions' ranks from a scorer, in chunks of queries; with f, re-ranked */
static int ranks_by(score_fn score, const void *ctx, size_t ni, size_t nt, const uint32_t *txt_img, uint32_t *i2t_rank,
		    uint32_t *t2i_rank, size_t chunk, fusion *f)
{
	if (chunk == 0)
		chunk = 256;
	float *sim = malloc(chunk * (ni > nt ? ni : nt) * sizeof *sim + 1);
	float *sim2 = f ? malloc(chunk * (ni > nt ? ni : nt) * sizeof *sim2 + 1) : NULL;
	if (!sim || (f && (!sim2 || !(f->heap = malloc((f->k + 1) * sizeof *f->heap))))) {
		free(sim), free(sim2);
		return -1;
	}
	/* text -> image: rows of texts against all images */
	for (size_t t0 = 0; t0 < nt; t0 += chunk) {
		size_t m = nt - t0 < chunk ? nt - t0 : chunk;
		if (score(ctx, 0, t0, m, sim) < 0 || (f && f->score(f->ctx, 0, t0, m, sim2) < 0))
			goto fail;
		for (size_t t = 0; t < m; t++)
			t2i_rank[t0 + t] = f ? rank_fused(f, -1 - (long)(t0 + t), sim + t * ni, sim2 + t * ni, ni,
							  txt_img[t0 + t])
					     : rank_of(sim + t * ni, ni, txt_img[t0 + t]);
	}
	/* image -> text: rows of images against all texts; the best of the image's texts */
	for (size_t i = 0; i < ni; i++)
		i2t_rank[i] = UINT32_MAX;
	for (size_t i0 = 0; i0 < ni; i0 += chunk) {
		size_t m = ni - i0 < chunk ? ni - i0 : chunk;
		if (score(ctx, 1, i0, m, sim) < 0 || (f && f->score(f->ctx, 1, i0, m, sim2) < 0))
			goto fail;
		for (size_t t = 0; t < nt; t++) {
			size_t i = txt_img[t];
			if (i < i0 || i >= i0 + m)
				continue;
			uint32_t r = f ? rank_fused(f, (long)i, sim + (i - i0) * nt, sim2 + (i - i0) * nt, nt, t)
				       : rank_of(sim + (i - i0) * nt, nt, t);
			if (r < i2t_rank[i])
				i2t_rank[i] = r;
		}
	}
	free(sim), free(sim2);
	if (f)
		free(f->heap);
	for (size_t i = 0; i < ni; i++)
		if (i2t_rank[i] == UINT32_MAX)
			return -1;
	return 0;
fail:
	free(sim), free(sim2);
	if (f)
		free(f->heap);
	return -1;
}

typedef struct {
	const cmr_ops *ops;
	const float *img, *txt;
	size_t ni, nt;
	int d;
} dense_ctx;

static int dense_score(const void *ctx, int dir, size_t q0, size_t m, float *sim)
{
	const dense_ctx *c = ctx;
	if (dir == 0) /* sim[m, ni] = txt[q0 .. q0+m) . img^T */
		c->ops->matmul_nt(c->txt + q0 * (size_t)c->d, c->img, sim, (int)m, (int)c->ni, c->d);
	else
		c->ops->matmul_nt(c->img + q0 * (size_t)c->d, c->txt, sim, (int)m, (int)c->nt, c->d);
	return 0;
}

int cmr_eval_ranks(const cmr_ops *ops, const float *img, size_t ni, const float *txt, size_t nt, int d,
		   const uint32_t *txt_img, uint32_t *i2t_rank, uint32_t *t2i_rank, size_t chunk)
{
	dense_ctx c = {ops, img, txt, ni, nt, d};
	return ranks_by(dense_score, &c, ni, nt, txt_img, i2t_rank, t2i_rank, chunk, NULL);
}

int cmr_multi_push(cmr_multi *m, const float *rows, uint64_t nrows, int d, const char *key)
{
	if (m->n && d != m->d)
		return -1;
	m->d = d;
	if (m->n + 1 >= m->cap) {
		size_t cap = m->cap ? 2 * m->cap : 1024;
		uint64_t *no = realloc(m->off, (cap + 1) * sizeof *no);
		if (!no)
			return -1;
		m->off = no;
		char **nk = realloc(m->keys, cap * sizeof *nk);
		if (!nk)
			return -1;
		m->keys = nk;
		m->cap = cap;
	}
	if (m->rows + nrows > m->rcap) {
		uint64_t rcap = m->rcap ? 2 * m->rcap : 4096;
		while (rcap < m->rows + nrows)
			rcap *= 2;
		float *nv = realloc(m->v, rcap * (size_t)d * sizeof *nv);
		if (!nv)
			return -1;
		m->v = nv;
		m->rcap = rcap;
	}
	if (!(m->keys[m->n] = strdup(key)))
		return -1;
	if (nrows) /* an item of no rows may come with no buffer */
		memcpy(m->v + m->rows * (size_t)d, rows, nrows * (size_t)d * sizeof *rows);
	m->off[m->n] = m->rows;
	m->rows += nrows;
	m->off[++m->n] = m->rows;
	return 0;
}

void cmr_multi_free(cmr_multi *m)
{
	for (size_t i = 0; i < m->n; i++)
		free(m->keys[i]);
	free(m->keys), free(m->off), free(m->v);
	memset(m, 0, sizeof *m);
}

#define MAXSIM_ROWS 4096 /* image rows per product: the work block is text rows x this */

int cmr_maxsim_block(const cmr_ops *ops, const cmr_multi *txt, size_t t0, size_t m, const cmr_multi *img, size_t i0,
		     size_t k, float *sim, size_t ld, int transposed)
{
	int d = txt->d;
	uint64_t w0 = txt->off[t0], nw = txt->off[t0 + m] - w0;
	float *G = NULL;
	size_t gcap = 0;
	for (size_t i = i0; i < i0 + k;) {
		/* images [i, j): at most MAXSIM_ROWS rows, at least one image */
		size_t j = i + 1;
		while (j < i0 + k && img->off[j + 1] - img->off[i] <= MAXSIM_ROWS)
			j++;
		uint64_t r0 = img->off[i], nr = img->off[j] - r0;
		if (nw * nr > gcap) {
			free(G);
			gcap = nw * nr;
			if (!(G = malloc(gcap * sizeof *G)))
				return -1;
		}
		/* G[nw, nr] = the chunk's word rows . these images' rows^T */
		if (nw && nr)
			ops->matmul_nt(txt->v + w0 * (size_t)d, img->v + r0 * (size_t)d, G, (int)nw, (int)nr, d);
		for (size_t t = t0; t < t0 + m; t++)
			for (size_t b = i; b < j; b++) {
				if (txt->off[t + 1] == txt->off[t] || img->off[b + 1] == img->off[b]) {
					/* an item without rows scores 0 */
					if (transposed)
						sim[(b - i0) * ld + (t - t0)] = 0;
					else
						sim[(t - t0) * ld + (b - i0)] = 0;
					continue;
				}
				double s = 0;
				for (uint64_t w = txt->off[t]; w < txt->off[t + 1]; w++) {
					const float *g = G + (w - w0) * nr + (img->off[b] - r0);
					float mx = g[0];
					for (uint64_t r = 1; r < img->off[b + 1] - img->off[b]; r++)
						mx = g[r] > mx ? g[r] : mx;
					s += mx;
				}
				float v = (float)(s / (double)(txt->off[t + 1] - txt->off[t]));
				if (transposed)
					sim[(b - i0) * ld + (t - t0)] = v;
				else
					sim[(t - t0) * ld + (b - i0)] = v;
			}
		i = j;
	}
	free(G);
	return 0;
}

typedef struct {
	const cmr_ops *ops;
	const cmr_multi *img, *txt;
	size_t chunk;
} maxsim_ctx;

static int maxsim_score(const void *ctx, int dir, size_t q0, size_t m, float *sim)
{
	const maxsim_ctx *c = ctx;
	size_t ni = c->img->n, nt = c->txt->n;
	if (dir == 0)
		return cmr_maxsim_block(c->ops, c->txt, q0, m, c->img, 0, ni, sim, ni, 0);
	for (size_t t0 = 0; t0 < nt; t0 += c->chunk) { /* every text against these images, as image rows */
		size_t mt = nt - t0 < c->chunk ? nt - t0 : c->chunk;
		if (cmr_maxsim_block(c->ops, c->txt, t0, mt, c->img, q0, m, sim + t0, nt, 1) < 0)
			return -1;
	}
	return 0;
}

int cmr_eval_ranks_maxsim(const cmr_ops *ops, const cmr_multi *img, const cmr_multi *txt, const uint32_t *txt_img,
			  uint32_t *i2t_rank, uint32_t *t2i_rank, size_t chunk)
{
	maxsim_ctx c = {ops, img, txt, chunk ? chunk : 256};
	return ranks_by(maxsim_score, &c, img->n, txt->n, txt_img, i2t_rank, t2i_rank, chunk, NULL);
}

int cmr_eval_ranks_fused(const cmr_ops *ops, const float *img, size_t ni, const float *txt, size_t nt, int d,
			 const cmr_multi *img2, const cmr_multi *txt2, float beta, size_t k, const uint32_t *txt_img,
			 uint32_t *i2t_rank, uint32_t *t2i_rank, size_t chunk)
{
	if (img2->n != ni || txt2->n != nt || k < 1)
		return -1;
	dense_ctx c = {ops, img, txt, ni, nt, d};
	maxsim_ctx c2 = {ops, img2, txt2, chunk ? chunk : 256};
	fusion f = {maxsim_score, &c2, beta, k, NULL, 0, LONG_MIN};
	return ranks_by(dense_score, &c, ni, nt, txt_img, i2t_rank, t2i_rank, chunk, &f);
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

/* ---- zero-shot classification ---- */
typedef struct {
	const char *key;
	size_t len; /* of the class part */
	size_t at;  /* input position */
} cls_item;

static int cmp_cls(const void *a, const void *b)
{
	const cls_item *x = a, *y = b;
	size_t n = x->len < y->len ? x->len : y->len;
	int c = memcmp(x->key, y->key, n);
	if (c)
		return c;
	if (x->len != y->len)
		return x->len < y->len ? -1 : 1;
	return x->at < y->at ? -1 : x->at > y->at;
}

static int cmp_first(const void *a, const void *b, void *firsts)
{
	const size_t *f = firsts, x = *(const size_t *)a, y = *(const size_t *)b;
	return f[x] < f[y] ? -1 : f[x] > f[y];
}

int cmr_class_means(const float *txt, char *const *keys, size_t nt, int d, cmr_classes *c)
{
	memset(c, 0, sizeof *c);
	cls_item *it = malloc((nt + 1) * sizeof *it);
	size_t *group = malloc((nt + 1) * sizeof *group), *first = malloc((nt + 1) * sizeof *first);
	size_t *order = malloc((nt + 1) * sizeof *order);
	if (!it || !group || !first || !order)
		goto oom;
	for (size_t t = 0; t < nt; t++) {
		const char *h = strrchr(keys[t], '#');
		it[t] = (cls_item){keys[t], h ? (size_t)(h - keys[t]) : strlen(keys[t]), t};
	}
	qsort(it, nt, sizeof *it, cmp_cls);
	size_t ng = 0;
	for (size_t t = 0; t < nt; t++) {
		if (t == 0 || it[t].len != it[t - 1].len || memcmp(it[t].key, it[t - 1].key, it[t].len) != 0)
			first[ng++] = it[t].at; /* sorted by position within a group: its first text */
		group[it[t].at] = ng - 1;
	}
	/* the classes in the order of their first text */
	for (size_t g = 0; g < ng; g++)
		order[g] = g;
	qsort_r(order, ng, sizeof *order, cmp_first, first);
	size_t *rank = malloc((ng + 1) * sizeof *rank);
	c->name = calloc(ng + 1, sizeof *c->name);
	c->emb = calloc(ng * (size_t)d + 1, sizeof *c->emb);
	c->texts = calloc(ng + 1, sizeof *c->texts);
	if (!rank || !c->name || !c->emb || !c->texts) {
		free(rank);
		goto oom;
	}
	c->n = ng;
	for (size_t g = 0; g < ng; g++)
		rank[order[g]] = g;
	for (size_t g = 0; g < ng; g++) {
		const char *k = keys[first[order[g]]], *h = strrchr(k, '#');
		if (!(c->name[g] = strndup(k, h ? (size_t)(h - k) : strlen(k)))) {
			free(rank);
			goto oom;
		}
	}
	for (size_t t = 0; t < nt; t++) { /* in input order: the sums do not depend on the sort */
		size_t g = rank[group[t]];
		double nrm = 0;
		for (int j = 0; j < d; j++)
			nrm += (double)txt[t * (size_t)d + j] * txt[t * (size_t)d + j];
		float s = nrm > 0 ? (float)(1 / sqrt(nrm)) : 0;
		for (int j = 0; j < d; j++)
			c->emb[g * (size_t)d + j] += txt[t * (size_t)d + j] * s;
		c->texts[g]++;
	}
	free(rank);
	for (size_t g = 0; g < ng; g++) {
		double nrm = 0;
		for (int j = 0; j < d; j++)
			nrm += (double)c->emb[g * (size_t)d + j] * c->emb[g * (size_t)d + j];
		float s = nrm > 0 ? (float)(1 / sqrt(nrm)) : 0;
		for (int j = 0; j < d; j++)
			c->emb[g * (size_t)d + j] *= s;
	}
	free(it), free(group), free(first), free(order);
	return 0;
oom:
	free(it), free(group), free(first), free(order);
	cmr_classes_free(c);
	return -1;
}

void cmr_classes_free(cmr_classes *c)
{
	for (size_t g = 0; c->name && g < c->n; g++)
		free(c->name[g]);
	free(c->name);
	free(c->emb);
	free(c->texts);
	memset(c, 0, sizeof *c);
}

int cmr_classify(const cmr_ops *ops, const float *img, size_t ni, const cmr_classes *c, int d,
		 const uint32_t *truth, uint32_t *rank, uint32_t *best, size_t chunk)
{
	if (chunk == 0)
		chunk = 256;
	float *sim = malloc(chunk * c->n * sizeof *sim + 1);
	if (!sim)
		return -1;
	for (size_t i0 = 0; i0 < ni; i0 += chunk) {
		size_t m = ni - i0 < chunk ? ni - i0 : chunk;
		ops->matmul_nt(img + i0 * (size_t)d, c->emb, sim, (int)m, (int)c->n, d);
		for (size_t i = 0; i < m; i++) {
			const float *row = sim + i * c->n;
			size_t b = 0;
			for (size_t j = 1; j < c->n; j++)
				if (row[j] > row[b])
					b = j;
			best[i0 + i] = (uint32_t)b;
			rank[i0 + i] = rank_of(row, c->n, truth[i0 + i]);
		}
	}
	free(sim);
	return 0;
}

/* ---- search by late interaction (cmr-query --score maxsim-mean) ---- */
typedef struct {
	const float *row;
} by_score;

/* descending score, then ascending index: a candidate scoring the same as another comes after it */
static int cmp_hit(const void *a, const void *b, void *ctx)
{
	const float *row = ((const by_score *)ctx)->row;
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	if (row[x] != row[y])
		return row[x] > row[y] ? -1 : 1;
	return x < y ? -1 : x > y;
}

int cmr_maxsim_search(const cmr_ops *ops, const cmr_multi *items, const cmr_multi *queries, int k, uint64_t *ord,
		      float *score)
{
	size_t n = items->n, nq = queries->n;
	if (k < 1)
		return -1;
	size_t kk = (size_t)k < n ? (size_t)k : n;
	/* queries a block: at most 16M scores, at least one query */
	size_t qb = n ? (size_t)(16u << 20) / n : nq;
	qb = qb < 1 ? 1 : qb > nq ? nq : qb;
	float *sim = malloc((qb * n + 1) * sizeof *sim);
	uint64_t *idx = malloc((n + 1) * sizeof *idx);
	if (!sim || !idx) {
		free(sim), free(idx);
		return -1;
	}
	for (size_t q0 = 0; q0 < nq; q0 += qb) {
		size_t m = nq - q0 < qb ? nq - q0 : qb;
		if (n && cmr_maxsim_block(ops, queries, q0, m, items, 0, n, sim, n, 0) < 0) {
			free(sim), free(idx);
			return -1;
		}
		for (size_t q = 0; q < m; q++) {
			by_score c = {sim + q * n};
			for (size_t i = 0; i < n; i++)
				idx[i] = i;
			qsort_r(idx, n, sizeof *idx, cmp_hit, &c);
			uint64_t *o = ord + (q0 + q) * (size_t)k;
			float *s = score + (q0 + q) * (size_t)k;
			for (size_t r = 0; r < (size_t)k; r++) {
				o[r] = r < kk ? idx[r] : UINT64_MAX;
				s[r] = r < kk ? c.row[idx[r]] : 0;
			}
		}
	}
	free(sim), free(idx);
	return 0;
}
