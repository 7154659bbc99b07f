/* test_model.c - the model core's seams: a zero-initialised adapter on every hook point
 * leaves the outputs identical, prefix rows are rows like any other (prefix rows holding
 * token embeddings give the same output as those tokens), gradients of adapter and prefix
 * parameters match central finite differences, a partly frozen model computes the same
 * gradients as a fully trained one for what it trains, with no gradient for the rest, and a
 * pool of prompts (issue 17) gives each sample the prefix rows its selection names, and the
 * head's modules (multi-level attention, injection: issue 18) change nothing with their gates
 * at zero and have the gradients of central differences, alone and beside adapters (whose
 * layers then get the gradient of what the head read of them). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/adapter.h"
#include "model/clip.h"
#include "model/levels.h"
#include "model/train.h"
#include "model/tuning.h"
#include "tiny.h"
#include "unit.h"

#define B 3


static uint32_t rs = 12345;
static uint32_t rnd(void)
{
	rs = rs * 1664525u + 1013904223u;
	return rs >> 8;
}

static struct {
	uint8_t px[B][32 * 32 * 3];
	const uint8_t *pp[B];
	int32_t ids[B][12];
	const int32_t *ip[B];
	int lens[B];
} in;

static void make_inputs(void)
{
	for (int b = 0; b < B; b++) {
		for (int i = 0; i < 32 * 32 * 3; i++)
			in.px[b][i] = (uint8_t)(rnd() & 255);
		in.lens[b] = 6 + 2 * b;
		in.ids[b][0] = 49406;
		for (int i = 1; i < in.lens[b] - 1; i++)
			in.ids[b][i] = (int32_t)(rnd() % 49000);
		in.ids[b][in.lens[b] - 1] = 49407;
		in.pp[b] = in.px[b];
		in.ip[b] = in.ids[b];
	}
}

static const cmr_ops *fwd_ops = &cmr_ops_ref;

static int fwd(const cmr_clip *m, int tower, cmr_clip_ws *ws, float *out)
{
	cmr_batch bi = {B, in.pp, NULL, NULL, NULL, 0, NULL}, bt = {B, NULL, in.ip, in.lens, NULL, 0, NULL};
	return cmr_clip_forward(m, tower, fwd_ops, ws, tower == CMR_TOWER_VISION ? &bi : &bt, out);
}

TEST(model_zero_init_adapters_change_nothing)
{
	make_inputs();
	cmr_clip_cfg c = unit_tiny_cfg();
	cmr_clip *m0 = cmr_clip_new(&c), *m1 = cmr_clip_new(&c);
	cmr_adapter ad[2][9];
	char err[256];
	CHECK(m0 && m1);
	for (int k = 0; k < 2; k++)
		for (int p = 0; p < 9; p++) { /* every point; the output points scaled, one with ReLU */
			cmr_adapter_opts o = {.point = p, .rank = 4, .layer_min = 0, .layer_max = 1,
					      .act = p == CMR_HOOK_MLP_OUT ? CMR_ACT_RELU : CMR_ACT_QUICK_GELU,
					      .scale = p >= CMR_HOOK_ATTN_OUT ? 0.1f : 0, .bias = 1, .flags = CMR_PARAM_TRAIN};
			CHECK(cmr_adapter_add(m1, &ad[k][p], k, &o, err, sizeof err) == 0);
		}
	CHECK(cmr_clip_init(m0, 7, err, sizeof err) == 0 && cmr_clip_init(m1, 7, err, sizeof err) == 0);
	CHECK(cmr_clip_grads(m0) == 0 && cmr_clip_grads(m1) == 0);
	for (int k = 0; k < 2; k++) {
		float o0[B * 16], o1[B * 16];
		cmr_clip_ws *w0 = cmr_clip_ws_new(m0, &cmr_ops_ref, k, B, 64, 0), *w1 = cmr_clip_ws_new(m1, &cmr_ops_ref, k, B, 64, 1);
		CHECK(w0 && w1);
		CHECK(fwd(m0, k, w0, o0) == 0 && fwd(m1, k, w1, o1) == 0);
		for (int i = 0; i < B * 16; i++)
			CHECK(o0[i] == o1[i]);
		cmr_clip_ws_free(w0);
		cmr_clip_ws_free(w1);
	}
	/* the base model is frozen: no gradient array, and the backward pass starts at layer 0 */
	for (int i = 0; i < m1->nparam; i++)
		CHECK((m1->param[i].g != NULL) == (m1->param[i].group == CMR_GROUP_ADAPTER));
	CHECK(m1->tower[0].grad_from == 0 && m1->tower[1].grad_from == 0);
	for (int k = 0; k < 2; k++)
		for (int p = 0; p < 9; p++)
			cmr_adapter_free(&ad[k][p]);
	cmr_clip_free(m0);
	cmr_clip_free(m1);
}

