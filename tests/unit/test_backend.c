/* test_backend.c - every registered backend against the reference: its memory (alloc,
 * upload, download) and glue operations exactly (they are elementwise or copies), and a whole
 * tiny model's forward and backward passes through them within 1e-6 (relative norms; blas:
 * 2.5e-7 measured). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "model/clip.h"
#include "model/train.h"
#include "tiny.h"
#include "unit.h"

static void fill(float *x, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++) {
		seed = seed * 1664525u + 1013904223u;
		x[i] = (float)((int)(seed >> 9) % 2001 - 1000) / 500.0f;
	}
}

/* a batch of BB seeded 32x32 images and captions for the tiny model */
enum { BB = 3 };
typedef struct {
	unsigned char px[BB][32 * 32 * 3];
	const unsigned char *pp[BB];
	int32_t ids[BB][9];
	const int32_t *ip[BB];
	int lens[BB];
} tiny_batch;

static void tiny_batch_fill(tiny_batch *t, int mul, int off, int len0)
{
	for (int b = 0; b < BB; b++) {
		for (int i = 0; i < 32 * 32 * 3; i++)
			t->px[b][i] = (unsigned char)((i * mul + b * off) % 256);
		t->lens[b] = len0 + 2 * b;
		t->ids[b][0] = 49406;
		for (int i = 1; i < t->lens[b] - 1; i++)
			t->ids[b][i] = (i * 7919 + b * 104729) % 49000;
		t->ids[b][t->lens[b] - 1] = 49407;
		t->pp[b] = t->px[b], t->ip[b] = t->ids[b];
	}
}

/* |a - ref|^2 and |ref|^2 summed into s; rel(s): the relative norm |a - ref| / |ref| */
static void diff_acc(double s[2], const float *a, const float *ref, size_t n)
{
	for (size_t i = 0; i < n; i++)
		s[0] += ((double)a[i] - ref[i]) * ((double)a[i] - ref[i]), s[1] += (double)ref[i] * ref[i];
}
static double rel(const double s[2]) { return sqrt(s[0] / s[1]); }

/* runs one glue operation on backend f's buffers and on the reference's host arrays */
enum { N = 6 * 40, D = 40 };

