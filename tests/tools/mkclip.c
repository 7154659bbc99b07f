/* mkclip.c - writes random CLIP checkpoints in the exact Hugging Face layout (config.json,
 * preprocessor_config.json, model.safetensors), and random inputs for them, from a seed:
 * the same bytes on every machine (integer generator, no libm in the values).
 *
 *   mkclip model DIR tiny|mini|b32 [--seed N] [--dtype f32|f16] [--act quick_gelu|gelu]
 *                                [--drop text|vision] [--extra NAME]
 *   mkclip images N SIZE SEED > images.cmr     random u8 [SIZE, SIZE, 3] records
 *   mkclip tokens N SEED > tokens.cmr          random token records, lengths 2..77 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "format/half.h"
#include "model/clip.h"
#include "format/safetensors.h"
#include "format/stream.h"

/* PCG32 (O'Neill), a fixed sequence for a seed */
static uint64_t rng_state;
static uint32_t rng(void)
{
	uint64_t old = rng_state;
	rng_state = old * 6364136223846793005ULL + 1442695040888963407ULL;
	uint32_t x = (uint32_t)(((old >> 18) ^ old) >> 27), r = (uint32_t)(old >> 59);
	return x >> r | x << ((32 - r) & 31);
}
/* uniform in [-1, 1), exactly representable: k / 2^23 - 1 */
static float unif(void) { return (float)(rng() >> 8) / 8388608.0f - 1.0f; }

typedef struct { int width, layers, heads, mlp; } tw;
static struct { tw v, t; int image, patch, vocab, ctx, proj; } cfg;

#define MAXT 512
static cmr_st_out outs[MAXT];
static size_t nout;
static int out_dtype = CMR_DTYPE_F32;

/* adds a tensor: centre + spread * uniform */
static void add(const char *name, int ndim, const int64_t *shape, float centre, float spread)
{
	size_t n = 1;
	for (int i = 0; i < ndim; i++)
		n *= (size_t)shape[i];
	void *data = malloc(n * (out_dtype == CMR_DTYPE_F16 ? 2 : 4) + 1);
	float *f = data;
	uint16_t *h = data;
	for (size_t i = 0; i < n; i++) {
		float v = centre + spread * unif();
		if (out_dtype == CMR_DTYPE_F16)
			h[i] = cmr_f32_to_f16(v);
		else
			f[i] = v;
	}
	cmr_st_out *o = &outs[nout++];
	o->name = strdup(name);
	o->dtype = out_dtype;
	o->ndim = ndim;
	memcpy(o->shape, shape, (size_t)ndim * sizeof *shape);
	o->data = data;
}

/* The values of a parameter of the table (model/clip.h): layer norms near 1 and 0, weights
 * ~ U(-sqrt(3/in), sqrt(3/in)) (unit variance through each linear layer), small biases. */
static void values(const cmr_param *p, float *centre, float *spread)
{
	const float wd = 1.7320508f;
	*centre = 0;
	if (p->layer >= 0) {
		switch (p->slot) {
		case CMR_L_LN1_W:
		case CMR_L_LN2_W: *centre = 1.0f; *spread = 0.1f; return;
		case CMR_L_LN1_B:
		case CMR_L_LN2_B: *spread = 0.1f; return;
		case CMR_L_Q_W: case CMR_L_K_W: case CMR_L_V_W: case CMR_L_O_W: case CMR_L_FC1_W: case CMR_L_FC2_W: {
			float in = 1.0f / (float)p->shape[1];
			*spread = wd * (float)__builtin_sqrt(in);
			return;
		}
		default: *spread = 0.02f; return; /* biases */
		}
	}
	switch (p->slot) {
	case CMR_T_PRE_LN_W:
	case CMR_T_FINAL_LN_W: *centre = 1.0f; *spread = 0.1f; return;
	case CMR_T_PRE_LN_B:
	case CMR_T_FINAL_LN_B: *spread = 0.1f; return;
	case CMR_T_TOKEN:
	case CMR_T_CLASS: *spread = 0.5f; return;
	case CMR_T_POS: *spread = 0.2f; return;
	case CMR_T_PATCH: *spread = wd / (float)__builtin_sqrt(3.0 * cfg.patch * cfg.patch); return;
	case CMR_T_PROJ: *spread = wd / (float)__builtin_sqrt((double)p->shape[1]); return;
	default: *spread = 0; return;
	}
}