TEST(model_prefix_rows_are_rows)
{
	make_inputs();
	cmr_clip_cfg c = unit_tiny_cfg();
	cmr_clip *m0 = cmr_clip_new(&c), *m1 = cmr_clip_new(&c);
	char err[256];
	CHECK(m0 && m1);
	int64_t sh[2] = {2, 32};
	CHECK(cmr_clip_add(m1, "prompts.text.prefix", CMR_GROUP_PROMPT, CMR_TOWER_TEXT, -1, CMR_T_PREFIX, 2, sh,
			   CMR_PARAM_OPTIONAL, 0.02f, 0) >= 0);
	CHECK(cmr_clip_init(m0, 3, err, sizeof err) == 0 && cmr_clip_init(m1, 3, err, sizeof err) == 0);
	CHECK(m1->tower[CMR_TOWER_TEXT].nprefix == 2);
	/* prefix rows holding the embeddings of tokens 1 and 2 of each caption: then the caption
	 * without them gives the plain model's output on the whole caption (one sample a time,
	 * each with its own tokens in the prefix) */
	float *pre = cmr_clip_param(m1, "prompts.text.prefix")->w;
	const float *tok = m1->tower[CMR_TOWER_TEXT].w[CMR_T_TOKEN];
	for (int b = 0; b < B; b++) {
		memcpy(pre, tok + (size_t)in.ids[b][1] * 32, 32 * sizeof(float));
		memcpy(pre + 32, tok + (size_t)in.ids[b][2] * 32, 32 * sizeof(float));
		int32_t shortened[12];
		shortened[0] = in.ids[b][0];
		memcpy(shortened + 1, in.ids[b] + 3, (size_t)(in.lens[b] - 3) * sizeof(int32_t));
		const int32_t *ip0[1] = {in.ids[b]}, *ip1[1] = {shortened};
		int l0[1] = {in.lens[b]}, l1[1] = {in.lens[b] - 2};
		float o0[16], o1[16];
		cmr_clip_ws *w0 = cmr_clip_ws_new(m0, &cmr_ops_ref, CMR_TOWER_TEXT, 1, 16, 0), *w1 = cmr_clip_ws_new(m1, &cmr_ops_ref, CMR_TOWER_TEXT, 1, 16, 0);
		CHECK(w0 && w1);
		CHECK(cmr_clip_encode_texts(m0, &cmr_ops_ref, w0, ip0, l0, 1, o0) == 0);
		CHECK(cmr_clip_encode_texts(m1, &cmr_ops_ref, w1, ip1, l1, 1, o1) == 0);
		for (int i = 0; i < 16; i++)
			CHECK(o0[i] == o1[i]);
		/* and the prefix changes the output when it holds other values */
		pre[0] += 1.0f;
		CHECK(cmr_clip_encode_texts(m1, &cmr_ops_ref, w1, ip1, l1, 1, o1) == 0);
		int differs = 0;
		for (int i = 0; i < 16; i++)
			differs |= o0[i] != o1[i];
		CHECK(differs);
		cmr_clip_ws_free(w0);
		cmr_clip_ws_free(w1);
	}
	cmr_clip_free(m0);
	cmr_clip_free(m1);
}

/* the pool tests' own sequence: the shared one's draws (and the finite-difference test's
 * inputs after them) stay as they were */
static uint32_t own_rs = 777;
static uint32_t own_rnd(void)
{
	own_rs = own_rs * 1664525u + 1013904223u;
	return own_rs >> 8;
}

/* A vision prefix table that is a pool of 4 prompts of 2 rows, 2 taken per image: each
 * image's output and the pool's gradient are those of a plain prefix holding the rows of the
 * prompts it took; the query pass (no_prefix) is the plain model's, its pooled state before
 * the projection is what the projection reads. */