static int glue_matches(const cmr_ops *f)
{
	const cmr_ops *r = &cmr_ops_ref;
	float a[N], b[N], want[N], got[N];
	int idx[6] = {3, -1, 0, 5, 3, 1};
	fill(a, N, 1), fill(b, N, 2);
	float *da = f->alloc(sizeof a), *db = f->alloc(sizeof b);
	int *di = f->alloc(sizeof idx);
	if (!da || !db || !di)
		return 0;
	int ok = 1;
#define RESET() (f->upload(da, a, sizeof a), f->upload(db, b, sizeof b), memcpy(want, a, sizeof a))
#define SAME(what) (f->sync(), f->download(got, da, sizeof got), ok &= memcmp(got, want, sizeof got) == 0, \
		    ok ? 0 : fprintf(stderr, "  %s: %s differs from ref\n", f->name, what))
	f->upload(di, idx, sizeof idx);
	RESET(), f->zero(da, N), r->zero(want, N), SAME("zero");
	RESET(), f->copy(da, db, N), r->copy(want, b, N), SAME("copy");
	RESET(), f->scale(da, N, 0.37f), r->scale(want, N, 0.37f), SAME("scale");
	RESET(), f->add(da, da, db, N), r->add(want, want, b, N), SAME("add");
	int gi[6] = {3, 2, 0, 5, 3, 1}; /* gather takes rows, no -1 */
	int *dgi = f->alloc(sizeof gi);
	if (!dgi)
		return 0;
	f->upload(dgi, gi, sizeof gi);
	RESET(), f->gather(da, db, dgi, 6, D), r->gather(want, b, gi, 6, D), SAME("gather");
	f->free(dgi);
	RESET(), f->gather_add(da, db, di, 6, D), r->gather_add(want, b, idx, 6, D), SAME("gather_add");
	RESET(), f->scatter_add(da, db, di, 6, D), r->scatter_add(want, b, idx, 6, D), SAME("scatter_add");
	RESET(), f->set_rows(da, db, di, 6, D), r->set_rows(want, b, idx, 6, D), SAME("set_rows");
	RESET(), f->set_rows(da, NULL, di, 6, D), r->set_rows(want, NULL, idx, 6, D), SAME("set_rows zero");
	/* and what it means: the rows with an index replaced, the others kept */
	float sr[N];
	memcpy(sr, a, sizeof sr);
	r->set_rows(sr, b, idx, 6, D);
	for (int i = 0; i < 6; i++)
		for (int d = 0; d < D; d++)
			ok &= sr[i * D + d] == (idx[i] >= 0 ? b[idx[i] * D + d] : a[i * D + d]);
	double s1 = f->sumsq(da, N), s2 = r->sumsq(want, N);
	ok &= (f->caps & CMR_OPS_HOST) ? s1 == s2 : fabs(s1 - s2) <= 1e-12 * s2; /* a device's own order */
	/* matmul_nt: [6, D] x [6, D]^T, as linear; the BLAS one to float rounding */
	float c1[36], c2[36];
	float *dc = f->alloc(sizeof c1);
	RESET(), f->matmul_nt(da, db, dc, 6, 6, D), f->download(c1, dc, sizeof c1), r->matmul_nt(a, b, c2, 6, 6, D);
	for (int i = 0; i < 36; i++)
		ok &= fabsf(c1[i] - c2[i]) <= 1e-5f * (1 + fabsf(c2[i]));
	/* patchify two 8x8 images in 4x4 patches */
	unsigned char px[2][8 * 8 * 3];
	for (int i = 0; i < 2 * 8 * 8 * 3; i++)
		px[i / 192][i % 192] = (unsigned char)(i * 37 % 251);
	const unsigned char *pp[2] = {px[0], px[1]};
	float mean[3] = {0.5f, 0.4f, 0.3f}, sd[3] = {0.2f, 0.25f, 0.3f};
	float p1[8 * 48], p2[8 * 48];
	float *dp = f->alloc(sizeof p1);
	f->patchify(dp, pp, 2, 8, 4, mean, sd), f->download(p1, dp, sizeof p1), r->patchify(p2, pp, 2, 8, 4, mean, sd);
	ok &= memcmp(p1, p2, sizeof p1) == 0;
	/* adamw: each backend's own (the fast ones in float, the reference in double), three
	 * steps, within float rounding of the reference: |p - p_ref| <= 5e-7 (1 + |p_ref|) (measured
	 * 1.7e-7) */
	float g[N], m1[N] = {0}, v1[N] = {0}, m2[N] = {0}, v2[N] = {0};
	fill(g, N, 3);
	float *dg = f->alloc(sizeof g), *dm = f->alloc(sizeof m1), *dv = f->alloc(sizeof v1);
	f->upload(dg, g, sizeof g), f->upload(dm, m1, sizeof m1), f->upload(dv, v1, sizeof v1);
	RESET();
	double worst = 0;
	for (int t = 1; t <= 3; t++) {
		f->adamw(da, dg, dm, dv, N, 1e-2f, 0.9f, 0.98f, 1e-6f, 0.1f, t);
		r->adamw(want, g, m2, v2, N, 1e-2f, 0.9f, 0.98f, 1e-6f, 0.1f, t);
	}
	f->sync(), f->download(got, da, sizeof got);
	for (int i = 0; i < N; i++) {
		double e = fabs((double)got[i] - want[i]) / (1 + fabs(want[i]));
		worst = e > worst ? e : worst;
	}
	if (worst > 5e-7 || getenv("CMR_TEST_VERBOSE"))
		fprintf(stderr, "  %s: adamw, 3 steps: largest relative difference from ref %.3g\n", f->name, worst);
	ok &= worst <= 5e-7;
	f->free(da), f->free(db), f->free(di), f->free(dc), f->free(dp), f->free(dg), f->free(dm), f->free(dv);
