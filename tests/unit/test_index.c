/* test_index.c - exact search equals a brute-force reference, ties included; IVF visiting
 * every list is exact; SQ8 rows decode within half a step; files round-trip. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "index.h"
#include "unit.h"

typedef struct { int score; uint64_t ord; } pair;

static int better_first(const void *a, const void *b)
{
	const pair *x = a, *y = b;
	if (x->score != y->score)
		return x->score > y->score ? -1 : 1;
	return x->ord < y->ord ? -1 : x->ord > y->ord;
}

/* integer vectors in {-1, 0, 1}^8 (scaled to unit length by a common factor is not needed:
 * cmr_index_search takes the vectors as stored), so dot products are exact and tie often */
static void make(cmr_vecs *vs, int n, int *raw, unsigned seed)
{
	srand(seed);
	for (int i = 0; i < n; i++) {
		float v[8];
		for (int d = 0; d < 8; d++) {
			raw[i * 8 + d] = rand() % 3 - 1;
			v[d] = (float)raw[i * 8 + d];
		}
		char key[16];
		snprintf(key, sizeof key, "k%d", i);
		cmr_vecs_push(vs, v, 8, key);
	}
}

static int check_exact(const cmr_index *ix, const int *raw, int n, const int *qraw, int nq, int k, int nprobe)
{
	float *q = malloc((size_t)nq * 8 * sizeof *q);
	uint64_t *ord = malloc((size_t)nq * k * sizeof *ord);
	float *sc = malloc((size_t)nq * k * sizeof *sc);
	pair *ref = malloc((size_t)n * sizeof *ref);
	for (int i = 0; i < nq * 8; i++)
		q[i] = (float)qraw[i];
	cmr_search_params sp = {.nprobe = nprobe};
	int ok = cmr_index_search(ix, q, (uint64_t)nq, k, &sp, 3, ord, sc) == 0;
	for (int i = 0; ok && i < nq; i++) {
		for (int r = 0; r < n; r++) {
			int s = 0;
			for (int d = 0; d < 8; d++)
				s += qraw[i * 8 + d] * raw[r * 8 + d];
			ref[r] = (pair){s, (uint64_t)r};
		}
		qsort(ref, (size_t)n, sizeof *ref, better_first);
		for (int j = 0; j < k; j++)
			if (j < n ? (ord[i * k + j] != ref[j].ord || sc[i * k + j] != (float)ref[j].score) : ord[i * k + j] != UINT64_MAX) {
				fprintf(stderr, "  query %d hit %d: %llu (%g), reference %llu (%d)\n", i, j,
					(unsigned long long)ord[i * k + j], (double)sc[i * k + j], (unsigned long long)ref[j].ord, ref[j].score);
				ok = 0;
				break;
			}
	}
	free(q), free(ord), free(sc), free(ref);
	return ok;
}

TEST(index_flat_equals_brute_force_with_ties)
{
	int n = 700, nq = 40, raw[700 * 8], qraw[40 * 8];
	cmr_vecs vs = {0}, qs = {0};
	make(&vs, n, raw, 1);
	make(&qs, nq, qraw, 2);
	char err[256];
	cmr_build_opts o = {.kind = CMR_INDEX_FLAT, .code = CMR_CODE_F32, .seed = 1};
	cmr_index *ix = cmr_index_build(&vs, &o, NULL, err, sizeof err);
	CHECK(ix);
	CHECK(check_exact(ix, raw, n, qraw, nq, 10, 1));
	CHECK(check_exact(ix, raw, n, qraw, nq, 1, 1));
	/* k larger than n: missing hits are marked */
	int small[3 * 8];
	cmr_vecs v3 = {0};
	make(&v3, 3, small, 5);
	cmr_index *ix3 = cmr_index_build(&v3, &o, NULL, err, sizeof err);
	CHECK(ix3 && check_exact(ix3, small, 3, qraw, 4, 5, 1));
	cmr_index_free(ix3);
	cmr_vecs_free(&v3);
	/* a file round trip answers the same */
	char path[] = "/tmp/cmr-test-index-XXXXXX";
	int fd = mkstemp(path);
	CHECK(fd >= 0);
	close(fd);
	CHECK(cmr_index_write(ix, path, err, sizeof err) == 0);
	cmr_index *back = cmr_index_open(path, err, sizeof err);
	unlink(path);
	CHECK(back);
	CHECK(back->n == (uint64_t)n && strcmp(back->keys[699], "k699") == 0);
	CHECK(check_exact(back, raw, n, qraw, nq, 10, 1));
	cmr_index_free(back);
	cmr_index_free(ix);
	cmr_vecs_free(&vs);
	cmr_vecs_free(&qs);
}