TEST(model_pool_selection_is_a_prefix_per_sample)
{
	make_inputs();
	cmr_clip_cfg c = unit_tiny_cfg();
	cmr_clip *m0 = cmr_clip_new(&c), *mp = cmr_clip_new(&c), *mf = cmr_clip_new(&c);
	char err[256];
	CHECK(m0 && mp && mf);
	enum { NP = 4, L = 2, K = 2, D = 32 };
	mp->tower[CMR_TOWER_VISION].prefix_len = L;
	mp->tower[CMR_TOWER_VISION].prefix_k = K;
	int64_t shp[2] = {NP * L, D}, shf[2] = {K * L, D};
	CHECK(cmr_clip_add(mp, "prompts.vision.pool", CMR_GROUP_PROMPT, CMR_TOWER_VISION, -1, CMR_T_PREFIX, 2, shp,
			   CMR_PARAM_TRAIN | CMR_PARAM_OPTIONAL, 0.5f, 0) >= 0);
	CHECK(cmr_clip_add(mf, "prompts.vision.prefix", CMR_GROUP_PROMPT, CMR_TOWER_VISION, -1, CMR_T_PREFIX, 2, shf,
			   CMR_PARAM_TRAIN | CMR_PARAM_OPTIONAL, 0.5f, 0) >= 0);
	CHECK(cmr_clip_init(m0, 3, err, sizeof err) == 0 && cmr_clip_init(mp, 3, err, sizeof err) == 0 &&
	      cmr_clip_init(mf, 3, err, sizeof err) == 0);
	CHECK(cmr_clip_grads(mp) == 0 && cmr_clip_grads(mf) == 0);
	CHECK(mp->tower[CMR_TOWER_VISION].nprefix == K * L && mp->tower[CMR_TOWER_VISION].prefix_table == NP * L);
	const float *pool = cmr_clip_param(mp, "prompts.vision.pool")->w;
	float *fixed = cmr_clip_param(mf, "prompts.vision.prefix")->w;
	const int32_t sel[B * K] = {3, 1, 0, 2, 2, 2}; /* a prompt may be taken twice */
	float cvec[B * 16], op[B * 16], state[B * D];
	for (int i = 0; i < B * 16; i++)
		cvec[i] = (float)((int)(own_rnd() % 2001) - 1000) / 1000.0f;
	cmr_clip_ws *wp = cmr_clip_ws_new(mp, &cmr_ops_ref, CMR_TOWER_VISION, B, 0, 1);
	cmr_clip_ws *wf = cmr_clip_ws_new(mf, &cmr_ops_ref, CMR_TOWER_VISION, 1, 0, 1);
	CHECK(wp && wf);
	cmr_batch bp = {B, in.pp, NULL, NULL, sel, 0, NULL};
	CHECK(cmr_clip_forward(mp, CMR_TOWER_VISION, &cmr_ops_ref, wp, &bp, op) == 0);
	cmr_clip_backward(mp, CMR_TOWER_VISION, &cmr_ops_ref, wp, cvec);
	float *want = calloc(NP * L * D, sizeof *want);
	CHECK(want != NULL);
	const cmr_param *pf = cmr_clip_param(mf, "prompts.vision.prefix");
	for (int b = 0; b < B; b++) {
		for (int i = 0; i < K * L; i++)
			memcpy(fixed + i * D, pool + ((size_t)sel[b * K + i / L] * L + i % L) * D, D * sizeof(float));
		float of[16];
		cmr_batch bf = {1, in.pp + b, NULL, NULL, NULL, 0, NULL};
		cmr_clip_zero_grad(mf);
		CHECK(cmr_clip_forward(mf, CMR_TOWER_VISION, &cmr_ops_ref, wf, &bf, of) == 0);
		CHECK(memcmp(of, op + b * 16, sizeof of) == 0);
		cmr_clip_backward(mf, CMR_TOWER_VISION, &cmr_ops_ref, wf, cvec + b * 16);
		for (int i = 0; i < K * L; i++)
			for (int d = 0; d < D; d++)
				want[((size_t)sel[b * K + i / L] * L + i % L) * D + d] += pf->g[i * D + d];
	}
	const float *g = cmr_clip_param(mp, "prompts.vision.pool")->g;
	double worst = 0;
	for (int i = 0; i < NP * L * D; i++) {
		double e = fabs((double)g[i] - want[i]);
		worst = e > worst ? e : worst;
	}
	if (getenv("CMR_TEST_VERBOSE"))
		fprintf(stderr, "pool gradient vs per-sample prefixes: max abs difference %g\n", worst);
	CHECK(worst == 0); /* measured: 0 (the same additions in the same order) */
	/* the query pass: no prefix rows, the plain model's output; the state the projection reads */
	float o0[B * 16], oq[B * 16], proj[B * 16];
	cmr_clip_ws *w0 = cmr_clip_ws_new(m0, &cmr_ops_ref, CMR_TOWER_VISION, B, 0, 0);
	CHECK(w0 != NULL);
	cmr_batch b0 = {B, in.pp, NULL, NULL, NULL, 0, NULL}, bq = {B, in.pp, NULL, NULL, NULL, 1, state};
	CHECK(cmr_clip_forward(m0, CMR_TOWER_VISION, &cmr_ops_ref, w0, &b0, o0) == 0);
	CHECK(cmr_clip_forward(mp, CMR_TOWER_VISION, &cmr_ops_ref, wp, &bq, oq) == 0);
	CHECK(memcmp(o0, oq, sizeof o0) == 0);
	cmr_ops_ref.linear(state, mp->tower[CMR_TOWER_VISION].w[CMR_T_PROJ], NULL, proj, B, D, 16);
	CHECK(memcmp(proj, oq, sizeof proj) == 0);
	/* a selection outside the pool is refused */
	const int32_t bad[B * K] = {0, 1, 2, 4, 0, 0};
	cmr_batch bb = {B, in.pp, NULL, NULL, bad, 0, NULL};
	CHECK(cmr_clip_forward(mp, CMR_TOWER_VISION, &cmr_ops_ref, wp, &bb, op) == -1);
	free(want);
	cmr_clip_ws_free(w0);
	cmr_clip_ws_free(wp);
	cmr_clip_ws_free(wf);
	cmr_clip_free(m0);
	cmr_clip_free(mp);
	cmr_clip_free(mf);
}

/* The pool's key pull term (L2P): its gradient with respect to the keys against central
 * differences, and the selection's order and ties. */
