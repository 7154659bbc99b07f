/* model/levels.c - multi-level attention and cross-level injection (model/levels.h): their
 * forward and backward passes through the head hook. The heavy parts (layer norms,
 * projections, the injection's attention) are backend operations; the multi-level softmax
 * over [B, levels] and the gates' sums are loops on the arrays, which are host memory (a
 * model with modules is not placed on a device backend: cmr_clip_place refuses it). */
#include "util.h"
#include "model/levels.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

int cmr_levels_layers(int L, int n, int *layer)
{
	if (n > L)
		n = L;
	if (n > CMR_LEVELS_MAX)
		n = CMR_LEVELS_MAX;
	for (int i = 0; i < n; i++)
		layer[i] = ((i + 1) * L + n - 1) / n - 1;
	return n < 0 ? 0 : n;
}

int cmr_inject_layers(int L, int n, int *layer)
{
	if (n > L - 1)
		n = L - 1;
	if (n > CMR_LEVELS_MAX)
		n = CMR_LEVELS_MAX;
	for (int i = 0; i < n; i++)
		layer[i] = (i + 1) * L / (n + 1) - 1;
	return n < 0 ? 0 : n;
}

static int applies(const cmr_hook *h, int layer)
{
	const cmr_levels *a = h->self;
	for (int j = 0; j < a->n; j++)
		if (a->layer[j] == layer)
			return 1;
	return 0;
}

/* ---- multi-level attention ----
 * scratch [R rows]: P [n, B, D] the pooled rows of each level, U [n, B, D] after the final
 * layer norm, f [B, D] their mix, al [n, B] its weights, dU [n, B, D], dP [B, D] */
/* the next n floats of scratch s from *at (s NULL: only counted, for the module's size) */
static float *take(float *s, size_t *at, size_t n)
{
	float *p = s ? s + *at : NULL;
	*at += n;
	return p;
}

typedef struct {
	float *P, *U, *f, *al, *dU, *dP;
	size_t used; /* floats carved */
} lv_scratch;

static lv_scratch lv_carve(const cmr_levels *a, float *s, int R, int D)
{
	size_t nRD = (size_t)a->n * R * D, at = 0;
	lv_scratch k;
	k.P = take(s, &at, nRD), k.U = take(s, &at, nRD), k.f = take(s, &at, (size_t)R * D);
	k.al = take(s, &at, (size_t)a->n * R), k.dU = take(s, &at, nRD), k.dP = take(s, &at, (size_t)R * D);
	k.used = at;
	return k;
}

static void lv_forward(const cmr_hook *h, const cmr_hook_io *io)
{
	const cmr_levels *a = h->self;
	const cmr_param *P = a->m->param;
	const cmr_clip_tower *tw = &a->m->tower[a->tower];
	int B = io->rows, D = io->width, n = a->n, R = io->layout_rows;
	lv_scratch k = lv_carve(a, io->scratch, R, D);
	size_t BD = (size_t)B * D;
	for (int j = 0; j < n; j++) {
		io->ops->gather(k.P + j * BD, io->taps[a->layer[j]], io->lay->pool, B, D);
		io->ops->layernorm(k.P + j * BD, tw->w[CMR_T_FINAL_LN_W], tw->w[CMR_T_FINAL_LN_B], k.U + j * BD, B, D,
				   tw->cfg.eps);
	}
	io->ops->sync();
	const float *q = P[a->query].w;
	float g = P[a->gate].w[0];
	double inv = 1.0 / sqrt((double)D);
	for (int b = 0; b < B; b++) {
		double s[CMR_LEVELS_MAX], mx = -INFINITY, z = 0;
		for (int j = 0; j < n; j++) {
			const float *u = k.U + j * BD + (size_t)b * D;
			double d = 0;
			for (int i = 0; i < D; i++)
				d += (double)q[i] * u[i];
			s[j] = d * inv;
			mx = fmax(mx, s[j]);
		}
		for (int j = 0; j < n; j++)
			z += s[j] = exp(s[j] - mx);
		float *f = k.f + (size_t)b * D, *o = io->out + (size_t)b * D;
		for (int j = 0; j < n; j++)
			k.al[(size_t)j * B + b] = (float)(s[j] / z);
		for (int i = 0; i < D; i++) {
			double v = 0;
			for (int j = 0; j < n; j++)
				v += (double)k.al[(size_t)j * B + b] * k.U[j * BD + (size_t)b * D + i];
			f[i] = (float)v;
			o[i] += g * f[i];
		}
	}
}

