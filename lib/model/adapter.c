/* model/adapter.c - the bottleneck adapter of model/adapter.h, written over the backend
 * table: its forward and backward passes through the hook interface. */
#include "util.h"
#include "model/adapter.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const cmr_adapter_points[9] = {"attn", "mlp", "resid", "attn_out", "mlp_out", "q", "k", "v", "o"};

static const float *bias_of(const cmr_param *P, int i) { return i >= 0 ? P[i].w : NULL; }
static float *bias_grad(const cmr_param *P, int i) { return i >= 0 ? P[i].g : NULL; }

static int applies(const cmr_hook *h, int layer)
{
	const cmr_adapter *a = h->self;
	return layer >= a->layer_min && layer <= a->layer_max;
}

static int on_output(const cmr_adapter *a) { return a->point == CMR_HOOK_ATTN_OUT || a->point == CMR_HOOK_MLP_OUT; }

/* scratch per row: z [r] (before the activation), y [r] (after), u [D] and w [2r] (work),
 * and for an output point x [D], its input (the block's output, overwritten) */
static void forward(const cmr_hook *h, const cmr_hook_io *io)
{
	const cmr_adapter *a = h->self;
	const cmr_param *P = a->m->param;
	int l = io->layer - a->layer_min, r = a->rank, R = io->rows, D = io->width;
	float *z = io->scratch, *y = z + (size_t)R * r, *u = y + (size_t)R * r, *w = u + (size_t)R * D;
	const float *in = io->in;
	if (on_output(a)) {
		float *x = w + 2 * (size_t)R * r;
		io->ops->copy(x, in, (size_t)R * D);
		in = x;
	}
	io->ops->linear(in, P[a->down_w[l]].w, bias_of(P, a->down_b[l]), z, R, D, r);
	io->ops->copy(y, z, (size_t)R * r);
	if (a->act != CMR_ADAPTER_LINEAR)
		io->ops->act(y, (size_t)R * r, a->act);
	io->ops->linear(y, P[a->up_w[l]].w, bias_of(P, a->up_b[l]), u, R, r, D);
	float c = a->gain * (a->scale[l] >= 0 ? P[a->scale[l]].w[0] : 1.0f);
	if (c != 1.0f)
		io->ops->scale(u, (size_t)R * D, c);
	io->ops->add(io->out, io->out, u, (size_t)R * D);
}

static void backward(const cmr_hook *h, const cmr_hook_io *io)
{
	const cmr_adapter *a = h->self;
	const cmr_param *P = a->m->param;
	int l = io->layer - a->layer_min, r = a->rank, R = io->rows, D = io->width;
	const float *z = io->scratch, *y = z + (size_t)R * r;
	float *u = (float *)y + (size_t)R * r, *dy = u + (size_t)R * D, *dz = dy + (size_t)R * r;
	const float *in = on_output(a) ? dz + (size_t)R * r : io->in;
	size_t n = (size_t)R * D;
	const float *dup = io->dout; /* the gradient of up's output: gain s dout */
	const cmr_param *s = a->scale[l] >= 0 ? &P[a->scale[l]] : NULL;
	if (s && s->g) { /* ds = gain <up(y), dout>, up(y) again; a sum of R x D terms that
			  * cancel, in double (the model's arrays are host memory) */
		double ds = 0;
		io->ops->linear(y, P[a->up_w[l]].w, bias_of(P, a->up_b[l]), u, R, r, D);
		for (size_t i = 0; i < n; i++)
			ds += (double)u[i] * io->dout[i];
		s->g[0] += (float)(a->gain * ds);
	}
	float c = a->gain * (s ? s->w[0] : 1.0f);
	if (c != 1.0f) {
		io->ops->copy(u, io->dout, n);
		io->ops->scale(u, n, c);
		dup = u;
	}
	io->ops->zero(dy, 2 * (size_t)R * r);
	io->ops->linear_bw(y, P[a->up_w[l]].w, dup, dy, P[a->up_w[l]].g, bias_grad(P, a->up_b[l]), R, r, D);
	if (a->act == CMR_ADAPTER_LINEAR)
		io->ops->add(dz, dz, dy, (size_t)R * r);
	else
		io->ops->act_bw(z, dy, dz, (size_t)R * r, a->act);
	io->ops->linear_bw(in, P[a->down_w[l]].w, dz, io->din, P[a->down_w[l]].g, bias_grad(P, a->down_b[l]), R, D,
			   r);
}