static int model(int argc, char **argv)
{
	if (argc < 4)
		return 2;
	const char *dir = argv[2], *preset = argv[3], *act = "quick_gelu", *drop = "", *extra = NULL;
	uint64_t seed = 1;
	for (int i = 4; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--seed") == 0)
			seed = strtoull(argv[i + 1], NULL, 10);
		else if (strcmp(argv[i], "--dtype") == 0)
			out_dtype = strcmp(argv[i + 1], "f16") == 0 ? CMR_DTYPE_F16 : CMR_DTYPE_F32;
		else if (strcmp(argv[i], "--act") == 0)
			act = argv[i + 1];
		else if (strcmp(argv[i], "--drop") == 0) /* leave out a tower's tensors: text|vision */
			drop = argv[i + 1];
		else if (strcmp(argv[i], "--extra") == 0) /* a tensor [2, text width] no model has */
			extra = argv[i + 1];
	}
	if (strcmp(preset, "tiny") == 0) {
		cfg.v = (tw){32, 2, 4, 64};
		cfg.t = (tw){32, 2, 4, 64};
		cfg.image = 32, cfg.patch = 8, cfg.vocab = 49408, cfg.ctx = 77, cfg.proj = 16;
	} else if (strcmp(preset, "mini") == 0) { /* a few kilobytes: the fuzz corpus's seeds */
		cfg.v = (tw){8, 1, 2, 16};
		cfg.t = (tw){8, 1, 2, 16};
		cfg.image = 8, cfg.patch = 4, cfg.vocab = 64, cfg.ctx = 8, cfg.proj = 4;
	} else if (strcmp(preset, "b32") == 0) {
		cfg.v = (tw){768, 12, 12, 3072};
		cfg.t = (tw){512, 12, 8, 2048};
		cfg.image = 224, cfg.patch = 32, cfg.vocab = 49408, cfg.ctx = 77, cfg.proj = 512;
	} else {
		fprintf(stderr, "mkclip: unknown preset %s (tiny, mini, b32)\n", preset);
		return 2;
	}
	rng_state = seed * 0x9e3779b97f4a7c15ULL + 1;
	/* the tensors are the model core's table, in its (transformers' state-dict) order */
	cmr_clip_cfg cc;
	memset(&cc, 0, sizeof cc);
	cc.vision = (cmr_tower_cfg){cfg.v.width, cfg.v.layers, cfg.v.heads, cfg.v.mlp, 0, 1e-5f, cfg.image, cfg.patch, 0, 0};
	cc.text = (cmr_tower_cfg){cfg.t.width, cfg.t.layers, cfg.t.heads, cfg.t.mlp, 0, 1e-5f, 0, 0, cfg.vocab, cfg.ctx};
	cc.proj = cfg.proj;
	cmr_clip *m = cmr_clip_new(&cc);
	if (!m) {
		fprintf(stderr, "mkclip: out of memory\n");
		return 1;
	}
	for (int i = 0; i < m->nparam; i++) {
		const cmr_param *p = &m->param[i];
		if (i == m->logit) { /* log(1 / 0.07), a 0-d tensor; always F32 */
			cmr_st_out *o = &outs[nout++];
			o->name = strdup(p->name);
			o->dtype = CMR_DTYPE_F32;
			o->ndim = 0;
			float *v = malloc(sizeof *v);
			*v = p->init_val;
			o->data = v;
			continue;
		}
		float centre, spread;
		values(p, &centre, &spread);
		add(p->name, p->ndim, p->shape, centre, spread);
	}
	cmr_clip_free(m);
	if (extra) {
		int64_t s2[2] = {2, cfg.t.width};
		add(extra, 2, s2, 0.0f, 0.1f);
	}
	/* the values are drawn for every tensor, so --drop leaves the others unchanged */
	size_t kept = 0;
	for (size_t i = 0; i < nout; i++) {
		int text = strncmp(outs[i].name, "text_", 5) == 0, vision = strncmp(outs[i].name, "vision_", 7) == 0 ||
								strncmp(outs[i].name, "visual_", 7) == 0;
		if ((strcmp(drop, "text") == 0 && text) || (strcmp(drop, "vision") == 0 && vision)) {
			free((void *)outs[i].data);
			free((void *)outs[i].name);
			continue;
		}
		outs[kept++] = outs[i];
	}
	nout = kept;
	char path[4096], err[512];
	snprintf(path, sizeof path, "%s/", dir); /* mkdir -p */
	for (char *q = path + 1; *q; q++)
		if (*q == '/') {
			*q = 0;
			mkdir(path, 0777);
			*q = '/';
		}
	snprintf(path, sizeof path, "%s/model.safetensors", dir);
	if (cmr_st_write(path, outs, nout, "{\"format\": \"pt\"}", err, sizeof err) < 0) {
		fprintf(stderr, "mkclip: %s\n", err);
		return 1;
	}
	snprintf(path, sizeof path, "%s/config.json", dir);
	FILE *f = fopen(path, "w");
	if (!f) {
		perror(path);
		return 1;
	}
	fprintf(f, "{\n  \"architectures\": [\"CLIPModel\"],\n  \"model_type\": \"clip\",\n"
		   "  \"projection_dim\": %d,\n  \"logit_scale_init_value\": 2.6592,\n"
		   "  \"text_config\": {\"hidden_size\": %d, \"num_hidden_layers\": %d, \"num_attention_heads\": %d,\n"
		   "    \"intermediate_size\": %d, \"vocab_size\": %d, \"max_position_embeddings\": %d,\n"
		   "    \"hidden_act\": \"%s\", \"layer_norm_eps\": 1e-05, \"eos_token_id\": 2},\n"
		   "  \"vision_config\": {\"hidden_size\": %d, \"num_hidden_layers\": %d, \"num_attention_heads\": %d,\n"
		   "    \"intermediate_size\": %d, \"image_size\": %d, \"patch_size\": %d, \"hidden_act\": \"%s\",\n"
		   "    \"layer_norm_eps\": 1e-05}\n}\n",
		cfg.proj, cfg.t.width, cfg.t.layers, cfg.t.heads, cfg.t.mlp, cfg.vocab, cfg.ctx, act, cfg.v.width,
		cfg.v.layers, cfg.v.heads, cfg.v.mlp, cfg.image, cfg.patch, act);
	fclose(f);
	snprintf(path, sizeof path, "%s/preprocessor_config.json", dir);
	f = fopen(path, "w");
	if (!f) {
		perror(path);
		return 1;
	}
	fprintf(f, "{\"crop_size\": %d, \"do_center_crop\": true, \"do_normalize\": true, \"do_resize\": true,\n"
		   " \"image_mean\": [0.48145466, 0.4578275, 0.40821073], \"image_std\": [0.26862954, 0.26130258, 0.27577711],\n"
		   " \"resample\": 3, \"size\": %d}\n", cfg.image, cfg.image);
	fclose(f);
	for (size_t i = 0; i < nout; i++) {
		free((void *)outs[i].data);
		free((void *)outs[i].name);
	}
	return 0;
}

