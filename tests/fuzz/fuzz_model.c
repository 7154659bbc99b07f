/* fuzz_model.c - libFuzzer target: a model's config.json (lib/model/params.c) and its
 * safetensors file (lib/format/safetensors.c) from arbitrary bytes, then the loader that
 * checks one against the other, for one tower frozen (tensors used in place) and for both
 * towers trainable (copied), and a forward pass of what loads.
 * Input: u32le n, n bytes of config.json, the safetensors file; with the top bit of n set,
 * the config is an OpenCLIP open_clip_config.json and the file in OpenCLIP's layout. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "format/safetensors.h"
#include "model/clip.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* floats in a model of this config, roughly: small ones only, to keep the fuzzer fast */
static double floats(const cmr_clip_cfg *c)
{
	const cmr_tower_cfg *t[2] = {&c->vision, &c->text};
	double n = 0;
	for (int k = 0; k < 2; k++) {
		double w = t[k]->width;
		n += t[k]->layers * (4 * w * w + 2 * w * t[k]->mlp) + w * (c->proj + 8);
	}
	n += (double)c->text.vocab * c->text.width + (double)c->text.context * c->text.width;
	n += (double)cmr_clip_vision_seq(&c->vision) * c->vision.width;
	n += 3.0 * c->vision.patch_size * c->vision.patch_size * c->vision.width;
	return n + (double)c->vision.image_size * c->vision.image_size * 3;
}

static void forward(cmr_clip *m, int tower)
{
	const cmr_tower_cfg *c = &m->tower[tower].cfg;
	cmr_clip_ws *ws = cmr_clip_ws_new(m, &cmr_ops_ref, tower, 1, c->context, 0);
	float *out = malloc((size_t)m->tower[tower].proj * sizeof *out);
	uint8_t *px = calloc((size_t)c->image_size * c->image_size * 3 + 1, 1);
	if (ws && out && px) {
		if (tower == CMR_TOWER_VISION) {
			const uint8_t *p[1] = {px};
			cmr_clip_encode_images(m, &cmr_ops_ref, ws, p, 1, out);
		} else {
			int32_t ids[3] = {49406 % c->vocab, 320 % c->vocab, 49407 % c->vocab};
			const int32_t *p[1] = {ids};
			int len = c->context < 3 ? c->context : 3;
			cmr_clip_encode_texts(m, &cmr_ops_ref, ws, p, &len, 1, out);
		}
	}
	free(px);
	free(out);
	cmr_clip_ws_free(ws);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 4)
		return 0;
	uint32_t n = (uint32_t)data[0] | (uint32_t)data[1] << 8 | (uint32_t)data[2] << 16 | (uint32_t)data[3] << 24;
	int openclip = (n >> 31) & 1;
	n &= 0x7fffffffu;
	if (n > size - 4)
		return 0;
	cmr_clip_cfg cfg;
	char err[1024];
	if ((openclip ? cmr_clip_cfg_parse_openclip((const char *)data + 4, n, "open_clip_config.json", &cfg, err,
						    sizeof err)
		      : cmr_clip_cfg_parse((const char *)data + 4, n, "config.json", &cfg, err, sizeof err)) < 0)
		return 0;
	if (floats(&cfg) > 4e6)
		return 0;
	size_t sn = size - 4 - n;
	uint8_t *st_bytes = malloc(sn + 1); /* malloc's alignment, as a mapping's */
	if (!st_bytes)
		return 0;
	memcpy(st_bytes, data + 4 + n, sn);
	for (int pass = 0; pass < 2; pass++) {
		cmr_clip *m = cmr_clip_new(&cfg);
		if (!m)
			break;
		if (pass == 1) /* the training model: every tensor trains, so each is copied */
			for (int i = 0; i < m->nparam; i++)
				m->param[i].flags |= CMR_PARAM_TRAIN;
		unsigned mask = pass ? CMR_TOWERS_BOTH : 1u << CMR_TOWER_VISION;
		cmr_st *st = cmr_st_from_memory(st_bytes, sn, "model.safetensors", err, sizeof err);
		if (st && cmr_clip_load_st(m, st, mask, 1, err, sizeof err) == 0) {
			forward(m, pass ? CMR_TOWER_TEXT : CMR_TOWER_VISION);
			(void)cmr_clip_id(m);
		}
		cmr_clip_free(m);
	}
	free(st_bytes);
	return 0;
}
