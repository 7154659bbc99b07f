/* mkclip.c - writes random CLIP checkpoints in the exact Hugging Face layout (config.json,
 * preprocessor_config.json, model.safetensors), and random inputs for them, from a seed:
 * the same bytes on every machine (integer generator, no libm in the values).
 *
 *   mkclip model DIR tiny|mini|b32 [--seed N] [--dtype f32|f16] [--act quick_gelu|gelu]
 *                                [--drop text|vision] [--extra NAME]
 *   mkclip openclip HF_DIR DIR                 the same weights in OpenCLIP's layout
 *                                              (open_clip_config.json, open_clip_model.safetensors)
 *   mkclip images N SIZE SEED > images.cmr     random u8 [SIZE, SIZE, 3] records
 *   mkclip tokens N SEED [LEN] > tokens.cmr    random token records, lengths 2..77 (or LEN)
 *   mkclip descs N V SEED > descs.cmr          random desc-tokens records img<i>#<v>, V
 *                                              perspectives of N images, but image 2 has
 *                                              no perspective 1 (a view of fewer texts) */
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
	cc.vision = (cmr_tower_cfg){cfg.v.width, cfg.v.layers, cfg.v.heads, cfg.v.mlp, 0, 1e-5f, cfg.image, cfg.patch, 0, 0, 0};
	cc.text = (cmr_tower_cfg){cfg.t.width, cfg.t.layers, cfg.t.heads, cfg.t.mlp, 0, 1e-5f, 0, 0, cfg.vocab, cfg.ctx, 0};
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

/* ---- an HF checkpoint rewritten in OpenCLIP's layout, from OpenCLIP's side: the state dict
 * of open_clip.model.CLIP (OpenAI's names), attention as torch.nn.MultiheadAttention keeps it
 * (in_proj_weight = [W_q; W_k; W_v], in_proj_bias likewise), the projections as the
 * parameters x @ proj uses ([width, embed_dim]) ---- */
typedef struct {
	cmr_st_out *o;
	size_t n;
	cmr_st *st;
	int bad;
} oc_out;

static const cmr_st_tensor *hf(oc_out *w, const char *name)
{
	const cmr_st_tensor *t = cmr_st_get(w->st, name);
	if (!t || t->dtype != CMR_DTYPE_F32) {
		fprintf(stderr, "mkclip: no F32 tensor '%s' in the HF checkpoint\n", name);
		w->bad = 1;
	}
	return t;
}

static void put(oc_out *w, const char *name, int ndim, const int64_t *shape, float *data)
{
	cmr_st_out *o = &w->o[w->n++];
	o->name = strdup(name);
	o->dtype = CMR_DTYPE_F32;
	o->ndim = ndim;
	for (int k = 0; k < ndim; k++)
		o->shape[k] = shape[k];
	o->data = data;
}

/* a tensor as it is, under its OpenCLIP name */
static void same(oc_out *w, const char *oc, const char *hfname)
{
	const cmr_st_tensor *t = hf(w, hfname);
	if (!t)
		return;
	float *d = malloc(t->nbytes + 1);
	memcpy(d, t->data, t->nbytes);
	put(w, oc, t->ndim, t->shape, d);
}

static void transposed(oc_out *w, const char *oc, const char *hfname)
{
	const cmr_st_tensor *t = hf(w, hfname);
	if (!t)
		return;
	int64_t r = t->shape[0], c = t->shape[1], sh[4] = {c, r};
	float *d = malloc(t->nbytes + 1);
	const float *s = t->data;
	for (int64_t i = 0; i < r; i++)
		for (int64_t j = 0; j < c; j++)
			d[j * r + i] = s[i * c + j];
	put(w, oc, 2, sh, d);
}

/* [q; k; v] stacked along the rows */
static void in_proj(oc_out *w, const char *oc, const char *hfl, const char *what)
{
	const cmr_st_tensor *t[3];
	char nm[256];
	static const char *qkv[3] = {"q", "k", "v"};
	for (int k = 0; k < 3; k++) {
		snprintf(nm, sizeof nm, "%s.self_attn.%s_proj.%s", hfl, qkv[k], what);
		if (!(t[k] = hf(w, nm)))
			return;
	}
	int64_t sh[4] = {3 * t[0]->shape[0], t[0]->ndim > 1 ? t[0]->shape[1] : 0};
	float *d = malloc(3 * t[0]->nbytes + 1);
	for (int k = 0; k < 3; k++)
		memcpy((char *)d + k * t[0]->nbytes, t[k]->data, t[0]->nbytes);
	put(w, oc, t[0]->ndim, sh, d);
}

