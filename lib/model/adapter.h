/* model/adapter.h - a bottleneck adapter on a hook point of a frozen CLIP's layers:
 * out += s * up(act(down(in))), its own parameters per layer ("adapters.<tower>.<point>.
 * layers.<l>.{down,up}.{weight,bias}" and, when scaled, ".scale" [1], learnt), up
 * initialised to zero so that the model's function is unchanged until it is trained. On the
 * parallel points (attn, mlp, resid) it is AdaptFormer's and LoRA-free adapters'; on the
 * block outputs (attn_out, mlp_out) Houlsby's sequential adapter; on the attention's
 * projections (q, k, v, o), without biases or activation and with a constant gain, LoRA
 * (down = A, up = B). The modules on the model core's hooks (model/clip.h). */
#ifndef CMR_MODEL_ADAPTER_H
#define CMR_MODEL_ADAPTER_H

#include "model/clip.h"

typedef struct cmr_adapter {
	cmr_hook hook;
	const cmr_clip *m;
	int tower, point, rank, layer_min, layer_max, act;
	float gain;
	int *down_w, *down_b, *up_w, *up_b, *scale; /* parameter indices, per layer from layer_min
						     * (scale: -1 when not scaled) */
} cmr_adapter;

/* The points' names in parameter names, by CMR_HOOK_*: attn, mlp, resid, attn_out, mlp_out,
 * q, k, v, o. */
extern const char *const cmr_adapter_points[9];
#define CMR_ADAPTER_LINEAR (-1) /* no activation: LoRA's B A */

typedef struct cmr_adapter_opts {
	int point;        /* CMR_HOOK_* */
	int rank;         /* the bottleneck */
	int layer_min, layer_max;
	int act;          /* CMR_ACT_* of the bottleneck, or CMR_ADAPTER_LINEAR */
	float scale;      /* the learnt scale's initial value; 0: no scale (s = 1) */
	int bias;         /* down and up have biases */
	float gain;       /* a constant factor on the output (LoRA's alpha / r); 0: 1 */
	unsigned flags;   /* the parameters' (CMR_PARAM_TRAIN to train them; they are always
			   * optional in a checkpoint) */
} cmr_adapter_opts;

/* Adds the adapter's parameters to m's table (before values are loaded) and attaches it to
 * the tower's layers. Returns 0, or -1 with a message. */
int cmr_adapter_add(cmr_clip *m, cmr_adapter *a, int tower, const cmr_adapter_opts *o, char *err, size_t errlen);
void cmr_adapter_free(cmr_adapter *a);

#endif