TEST(model_pool_pull_gradient_and_selection)
{
	cmr_clip_cfg c = unit_tiny_cfg();
	cmr_clip *m = cmr_clip_new(&c);
	char err[256];
	cmr_tuning t;
	memset(&t, 0, sizeof t);
	snprintf(t.method, sizeof t.method, "pool");
	t.pool_size = 3, t.pool_length = 1, t.pool_topk = 2;
	CHECK(m && cmr_tuning_add(m, &t, 1, err, sizeof err) == 0);
	CHECK(cmr_clip_init(m, 9, err, sizeof err) == 0 && cmr_clip_grads(m) == 0);
	cmr_param *kp = cmr_clip_param(m, "prompt.vision.keys");
	CHECK(kp && kp->g && !(kp->flags & CMR_PARAM_DECAY)); /* cosines: no decay on the keys */
	enum { QB = 3, D = 32 };
	float q[QB * D];
	for (int i = 0; i < QB * D; i++)
		q[i] = (float)((int)(own_rnd() % 2001) - 1000) / 1000.0f;
	int32_t sel[QB * 2];
	float sc[QB * 2];
	CHECK(cmr_tuning_select(m, &t, q, QB, sel, sc) == 0);
	for (int b = 0; b < QB; b++)
		CHECK(sel[2 * b] != sel[2 * b + 1] && sc[2 * b] >= sc[2 * b + 1]);
	cmr_clip_zero_grad(m);
	double L = cmr_tuning_pull(m, &t, q, sel, QB, 0.7);
	CHECK(L < 0 && L >= -0.7);
	float *g = malloc(kp->n * sizeof *g);
	CHECK(g != NULL);
	memcpy(g, kp->g, kp->n * sizeof *g);
	double worst = 0;
	for (size_t j = 0; j < kp->n; j++) {
		float w = kp->w[j], h = 1e-3f;
		kp->w[j] = w + h;
		double lp = cmr_tuning_pull(m, &t, q, sel, QB, 0.7);
		kp->w[j] = w - h;
		double lm = cmr_tuning_pull(m, &t, q, sel, QB, 0.7);
		kp->w[j] = w;
		double fd = (lp - lm) / (2.0 * h), e = fabs(fd - g[j]) / (fabs(fd) + fabs(g[j]) + 1e-3);
		worst = e > worst ? e : worst;
	}
	if (getenv("CMR_TEST_VERBOSE"))
		fprintf(stderr, "pool pull gradient vs central differences: worst relative error %g\n", worst);
	CHECK(worst <= 1e-4); /* measured 3.3e-5 */
	/* equal keys: the lower id first */
	memcpy(kp->w + D, kp->w, D * sizeof(float));
	CHECK(cmr_tuning_select(m, &t, kp->w, 1, sel, sc) == 0);
	CHECK(sel[0] == 0 && sel[1] == 1);
	free(g);
	cmr_clip_free(m);
}

/* L = sum over both towers of c . out, c fixed: dL/dout = c */
static double objective(const cmr_clip *m, cmr_clip_ws *const *ws, const float *cvec, float *out)
{
	double L = 0;
	for (int k = 0; k < 2; k++) {
		if (fwd(m, k, ws[k], out + (size_t)k * B * 16) < 0)
			return NAN;
		for (int i = 0; i < B * 16; i++)
			L += (double)cvec[i] * out[(size_t)k * B * 16 + i];
	}
	return L;
}

/* the worst relative error of analytic vs central-difference gradients over a sample of
 * every trainable parameter's entries */
static double fd_worst(cmr_clip *m, const char **worst_name)
{
	cmr_clip_ws *ws[2] = {cmr_clip_ws_new(m, &cmr_ops_ref, 0, B, 64, 1), cmr_clip_ws_new(m, &cmr_ops_ref, 1, B, 64, 1)};
	float cvec[B * 16], out[2 * B * 16];
	for (int i = 0; i < B * 16; i++)
		cvec[i] = (float)((int)(rnd() % 2001) - 1000) / 1000.0f;
	cmr_clip_zero_grad(m);
	objective(m, ws, cvec, out);
	for (int k = 0; k < 2; k++)
		cmr_clip_backward(m, k, &cmr_ops_ref, ws[k], cvec);
	double worst = 0, h = 1e-2;
	for (int i = 0; i < m->nparam; i++) {
		cmr_param *p = &m->param[i];
		if (!p->g)
			continue;
		double num = 0, den = 0;
		for (int s = 0; s < 6; s++) {
			size_t j = rnd() % p->n;
			float keep = p->w[j];
			p->w[j] = keep + (float)h;
			double lp = objective(m, ws, cvec, out);
			p->w[j] = keep - (float)h;
			double lm = objective(m, ws, cvec, out);
			p->w[j] = keep;
			double fd = (lp - lm) / (2 * h);
			num += (fd - p->g[j]) * (fd - p->g[j]);
			den += fd * fd;
		}
		double rel = sqrt(num) / fmax(sqrt(den), 1e-2);
		if (rel > worst)
			worst = rel, *worst_name = p->name;
	}
	cmr_clip_ws_free(ws[0]);
	cmr_clip_ws_free(ws[1]);
	return worst;
}