TEST(index_ivf_all_lists_is_exact)
{
	int n = 700, nq = 40, raw[700 * 8], qraw[40 * 8];
	cmr_vecs vs = {0}, qs = {0};
	make(&vs, n, raw, 3);
	make(&qs, nq, qraw, 4);
	char err[256];
	cmr_build_opts o = {.kind = CMR_INDEX_IVF, .code = CMR_CODE_F32, .nlist = 16, .seed = 7, .iters = 10};
	cmr_index *ix = cmr_index_build(&vs, &o, NULL, err, sizeof err);
	CHECK(ix);
	CHECK(ix->list_off[16] == (uint64_t)n);
	CHECK(check_exact(ix, raw, n, qraw, nq, 10, 16));
	cmr_index_free(ix);
	cmr_vecs_free(&vs);
	cmr_vecs_free(&qs);
}

/* taking the vectors (cmr-index's way: rows permuted in place, no second copy) builds the
 * same index as copying them, flat and IVF; an SQ8 build copies and leaves them */
TEST(index_build_take_equals_build)
{
	int n = 700, raw[700 * 8];
	char err[256];
	for (int kind = 0; kind < 3; kind++) {
		cmr_vecs a = {0}, b = {0};
		make(&a, n, raw, 3);
		make(&b, n, raw, 3);
		cmr_build_opts o = {.kind = kind == 0 ? CMR_INDEX_FLAT : CMR_INDEX_IVF,
				    .code = kind == 2 ? CMR_CODE_SQ8 : CMR_CODE_F32, .nlist = 16, .seed = 7, .iters = 10};
		cmr_index *x = cmr_index_build(&a, &o, NULL, err, sizeof err);
		cmr_index *y = cmr_index_build_take(&b, &o, NULL, err, sizeof err);
		CHECK(x && y && x->n == y->n && a.v);
		CHECK(kind == 2 ? b.v != NULL : b.v == NULL); /* taken, or copied */
		size_t rb = kind == 2 ? 8 : 8 * sizeof(float);
		CHECK(memcmp(x->vectors, y->vectors, (size_t)n * rb) == 0 && memcmp(x->ord, y->ord, n * sizeof *x->ord) == 0);
		CHECK(strcmp(y->keys[699], "k699") == 0 && b.n == (uint64_t)n);
		cmr_index_free(x);
		cmr_index_free(y);
		cmr_vecs_free(&a);
		cmr_vecs_free(&b);
	}
}

TEST(index_sq8_rows_within_half_a_step)
{
	int n = 300, raw[300 * 8];
	cmr_vecs vs = {0};
	make(&vs, n, raw, 6);
	for (int i = 0; i < n * 8; i++) /* off-grid values */
		vs.v[i] = vs.v[i] * 0.37f + 0.01f * (float)(i % 7);
	char err[256];
	cmr_build_opts o = {.kind = CMR_INDEX_FLAT, .code = CMR_CODE_SQ8, .seed = 1};
	cmr_index *ix = cmr_index_build(&vs, &o, NULL, err, sizeof err);
	CHECK(ix);
	float row[8];
	for (int r = 0; r < n; r++) {
		cmr_index_row(ix, (uint64_t)r, row);
		uint64_t i = ix->ord[r];
		for (int d = 0; d < 8; d++)
			CHECK(fabsf(row[d] - vs.v[i * 8 + d]) <= 0.5f * ix->sq[8 + d] * 1.0001f);
	}
	cmr_index_free(ix);
	cmr_vecs_free(&vs);
}

/* PQ: every score the lookup tables give (an exhaustive search: all lists, k = n) equals
 * the plain dot product of the query with the row decoded from its codes (cmr_index_row:
 * scaled centroid plus sub-quantiser centroids), and the order is that of those products;
 * re-ranking gives the exact scores. Flat and IVF, with a dimension of 4 sub-quantisers. */