static void lv_backward(const cmr_hook *h, const cmr_hook_io *io)
{
	const cmr_levels *a = h->self;
	const cmr_param *P = a->m->param;
	const cmr_clip_tower *tw = &a->m->tower[a->tower];
	int B = io->rows, D = io->width, n = a->n, R = io->layout_rows;
	lv_scratch k = lv_carve(a, io->scratch, R, D);
	size_t BD = (size_t)B * D;
	const float *q = P[a->query].w;
	float g = P[a->gate].w[0], *gq = P[a->query].g, *gg = P[a->gate].g;
	double inv = 1.0 / sqrt((double)D), dg = 0;
	io->ops->sync();
	for (int b = 0; b < B; b++) {
		const float *dout = io->dout + (size_t)b * D, *f = k.f + (size_t)b * D;
		double da[CMR_LEVELS_MAX], c = 0;
		for (int i = 0; i < D; i++)
			dg += (double)dout[i] * f[i];
		for (int j = 0; j < n; j++) { /* the weights' gradient: df . u_j, df = g dout */
			const float *u = k.U + j * BD + (size_t)b * D;
			double d = 0;
			for (int i = 0; i < D; i++)
				d += (double)dout[i] * u[i];
			da[j] = g * d;
			c += k.al[(size_t)j * B + b] * da[j];
		}
		for (int j = 0; j < n; j++) {
			double al = k.al[(size_t)j * B + b], ds = al * (da[j] - c) * inv; /* the scores' */
			const float *u = k.U + j * BD + (size_t)b * D;
			float *du = k.dU + j * BD + (size_t)b * D;
			for (int i = 0; i < D; i++) {
				du[i] = (float)(al * g * dout[i] + ds * q[i]);
				if (gq)
					gq[i] += (float)(ds * u[i]);
			}
		}
	}
	if (gg)
		gg[0] += (float)dg;
	for (int j = 0; j < n; j++) { /* back through the final layer norm to the layer's pooled rows */
		float *dt = io->dtaps ? io->dtaps[a->layer[j]] : NULL;
		if (!dt && !tw->g[CMR_T_FINAL_LN_W] && !tw->g[CMR_T_FINAL_LN_B])
			continue;
		io->ops->zero(k.dP, BD);
		io->ops->layernorm_bw(k.P + j * BD, tw->w[CMR_T_FINAL_LN_W], k.dU + j * BD, k.dP, tw->g[CMR_T_FINAL_LN_W],
				      tw->g[CMR_T_FINAL_LN_B], B, D, tw->cfg.eps);
		if (dt)
			io->ops->scatter_add(dt, k.dP, io->lay->pool, B, D);
	}
}

/* ---- injection ----
 * scratch [R rows]: per layer U [R, D], K [R, r], V [R, r]; then Qrep, O, dQrep, dO, dK, dV
 * [R, r], dU [R, D]; per sample (R rows of room) Qb, o [r], y, dy [D], dob, dQb, t [r] */
typedef struct {
	float *U[CMR_LEVELS_MAX], *K[CMR_LEVELS_MAX], *V[CMR_LEVELS_MAX];
	float *Qrep, *O, *dQrep, *dO, *dK, *dV, *dU, *Qb, *o, *y, *dy, *dob, *dQb, *t;
	size_t used;
} in_scratch;

static in_scratch in_carve(const cmr_levels *a, float *s, int R, int D)
{
	in_scratch k;
	size_t RD = (size_t)R * D, Rr = (size_t)R * a->width, at = 0;
	for (int j = 0; j < a->n; j++)
		k.U[j] = take(s, &at, RD), k.K[j] = take(s, &at, Rr), k.V[j] = take(s, &at, Rr);
	float **r[] = {&k.Qrep, &k.O, &k.dQrep, &k.dO, &k.dK, &k.dV, &k.Qb, &k.o, &k.dob, &k.dQb, &k.t};
	for (size_t i = 0; i < sizeof r / sizeof r[0]; i++)
		*r[i] = take(s, &at, Rr);
	k.dU = take(s, &at, RD), k.y = take(s, &at, RD), k.dy = take(s, &at, RD);
	k.used = at;
	return k;
}

