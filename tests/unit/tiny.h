/* tiny.h - the tiny CLIP config the model-core unit tests build in memory (mkclip's tiny
 * shape: width 32, 2 layers, 4 heads; 32x32 images in 8x8 patches; CLIP's vocabulary). */
#ifndef CMR_UNIT_TINY_H
#define CMR_UNIT_TINY_H

#include <string.h>

#include "model/clip.h"

static inline cmr_clip_cfg unit_tiny_cfg(void)
{
	cmr_clip_cfg c;
	memset(&c, 0, sizeof c);
	c.vision = (cmr_tower_cfg){32, 2, 4, 64, CMR_ACT_QUICK_GELU, 1e-5f, 32, 8, 0, 0, 0};
	c.text = (cmr_tower_cfg){32, 2, 4, 64, CMR_ACT_GELU, 1e-5f, 0, 0, 49408, 77, 0};
	c.proj = 16;
	for (int i = 0; i < 3; i++)
		c.mean[i] = 0.5f, c.std[i] = 0.25f;
	return c;
}

#endif