TEST(index_pq_scores_are_the_decoded_rows_dot_products)
{
	enum { N = 600, D = 32, NQ = 5 };
	cmr_vecs vs = {0};
	srand(11);
	for (int i = 0; i < N; i++) {
		float v[D], nn = 0;
		for (int d = 0; d < D; d++) {
			v[d] = (float)rand() / RAND_MAX - 0.5f + (i % 4 == d % 4 ? 0.4f : 0.0f);
			nn += v[d] * v[d];
		}
		for (int d = 0; d < D; d++)
			v[d] /= sqrtf(nn);
		char key[16];
		snprintf(key, sizeof key, "k%d", i);
		cmr_vecs_push(&vs, v, D, key);
	}
	float q[NQ * D], row[D];
	for (int i = 0; i < NQ * D; i++)
		q[i] = vs.v[(size_t)(i / D) * 37 * D + (size_t)(i % D)] + 0.01f * (float)(i % 5);
	uint64_t *ord = malloc((size_t)NQ * N * sizeof *ord);
	float *sc = malloc((size_t)NQ * N * sizeof *sc);
	double worst = 0;
	for (int kind = 0; kind < 2; kind++) {
		char err[256];
		cmr_build_opts o = {.kind = kind ? CMR_INDEX_IVF : CMR_INDEX_FLAT, .code = CMR_CODE_PQ, .nlist = kind ? 8 : 0,
				    .pq_m = 8, .seed = 3, .keep_exact = 1};
		cmr_index *ix = cmr_index_build(&vs, &o, NULL, err, sizeof err);
		CHECK(ix);
		CHECK(ix->pq_m == 8 && ix->exact && (!kind || ix->pq_scale));
		cmr_search_params sp = {.nprobe = 8};
		CHECK(cmr_index_search(ix, q, NQ, N, &sp, 2, ord, sc) == 0);
		/* the decoded row of each ordinal */
		float *dec = malloc((size_t)N * D * sizeof *dec);
		for (uint64_t r = 0; r < N; r++)
			cmr_index_row(ix, r, dec + ix->ord[r] * D);
		for (int i = 0; i < NQ; i++)
			for (int j = 0; j < N; j++) {
				uint64_t o2 = ord[(size_t)i * N + j];
				CHECK(o2 < N);
				double ref = 0;
				for (int d = 0; d < D; d++)
					ref += (double)q[i * D + d] * dec[o2 * D + d];
				double e = fabs(ref - sc[(size_t)i * N + j]);
				worst = e > worst ? e : worst;
				CHECK(e < 3e-7); /* measured 1.0e-7 */
				if (j)
					CHECK(sc[(size_t)i * N + j] <= sc[(size_t)i * N + j - 1]);
			}
		/* re-ranking the 50 best by codes: exact scores, best first */
		sp.rerank = 50;
		CHECK(cmr_index_search(ix, q, NQ, 10, &sp, 1, ord, sc) == 0);
		for (int i = 0; i < NQ; i++)
			for (int j = 0; j < 10; j++) {
				double ref = 0;
				for (int d = 0; d < D; d++)
					ref += (double)q[i * D + d] * vs.v[ord[i * 10 + j] * D + d];
				CHECK(fabs(ref - sc[i * 10 + j]) < 1e-6);
			}
		/* a row decodes near its vector: PQ's error, far below the vectors' spread */
		double err2 = 0;
		for (uint64_t r = 0; r < N; r++) {
			cmr_index_row(ix, r, row);
			for (int d = 0; d < D; d++) {
				double e = row[d] - vs.v[ix->ord[r] * D + d];
				err2 += e * e;
			}
		}
		if (getenv("CMR_TEST_VERBOSE"))
			fprintf(stderr, "  pq %s: mean squared error per vector %.4f\n", kind ? "ivf" : "flat", err2 / N);
		CHECK(err2 / N < 0.05); /* measured 0.029 flat, 0.020 IVF */
		/* re-ranking needs exact vectors */
		o.keep_exact = 0;
		cmr_index *ne = cmr_index_build(&vs, &o, NULL, err, sizeof err);
		CHECK(ne && !ne->exact);
		CHECK(cmr_index_search(ne, q, NQ, 10, &sp, 1, ord, sc) == -1);
		cmr_index_free(ne);
		free(dec);
		cmr_index_free(ix);
	}
	if (getenv("CMR_TEST_VERBOSE"))
		fprintf(stderr, "  pq: largest |table score - decoded dot product| %.3g\n", worst);
	free(ord), free(sc);
	cmr_vecs_free(&vs);
}