static int openclip(int argc, char **argv)
{
	if (argc != 4)
		return 2;
	char path[4096], err[1024];
	cmr_clip_cfg hc;
	if (cmr_clip_cfg_load(argv[2], &hc, err, sizeof err) < 0) {
		fprintf(stderr, "mkclip: %s\n", err);
		return 1;
	}
	snprintf(path, sizeof path, "%s/model.safetensors", argv[2]);
	oc_out w = {calloc(4096, sizeof(cmr_st_out)), 0, cmr_st_open(path, err, sizeof err), 0};
	if (!w.st) {
		fprintf(stderr, "mkclip: %s\n", err);
		return 1;
	}
	same(&w, "positional_embedding", "text_model.embeddings.position_embedding.weight");
	transposed(&w, "text_projection", "text_projection.weight");
	same(&w, "logit_scale", "logit_scale");
	same(&w, "token_embedding.weight", "text_model.embeddings.token_embedding.weight");
	same(&w, "ln_final.weight", "text_model.final_layer_norm.weight");
	same(&w, "ln_final.bias", "text_model.final_layer_norm.bias");
	same(&w, "visual.class_embedding", "vision_model.embeddings.class_embedding");
	same(&w, "visual.positional_embedding", "vision_model.embeddings.position_embedding.weight");
	transposed(&w, "visual.proj", "visual_projection.weight");
	same(&w, "visual.conv1.weight", "vision_model.embeddings.patch_embedding.weight");
	same(&w, "visual.ln_pre.weight", "vision_model.pre_layrnorm.weight");
	same(&w, "visual.ln_pre.bias", "vision_model.pre_layrnorm.bias");
	same(&w, "visual.ln_post.weight", "vision_model.post_layernorm.weight");
	same(&w, "visual.ln_post.bias", "vision_model.post_layernorm.bias");
	for (int tv = 0; tv < 2; tv++) {
		int layers = tv ? hc.vision.layers : hc.text.layers;
		for (int l = 0; l < layers; l++) {
			char oc[128], hfl[128], a[320], b[320];
			snprintf(oc, sizeof oc, "%stransformer.resblocks.%d", tv ? "visual." : "", l);
			snprintf(hfl, sizeof hfl, "%s.encoder.layers.%d", tv ? "vision_model" : "text_model", l);
			static const char *pair[][2] = {{"ln_1", "layer_norm1"}, {"ln_2", "layer_norm2"},
							{"attn.out_proj", "self_attn.out_proj"}, {"mlp.c_fc", "mlp.fc1"},
							{"mlp.c_proj", "mlp.fc2"}};
			for (size_t k = 0; k < sizeof pair / sizeof pair[0]; k++)
				for (int wb = 0; wb < 2; wb++) {
					snprintf(a, sizeof a, "%s.%s.%s", oc, pair[k][0], wb ? "bias" : "weight");
					snprintf(b, sizeof b, "%s.%s.%s", hfl, pair[k][1], wb ? "bias" : "weight");
					same(&w, a, b);
				}
			snprintf(a, sizeof a, "%s.attn.in_proj_weight", oc);
			in_proj(&w, a, hfl, "weight");
			snprintf(a, sizeof a, "%s.attn.in_proj_bias", oc);
			in_proj(&w, a, hfl, "bias");
		}
	}
	if (w.bad)
		return 1;
	mkdir(argv[3], 0777);
	snprintf(path, sizeof path, "%s/open_clip_model.safetensors", argv[3]);
	if (cmr_st_write(path, w.o, w.n, NULL, err, sizeof err) < 0) {
		fprintf(stderr, "mkclip: %s\n", err);
		return 1;
	}
	snprintf(path, sizeof path, "%s/open_clip_config.json", argv[3]);
	FILE *f = fopen(path, "w");
	if (!f) {
		perror(path);
		return 1;
	}
	/* OpenCLIP's fields; mlp_ratio and head_width as the HF config implies them */
	fprintf(f, "{\n  \"model_cfg\": {\n    \"embed_dim\": %d,\n    \"quick_gelu\": %s,\n"
		   "    \"vision_cfg\": {\"image_size\": %d, \"layers\": %d, \"width\": %d, \"head_width\": %d, "
		   "\"mlp_ratio\": %.17g, \"patch_size\": %d},\n"
		   "    \"text_cfg\": {\"context_length\": %d, \"vocab_size\": %d, \"width\": %d, \"heads\": %d, "
		   "\"layers\": %d, \"mlp_ratio\": %.17g}\n  },\n"
		   "  \"preprocess_cfg\": {\"mean\": [%.9g, %.9g, %.9g], \"std\": [%.9g, %.9g, %.9g]}\n}\n",
		hc.proj, hc.text.act == CMR_ACT_QUICK_GELU ? "true" : "false", hc.vision.image_size,
		hc.vision.layers, hc.vision.width, hc.vision.width / hc.vision.heads,
		(double)hc.vision.mlp / hc.vision.width, hc.vision.patch_size, hc.text.context, hc.text.vocab,
		hc.text.width, hc.text.heads, hc.text.layers, (double)hc.text.mlp / hc.text.width,
		(double)hc.mean[0], (double)hc.mean[1], (double)hc.mean[2], (double)hc.std[0], (double)hc.std[1],
		(double)hc.std[2]);
	fclose(f);
	for (size_t i = 0; i < w.n; i++)
		free((void *)w.o[i].data), free((void *)w.o[i].name);
	free(w.o);
	cmr_st_close(w.st);
	return 0;
}

