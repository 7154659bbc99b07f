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
	int ok = cmr_index_search(ix, q, (uint64_t)nq, k, nprobe, 3, ord, sc) == 0;
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
	cmr_build_opts o = {CMR_INDEX_FLAT, CMR_CODE_F32, 0, 1, 0, 0, NULL, NULL, NULL, NULL};
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
	cmr_build_opts o = {CMR_INDEX_IVF, CMR_CODE_F32, 16, 7, 10, 0, NULL, NULL, NULL, NULL};
	cmr_index *ix = cmr_index_build(&vs, &o, NULL, err, sizeof err);
	CHECK(ix);
	CHECK(ix->list_off[16] == (uint64_t)n);
	CHECK(check_exact(ix, raw, n, qraw, nq, 10, 16));
	cmr_index_free(ix);
	cmr_vecs_free(&vs);
	cmr_vecs_free(&qs);
}

TEST(index_sq8_rows_within_half_a_step)
{
	int n = 300, raw[300 * 8];
	cmr_vecs vs = {0};
	make(&vs, n, raw, 6);
	for (int i = 0; i < n * 8; i++) /* off-grid values */
		vs.v[i] = vs.v[i] * 0.37f + 0.01f * (float)(i % 7);
	char err[256];
	cmr_build_opts o = {CMR_INDEX_FLAT, CMR_CODE_SQ8, 0, 1, 0, 0, NULL, NULL, NULL, NULL};
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