TEST(model_adapter_and_prefix_gradients_match_finite_differences)
{
	make_inputs();
	cmr_clip_cfg c = unit_tiny_cfg();
	cmr_clip *m = cmr_clip_new(&c);
	cmr_adapter ad[2][3];
	char err[256];
	CHECK(m);
	for (int k = 0; k < 2; k++)
		for (int p = 0; p < 3; p++)
		{
			cmr_adapter_opts o = {.point = p, .rank = 4, .layer_min = 1 - (p == 2), .layer_max = 1,
					      .act = CMR_ACT_QUICK_GELU, .bias = 1, .flags = CMR_PARAM_TRAIN};
			CHECK(cmr_adapter_add(m, &ad[k][p], k, &o, err, sizeof err) == 0);
		}
	int64_t sh[2] = {3, 32};
	CHECK(cmr_clip_add(m, "prompts.vision.prefix", CMR_GROUP_PROMPT, CMR_TOWER_VISION, -1, CMR_T_PREFIX, 2, sh,
			   CMR_PARAM_TRAIN | CMR_PARAM_OPTIONAL, 0.5f, 0) >= 0);
	CHECK(cmr_clip_add(m, "prompts.text.prefix", CMR_GROUP_PROMPT, CMR_TOWER_TEXT, -1, CMR_T_PREFIX, 2, sh,
			   CMR_PARAM_TRAIN | CMR_PARAM_OPTIONAL, 0.5f, 0) >= 0);
	CHECK(cmr_clip_init(m, 11, err, sizeof err) == 0 && cmr_clip_grads(m) == 0);
	/* up is zero at init: give it values so that every adapter parameter has a gradient */
	for (int i = 0; i < m->nparam; i++)
		if (strstr(m->param[i].name, ".up."))
			for (size_t j = 0; j < m->param[i].n; j++)
				m->param[i].w[j] = (float)((int)(rnd() % 2001) - 1000) / 4000.0f;
	CHECK(m->tower[0].grad_from == CMR_DEPTH_EMBED && m->tower[1].grad_from == CMR_DEPTH_EMBED);
	const char *name = "";
	double worst = fd_worst(m, &name);
	if (getenv("CMR_TEST_VERBOSE") || worst > 2e-3)
		fprintf(stderr, "adapter/prefix gradients vs finite differences: worst relative error %g (%s)\n", worst, name);
	CHECK(worst <= 2e-3);
	for (int k = 0; k < 2; k++)
		for (int p = 0; p < 3; p++)
			cmr_adapter_free(&ad[k][p]);
	cmr_clip_free(m);
}

TEST(model_partly_frozen_gradients_equal_full_ones)
{
	make_inputs();
	cmr_clip_cfg c = unit_tiny_cfg();
	cmr_clip *full = cmr_clip_new(&c), *part = cmr_clip_new(&c);
	char err[256];
	CHECK(full && part);
	for (int i = 0; i < full->nparam; i++) {
		full->param[i].flags |= CMR_PARAM_TRAIN;
		if (part->param[i].layer == 1 || (part->param[i].layer < 0 && part->param[i].slot == CMR_T_PROJ))
			part->param[i].flags |= CMR_PARAM_TRAIN;
	}
	CHECK(cmr_clip_init(full, 5, err, sizeof err) == 0 && cmr_clip_init(part, 5, err, sizeof err) == 0);
	CHECK(cmr_clip_grads(full) == 0 && cmr_clip_grads(part) == 0);
	CHECK(part->tower[0].grad_from == 1 && part->tower[1].grad_from == 1);
	CHECK(part->ntrain < full->ntrain / 4);
	float cvec[B * 16];
	for (int i = 0; i < B * 16; i++)
		cvec[i] = (float)((int)(rnd() % 2001) - 1000) / 1000.0f;
	for (int k = 0; k < 2; k++) {
		float o[2][B * 16];
		cmr_clip_ws *wf = cmr_clip_ws_new(full, &cmr_ops_blas, k, B, 64, 1), *wp = cmr_clip_ws_new(part, &cmr_ops_blas, k, B, 64, 1);
		CHECK(wf && wp);
		fwd_ops = &cmr_ops_blas;
		int ok = fwd(full, k, wf, o[0]) == 0 && fwd(part, k, wp, o[1]) == 0;
		fwd_ops = &cmr_ops_ref;
		CHECK(ok);
		CHECK(memcmp(o[0], o[1], sizeof o[0]) == 0);
		cmr_clip_backward(full, k, &cmr_ops_blas, wf, cvec);
		cmr_clip_backward(part, k, &cmr_ops_blas, wp, cvec);
		cmr_clip_ws_free(wf);
		cmr_clip_ws_free(wp);
	}
	for (int i = 0; i < part->nparam; i++) {
		const cmr_param *p = &part->param[i], *f = &full->param[i];
		if (!p->g)
			continue;
		CHECK(memcmp(p->g, f->g, p->n * sizeof(float)) == 0);
	}
	cmr_clip_free(full);
	cmr_clip_free(part);
}

/* A pool of one prompt with top-1 is plain vision prompt tuning: the training step
 * (cmr_tuning_batch_grad: query pass, selection, views, pull 0) gives the loss and the
 * prompt gradient of the prompts tuning bit for bit, with a second view (descriptions of
 * some of the images) on top of the captions. */