#undef RESET
#undef SAME
	return ok;
}

TEST(backends_registry_and_glue)
{
	CHECK(cmr_backends[0] == &cmr_ops_ref && cmr_ops_find("ref") == &cmr_ops_ref);
	CHECK(cmr_ops_find("nonesuch") == NULL && strstr(cmr_ops_names(), "blas"));
	for (int i = 0; cmr_backends[i]; i++) {
		const cmr_ops *f = cmr_backends[i];
		CHECK(cmr_ops_find(f->name) == f && f->what && f->alloc && f->linear && f->patchify && f->matmul_nt);
		CHECK(!(f->caps & CMR_OPS_TRAIN) || (f->linear_bw && f->attention_bw && f->adamw && f->sumsq));
		if (unit_backend_usable(f))
			CHECK(glue_matches(f));
	}
	/* the test backend, found by name, not listed; its glue is the reference's bit for bit */
	CHECK(cmr_ops_find("devsim") == &cmr_ops_devsim && !strstr(cmr_ops_names(), "devsim"));
	CHECK(!(cmr_ops_devsim.caps & CMR_OPS_HOST) && glue_matches(&cmr_ops_devsim));
}

/* the forward and backward passes of a tiny model with every parameter trained, on each
 * backend, against the reference backend */
TEST(backends_model_passes_match_ref)
{
	cmr_clip_cfg c = unit_tiny_cfg();
	tiny_batch t;
	tiny_batch_fill(&t, 131, 17, 5);
	float dout[BB * 16];
	fill(dout, BB * 16, 9);
	cmr_clip *mr = cmr_clip_new(&c);
	char err[128];
	CHECK(mr);
	for (int i = 0; i < mr->nparam; i++)
		mr->param[i].flags |= CMR_PARAM_TRAIN;
	CHECK(cmr_clip_init(mr, 4, err, sizeof err) == 0 && cmr_clip_grads(mr) == 0);
	float oref[2][BB * 16];
	float *gref = malloc(mr->ntrain * sizeof *gref);
	CHECK(gref);
	for (int pass = 0; cmr_backends[pass]; pass++) {
		const cmr_ops *f = cmr_backends[pass];
		float o[2][BB * 16];
		if (!(f->caps & CMR_OPS_HOST)) /* a device backend: on a placed model, below */
			continue;
		cmr_clip_zero_grad(mr);
		for (int k = 0; k < 2; k++) {
			cmr_clip_ws *ws = cmr_clip_ws_new(mr, f, k, BB, 32, 1);
			cmr_batch in = {.B = BB, .pixels = t.pp, .ids = t.ip, .lens = t.lens};
			CHECK(ws && cmr_clip_forward(mr, k, f, ws, &in, o[k]) == 0);
			cmr_clip_backward(mr, k, f, ws, dout);
			cmr_clip_ws_free(ws);
		}
		if (pass == 0) {
			memcpy(oref, o, sizeof o);
			memcpy(gref, mr->grad, mr->ntrain * sizeof *gref);
			continue;
		}
		double wo = 0, sg[2] = {0, 0};
		for (int k = 0; k < 2; k++) { /* per tower */
			double so[2] = {0, 0};
			diff_acc(so, o[k], oref[k], BB * 16);
			wo = fmax(wo, rel(so));
		}
		diff_acc(sg, mr->grad, gref, mr->ntrain);
		double wg = rel(sg);
		if (getenv("CMR_TEST_VERBOSE") || wo > 1e-6 || wg > 1e-6)
			fprintf(stderr, "  %s vs ref: outputs %.3g, gradients %.3g (relative norms)\n", f->name,
				wo, wg);
		CHECK(wo <= 1e-6 && wg <= 1e-6); /* measured 2.5e-7 and 2.6e-7 for blas */
	}
	free(gref);
	cmr_clip_free(mr);
}

