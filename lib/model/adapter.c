/* model/adapter.c - the bottleneck adapter of model/adapter.h, written over the backend
 * table: its forward and backward passes through the hook interface. */
#include "util.h"
#include "model/adapter.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int applies(const cmr_hook *h, int layer)
{
	const cmr_adapter *a = h->self;
	return layer >= a->layer_min && layer <= a->layer_max;
}

/* scratch per row: z [rank] (before the activation), y [rank] (after), t [width] */
static void forward(const cmr_hook *h, const cmr_hook_io *io)
{
	const cmr_adapter *a = h->self;
	const cmr_param *P = a->m->param;
	int l = io->layer - a->layer_min, r = a->rank, R = io->rows, D = io->width;
	float *z = io->scratch, *y = z + (size_t)R * r, *t = y + (size_t)R * r;
	io->ops->linear(io->in, P[a->down_w[l]].w, P[a->down_b[l]].w, z, R, D, r);
	io->ops->copy(y, z, (size_t)R * r);
	io->ops->act(y, (size_t)R * r, CMR_ACT_QUICK_GELU);
	io->ops->linear(y, P[a->up_w[l]].w, P[a->up_b[l]].w, t, R, r, D);
	io->ops->add(io->out, io->out, t, (size_t)R * D);
}

static void backward(const cmr_hook *h, const cmr_hook_io *io)
{
	const cmr_adapter *a = h->self;
	const cmr_param *P = a->m->param;
	int l = io->layer - a->layer_min, r = a->rank, R = io->rows, D = io->width;
	const float *z = io->scratch, *y = z + (size_t)R * r;
	float *dy = (float *)y + (size_t)R * r, *dz = dy + (size_t)R * r; /* in t's room */
	io->ops->zero(dy, 2 * (size_t)R * r);
	io->ops->linear_bw(y, P[a->up_w[l]].w, io->dout, dy, P[a->up_w[l]].g, P[a->up_b[l]].g, R, r, D);
	io->ops->act_bw(z, dy, dz, (size_t)R * r, CMR_ACT_QUICK_GELU);
	io->ops->linear_bw(io->in, P[a->down_w[l]].w, dz, io->din, P[a->down_w[l]].g, P[a->down_b[l]].g, R, D, r);
}

int cmr_adapter_add(cmr_clip *m, cmr_adapter *a, int tower, int point, int rank, int layer_min, int layer_max,
		    unsigned flags, char *err, size_t errlen)
{
	static const char *points[] = {"attn", "mlp", "resid"};
	const cmr_tower_cfg *c = &m->tower[tower].cfg;
	memset(a, 0, sizeof *a);
	if (point < 0 || point > CMR_HOOK_RESID || rank < 1 || layer_min < 0 || layer_max >= c->layers ||
	    layer_min > layer_max)
		return cmr_errf(err, errlen, "adapter: rank %d, layers %d..%d of %d, point %d: not usable", rank, layer_min,
				layer_max, c->layers, point);
	int n = layer_max - layer_min + 1;
	a->m = m;
	a->tower = tower;
	a->rank = rank;
	a->layer_min = layer_min;
	a->layer_max = layer_max;
	a->down_w = malloc(4 * (size_t)n * sizeof(int));
	if (!a->down_w)
		return cmr_errf(err, errlen, "out of memory");
	a->down_b = a->down_w + n, a->up_w = a->down_b + n, a->up_b = a->up_w + n;
	int64_t D = c->width;
	unsigned fl = (flags & CMR_PARAM_TRAIN) | CMR_PARAM_OPTIONAL;
	for (int i = 0; i < n; i++) {
		char nm[112];
		int l = layer_min + i;
		const char *tw = tower == CMR_TOWER_VISION ? "vision" : "text";
		int64_t s_dw[2] = {rank, D}, s_db[1] = {rank}, s_uw[2] = {D, rank}, s_ub[1] = {D};
#define ADD(var, what, nd, shape, f, std)                                                                    \
	snprintf(nm, sizeof nm, "adapters.%s.%s.layers.%d.%s", tw, points[point], l, what);               \
	if ((a->var[i] = cmr_clip_add(m, nm, CMR_GROUP_ADAPTER, tower, l, -1, nd, shape, f, std, 0)) < 0) \
		return cmr_errf(err, errlen, "adapter: cannot add %s", nm);
		ADD(down_w, "down.weight", 2, s_dw, fl | CMR_PARAM_DECAY, (float)(1.0 / sqrt((double)D)))
		ADD(down_b, "down.bias", 1, s_db, fl, 0)
		ADD(up_w, "up.weight", 2, s_uw, fl | CMR_PARAM_DECAY, 0) /* zero: no effect until trained */
		ADD(up_b, "up.bias", 1, s_ub, fl, 0)
#undef ADD
	}
	a->hook.point = point;
	a->hook.layer_min = layer_min;
	a->hook.scratch = 2 * (size_t)rank + (size_t)(D > 2 * rank ? D : 2 * rank);
	a->hook.applies = applies;
	a->hook.forward = forward;
	a->hook.backward = backward;
	a->hook.trains = (flags & CMR_PARAM_TRAIN) != 0;
	a->hook.self = a;
	cmr_clip_attach(m, tower, &a->hook);
	return 0;
}

void cmr_adapter_free(cmr_adapter *a)
{
	free(a->down_w);
	a->down_w = NULL;
}