static int inputs(int argc, char **argv, int images)
{
	int descs = images == 2, views = 1;
	if (descs)
		images = 0;
	if (argc < (images || descs ? 5 : 4))
		return 2;
	int n = atoi(argv[2]), size = images ? atoi(argv[3]) : 0;
	if (descs)
		views = atoi(argv[3]), n *= views;
	rng_state = strtoull(argv[images || descs ? 4 : 3], NULL, 10) * 0x9e3779b97f4a7c15ULL + 7;
	int fixed = !images && !descs && argc >= 5 ? atoi(argv[4]) : 0; /* tokens N SEED LEN */
	if (fixed && (fixed < 2 || fixed > 77))
		return 2;
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
			if (fixed)
				len = fixed;
			ids[0] = 49406;
			for (int j = 1; j < len - 1; j++)
				ids[j] = (int32_t)(rng() % 49406);
			ids[len - 1] = 49407;
			uint32_t dims[1] = {(uint32_t)len};
			int img = descs ? i % (n / views) : i, v = descs ? i / (n / views) : 0;
			if (descs && img == 2 && v == 1)
				continue;
			snprintf(key, sizeof key, "img%03d#%d", img, v);
			cmr_record_tensor(&rec, descs ? CMR_KIND_DESC_TOKENS : CMR_KIND_TOKENS, CMR_DTYPE_I32, 1, dims, key, ids);
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
	else if (argc >= 2 && strcmp(argv[1], "openclip") == 0)
		rc = openclip(argc, argv);
	else if (argc >= 2 && strcmp(argv[1], "images") == 0)
		rc = inputs(argc, argv, 1);
	else if (argc >= 2 && strcmp(argv[1], "tokens") == 0)
		rc = inputs(argc, argv, 0);
	else if (argc >= 2 && strcmp(argv[1], "descs") == 0)
		rc = inputs(argc, argv, 2);
	if (rc == 2)
		fprintf(stderr, "usage: mkclip model DIR tiny|mini|b32 [--seed N] [--dtype f32|f16] [--act quick_gelu|gelu]\n"
				"       mkclip openclip HF_DIR DIR\n"
				"       mkclip images N SIZE SEED > images.cmr\n"
				"       mkclip tokens N SEED [LEN] > tokens.cmr\n"
				"       mkclip descs N V SEED > descs.cmr\n");
	return rc;
}