/* the BLAS backend's AdamW: its vector path (four at a time) and its scalar tail give the same
 * bits: n = 4k + 3 elements in one call equal each element stepped alone (the tail's path) */
TEST(blas_adamw_vector_and_scalar_paths_agree)
{
	enum { AN = 4 * 50 + 3 };
	float p[AN], g[AN], m[AN] = {0}, v[AN] = {0}, p1[AN], m1[AN] = {0}, v1[AN] = {0};
	fill(p, AN, 5), fill(g, AN, 6);
	memcpy(p1, p, sizeof p);
	for (int t = 1; t <= 3; t++) {
		cmr_ops_blas.adamw(p, g, m, v, AN, 3e-3f, 0.9f, 0.98f, 1e-6f, 0.2f, t);
		for (int i = 0; i < AN; i++)
			cmr_ops_blas.adamw(p1 + i, g + i, m1 + i, v1 + i, 1, 3e-3f, 0.9f, 0.98f, 1e-6f, 0.2f, t);
	}
	CHECK(memcmp(p, p1, sizeof p) == 0 && memcmp(m, m1, sizeof m) == 0 && memcmp(v, v1, sizeof v) == 0);
}

/* A model placed on a device backend, trained two steps (forward and backward passes of both
 * towers, gradient clipping, AdamW), against the host reference: devsim (the reference's
 * arithmetic behind memory the host cannot read, so any host access of it faults) gives the
 * same bits; a real device (cuda) within 1e-5 (relative norms) in fp32 and 1e-2 with tf32 or
 * bf16 products. The values come back with cmr_clip_fetch; an unplaced model is refused, and
 * so is a model with a module. */
