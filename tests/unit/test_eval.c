/* test_eval.c - ranks and recalls on small cases computed by hand. */
#include <math.h>
#include <string.h>
#include <stdio.h>
#include <stdlib.h>

#include "eval.h"
#include "unit.h"
#include "util.h"

/* 2-d unit vectors at angle a (degrees) */
static void at(float *v, double a)
{
	v[0] = (float)cos(a * M_PI / 180);
	v[1] = (float)sin(a * M_PI / 180);
}

TEST(eval_ranks_by_hand)
{
	/* images at 0, 90, 180 degrees; texts: t0 at 10 (image 0), t1 at 80 (image 0, but nearer
	 * image 1), t2 at 100 (image 1), t3 at 170 (image 2) */
	float img[6], txt[8];
	at(img, 0), at(img + 2, 90), at(img + 4, 180);
	at(txt, 10), at(txt + 2, 80), at(txt + 4, 100), at(txt + 6, 170);
	uint32_t owner[4] = {0, 0, 1, 2}, i2t[3], t2i[4];
	for (size_t chunk = 1; chunk <= 4; chunk++) {
		CHECK(cmr_eval_ranks(&cmr_ops_blas, img, 3, txt, 4, 2, owner, i2t, t2i, chunk) == 0);
		/* t2i: t0 -> image 0 first; t1 -> images by similarity 1 (cos 10), 0 (cos 80): rank 2;
		 * t2 -> 1 first; t3 -> 2 first */
		CHECK(t2i[0] == 1 && t2i[1] == 2 && t2i[2] == 1 && t2i[3] == 1);
		/* i2t: image 0 -> t0 first: 1; image 1 -> t1 (80) and t2 (100) tie at cos 10: t1
		 * comes first in input order, so t2 is rank 2, and image 1 has only t2: rank 2;
		 * image 2 -> t3 first */
		CHECK(i2t[0] == 1 && i2t[1] == 2 && i2t[2] == 1);
	}
	CHECK(fabs(cmr_recall(t2i, 4, 1) - 75.0) < 1e-9);
	CHECK(fabs(cmr_recall(i2t, 3, 1) - 100.0 * 2 / 3) < 1e-9);
	CHECK(cmr_recall(t2i, 4, 10) == 100.0); /* K larger than N */
	CHECK(cmr_rank_median(t2i, 4) == 1.0);
	CHECK(cmr_rank_mean(t2i, 4) == 1.25);
	CHECK(cmr_rank_median(i2t, 3) == 1.0);
	uint32_t even[4] = {4, 1, 3, 2};
	CHECK(cmr_rank_median(even, 4) == 2.5);
}

TEST(eval_all_ties_follow_input_order)
{
	/* every similarity equal: rank = 1 + number of earlier candidates */
	float img[4] = {1, 0, 1, 0}, txt[6] = {1, 0, 1, 0, 1, 0};
	uint32_t owner[3] = {1, 0, 1}, i2t[2], t2i[3];
	CHECK(cmr_eval_ranks(&cmr_ops_blas, img, 2, txt, 3, 2, owner, i2t, t2i, 2) == 0);
	CHECK(t2i[0] == 2 && t2i[1] == 1 && t2i[2] == 2);
	/* image 0's text is t1: one earlier text -> 2; image 1's texts t0 (rank 1), t2 (rank 3) */
	CHECK(i2t[0] == 2 && i2t[1] == 1);
}

TEST(eval_several_captions_take_the_best)
{
	/* one image, three texts of it at 60, 0, 30 degrees plus a distractor text at 5 degrees
	 * belonging to image 1 (at 90) */
	float img[4], txt[8];
	at(img, 0), at(img + 2, 90);
	at(txt, 60), at(txt + 2, 0), at(txt + 4, 30), at(txt + 6, 5);
	uint32_t owner[4] = {0, 0, 0, 1}, i2t[2], t2i[4];
	CHECK(cmr_eval_ranks(&cmr_ops_blas, img, 2, txt, 4, 2, owner, i2t, t2i, 3) == 0);
	CHECK(i2t[0] == 1);
	/* image 1 at 90: texts by similarity 60 (cos 30), 30, 5, 0: its text (5) is third */
	CHECK(i2t[1] == 3);
}

TEST(eval_image_without_text_is_refused)
{
	float img[4] = {1, 0, 0, 1}, txt[2] = {1, 0};
	uint32_t owner[1] = {0}, i2t[2], t2i[1];
	CHECK(cmr_eval_ranks(&cmr_ops_blas, img, 2, txt, 1, 2, owner, i2t, t2i, 4) == -1);
}

