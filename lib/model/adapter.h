/* model/adapter.h - a bottleneck adapter on a hook point of a frozen CLIP's layers:
 * out += up(act(down(in))), its own parameters per layer ("adapters.<tower>.<point>.layers.
 * <l>.{down,up}.{weight,bias}"), up initialised to zero so that the model's function is
 * unchanged until it is trained. The first module on the model core's hooks (model/clip.h). */
#ifndef CMR_MODEL_ADAPTER_H
#define CMR_MODEL_ADAPTER_H

#include "model/clip.h"

typedef struct cmr_adapter {
	cmr_hook hook;
	const cmr_clip *m;
	int tower, rank, layer_min, layer_max;
	int *down_w, *down_b, *up_w, *up_b; /* parameter indices, per layer from layer_min */
} cmr_adapter;

/* Adds the adapter's parameters to m's table (before values are loaded) and attaches it to
 * the tower's layers layer_min..layer_max at point (CMR_HOOK_*), rank the bottleneck.
 * flags are the parameters' (CMR_PARAM_TRAIN to train them; they are always optional in a
 * checkpoint). Returns 0, or -1 with a message. */
int cmr_adapter_add(cmr_clip *m, cmr_adapter *a, int tower, int point, int rank, int layer_min, int layer_max,
		    unsigned flags, char *err, size_t errlen);
void cmr_adapter_free(cmr_adapter *a);

#endif