static void in_forward(const cmr_hook *h, const cmr_hook_io *io)
{
	const cmr_levels *a = h->self;
	const cmr_param *P = a->m->param;
	const cmr_clip_tower *tw = &a->m->tower[a->tower];
	const cmr_ops *ops = io->ops;
	const cmr_layout *lay = io->lay;
	int B = io->rows, D = io->width, r = a->width, R = io->layout_rows;
	in_scratch k = in_carve(a, io->scratch, R, D);
	ops->linear(io->in, P[a->wq].w, NULL, k.Qb, B, D, r);
	ops->scale(k.Qb, (size_t)B * r, (float)(1.0 / sqrt((double)r)));
	ops->gather(k.Qrep, k.Qb, lay->seg, R, r); /* each row of a sample holds its query */
	ops->zero(k.o, (size_t)B * r);
	for (int j = 0; j < a->n; j++) {
		ops->layernorm(io->taps[a->layer[j]], tw->w[CMR_T_FINAL_LN_W], tw->w[CMR_T_FINAL_LN_B], k.U[j], R, D,
			       tw->cfg.eps);
		ops->linear(k.U[j], P[a->wk].w, NULL, k.K[j], R, D, r);
		ops->linear(k.U[j], P[a->wv].w, NULL, k.V[j], R, D, r);
		/* every row of a segment computes its sample's query's output; the pooled row's is kept */
		ops->attention(k.Qrep, k.K[j], k.V[j], k.O, B, lay->start, lay->len, 1, r, 0, io->att);
		ops->gather(k.t, k.O, lay->pool, B, r);
		ops->add(k.o, k.o, k.t, (size_t)B * r);
	}
	ops->linear(k.o, P[a->wo].w, NULL, k.y, B, r, D);
	ops->copy(k.dy, k.y, (size_t)B * D);
	ops->scale(k.dy, (size_t)B * D, P[a->gate].w[0]);
	ops->add(io->out, io->out, k.dy, (size_t)B * D);
}

static void in_backward(const cmr_hook *h, const cmr_hook_io *io)
{
	const cmr_levels *a = h->self;
	const cmr_param *P = a->m->param;
	const cmr_clip_tower *tw = &a->m->tower[a->tower];
	const cmr_ops *ops = io->ops;
	const cmr_layout *lay = io->lay;
	int B = io->rows, D = io->width, r = a->width, R = io->layout_rows;
	in_scratch k = in_carve(a, io->scratch, R, D);
	size_t BD = (size_t)B * D, Rr = (size_t)R * r;
	ops->sync();
	if (P[a->gate].g) { /* dg = <Wo o, dout>: a sum of B x D terms, in double */
		double dg = 0;
		for (size_t i = 0; i < BD; i++)
			dg += (double)k.y[i] * io->dout[i];
		P[a->gate].g[0] += (float)dg;
	}
	ops->copy(k.dy, io->dout, BD);
	ops->scale(k.dy, BD, P[a->gate].w[0]);
	ops->zero(k.dob, (size_t)B * r);
	ops->linear_bw(k.o, P[a->wo].w, k.dy, k.dob, P[a->wo].g, NULL, B, r, D);
	ops->zero(k.dQrep, Rr);
	for (int j = 0; j < a->n; j++) {
		ops->zero(k.dO, Rr);
		ops->scatter_add(k.dO, k.dob, lay->pool, B, r);
		ops->zero(k.dK, Rr);
		ops->zero(k.dV, Rr);
		ops->attention_bw(k.Qrep, k.K[j], k.V[j], k.dO, k.dQrep, k.dK, k.dV, B, lay->start, lay->len, 1, r, 0,
				  io->att);
		ops->zero(k.dU, (size_t)R * D);
		ops->linear_bw(k.U[j], P[a->wk].w, k.dK, k.dU, P[a->wk].g, NULL, R, D, r);
		ops->linear_bw(k.U[j], P[a->wv].w, k.dV, k.dU, P[a->wv].g, NULL, R, D, r);
		float *dt = io->dtaps ? io->dtaps[a->layer[j]] : NULL;
		if (dt || tw->g[CMR_T_FINAL_LN_W] || tw->g[CMR_T_FINAL_LN_B])
			ops->layernorm_bw(io->taps[a->layer[j]], tw->w[CMR_T_FINAL_LN_W], k.dU, dt, tw->g[CMR_T_FINAL_LN_W],
					  tw->g[CMR_T_FINAL_LN_B], R, D, tw->cfg.eps);
	}
	ops->zero(k.dQb, (size_t)B * r);
	ops->scatter_add(k.dQb, k.dQrep, lay->seg, R, r);
	ops->scale(k.dQb, (size_t)B * r, (float)(1.0 / sqrt((double)r)));
	ops->linear_bw(io->in, P[a->wq].w, k.dQb, io->din, P[a->wq].g, NULL, B, D, r);
}