/* The effective rank: 1 for rows along one direction, 2 for two equal orthogonal ones,
 * d for rows spread equally over d directions, and between for unequal spreads. */
TEST(eval_effective_rank_by_hand)
{
	enum { D = 6, N = 24 };
	float x[N * D];
	for (int k = 1; k <= D; k++) { /* rows +e_j, -e_j for j < k: k directions alike */
		memset(x, 0, sizeof x);
		for (int i = 0; i < N; i++)
			x[i * D + (i / 2) % k] = i % 2 ? -1.0f : 1.0f;
		double r = cmr_effective_rank(x, N, D);
		CHECK(fabs(r - k) < 1e-9 * k || (k == 5 && r > 4 && r < 5)); /* 24 rows over 5: not equal */
	}
	memset(x, 0, sizeof x); /* two directions, variances 4 : 1 (singular values 2 : 1) */
	for (int i = 0; i < N; i++)
		x[i * D + (i % 4 < 2 ? 0 : 1)] = (i % 4 < 2 ? 2.0f : 1.0f) * (i % 2 ? -1.0f : 1.0f);
	double p = 2.0 / 3, want = exp(-(p * log(p) + (1 - p) * log(1 - p)));
	CHECK(fabs(cmr_effective_rank(x, N, D) - want) < 1e-9);
	CHECK(cmr_effective_rank(x, 1, D) == -1);
}

/* ---- late interaction (--score maxsim-mean) ---- */
static uint32_t ms_rs = 99;
static float ms_rnd(void)
{
	ms_rs = ms_rs * 1664525u + 1013904223u;
	return (float)((int)(ms_rs >> 9) % 2001 - 1000) / 1000.0f;
}

static void multi_random(cmr_multi *m, size_t n, int maxrows, int d)
{
	float rows[64 * 16];
	for (size_t k = 0; k < n; k++) {
		int r = 1 + (int)(ms_rs % (unsigned)maxrows);
		for (int i = 0; i < r * d; i++)
			rows[i] = ms_rnd();
		cmr_unit_rows(rows, (size_t)r, d);
		char key[32];
		snprintf(key, sizeof key, "k%zu", k);
		cmr_multi_push(m, rows, (uint64_t)r, d, key);
	}
}

TEST(maxsim_equals_brute_force)
{
	cmr_multi img = {0}, txt = {0};
	multi_random(&img, 37, 9, 16);
	multi_random(&txt, 53, 6, 16);
	CHECK(img.n == 37 && txt.n == 53);
	float sim[53 * 37], simT[37 * 53];
	double worst = 0;
	for (int o = 0; o < 2; o++) {
		const cmr_ops *ops = o ? &cmr_ops_blas : &cmr_ops_ref;
		CHECK(cmr_maxsim_block(ops, &txt, 0, 53, &img, 0, 37, sim, 37, 0) == 0);
		CHECK(cmr_maxsim_block(ops, &txt, 5, 20, &img, 3, 30, simT, 20, 1) == 0); /* a block, transposed */
		for (size_t t = 0; t < 53; t++)
			for (size_t i = 0; i < 37; i++) {
				double s = 0;
				for (uint64_t w = txt.off[t]; w < txt.off[t + 1]; w++) {
					double mx = -1e30;
					for (uint64_t r = img.off[i]; r < img.off[i + 1]; r++) {
						double dot = 0;
						for (int j = 0; j < 16; j++)
							dot += (double)txt.v[w * 16 + j] * img.v[r * 16 + j];
						mx = dot > mx ? dot : mx;
					}
					s += mx;
				}
				s /= (double)(txt.off[t + 1] - txt.off[t]);
				worst = fmax(worst, fabs(sim[t * 37 + i] - s));
				if (t >= 5 && t < 25 && i >= 3 && i < 33)
					worst = fmax(worst, fabs(simT[(i - 3) * 20 + (t - 5)] - s));
			}
	}
	if (getenv("CMR_TEST_VERBOSE"))
		fprintf(stderr, "maxsim vs brute force: worst %g\n", worst);
	CHECK(worst < 2e-7); /* measured 8.4e-8 (float products, blas) */
	cmr_multi_free(&img);
	cmr_multi_free(&txt);
}

TEST(maxsim_of_single_rows_ranks_as_cosine)
{
	cmr_multi img = {0}, txt = {0};
	multi_random(&img, 40, 1, 8);
	multi_random(&txt, 120, 1, 8);
	uint32_t owner[120], a1[40], a2[120], b1[40], b2[120];
	for (int t = 0; t < 120; t++)
		owner[t] = (uint32_t)(t % 40);
	CHECK(cmr_eval_ranks(&cmr_ops_ref, img.v, 40, txt.v, 120, 8, owner, a1, a2, 16) == 0);
	CHECK(cmr_eval_ranks_maxsim(&cmr_ops_ref, &img, &txt, owner, b1, b2, 16) == 0);
	CHECK(memcmp(a1, b1, sizeof a1) == 0 && memcmp(a2, b2, sizeof a2) == 0);
	cmr_multi_free(&img);
	cmr_multi_free(&txt);
}