TEST(model_pool_of_one_is_prompt_tuning)
{
	make_inputs();
	cmr_clip_cfg c = unit_tiny_cfg();
	cmr_clip *mp = cmr_clip_new(&c), *mf = cmr_clip_new(&c);
	char err[256];
	cmr_tuning tp, tf;
	memset(&tp, 0, sizeof tp);
	memset(&tf, 0, sizeof tf);
	snprintf(tp.method, sizeof tp.method, "pool");
	tp.pool_size = 1, tp.pool_length = 3, tp.pool_topk = 1;
	snprintf(tf.method, sizeof tf.method, "prompts");
	tf.vision_prompts = 3;
	CHECK(mp && mf && cmr_tuning_add(mp, &tp, 1, err, sizeof err) == 0 && cmr_tuning_add(mf, &tf, 1, err, sizeof err) == 0);
	CHECK(cmr_clip_init(mp, 5, err, sizeof err) == 0 && cmr_clip_init(mf, 5, err, sizeof err) == 0);
	for (int i = 0; i < mf->nparam; i++) { /* one base; the pool's prompt is the fixed prompts */
		cmr_param *p = &mf->param[i], *q = cmr_clip_param(mp, strcmp(p->name, "prompt.vision.embeddings") == 0
									    ? "prompt.vision.pool" : p->name);
		CHECK(q && q->n == p->n);
		memcpy(q->w, p->w, p->n * sizeof *p->w);
	}
	CHECK(cmr_clip_grads(mp) == 0 && cmr_clip_grads(mf) == 0);
	cmr_loss_term cap = {.loss = cmr_loss_find("infonce"), .weight = 1.0, .margin = 0};
	cmr_loss_term dt[2] = {{.loss = cmr_loss_find("infonce"), .weight = 0.1, .margin = 0}, {.loss = cmr_loss_find("vse"), .weight = 0.5, .margin = 0.1f}};
	const int32_t *dids[2] = {in.ip[0], in.ip[1]};
	int dlens[2] = {in.lens[0], in.lens[1]}, drow[2] = {2, 0};
	cmr_batch bi = {B, in.pp, NULL, NULL, NULL, 0, NULL}, bt = {B, NULL, in.ip, in.lens, NULL, 0, NULL},
		  bd = {2, NULL, dids, dlens, NULL, 0, NULL};
	cmr_text_view v[2] = {{.txt = &bt, .terms = &cap, .nterms = 1}, {.txt = &bd, .row = drow, .terms = dt, .nterms = 2}};
	cmr_step_ws *sp = cmr_step_ws_new(mp, &cmr_ops_ref, B, B * 12), *sf = cmr_step_ws_new(mf, &cmr_ops_ref, B, B * 12);
	CHECK(sp && sf);
	double part_p[3], part_f[3];
	cmr_clip_zero_grad(mp);
	cmr_clip_zero_grad(mf);
	double Lp = cmr_tuning_batch_grad(mp, &tp, &cmr_ops_ref, sp, &bi, v, 2, 0.0, 0, part_p);
	double Lf = cmr_tuning_batch_grad(mf, &tf, &cmr_ops_ref, sf, &bi, v, 2, 0.0, 0, part_f);
	CHECK(isfinite(Lp) && Lp == Lf && part_p[0] == part_f[0] && part_p[1] == part_f[1] && part_p[1] > 0);
	const cmr_param *gp = cmr_clip_param(mp, "prompt.vision.pool"), *gf = cmr_clip_param(mf, "prompt.vision.embeddings");
	CHECK(memcmp(gp->g, gf->g, gf->n * sizeof *gf->g) == 0);
	const cmr_param *kp = cmr_clip_param(mp, "prompt.vision.keys");
	for (size_t j = 0; j < kp->n; j++)
		CHECK(kp->g[j] == 0); /* no loss reaches the keys but the pull term */
	/* the description view adds to the loss: without it, the captions' loss alone */
	cmr_clip_zero_grad(mf);
	double L1 = cmr_tuning_batch_grad(mf, &tf, &cmr_ops_ref, sf, &bi, v, 1, 0.0, 0, NULL);
	CHECK(L1 == part_f[0]);
	cmr_step_ws_free(sp);
	cmr_step_ws_free(sf);
	cmr_clip_free(mp);
	cmr_clip_free(mf);
}

/* L2P's batch-wise selection: the top-k prompts chosen most often, ties to the lower id, for
 * every image */
TEST(model_pool_majority)
{
	cmr_tuning t;
	memset(&t, 0, sizeof t);
	snprintf(t.method, sizeof t.method, "pool");
	t.pool_size = 4, t.pool_length = 1, t.pool_topk = 2;
	int32_t sel[6] = {3, 1, 0, 2, 2, 3};
	cmr_tuning_majority(&t, sel, 3);
	for (int b = 0; b < 3; b++)
		CHECK(sel[2 * b] == 2 && sel[2 * b + 1] == 3);
}

/* multi-level attention over both layers and injection from layer 0 (width 8) on both
 * towers; with adapters (parallel, on the MLPs) when given */
static void add_head_modules(cmr_clip *m, cmr_levels lv[2][2], cmr_adapter *ad)
{
	char err[256];
	for (int k = 0; k < 2; k++) {
		CHECK(cmr_levels_add(m, &lv[k][0], k, 0, 2, 0, CMR_PARAM_TRAIN, err, sizeof err) == 0);
		CHECK(cmr_levels_add(m, &lv[k][1], k, 1, 1, 8, CMR_PARAM_TRAIN, err, sizeof err) == 0);
		CHECK(lv[k][0].n == 2 && lv[k][0].layer[0] == 0 && lv[k][0].layer[1] == 1);
		CHECK(lv[k][1].n == 1 && lv[k][1].layer[0] == 0 && lv[k][1].width == 8);
		cmr_adapter_opts o = {.point = CMR_HOOK_MLP, .rank = 4, .layer_min = 0, .layer_max = 1,
				      .act = CMR_ACT_QUICK_GELU, .scale = 0.5f, .bias = 1, .flags = CMR_PARAM_TRAIN}; /* smooth: no kink for the differences */
		if (ad)
			CHECK(cmr_adapter_add(m, &ad[k], k, &o, err, sizeof err) == 0);
	}
}