int cmr_levels_add(cmr_clip *m, cmr_levels *a, int tower, int inject, int n, int r, unsigned flags, char *err,
		   size_t errlen)
{
	const cmr_tower_cfg *c = &m->tower[tower].cfg;
	memset(a, 0, sizeof *a);
	int want = n;
	n = inject ? cmr_inject_layers(c->layers, n, a->layer) : cmr_levels_layers(c->layers, n, a->layer);
	if (want < 1 || n < (inject ? 1 : 2) || (inject && r < 1))
		return cmr_errf(err, errlen, "%s of %d layers (width %d) in a tower of %d layers: not usable",
				inject ? "injection" : "multi-level attention", want, r, c->layers);
	if (r > c->width)
		r = c->width;
	a->m = m;
	a->tower = tower;
	a->n = n;
	a->inject = inject != 0;
	a->width = inject ? r : 0;
	const char *tw = tower == CMR_TOWER_VISION ? "vision" : "text";
	unsigned fl = (flags & CMR_PARAM_TRAIN) | CMR_PARAM_OPTIONAL;
	int64_t D = c->width, s1[1] = {1}, sD[1] = {D}, sin[2] = {r, D}, sout[2] = {D, r};
	char nm[112];
#define ADD(var, what, nd, shape, f, std)                                                                           \
	snprintf(nm, sizeof nm, "%s.%s.%s", inject ? "inject" : "levels", tw, what);                                \
	if ((a->var = cmr_clip_add(m, nm, CMR_GROUP_ADAPTER, tower, -1, -1, nd, shape, f, std, 0)) < 0)              \
		return cmr_errf(err, errlen, "cannot add %s (out of memory, or the model has it)", nm);
	if (inject) {
		float si = (float)(1.0 / sqrt((double)D)), so = (float)(1.0 / sqrt((double)r));
		ADD(wq, "q.weight", 2, sin, fl | CMR_PARAM_DECAY, si)
		ADD(wk, "k.weight", 2, sin, fl | CMR_PARAM_DECAY, si)
		ADD(wv, "v.weight", 2, sin, fl | CMR_PARAM_DECAY, si)
		ADD(wo, "o.weight", 2, sout, fl | CMR_PARAM_DECAY, so)
	} else {
		ADD(query, "query", 1, sD, fl, 0) /* zero: the levels' mean at first */
	}
	ADD(gate, "gate", 1, s1, fl, 0) /* zero: no effect until trained */
#undef ADD
	a->hook.point = CMR_HOOK_HEAD;
	a->hook.layer_min = c->layers; /* the head: no layer is walked back for it */
	/* floats per row: what the carving takes of one row's room */
	a->hook.scratch = inject ? in_carve(a, NULL, 1, (int)D).used : lv_carve(a, NULL, 1, (int)D).used;
	a->hook.applies = applies;
	a->hook.forward = inject ? in_forward : lv_forward;
	a->hook.backward = inject ? in_backward : lv_backward;
	a->hook.trains = (flags & CMR_PARAM_TRAIN) != 0;
	a->hook.self = a;
	cmr_clip_attach(m, tower, &a->hook);
	return 0;
}