/* search (cmr-query --score maxsim-mean): each query's hits are the items in the order of
 * the brute-force score, ties to the earlier item; an item of no rows scores 0; past n, none */
TEST(maxsim_search_is_the_sorted_brute_force)
{
	cmr_multi img = {0}, txt = {0};
	multi_random(&img, 30, 7, 8);
	multi_random(&txt, 11, 4, 8);
	/* a copy of item 4 later (a tie: it must come after 4) and an item of no rows */
	CHECK(cmr_multi_push(&img, img.v + img.off[4] * 8, img.off[5] - img.off[4], 8, "copy-of-4") == 0);
	CHECK(cmr_multi_push(&img, NULL, 0, 8, "empty") == 0);
	size_t n = img.n;
	float sim[11 * 32], worst = 0;
	CHECK(n == 32 && cmr_maxsim_block(&cmr_ops_ref, &txt, 0, 11, &img, 0, n, sim, n, 0) == 0);
	for (int o = 0; o < 2; o++) {
		const cmr_ops *ops = o ? &cmr_ops_blas : &cmr_ops_ref;
		int k = o ? 40 : 5; /* more than n: the rest is empty */
		uint64_t ord[11 * 40];
		float score[11 * 40];
		CHECK(cmr_maxsim_search(ops, &img, &txt, k, ord, score) == 0);
		for (size_t q = 0; q < 11; q++) {
			const float *row = sim + q * n;
			for (int r = 0; r < k; r++) {
				uint64_t h = ord[q * (size_t)k + (size_t)r];
				if ((size_t)r >= n) {
					CHECK(h == UINT64_MAX);
					continue;
				}
				/* how many items rank above h by the reference score (ties: earlier) */
				size_t above = 0;
				for (size_t i = 0; i < n; i++)
					above += row[i] > row[h] || (row[i] == row[h] && i < h);
				if (o == 0)
					CHECK(above == (size_t)r && score[q * (size_t)k + (size_t)r] == row[h]);
				else { /* blas: each hit's score is its reference score */
					float e = fabsf(score[q * (size_t)k + (size_t)r] - row[h]);
					worst = e > worst ? e : worst;
				}
				if (h == 31)
					CHECK(score[q * (size_t)k + (size_t)r] == 0);
			}
			/* the copy of item 4 comes right after it (where both are among the hits) */
			int p4 = -1, pc = -1;
			for (int r = 0; r < k && (size_t)r < n; r++) {
				if (ord[q * (size_t)k + (size_t)r] == 4)
					p4 = r;
				if (ord[q * (size_t)k + (size_t)r] == 30)
					pc = r;
			}
			if (o == 1) /* all 32 are hits, best first (the copy's may differ from 4's by BLAS's rounding) */
				for (int r = 1; r < (int)n; r++)
					CHECK(score[q * (size_t)k + (size_t)r] <= score[q * (size_t)k + (size_t)r - 1]);
			if (o == 0 && p4 >= 0 && p4 < k - 1)
				CHECK(pc == p4 + 1);
		}
	}
	if (getenv("CMR_TEST_VERBOSE"))
		fprintf(stderr, "maxsim search, blas vs ref: worst %g\n", (double)worst);
	CHECK(worst < 2e-7f); /* measured 6e-8 */
	uint64_t o1;
	float s1;
	CHECK(cmr_maxsim_search(&cmr_ops_ref, &img, &txt, 0, &o1, &s1) == -1);
	cmr_multi_free(&img);
	cmr_multi_free(&txt);
}

/* ---- fusion: re-ranking the top k by a second score ---- */
static double fuse_second(const cmr_multi *t, size_t a, const cmr_multi *im, size_t b)
{
	if (t->off[a + 1] == t->off[a] || im->off[b + 1] == im->off[b])
		return 0;
	double s = 0;
	for (uint64_t w = t->off[a]; w < t->off[a + 1]; w++) {
		double mx = -1e30;
		for (uint64_t r = im->off[b]; r < im->off[b + 1]; r++) {
			double dot = 0;
			for (int j = 0; j < t->d; j++)
				dot += (double)t->v[w * t->d + j] * im->v[r * t->d + j];
			mx = dot > mx ? dot : mx;
		}
		s += mx;
	}
	return s / (double)(t->off[a + 1] - t->off[a]);
}