int cmr_adapter_add(cmr_clip *m, cmr_adapter *a, int tower, const cmr_adapter_opts *o, char *err, size_t errlen)
{
	const cmr_tower_cfg *c = &m->tower[tower].cfg;
	memset(a, 0, sizeof *a);
	if (o->point < 0 || o->point > CMR_HOOK_O || o->rank < 1 || o->layer_min < 0 || o->layer_max >= c->layers ||
	    o->layer_min > o->layer_max || !(o->gain >= 0) ||
	    (o->act != CMR_ACT_QUICK_GELU && o->act != CMR_ACT_GELU && o->act != CMR_ACT_RELU &&
	     o->act != CMR_ADAPTER_LINEAR))
		return cmr_errf(err, errlen, "adapter: rank %d, layers %d..%d of %d, point %d, activation %d: not usable",
				o->rank, o->layer_min, o->layer_max, c->layers, o->point, o->act);
	int n = o->layer_max - o->layer_min + 1, rank = o->rank;
	a->m = m;
	a->tower = tower;
	a->point = o->point;
	a->rank = rank;
	a->act = o->act;
	a->gain = o->gain > 0 ? o->gain : 1.0f;
	a->layer_min = o->layer_min;
	a->layer_max = o->layer_max;
	a->down_w = malloc(5 * (size_t)n * sizeof(int));
	if (!a->down_w)
		return cmr_errf(err, errlen, "out of memory");
	a->down_b = a->down_w + n, a->up_w = a->down_b + n, a->up_b = a->up_w + n, a->scale = a->up_b + n;
	int64_t D = c->width;
	unsigned fl = (o->flags & CMR_PARAM_TRAIN) | CMR_PARAM_OPTIONAL;
	for (int i = 0; i < n; i++) {
		char nm[112];
		int l = o->layer_min + i;
		const char *tw = tower == CMR_TOWER_VISION ? "vision" : "text";
		int64_t s_dw[2] = {rank, D}, s_db[1] = {rank}, s_uw[2] = {D, rank}, s_ub[1] = {D}, s_s[1] = {1};
#define ADD(var, what, nd, shape, f, std, value)                                                                   \
	snprintf(nm, sizeof nm, "adapters.%s.%s.layers.%d.%s", tw, cmr_adapter_points[o->point], l, what);      \
	if ((a->var[i] = cmr_clip_add(m, nm, CMR_GROUP_ADAPTER, tower, l, -1, nd, shape, f, std, value)) < 0) \
		return cmr_errf(err, errlen, "adapter: cannot add %s (out of memory, or the model has it)", nm);
		ADD(down_w, "down.weight", 2, s_dw, fl | CMR_PARAM_DECAY, (float)(1.0 / sqrt((double)D)), 0)
		a->down_b[i] = a->up_b[i] = -1;
		if (o->bias) {
			ADD(down_b, "down.bias", 1, s_db, fl, 0, 0)
		}
		ADD(up_w, "up.weight", 2, s_uw, fl | CMR_PARAM_DECAY, 0, 0) /* zero: no effect until trained */
		if (o->bias) {
			ADD(up_b, "up.bias", 1, s_ub, fl, 0, 0)
		}
		a->scale[i] = -1;
		if (o->scale != 0) {
			ADD(scale, "scale", 1, s_s, fl, 0, o->scale)
		}
#undef ADD
	}
	a->hook.point = o->point;
	a->hook.layer_min = o->layer_min;
	a->hook.scratch = 2 * (size_t)rank + (size_t)D + 2 * (size_t)rank + (on_output(a) ? (size_t)D : 0);
	a->hook.applies = applies;
	a->hook.forward = forward;
	a->hook.backward = backward;
	a->hook.trains = (o->flags & CMR_PARAM_TRAIN) != 0;
	a->hook.self = a;
	cmr_clip_attach(m, tower, &a->hook);
	return 0;
}

void cmr_adapter_free(cmr_adapter *a)
{
	free(a->down_w);
	a->down_w = NULL;
}