TEST(model_head_modules_change_nothing_until_trained)
{
	make_inputs();
	cmr_clip_cfg c = unit_tiny_cfg();
	cmr_clip *m0 = cmr_clip_new(&c), *m1 = cmr_clip_new(&c);
	cmr_levels lv[2][2];
	char err[256];
	CHECK(m0 && m1);
	add_head_modules(m1, lv, NULL);
	CHECK(cmr_clip_init(m0, 7, err, sizeof err) == 0 && cmr_clip_init(m1, 7, err, sizeof err) == 0);
	CHECK(cmr_clip_grads(m0) == 0 && cmr_clip_grads(m1) == 0);
	/* the head alone trains: no layer is walked back */
	CHECK(m1->tower[0].grad_from == c.vision.layers && m1->tower[1].grad_from == c.text.layers);
	for (int k = 0; k < 2; k++)
		for (int keep = 0; keep < 2; keep++) {
			float o0[B * 16], o1[B * 16];
			cmr_clip_ws *w0 = cmr_clip_ws_new(m0, &cmr_ops_ref, k, B, 64, 0),
				    *w1 = cmr_clip_ws_new(m1, &cmr_ops_ref, k, B, 64, keep);
			CHECK(w0 && w1);
			CHECK(fwd(m0, k, w0, o0) == 0 && fwd(m1, k, w1, o1) == 0);
			for (int i = 0; i < B * 16; i++)
				CHECK(o0[i] == o1[i]);
			cmr_clip_ws_free(w0);
			cmr_clip_ws_free(w1);
		}
	/* the same gates open a little: the outputs move */
	cmr_clip_param(m1, "levels.text.gate")->w[0] = 0.5f;
	cmr_clip_param(m1, "inject.vision.gate")->w[0] = 0.5f;
	for (int k = 0; k < 2; k++) {
		float o0[B * 16], o1[B * 16];
		cmr_clip_ws *w0 = cmr_clip_ws_new(m0, &cmr_ops_ref, k, B, 64, 0), *w1 = cmr_clip_ws_new(m1, &cmr_ops_ref, k, B, 64, 0);
		CHECK(fwd(m0, k, w0, o0) == 0 && fwd(m1, k, w1, o1) == 0);
		double d = 0;
		for (int i = 0; i < B * 16; i++)
			d = fmax(d, fabs((double)o0[i] - o1[i]));
		CHECK(d > 1e-3);
		cmr_clip_ws_free(w0);
		cmr_clip_ws_free(w1);
	}
	cmr_clip_free(m0);
	cmr_clip_free(m1);
}

TEST(model_head_module_gradients_match_finite_differences)
{
	for (int with = 0; with < 2; with++) {
		make_inputs();
		cmr_clip_cfg c = unit_tiny_cfg();
		cmr_clip *m = cmr_clip_new(&c);
		cmr_levels lv[2][2];
		cmr_adapter ad[2];
		char err[256];
		CHECK(m);
		add_head_modules(m, lv, with ? ad : NULL);
		CHECK(cmr_clip_init(m, 13, err, sizeof err) == 0 && cmr_clip_grads(m) == 0);
		/* open the gates, give the query and the adapters' up values: every gradient is there */
		for (int i = 0; i < m->nparam; i++) {
			cmr_param *p = &m->param[i];
			if (strstr(p->name, ".gate"))
				p->w[0] = 0.6f + 0.1f * (float)i / (float)m->nparam;
			if (strstr(p->name, ".query") || strstr(p->name, ".up."))
				for (size_t j = 0; j < p->n; j++)
					p->w[j] = (float)((int)(rnd() % 2001) - 1000) / 4000.0f;
		}
		CHECK(m->tower[0].grad_from == (with ? 0 : c.vision.layers));
		const char *name = "";
		double worst = fd_worst(m, &name);
		/* the level queries' gradients are near 1e-2, and central differences of a float
		 * forward pass with h = 1e-2 carry an absolute noise near 4e-5 (printed, entry by
		 * entry): measured worst 5.4e-3 over the test orders; the exact check is t93's
		 * against PyTorch (within 7e-6) */
		if (getenv("CMR_TEST_VERBOSE") || worst > 8e-3)
			fprintf(stderr, "head modules%s: gradients vs finite differences: worst relative error %g (%s)\n",
				with ? " beside adapters" : "", worst, name);
		CHECK(worst <= 8e-3);
		for (int k = 0; with && k < 2; k++)
			cmr_adapter_free(&ad[k]);
		cmr_clip_free(m);
	}
}

/* a features vision tower (LiT: issue 20): the input is a feature vector, embedded by a linear
 * map as the one row, no class token, pooled there */
static float feats[B][24];