static const double *fz_base, *fz_fused;
static int fz_by_base(const void *a, const void *b)
{
	size_t x = *(const size_t *)a, y = *(const size_t *)b;
	return fz_base[x] != fz_base[y] ? (fz_base[x] > fz_base[y] ? -1 : 1) : (x < y ? -1 : 1);
}
static int fz_by_fused(const void *a, const void *b)
{
	size_t x = *(const size_t *)a, y = *(const size_t *)b;
	return fz_fused[x] != fz_fused[y] ? (fz_fused[x] > fz_fused[y] ? -1 : 1) : (x < y ? -1 : 1);
}

/* the position of c when the n candidates are sorted by base, the first k of them again by fused */
static uint32_t fz_rank(const double *base, const double *fused, size_t n, size_t k, size_t c)
{
	size_t ord[200];
	for (size_t j = 0; j < n; j++)
		ord[j] = j;
	fz_base = base, fz_fused = fused;
	qsort(ord, n, sizeof *ord, fz_by_base);
	qsort(ord, k < n ? k : n, sizeof *ord, fz_by_fused);
	for (size_t j = 0; j < n; j++)
		if (ord[j] == c)
			return (uint32_t)j + 1;
	return 0;
}

TEST(fusion_equals_sorting_by_hand)
{
	enum { NI = 40, NT = 120, D = 8 };
	cmr_multi img = {0}, txt = {0}, img2 = {0}, txt2 = {0};
	multi_random(&img, NI, 1, D);
	multi_random(&txt, NT, 1, D);
	multi_random(&img2, NI, 5, 6);
	cmr_multi tmp = {0};
	multi_random(&tmp, NT, 4, 6);
	for (size_t t = 0; t < NT; t++) /* every fifth text has no rows: its second score is 0 */
		CHECK(cmr_multi_push(&txt2, tmp.v + tmp.off[t] * 6, t % 5 ? tmp.off[t + 1] - tmp.off[t] : 0, 6,
				     tmp.keys[t]) == 0);
	uint32_t owner[NT], i2t[NI], t2i[NT], p1[NI], p2[NT];
	for (int t = 0; t < NT; t++)
		owner[t] = (uint32_t)(t * 7 % NI);
	size_t ks[] = {1, 5, 13, 200};
	float betas[] = {0.0f, 0.3f, 2.0f};
	int changed = 0;
	CHECK(cmr_eval_ranks(&cmr_ops_ref, img.v, NI, txt.v, NT, D, owner, p1, p2, 16) == 0);
	for (int a = 0; a < 4; a++)
		for (int bb = 0; bb < 3; bb++) {
			CHECK(cmr_eval_ranks_fused(&cmr_ops_ref, img.v, NI, txt.v, NT, D, &img2, &txt2, betas[bb], ks[a],
						   owner, i2t, t2i, 16) == 0);
			double base[NT], fused[NT];
			for (size_t t = 0; t < NT; t++) { /* text queries */
				for (size_t i = 0; i < NI; i++) {
					double s = 0;
					for (int j = 0; j < D; j++)
						s += (double)(float)(txt.v[t * D + j] * 1.0) * img.v[i * D + j];
					base[i] = (float)s;
					fused[i] = (double)(float)s + (double)betas[bb] * (float)fuse_second(&txt2, t, &img2, i);
				}
				CHECK(t2i[t] == fz_rank(base, fused, NI, ks[a], owner[t]));
				changed |= t2i[t] != p2[t];
			}
			for (size_t i = 0; i < NI; i++) { /* image queries: the best of its texts */
				for (size_t t = 0; t < NT; t++) {
					double s = 0;
					for (int j = 0; j < D; j++)
						s += (double)img.v[i * D + j] * txt.v[t * D + j];
					base[t] = (float)s;
					fused[t] = (double)(float)s + (double)betas[bb] * (float)fuse_second(&txt2, t, &img2, i);
				}
				uint32_t best = UINT32_MAX;
				for (size_t t = 0; t < NT; t++)
					if (owner[t] == i) {
						uint32_t r = fz_rank(base, fused, NT, ks[a], t);
						best = r < best ? r : best;
					}
				CHECK(i2t[i] == best);
			}
			if (betas[bb] == 0) /* no weight: the plain ranks */
				CHECK(memcmp(i2t, p1, sizeof i2t) == 0 && memcmp(t2i, p2, sizeof t2i) == 0);
		}
	CHECK(changed); /* the second score moved some ranks */
	cmr_multi_free(&img), cmr_multi_free(&txt), cmr_multi_free(&img2), cmr_multi_free(&txt2), cmr_multi_free(&tmp);
}