static int inputs(int argc, char **argv, int images)
{
	if (argc < (images ? 5 : 4))
		return 2;
	int n = atoi(argv[2]), size = images ? atoi(argv[3]) : 0;
	rng_state = strtoull(argv[images ? 4 : 3], NULL, 10) * 0x9e3779b97f4a7c15ULL + 7;
	cmr_writer *w = cmr_writer_new(stdout, "(stdout)", 0);
	for (int i = 0; i < n; i++) {
		char key[32];
		cmr_record rec;
		if (images) {
			uint8_t *px = malloc((size_t)size * size * 3);
			for (size_t j = 0; j < (size_t)size * size * 3; j++)
				px[j] = (uint8_t)(rng() >> 24);
			uint32_t dims[3] = {(uint32_t)size, (uint32_t)size, 3};
			snprintf(key, sizeof key, "img%03d", i);
			cmr_record_tensor(&rec, CMR_KIND_IMAGE, CMR_DTYPE_U8, 3, dims, key, px);
			if (cmr_writer_put(w, &rec) < 0)
				return 1;
			free(px);
		} else {
			int32_t ids[77];
			int len = 2 + (int)(rng() % 76);
			ids[0] = 49406;
			for (int j = 1; j < len - 1; j++)
				ids[j] = (int32_t)(rng() % 49406);
			ids[len - 1] = 49407;
			uint32_t dims[1] = {(uint32_t)len};
			snprintf(key, sizeof key, "img%03d#0", i);
			cmr_record_tensor(&rec, CMR_KIND_TOKENS, CMR_DTYPE_I32, 1, dims, key, ids);
			if (cmr_writer_put(w, &rec) < 0)
				return 1;
		}
	}
	if (cmr_writer_finish(w) < 0)
		return 1;
	cmr_writer_free(w);
	return 0;
}

int main(int argc, char **argv)
{
	int rc = 2;
	if (argc >= 2 && strcmp(argv[1], "model") == 0)
		rc = model(argc, argv);
	else if (argc >= 2 && strcmp(argv[1], "images") == 0)
		rc = inputs(argc, argv, 1);
	else if (argc >= 2 && strcmp(argv[1], "tokens") == 0)
		rc = inputs(argc, argv, 0);
	if (rc == 2)
		fprintf(stderr, "usage: mkclip model DIR tiny|mini|b32 [--seed N] [--dtype f32|f16] [--act quick_gelu|gelu]\n"
				"       mkclip images N SIZE SEED > images.cmr\n"
				"       mkclip tokens N SEED > tokens.cmr\n");
	return rc;
}