/* random feature vectors as the batch's "pixels" (a features tower reads their bytes) */
static void features_inputs(void)
{
	make_inputs();
	for (int b = 0; b < B; b++) {
		for (int i = 0; i < 24; i++)
			feats[b][i] = (float)((int)(rnd() % 2001) - 1000) / 1000.0f;
		in.pp[b] = (const uint8_t *)feats[b];
	}
}

static const float *param_w(const cmr_clip *m, const char *name)
{
	for (int i = 0; i < m->nparam; i++)
		if (strcmp(m->param[i].name, name) == 0)
			return m->param[i].w;
	return NULL;
}

/* layer norm of x [D] in double, weight g, bias b */
static void ln(const double *x, const float *g, const float *b, int D, double eps, double *y)
{
	double mu = 0, var = 0;
	for (int d = 0; d < D; d++)
		mu += x[d];
	mu /= D;
	for (int d = 0; d < D; d++)
		var += (x[d] - mu) * (x[d] - mu);
	var /= D;
	for (int d = 0; d < D; d++)
		y[d] = (x[d] - mu) / sqrt(var + eps) * g[d] + b[d];
}

TEST(model_features_tower_is_a_linear_embedding_pooled_at_its_row)
{
	features_inputs();
	cmr_clip_cfg c = unit_tiny_cfg();
	c.vision.features = 24;
	c.vision.layers = 0;
	cmr_clip *m = cmr_clip_new(&c);
	char err[256];
	CHECK(m && cmr_clip_init(m, 5, err, sizeof err) == 0);
	CHECK(!param_w(m, "vision_model.embeddings.class_embedding") && m->tower[0].w[CMR_T_PATCH]);
	const float *W = param_w(m, "vision_model.embeddings.feature_embedding.weight"), *pos = m->tower[0].w[CMR_T_POS];
	const float *P = param_w(m, "visual_projection.weight");
	CHECK(W && pos && P);
	/* init: give the layer norms values that are not 1 and 0, so that they are checked */
	const char *lnames[4] = {"vision_model.pre_layrnorm.weight", "vision_model.pre_layrnorm.bias",
				 "vision_model.post_layernorm.weight", "vision_model.post_layernorm.bias"};
	float *lw[4];
	for (int k = 0; k < 4; k++) {
		cmr_param *lp = cmr_clip_param(m, lnames[k]);
		CHECK(lp && lp->n == 32);
		lw[k] = lp->w;
	}
	for (int k = 0; k < 4; k++)
		for (int d = 0; d < 32; d++)
			lw[k][d] = (float)((int)(rnd() % 2001) - 1000) / 2000.0f + (k % 2 ? 0 : 1);
	double worst = 0;
	for (int o = 0; o < 2; o++) {
		fwd_ops = o ? &cmr_ops_blas : &cmr_ops_ref;
		cmr_clip_ws *ws = cmr_clip_ws_new(m, fwd_ops, CMR_TOWER_VISION, B, 0, 0);
		float out[B * 16];
		CHECK(ws && fwd(m, CMR_TOWER_VISION, ws, out) == 0);
		for (int b = 0; b < B; b++) {
			double x[32], h[32], y[32];
			for (int d = 0; d < 32; d++) {
				x[d] = pos[d];
				for (int i = 0; i < 24; i++)
					x[d] += (double)W[d * 24 + i] * feats[b][i];
			}
			ln(x, lw[0], lw[1], 32, 1e-5, h);
			ln(h, lw[2], lw[3], 32, 1e-5, y); /* no layers: the pooled row is the pre-LN's output */
			for (int p = 0; p < 16; p++) {
				double e = 0;
				for (int d = 0; d < 32; d++)
					e += (double)P[p * 32 + d] * y[d];
				worst = fmax(worst, fabs(e - out[b * 16 + p]) / fmax(fabs(e), 1));
			}
		}
		cmr_clip_ws_free(ws);
	}
	fwd_ops = &cmr_ops_ref;
	if (getenv("CMR_TEST_VERBOSE"))
		fprintf(stderr, "features tower vs its formula: worst relative error %g\n", worst);
	CHECK(worst < 1e-6); /* measured 3.3e-7 */
	cmr_clip_free(m);
}

TEST(model_features_tower_gradients_match_finite_differences)
{
	features_inputs();
	cmr_clip_cfg c = unit_tiny_cfg();
	c.vision.features = 24;
	c.vision.layers = 1; /* one layer over one row: a residual MLP (and a value projection) */
	cmr_clip *m = cmr_clip_new(&c);
	char err[256];
	CHECK(m);
	for (int i = 0; i < m->nparam; i++) /* the vision tower trains (the text tower stays frozen) */
		if (m->param[i].tower == CMR_TOWER_VISION)
			m->param[i].flags |= CMR_PARAM_TRAIN;
	CHECK(cmr_clip_init(m, 9, err, sizeof err) == 0 && cmr_clip_grads(m) == 0);
	CHECK(m->tower[0].g[CMR_T_PATCH] != NULL);
	const char *name = "";
	double worst = fd_worst(m, &name);
	if (getenv("CMR_TEST_VERBOSE") || worst > 2e-3)
		fprintf(stderr, "features tower gradients vs finite differences: worst relative error %g (%s)\n", worst, name);
	CHECK(worst <= 2e-3);
	make_inputs(); /* the pixel pointers again, for the tests after */
	cmr_clip_free(m);
}
