/* test_grad.c - every backward pass against central finite differences of the forward
 * operation (the plain backend), AdamW against a hand-computed step, and the soft
 * contrastive transfer, distillation and class-wise losses against PyTorch's and central differences
 * (tests/golden/soft). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/grad.h"
#include "format/safetensors.h"
#include "format/stream.h"
#include <stdio.h>
#include "unit.h"

static int which; /* the loss under test: 0 InfoNCE, 1 VSE++ */

static float frand(unsigned *s)
{
	*s = *s * 1103515245u + 12345u;
	return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

static void fill(float *a, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		a[i] = frand(&seed);
}

/* compares an analytic gradient with a numeric one; reports the worst element */
static int close_enough(const float *a, const double *num, size_t n, const char *what)
{
	for (size_t i = 0; i < n; i++) {
		double d = fabs(a[i] - num[i]), m = fmax(fabs(a[i]), fabs(num[i]));
		if (d > 2e-3 + 2e-2 * m) {
			fprintf(stderr, "  %s[%zu]: analytic %.6g, numeric %.6g (loss %d)\n", what, i, (double)a[i], num[i], which);
			return 0;
		}
	}
	return 1;
}

/* numeric d/dp of L = sum(w . f()) for each element of p (length n), f evaluated by fn */
typedef double (*loss_fn)(void *ctx);
static float eps = 1e-2f; /* the finite-difference step */
static void numeric(float *p, size_t n, loss_fn f, void *ctx, double *out)
{
	for (size_t i = 0; i < n; i++) {
		float keep = p[i];
		p[i] = keep + eps;
		double a = f(ctx);
		p[i] = keep - eps;
		double b = f(ctx);
		p[i] = keep;
		out[i] = (a - b) / (2 * eps);
	}
}

static double dotw(const float *y, const float *w, size_t n)
{
	double s = 0;
	for (size_t i = 0; i < n; i++)
		s += (double)y[i] * w[i];
	return s;
}

/* ---- linear ---- */
enum { M = 3, K = 5, N = 4 };
static float lx[M * K], lW[N * K], lb[N], ly[M * N], lw[M * N];
static double lin_loss(void *ctx)
{
	(void)ctx;
	cmr_ops_ref.linear(lx, lW, lb, ly, M, K, N);
	return dotw(ly, lw, M * N);
}

TEST(grad_linear)
{
	fill(lx, M * K, 1), fill(lW, N * K, 2), fill(lb, N, 3), fill(lw, M * N, 4);
	float dx[M * K] = {0}, dW[N * K] = {0}, db[N] = {0};
	double nx[M * K], nW[N * K], nb[N];
	cmr_linear_backward(lx, lW, lw, dx, dW, db, M, K, N);
	numeric(lx, M * K, lin_loss, NULL, nx);
	numeric(lW, N * K, lin_loss, NULL, nW);
	numeric(lb, N, lin_loss, NULL, nb);
	CHECK(close_enough(dx, nx, M * K, "dx"));
	CHECK(close_enough(dW, nW, N * K, "dW"));
	CHECK(close_enough(db, nb, N, "db"));
}

/* ---- layernorm ---- */
enum { LM = 3, LD = 7 };
static float nx_[LM * LD], ng[LD], nb_[LD], ny[LM * LD], nw[LM * LD];
static double ln_loss(void *ctx)
{
	(void)ctx;
	cmr_ops_ref.layernorm(nx_, ng, nb_, ny, LM, LD, 1e-5f);
	return dotw(ny, nw, LM * LD);
}

TEST(grad_layernorm)
{
	fill(nx_, LM * LD, 5), fill(ng, LD, 6), fill(nb_, LD, 7), fill(nw, LM * LD, 8);
	float dx[LM * LD] = {0}, dg[LD] = {0}, db[LD] = {0};
	double n1[LM * LD], n2[LD], n3[LD];
	cmr_layernorm_backward(nx_, ng, nw, dx, dg, db, LM, LD, 1e-5f);
	numeric(nx_, LM * LD, ln_loss, NULL, n1);
	numeric(ng, LD, ln_loss, NULL, n2);
	numeric(nb_, LD, ln_loss, NULL, n3);
	CHECK(close_enough(dx, n1, LM * LD, "dx"));
	CHECK(close_enough(dg, n2, LD, "dg"));
	CHECK(close_enough(db, n3, LD, "db"));
}

/* ---- activations ---- */
static float ax[40], ay[40], aw[40];
static int akind;
static double act_loss(void *ctx)
{
	(void)ctx;
	memcpy(ay, ax, sizeof ax);
	cmr_ops_ref.act(ay, 40, akind);
	return dotw(ay, aw, 40);
}

TEST(grad_activations)
{
	for (akind = 0; akind < 3; akind++) {
		fill(ax, 40, 9);
		for (int i = 0; i < 40; i++)
			ax[i] = ax[i] * 3 + (akind == 2 && fabsf(ax[i] * 3) < 0.05f ? 0.1f : 0); /* the curved part; relu's kink
											      * away from the differences */
		fill(aw, 40, 10);
		float dx[40] = {0};
		double n[40];
		cmr_act_backward(ax, aw, dx, 40, akind);
		numeric(ax, 40, act_loss, NULL, n);
		CHECK(close_enough(dx, n, 40, akind == 2 ? "relu" : akind ? "gelu" : "quick_gelu"));
	}
}

/* ---- attention: two segments (lengths 3 and 4), 2 heads of 3 ---- */
enum { AR = 7, AH = 2, ADh = 3, AD = AH * ADh };
static float q[AR * AD], k[AR * AD], v[AR * AD], o[AR * AD], ow[AR * AD], sc[64];
static int st[2] = {0, 3}, ln[2] = {3, 4}, causal;
static double att_loss(void *ctx)
{
	(void)ctx;
	cmr_ops_ref.attention(q, k, v, o, 2, st, ln, AH, ADh, causal, sc);
	return dotw(o, ow, AR * AD);
}

TEST(grad_attention)
{
	for (causal = 0; causal < 2; causal++) {
		fill(q, AR * AD, 11), fill(k, AR * AD, 12), fill(v, AR * AD, 13), fill(ow, AR * AD, 14);
		float dq[AR * AD] = {0}, dk[AR * AD] = {0}, dv[AR * AD] = {0};
		double n1[AR * AD], n2[AR * AD], n3[AR * AD];
		cmr_attention_backward(q, k, v, ow, dq, dk, dv, 2, st, ln, AH, ADh, causal, sc);
		numeric(q, AR * AD, att_loss, NULL, n1);
		numeric(k, AR * AD, att_loss, NULL, n2);
		numeric(v, AR * AD, att_loss, NULL, n3);
		CHECK(close_enough(dq, n1, AR * AD, "dq"));
		CHECK(close_enough(dk, n2, AR * AD, "dk"));
		CHECK(close_enough(dv, n3, AR * AD, "dv"));
	}
}

/* ---- losses ---- */
enum { B = 5, P = 6 };
static float ei[B * P], et[B * P], lt;
static double loss_of(void *ctx)
{
	(void)ctx;
	return which ? cmr_vse_hardest(ei, et, B, P, 0.2f, NULL, NULL) : cmr_infonce(ei, et, B, P, lt, NULL, NULL, NULL);
}

TEST(grad_contrastive_losses)
{
	for (which = 0; which < 2; which++) {
		fill(ei, B * P, 15), fill(et, B * P, 16);
		lt = 1.0f;
		/* the hinge and the choice of the hardest negative have kinks: a smaller step */
		eps = which ? 1e-3f : 1e-2f;
		float di[B * P] = {0}, dt[B * P] = {0}, dl = 0;
		double n1[B * P], n2[B * P], n3[1];
		double L = which ? cmr_vse_hardest(ei, et, B, P, 0.2f, di, dt) : cmr_infonce(ei, et, B, P, lt, di, dt, &dl);
		CHECK(L > 0);
		numeric(ei, B * P, loss_of, NULL, n1);
		numeric(et, B * P, loss_of, NULL, n2);
		CHECK(close_enough(di, n1, B * P, "dimg"));
		CHECK(close_enough(dt, n2, B * P, "dtxt"));
		if (!which) {
			numeric(&lt, 1, loss_of, NULL, n3);
			CHECK(close_enough(&dl, n3, 1, "dt"));
		}
	}
	eps = 1e-2f;
	/* perfectly aligned orthogonal pairs at a large scale: loss near 0; the scale clamps */
	float a[4] = {1, 0, 0, 1}, dt2 = 0;
	CHECK(cmr_infonce(a, a, 2, 2, 4.6f, NULL, NULL, &dt2) < 1e-3);
	CHECK(dt2 == 0); /* exp(4.6) > 100: clamped, no gradient */
	/* one pair: nothing to contrast */
	CHECK(fabs(cmr_infonce(a, a, 1, 2, 1.0f, NULL, NULL, NULL)) < 1e-12);
}

TEST(adamw_first_step_by_hand)
{
	float p[2] = {1.0f, -2.0f}, g[2] = {0.5f, -0.25f}, m[2] = {0}, s2[2] = {0};
	cmr_adamw(p, g, m, s2, 2, 0.1f, 0.9f, 0.999f, 1e-8f, 0.01f, 1);
	/* step 1: m-hat = g, v-hat = g^2: p -= lr * (wd * p + sign(g)) (up to eps) */
	CHECK(fabsf(p[0] - (1.0f - 0.1f * (0.01f * 1.0f + 1.0f))) < 1e-6f);
	CHECK(fabsf(p[1] - (-2.0f - 0.1f * (0.01f * -2.0f - 1.0f))) < 1e-6f);
	CHECK(fabsf(m[0] - 0.05f) < 1e-7f && fabsf(s2[0] - 0.00025f) < 1e-7f);
}

/* ---- the fast backend's backward passes against the plain ones ---- */
static int same(const float *a, const float *b, size_t n, double tol, const char *what)
{
	double num = 0, den = 0;
	for (size_t i = 0; i < n; i++) {
		num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
		den += (double)b[i] * b[i];
	}
	if (sqrt(num) > tol * sqrt(den) + 1e-12) {
		fprintf(stderr, "  %s: |backend - ref| / |ref| = %.3g\n", what, sqrt(num / (den > 0 ? den : 1)));
		return 0;
	}
	return 1;
}

/* every registered backend's backward passes against the reference's */
static void backward_matches_ref(const cmr_ops *f)
{
	enum { BM = 37, BK = 48, BN = 29, BH = 4, BDh = 12, BD = BH * BDh };
	const cmr_ops *r = &cmr_ops_ref;
	float *x = malloc(BM * BK * 4), *W = malloc(BN * BK * 4), *dy = malloc(BM * BN * 4);
	float *a[6], *b[6];
	for (int i = 0; i < 6; i++) {
		a[i] = calloc(BM * BK * 2, 4);
		b[i] = calloc(BM * BK * 2, 4);
	}
	fill(x, BM * BK, 31), fill(W, BN * BK, 32), fill(dy, BM * BN, 33);
	/* linear: accumulates onto what is there */
	fill(a[0], BM * BK, 34), memcpy(b[0], a[0], BM * BK * 4);
	f->linear_bw(x, W, dy, a[0], a[1], a[2], BM, BK, BN);
	r->linear_bw(x, W, dy, b[0], b[1], b[2], BM, BK, BN);
	CHECK(same(a[0], b[0], BM * BK, 1e-5, "linear dx") && same(a[1], b[1], BN * BK, 1e-5, "linear dW") &&
	      same(a[2], b[2], BN, 1e-5, "linear db"));
	/* layernorm, rows of BK */
	float *g = malloc(BK * 4), *dz = malloc(BM * BK * 4);
	fill(g, BK, 35), fill(dz, BM * BK, 36);
	for (int i = 0; i < 3; i++)
		memset(a[i], 0, BM * BK * 8), memset(b[i], 0, BM * BK * 8);
	f->layernorm_bw(x, g, dz, a[0], a[1], a[2], BM, BK, 1e-5f);
	r->layernorm_bw(x, g, dz, b[0], b[1], b[2], BM, BK, 1e-5f);
	CHECK(same(a[0], b[0], BM * BK, 1e-5, "layernorm dx") && same(a[1], b[1], BK, 1e-5, "layernorm dg") &&
	      same(a[2], b[2], BK, 1e-5, "layernorm db"));
	/* activations, every kind */
	for (int kind = 0; kind < 3; kind++) {
		static const char *names[3] = {"quick_gelu", "gelu", "relu"};
		memset(a[0], 0, BM * BK * 4), memset(b[0], 0, BM * BK * 4);
		f->act_bw(x, dz, a[0], BM * BK, kind);
		r->act_bw(x, dz, b[0], BM * BK, kind);
		CHECK(same(a[0], b[0], BM * BK, 1e-5, names[kind]));
	}
	/* attention over two segments of 17 and 13 rows [30, BD], causal and not */
	int st2[2] = {0, 17}, ln2[2] = {17, 13};
	float *q2 = malloc(30 * BD * 4), *k2 = malloc(30 * BD * 4), *v2 = malloc(30 * BD * 4), *d = malloc(30 * BD * 4);
	float *sc2 = malloc(2 * 17 * 17 * 4);
	fill(q2, 30 * BD, 37), fill(k2, 30 * BD, 38), fill(v2, 30 * BD, 39), fill(d, 30 * BD, 40);
	for (int cz = 0; cz < 2; cz++) {
		for (int i = 0; i < 6; i++)
			memset(a[i], 0, BM * BK * 8), memset(b[i], 0, BM * BK * 8);
		f->attention_bw(q2, k2, v2, d, a[0], a[1], a[2], 2, st2, ln2, BH, BDh, cz, sc2);
		r->attention_bw(q2, k2, v2, d, b[0], b[1], b[2], 2, st2, ln2, BH, BDh, cz, sc2);
		CHECK(same(a[0], b[0], 30 * BD, 1e-5, "attention dq") && same(a[1], b[1], 30 * BD, 1e-5, "attention dk") &&
		      same(a[2], b[2], 30 * BD, 1e-5, "attention dv"));
	}
	for (int i = 0; i < 6; i++)
		free(a[i]), free(b[i]);
	free(x), free(W), free(dy), free(g), free(dz), free(q2), free(k2), free(v2), free(d), free(sc2);
}

TEST(backends_backward_match_ref)
{
	for (int i = 1; cmr_backends[i]; i++) {
		/* host arrays: a device backend's passes are checked on a placed model (test_backend.c) */
		if (!(cmr_backends[i]->caps & CMR_OPS_HOST) || !unit_backend_usable(cmr_backends[i]))
			continue;
		int before = unit_failed;
		backward_matches_ref(cmr_backends[i]);
		if (unit_failed != before) {
			fprintf(stderr, "  backend %s\n", cmr_backends[i]->name);
			return;
		}
	}
}

/* the golden's tensor NAME as floats (n of them) */
static const float *gold(const cmr_st *g, const char *name, size_t n)
{
	static const float none[64]; /* a missing tensor: the comparisons below fail */
	const cmr_st_tensor *t = cmr_st_get(g, name);
	if (!t || t->dtype != CMR_DTYPE_F32 || t->nbytes != n * sizeof(float)) {
		fprintf(stderr, "tests/golden/soft: no tensor %s of %zu floats\n", name, n);
		unit_fail(__FILE__, __LINE__, name);
		return none;
	}
	return t->data;
}

static double rel_l2(const float *a, const float *r, size_t n)
{
	double num = 0, den = 0;
	for (size_t i = 0; i < n; i++)
		num += ((double)a[i] - r[i]) * ((double)a[i] - r[i]), den += (double)r[i] * r[i];
	return sqrt(num / fmax(den, 1e-30));
}

TEST(grad_soft_losses_match_pytorch)
{
	char path[4096], err[256];
	snprintf(path, sizeof path, "%s/tests/golden/soft/losses.safetensors", unit_srcdir());
	cmr_st *g = cmr_st_open(path, err, sizeof err);
	CHECK(g);
	if (!g)
		return;
	enum { SB = 6, SP = 8, SPT = 12 };
	const float *img = gold(g, "img", SB * SP), *txt = gold(g, "txt", SB * SP), *timg = gold(g, "timg", SB * SPT),
		    *ttxt = gold(g, "ttxt", SB * SPT), *mimg = gold(g, "mimg", SB * SP), *mtxt = gold(g, "mtxt", SB * SP),
		    *pr = gold(g, "params", 6);
	float t = gold(g, "t", 1)[0];
	static const char *names[6] = {"soft_labels", "selective", "distill_kl", "distill_mse", "relaxed_margin", "supcon"};
	const float *lf = gold(g, "labels", SB);
	int lab[SB];
	for (int i = 0; i < SB; i++)
		lab[i] = (int)lf[i];
	double worst = 0;
	for (int lo = 0; lo < 6; lo++) {
		float di[SB * SP] = {0}, dx[SB * SP] = {0}, dt = 0;
		double L = lo == 0   ? cmr_soft_labels(img, txt, SB, SP, t, timg, ttxt, SPT, pr[0], pr[1], di, dx, &dt)
			   : lo == 1 ? cmr_selective(img, txt, SB, SP, t, timg, ttxt, SPT, pr[2], di, dx, &dt)
			   : lo == 2 ? cmr_distill_kl(img, txt, SB, SP, t, timg, ttxt, SPT, pr[3], di, dx, &dt)
			   : lo == 3 ? cmr_distill_mse(img, txt, SB, SP, mimg, mtxt, di, dx)
			   : lo == 4 ? cmr_relaxed_margin(img, txt, SB, SP, timg, ttxt, SPT, pr[4], pr[5], di, dx)
				    : cmr_supcon(img, txt, SB, SP, t, lab, di, dx, &dt);
		char nm[64];
		snprintf(nm, sizeof nm, "%s.loss", names[lo]);
		double lr = gold(g, nm, 1)[0], e[4];
		e[0] = fabs(L - lr) / fabs(lr);
		snprintf(nm, sizeof nm, "%s.dimg", names[lo]);
		e[1] = rel_l2(di, gold(g, nm, SB * SP), SB * SP);
		snprintf(nm, sizeof nm, "%s.dtxt", names[lo]);
		e[2] = rel_l2(dx, gold(g, nm, SB * SP), SB * SP);
		snprintf(nm, sizeof nm, "%s.dt", names[lo]);
		float rdt = gold(g, nm, 1)[0];
		e[3] = lo == 3 || lo == 4 ? fabs(dt - rdt) : fabs(dt - rdt) / fmax(fabs(rdt), 1e-30);
		if (getenv("CMR_TEST_VERBOSE"))
			fprintf(stderr, "%s: loss %.3g, dimg %.3g (dimg[0] %.6g), dtxt %.3g, dt %.3g (relative)\n", names[lo],
				e[0], e[1], di[0], e[2], e[3]);
		for (int i = 0; i < 4; i++)
			worst = fmax(worst, e[i]);
	}
	CHECK(worst <= 3e-7); /* F32 outputs of double arithmetic: measured 8.9e-8 */
	if (worst > 3e-7)
		fprintf(stderr, "soft losses against PyTorch: worst relative error %g\n", worst);
	/* alpha = 0: InfoNCE exactly; a teacher equal to the student: no distillation gradient */
	float a0[SB * SP] = {0}, b0[SB * SP] = {0}, a1[SB * SP] = {0}, b1[SB * SP] = {0}, d0 = 0, d1 = 0;
	double l0 = cmr_infonce(img, txt, SB, SP, t, a0, b0, &d0),
	       l1 = cmr_soft_labels(img, txt, SB, SP, t, timg, ttxt, SPT, 0.0f, pr[1], a1, b1, &d1);
	CHECK(l0 == l1 && d0 == d1 && memcmp(a0, a1, sizeof a0) == 0 && memcmp(b0, b1, sizeof b0) == 0);
	int distinct[SB] = {0, 1, 2, 3, 4, 5}; /* every pair its own class: InfoNCE too */
	memset(a1, 0, sizeof a1), memset(b1, 0, sizeof b1), d1 = 0;
	l1 = cmr_supcon(img, txt, SB, SP, t, distinct, a1, b1, &d1);
	CHECK(l0 == l1 && d0 == d1 && memcmp(a0, a1, sizeof a0) == 0 && memcmp(b0, b1, sizeof b0) == 0);
	float zi[SB * SP] = {0}, zt[SB * SP] = {0}, zs = 0;
	double lk = cmr_distill_kl(img, txt, SB, SP, t, img, txt, SP, (float)exp(-t), zi, zt, &zs);
	double lm = cmr_distill_mse(img, txt, SB, SP, img, txt, zi, zt);
	double gmax = fabs(zs);
	for (int i = 0; i < SB * SP; i++)
		gmax = fmax(gmax, fmax(fabs(zi[i]), fabs(zt[i])));
	if (getenv("CMR_TEST_VERBOSE"))
		fprintf(stderr, "teacher = student: KL %.3g, MSE %.3g, largest gradient %.3g\n", lk, lm, gmax);
	CHECK(fabs(lk) < 1e-6 && fabs(lm) < 1e-12 && gmax < 1e-6);
	cmr_st_close(g);
}

/* the soft losses by central differences (float inputs, double arithmetic inside) */
enum { FB = 5, FP = 6, FPT = 7 };
static float fi[FB * FP], ft[FB * FP], fti[FB * FPT], ftt[FB * FPT], fmi[FB * FP], fmt[FB * FP], fscale = 2.0f;
static const int flab[FB] = {0, 1, 0, 1, 2};
static int soft_which;
static double soft_of(void *ctx)
{
	(void)ctx;
	switch (soft_which) {
	case 0: return cmr_soft_labels(fi, ft, FB, FP, fscale, fti, ftt, FPT, 0.4f, 0.2f, NULL, NULL, NULL);
	case 1: return cmr_selective(fi, ft, FB, FP, fscale, fti, ftt, FPT, 0.3f, NULL, NULL, NULL);
	case 2: return cmr_distill_kl(fi, ft, FB, FP, fscale, fti, ftt, FPT, 0.2f, NULL, NULL, NULL);
	case 3: return cmr_distill_mse(fi, ft, FB, FP, fmi, fmt, NULL, NULL);
	case 4: return cmr_relaxed_margin(fi, ft, FB, FP, fti, ftt, FPT, 1.0f, 1.0f, NULL, NULL);
	default: return cmr_supcon(fi, ft, FB, FP, fscale, flab, NULL, NULL, NULL);
	}
}

TEST(grad_soft_losses_match_finite_differences)
{
	fill(fi, FB * FP, 21), fill(ft, FB * FP, 22), fill(fti, FB * FPT, 23), fill(ftt, FB * FPT, 24);
	fill(fmi, FB * FP, 25), fill(fmt, FB * FP, 26);
	eps = 1e-3f;
	for (soft_which = 0; soft_which < 6; soft_which++) {
		float di[FB * FP] = {0}, dx[FB * FP] = {0}, dl = 0;
		switch (soft_which) {
		case 0: cmr_soft_labels(fi, ft, FB, FP, fscale, fti, ftt, FPT, 0.4f, 0.2f, di, dx, &dl); break;
		case 1: cmr_selective(fi, ft, FB, FP, fscale, fti, ftt, FPT, 0.3f, di, dx, &dl); break;
		case 2: cmr_distill_kl(fi, ft, FB, FP, fscale, fti, ftt, FPT, 0.2f, di, dx, &dl); break;
		case 3: cmr_distill_mse(fi, ft, FB, FP, fmi, fmt, di, dx); break;
		case 4: cmr_relaxed_margin(fi, ft, FB, FP, fti, ftt, FPT, 1.0f, 1.0f, di, dx); break;
		default: cmr_supcon(fi, ft, FB, FP, fscale, flab, di, dx, &dl); break;
		}
		double n1[FB * FP], n2[FB * FP], n3[1];
		numeric(fi, FB * FP, soft_of, NULL, n1);
		numeric(ft, FB * FP, soft_of, NULL, n2);
		numeric(&fscale, 1, soft_of, NULL, n3);
		which = 10 + soft_which; /* for close_enough's message */
		CHECK(close_enough(di, n1, FB * FP, "dimg"));
		CHECK(close_enough(dx, n2, FB * FP, "dtxt"));
		CHECK(close_enough(&dl, n3, 1, "dt"));
	}
	eps = 1e-2f;
}