static void placed_vs_host(const cmr_ops *f, int precision, double tol)
{
	cmr_clip_cfg c = unit_tiny_cfg();
	tiny_batch t;
	tiny_batch_fill(&t, 97, 31, 4);
	float dout[BB * 16];
	fill(dout, BB * 16, 11);
	cmr_clip *m[2];
	float o[2][2][BB * 16], *grad[2];
	char err[256];
	CHECK(cmr_ops_open(f, 0, precision, err, sizeof err) == 0);
	for (int d = 0; d < 2; d++) { /* 0: host, ref; 1: placed on f */
		const cmr_ops *on = d ? f : &cmr_ops_ref;
		CHECK((m[d] = cmr_clip_new(&c)) != NULL);
		for (int i = 0; i < m[d]->nparam; i++)
			m[d]->param[i].flags |= CMR_PARAM_TRAIN;
		CHECK(cmr_clip_init(m[d], 4, err, sizeof err) == 0 && cmr_clip_grads(m[d]) == 0);
		if (d) { /* not placed yet: refused */
			cmr_clip_ws *ws = cmr_clip_ws_new(m[d], on, 0, BB, 32, 1);
			cmr_batch in = {.B = BB, .pixels = t.pp};
			CHECK(ws && cmr_clip_forward(m[d], 0, on, ws, &in, o[d][0]) < 0);
			cmr_clip_ws_free(ws);
			CHECK(cmr_clip_place(m[d], on, err, sizeof err) == 0 && m[d]->placed == on);
			CHECK(cmr_clip_place(m[d], &cmr_ops_ref, err, sizeof err) == 0); /* a host one: nothing */
		}
		float *mom = cmr_clip_state_new(m[d], m[d]->ntrain), *vel = cmr_clip_state_new(m[d], m[d]->ntrain);
		CHECK(mom && vel);
		for (int step = 1; step <= 2; step++) {
			cmr_clip_zero_grad(m[d]);
			for (int k = 0; k < 2; k++) {
				cmr_clip_ws *ws = cmr_clip_ws_new(m[d], on, k, BB, 32, 1);
				cmr_batch in = {.B = BB, .pixels = t.pp, .ids = t.ip, .lens = t.lens};
				CHECK(ws && cmr_clip_forward(m[d], k, on, ws, &in, o[d][k]) == 0);
				cmr_clip_backward(m[d], k, on, ws, dout);
				cmr_clip_ws_free(ws);
			}
			cmr_clip_grad_set1(m[d], &m[d]->param[m[d]->logit], 0.25f); /* as the loss adds it */
			cmr_clip_grad_norm(m[d], on, 0.5);
			cmr_clip_adamw_step(m[d], on, mom, vel, step, 1e-2, 0.9, 0.98, 1e-6, 0.1);
		}
		grad[d] = malloc(m[d]->ntrain * sizeof(float));
		CHECK(grad[d]);
		if (d)
			on->download(grad[d], m[d]->grad, m[d]->ntrain * sizeof(float));
		else
			memcpy(grad[d], m[d]->grad, m[d]->ntrain * sizeof(float));
		cmr_clip_fetch(m[d]);
		cmr_clip_state_free(m[d], mom), cmr_clip_state_free(m[d], vel);
	}
	/* relative norms of the last step's outputs (the worse tower), the gradients, the values */
	double e[3] = {0, 0, 0}, sg[2] = {0, 0}, sv[2] = {0, 0};
	for (int k = 0; k < 2; k++) {
		double so[2] = {0, 0};
		diff_acc(so, o[1][k], o[0][k], BB * 16);
		e[0] = fmax(e[0], rel(so));
	}
	diff_acc(sg, grad[1], grad[0], m[0]->ntrain);
	e[1] = rel(sg);
	for (int i = 0; i < m[0]->nparam; i++)
		diff_acc(sv, m[1]->param[i].w, m[0]->param[i].w, m[0]->param[i].n);
	e[2] = rel(sv);
	if (getenv("CMR_TEST_VERBOSE") || e[0] > tol || e[1] > tol || e[2] > tol)
		fprintf(stderr, "  %s (precision %d) placed vs host ref: outputs %.3g, gradients %.3g, values %.3g\n",
			f->name, precision, e[0], e[1], e[2]);
	CHECK(e[0] <= tol && e[1] <= tol && e[2] <= tol);
	cmr_clip *m0 = cmr_clip_new(&c); /* and the steps moved the values */
	CHECK(m0 && cmr_clip_init(m0, 4, err, sizeof err) == 0);
	CHECK(memcmp(m0->param[5].w, m[1]->param[5].w, m0->param[5].n * sizeof(float)) != 0);
	cmr_clip_free(m0);
	free(grad[0]), free(grad[1]);
	cmr_clip_free(m[0]);
	cmr_clip_free(m[1]);
	/* a module on a tower: refused, naming it */
	cmr_clip *mh = cmr_clip_new(&c);
	CHECK(mh && cmr_clip_init(mh, 4, err, sizeof err) == 0);
	cmr_hook h = {.point = CMR_HOOK_MLP};
	cmr_clip_attach(mh, CMR_TOWER_TEXT, &h);
	CHECK(cmr_clip_place(mh, f, err, sizeof err) < 0 && strstr(err, "modules on the text tower"));
	cmr_clip_detach(mh, CMR_TOWER_TEXT, &h);
	cmr_clip_free(mh);
}

TEST(placed_model_equals_host_reference)
{
	placed_vs_host(&cmr_ops_devsim, CMR_PREC_FP32, 0); /* the same bits */
	for (int i = 0; cmr_backends[i]; i++) {
		const cmr_ops *f = cmr_backends[i];
		if (f->caps & CMR_OPS_HOST || !unit_backend_usable(f))
			continue;
		int before = unit_failed;
		placed_vs_host(f, CMR_PREC_FP32, 1e-5);
		placed_vs_host(f, CMR_PREC_TF32, 1e-2);
		placed_vs_host(f, CMR_PREC_BF16, 1e-2);
		cmr_ops_open(f, 0, CMR_PREC_FP32, NULL, 0);
		if (unit_failed != before)
			return;
	}
}
