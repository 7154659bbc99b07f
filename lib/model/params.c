/* model/params.c - the CLIP parameter table, the only description of the architecture, and
 * everything that walks it: config loading, the loader (mapped F32 used in place when
 * frozen), the initialiser, the writer, the tower views and the gradient arrays. */
#include "util.h"
#include "model/clip.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>
#include <xxhash.h>

#include "format/half.h"
#include "format/safetensors.h"
#include "format/stream.h"

#define fail cmr_errf

/* ---- config ---- */
/* A whole number in [min, max] at key of o (dflt when absent): anything else is an error
 * naming the field, so that -1, 1e9 or 4294967328 never becomes a size. */
static int get_int(json_t *o, const char *where, const char *k, int dflt, int min, int max, int *out, char *err,
		   size_t errlen)
{
	json_t *v = json_object_get(o, k);
	*out = dflt;
	if (!v)
		return 0;
	if (!json_is_integer(v))
		return fail(err, errlen, "%s%s must be a whole number", where, k);
	json_int_t x = json_integer_value(v);
	if (x < min || x > max)
		return fail(err, errlen, "%s%s is %lld, outside %d to %d", where, k, (long long)x, min, max);
	*out = (int)x;
	return 0;
}

static int get_num(json_t *o, const char *where, const char *k, float dflt, double min, double max, float *out,
		   char *err, size_t errlen)
{
	json_t *v = json_object_get(o, k);
	*out = dflt;
	if (!v)
		return 0;
	double x = json_number_value(v);
	if (!json_is_number(v) || !(x > min && x <= max))
		return fail(err, errlen, "%s%s must be a number above %g and at most %g", where, k, min, max);
	*out = (float)x;
	return 0;
}

static int get_act(json_t *o, int *act, char *err, size_t errlen, const char *where)
{
	json_t *v = json_object_get(o, "hidden_act");
	const char *s = json_is_string(v) ? json_string_value(v) : "quick_gelu";
	if (strcmp(s, "quick_gelu") == 0)
		*act = CMR_ACT_QUICK_GELU;
	else if (strcmp(s, "gelu") == 0)
		*act = CMR_ACT_GELU;
	else
		return fail(err, errlen, "%shidden_act '%s' is not quick_gelu or gelu", where, s);
	return 0;
}

/* ---- where a model is ---- */
static int is_dir(const char *p)
{
	struct stat sb;
	return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static int is_file(const char *p)
{
	struct stat sb;
	return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* ORG/NAME: a Hugging Face hub id rather than a path */
static int hub_id(const char *s)
{
	const char *sl = strchr(s, '/');
	return sl && sl > s && sl[1] && !strchr(sl + 1, '/') && s[0] != '.' && s[0] != '~' && !strchr(s, ' ');
}

int cmr_model_resolve(const char *arg, char *out, size_t cap, char *err, size_t errlen)
{
	char p[8192];
	if (is_dir(arg)) {
		snprintf(p, sizeof p, "%s/config.json", arg);
		if (is_file(p)) {
			snprintf(out, cap, "%s", arg);
			return 0;
		}
		const char *why = NULL;
		snprintf(p, sizeof p, "%s/open_clip_config.json", arg);
		if (is_file(p))
			why = "an OpenCLIP checkpoint (open_clip_config.json): cmr reads the Hugging Face layout, config.json "
			      "and model.safetensors (convert it with open_clip and transformers, or take the hub's "
			      "transformers version of the model)";
		snprintf(p, sizeof p, "%s/pytorch_model.bin", arg);
		if (!why && is_file(p))
			why = "PyTorch pickle weights (pytorch_model.bin) and no config.json: cmr reads config.json and "
			      "model.safetensors (transformers: CLIPModel.from_pretrained(DIR).save_pretrained(NEW, "
			      "safe_serialization=True))";
		return fail(err, errlen, "%s: no config.json: %s", arg,
			    why ? why : "not a Hugging Face CLIP checkpoint directory (config.json, model.safetensors)");
	}
	if (is_file(arg)) {
		size_t l = strlen(arg);
		if (l >= 12 && strcmp(arg + l - 12, ".safetensors") == 0)
			return fail(err, errlen, "%s is a weights file: give the checkpoint's directory (with its "
						 "config.json)", arg);
		snprintf(out, cap, "%s", arg); /* a config.json itself, for tools that need the geometry only */
		return 0;
	}
	if (hub_id(arg)) { /* the Hugging Face cache, offline: hub/models--ORG--NAME/snapshots/REV */
		char cache[2048], ref[4096], rev[256] = "";
		const char *hc = getenv("HF_HUB_CACHE"), *hh = getenv("HF_HOME"), *home = getenv("HOME");
		if (hc)
			snprintf(cache, sizeof cache, "%s", hc);
		else if (hh)
			snprintf(cache, sizeof cache, "%s/hub", hh);
		else
			snprintf(cache, sizeof cache, "%s/.cache/huggingface/hub", home ? home : "");
		char name[1024];
		snprintf(name, sizeof name, "models--%.1000s", arg);
		*strchr(name, '/') = 0;
		snprintf(name + strlen(name), sizeof name - strlen(name), "--%s", strchr(arg, '/') + 1);
		snprintf(ref, sizeof ref, "%s/%s/refs/main", cache, name);
		FILE *f = fopen(ref, "r");
		if (f) {
			if (!fgets(rev, sizeof rev, f))
				rev[0] = 0;
			fclose(f);
			rev[strcspn(rev, "\r\n")] = 0;
		}
		snprintf(p, sizeof p, "%s/%s/snapshots/%s/config.json", cache, name, rev);
		if (rev[0] && !strchr(rev, '/') && is_file(p)) {
			snprintf(out, cap, "%s/%s/snapshots/%s", cache, name, rev);
			return 0;
		}
		return fail(err, errlen, "%s: no such directory; as a Hugging Face hub id it is not in the cache either "
					 "(%s/%s/snapshots/): download it where there is a network (huggingface-cli download "
					 "%s) and give its directory", arg, cache, name, arg);
	}
	return fail(err, errlen, "%s: no such model directory (a Hugging Face CLIP checkpoint: config.json, "
				 "model.safetensors)", arg);
}

int cmr_clip_cfg_parse(const char *text, size_t len, const char *path, cmr_clip_cfg *cfg, char *err, size_t errlen)
{
	memset(cfg, 0, sizeof *cfg);
	json_error_t jerr;
	json_t *j = json_loadb(text, len, 0, &jerr);
	if (!json_is_object(j)) {
		json_decref(j);
		return fail(err, errlen, "%s: %s", path, j ? "not a JSON object" : jerr.text);
	}
	json_t *v = json_object_get(j, "vision_config"), *t = json_object_get(j, "text_config");
	if (!json_is_object(v))
		v = json_object(); /* absent: OpenAI ViT-B/32 values */
	else
		json_incref(v);
	if (!json_is_object(t))
		t = json_object();
	else
		json_incref(t);
	/* OpenAI ViT-B/32 defaults, as transformers' CLIPConfig; every field range-checked */
	int rc = 0;
	char vw[4200], tw[4200], top[4200]; /* the fields' names in messages: "FILE: vision_config." */
	snprintf(vw, sizeof vw, "%s: vision_config.", path);
	snprintf(tw, sizeof tw, "%s: text_config.", path);
	snprintf(top, sizeof top, "%s: ", path);
#define I(obj, w, key, dflt, lo, hi, dst) \
	if (rc == 0) \
	rc = get_int(obj, w, key, dflt, lo, hi, dst, err, errlen)
	I(v, vw, "hidden_size", 768, 1, 16384, &cfg->vision.width);
	I(v, vw, "num_hidden_layers", 12, 0, 256, &cfg->vision.layers);
	I(v, vw, "num_attention_heads", 12, 1, 1024, &cfg->vision.heads);
	I(v, vw, "intermediate_size", 3072, 1, 65536, &cfg->vision.mlp);
	I(v, vw, "image_size", 224, 1, 4096, &cfg->vision.image_size);
	I(v, vw, "patch_size", 32, 1, 4096, &cfg->vision.patch_size);
	I(t, tw, "hidden_size", 512, 1, 16384, &cfg->text.width);
	I(t, tw, "num_hidden_layers", 12, 0, 256, &cfg->text.layers);
	I(t, tw, "num_attention_heads", 8, 1, 1024, &cfg->text.heads);
	I(t, tw, "intermediate_size", 2048, 1, 65536, &cfg->text.mlp);
	I(t, tw, "vocab_size", 49408, 1, 1 << 22, &cfg->text.vocab);
	I(t, tw, "max_position_embeddings", 77, 2, 16384, &cfg->text.context);
	I(j, top, "projection_dim", 512, 1, 16384, &cfg->proj);
#undef I
	if (rc == 0)
		rc = get_num(v, vw, "layer_norm_eps", 1e-5f, 0, 1, &cfg->vision.eps, err, errlen);
	if (rc == 0)
		rc = get_num(t, tw, "layer_norm_eps", 1e-5f, 0, 1, &cfg->text.eps, err, errlen);
	if (rc == 0)
		rc = get_act(v, &cfg->vision.act, err, errlen, vw);
	if (rc == 0)
		rc = get_act(t, &cfg->text.act, err, errlen, tw);
	const cmr_tower_cfg *tc[2] = {&cfg->vision, &cfg->text};
	for (int i = 0; i < 2 && rc == 0; i++)
		if (tc[i]->width % tc[i]->heads)
			rc = fail(err, errlen, "%s: %s: hidden_size %d is not a multiple of num_attention_heads %d", path,
				  i ? "text_config" : "vision_config", tc[i]->width, tc[i]->heads);
	if (rc == 0 && cfg->vision.image_size % cfg->vision.patch_size)
		rc = fail(err, errlen, "%s: image_size %d is not a multiple of patch_size %d", path,
			  cfg->vision.image_size, cfg->vision.patch_size);
	if (rc == 0 && cmr_clip_vision_seq(&cfg->vision) > 16385)
		rc = fail(err, errlen, "%s: image_size %d / patch_size %d gives %d patches, more than 16384", path,
			  cfg->vision.image_size, cfg->vision.patch_size, cmr_clip_vision_seq(&cfg->vision) - 1);
	json_decref(v);
	json_decref(t);
	json_decref(j);
	if (rc)
		return rc;
	static const float mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
	static const float std[3] = {0.26862954f, 0.26130258f, 0.27577711f};
	memcpy(cfg->mean, mean, sizeof mean);
	memcpy(cfg->std, std, sizeof std);
	return 0;
}

int cmr_clip_cfg_load(const char *dir, cmr_clip_cfg *cfg, char *err, size_t errlen)
{
	char path[4096];
	struct stat sb;
	int is_file = stat(dir, &sb) == 0 && S_ISREG(sb.st_mode); /* a config.json itself */
	snprintf(path, sizeof path, is_file ? "%s" : "%s/config.json", dir);
	memset(cfg, 0, sizeof *cfg);
	FILE *f = fopen(path, "rb");
	if (!f)
		return fail(err, errlen, "%s: %s", path, strerror(errno));
	char *text = malloc(CMR_CONFIG_MAX);
	size_t len = text ? fread(text, 1, CMR_CONFIG_MAX, f) : 0;
	int bad = !text || ferror(f) || len == CMR_CONFIG_MAX;
	fclose(f);
	int rc = bad ? fail(err, errlen, "%s: %s", path, text ? "unreadable, or over 1 MiB" : "out of memory")
		     : cmr_clip_cfg_parse(text, len, path, cfg, err, errlen);
	free(text);
	if (rc || is_file)
		return rc;
	json_error_t jerr;
	snprintf(path, sizeof path, "%s/preprocessor_config.json", dir);
	json_t *p = json_load_file(path, 0, &jerr);
	if (p) {
		json_t *m = json_object_get(p, "image_mean"), *s = json_object_get(p, "image_std");
		for (int i = 0; i < 3; i++) {
			if (json_is_number(json_array_get(m, (size_t)i)))
				cfg->mean[i] = (float)json_number_value(json_array_get(m, (size_t)i));
			if (json_is_number(json_array_get(s, (size_t)i)))
				cfg->std[i] = (float)json_number_value(json_array_get(s, (size_t)i));
			if (!isfinite(cfg->mean[i]) || !isfinite(cfg->std[i]) || !(cfg->std[i] > 0)) {
				json_decref(p);
				return fail(err, errlen, "%s: image_mean and image_std must be finite, the std above 0", path);
			}
		}
		json_decref(p);
	}
	return 0;
}

int cmr_clip_vision_seq(const cmr_tower_cfg *c)
{
	int g = c->image_size / (c->patch_size > 0 ? c->patch_size : 1);
	return g * g + 1;
}

const char *cmr_group_name(int group)
{
	static const char *names[CMR_NGROUP] = {"vision", "text", "head", "prompt", "adapter"};
	return group >= 0 && group < CMR_NGROUP ? names[group] : "?";
}

/* ---- the table ---- */
typedef struct {
	cmr_st **st; /* every checkpoint loaded: frozen tensors point into their mappings */
	int nst;
} priv_t;

int cmr_clip_add(cmr_clip *m, const char *name, int group, int tower, int layer, int slot, int ndim,
		 const int64_t *shape, unsigned flags, float init_std, float init_val)
{
	if (cmr_clip_param(m, name) || strlen(name) >= sizeof m->param[0].name || ndim > 4)
		return -1;
	if (m->nparam == m->cap) {
		int cap = m->cap ? 2 * m->cap : 64;
		cmr_param *p = realloc(m->param, (size_t)cap * sizeof *p);
		if (!p)
			return -1;
		m->param = p;
		m->cap = cap;
	}
	cmr_param *p = &m->param[m->nparam];
	memset(p, 0, sizeof *p);
	snprintf(p->name, sizeof p->name, "%s", name);
	p->group = group;
	p->tower = tower;
	p->layer = layer;
	p->slot = slot;
	p->ndim = ndim;
	p->n = 1;
	for (int i = 0; i < ndim; i++) {
		if (shape[i] <= 0)
			return -1;
		p->shape[i] = shape[i];
		p->n *= (size_t)shape[i];
	}
	p->flags = flags;
	p->init_std = init_std;
	p->init_val = init_val;
	return m->nparam++;
}

cmr_param *cmr_clip_param(cmr_clip *m, const char *name)
{
	for (int i = 0; i < m->nparam; i++)
		if (strcmp(m->param[i].name, name) == 0)
			return &m->param[i];
	return NULL;
}

typedef struct {
	cmr_clip *m;
	int group, tower, layer, oom;
	char prefix[32];
} adder;

static void add(adder *a, const char *name, int slot, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3,
		float std, float val)
{
	int64_t sh[4] = {d0, d1, d2, d3};
	char nm[112];
	if (a->layer >= 0)
		snprintf(nm, sizeof nm, "%s.encoder.layers.%d.%s", a->prefix, a->layer, name);
	else
		snprintf(nm, sizeof nm, "%s", name);
	unsigned fl = ndim >= 2 ? CMR_PARAM_DECAY : 0;
	if (cmr_clip_add(a->m, nm, a->group, a->tower, a->layer, slot, ndim, sh, fl, std, val) < 0)
		a->oom = 1;
}
#define A1(nm, slot, d0, std, val) add(&a, nm, slot, 1, d0, 0, 0, 0, std, val)
#define A2(nm, slot, d0, d1, std, val) add(&a, nm, slot, 2, d0, d1, 0, 0, std, val)

/* transformers' _init_weights with factor 1 */
static void add_layers(adder *aa, const char *prefix, const cmr_tower_cfg *c)
{
	adder a = *aa;
	snprintf(a.prefix, sizeof a.prefix, "%s", prefix);
	int64_t D = c->width, F = c->mlp;
	float in_std = (float)(pow((double)D, -0.5) * pow(2.0 * c->layers, -0.5)), out_std = (float)pow((double)D, -0.5);
	float fc_std = (float)pow(2.0 * D, -0.5);
	for (a.layer = 0; a.layer < c->layers; a.layer++) {
		A1("layer_norm1.weight", CMR_L_LN1_W, D, 0, 1);
		A1("layer_norm1.bias", CMR_L_LN1_B, D, 0, 0);
		A2("self_attn.q_proj.weight", CMR_L_Q_W, D, D, in_std, 0);
		A1("self_attn.q_proj.bias", CMR_L_Q_B, D, 0, 0);
		A2("self_attn.k_proj.weight", CMR_L_K_W, D, D, in_std, 0);
		A1("self_attn.k_proj.bias", CMR_L_K_B, D, 0, 0);
		A2("self_attn.v_proj.weight", CMR_L_V_W, D, D, in_std, 0);
		A1("self_attn.v_proj.bias", CMR_L_V_B, D, 0, 0);
		A2("self_attn.out_proj.weight", CMR_L_O_W, D, D, out_std, 0);
		A1("self_attn.out_proj.bias", CMR_L_O_B, D, 0, 0);
		A1("layer_norm2.weight", CMR_L_LN2_W, D, 0, 1);
		A1("layer_norm2.bias", CMR_L_LN2_B, D, 0, 0);
		A2("mlp.fc1.weight", CMR_L_FC1_W, F, D, fc_std, 0);
		A1("mlp.fc1.bias", CMR_L_FC1_B, F, 0, 0);
		A2("mlp.fc2.weight", CMR_L_FC2_W, D, F, in_std, 0);
		A1("mlp.fc2.bias", CMR_L_FC2_B, D, 0, 0);
	}
	aa->oom |= a.oom;
}

cmr_clip *cmr_clip_new(const cmr_clip_cfg *cfg)
{
	cmr_clip *m = calloc(1, sizeof *m);
	if (!m)
		return NULL;
	m->cfg = *cfg;
	m->priv = calloc(1, sizeof(priv_t));
	const cmr_tower_cfg *vc = &cfg->vision, *tc = &cfg->text;
	for (int k = 0; k < 2; k++) {
		cmr_clip_tower *t = &m->tower[k];
		t->kind = k;
		t->cfg = k == CMR_TOWER_VISION ? cfg->vision : cfg->text;
		t->proj = cfg->proj;
		memcpy(t->mean, cfg->mean, sizeof t->mean);
		memcpy(t->std, cfg->std, sizeof t->std);
		t->layer = calloc((size_t)t->cfg.layers + 1, sizeof *t->layer);
		if (!t->layer)
			goto bad;
	}
	if (!m->priv)
		goto bad;
	/* the order of transformers' state dict: text, vision, projections, scale */
	adder a = {m, CMR_GROUP_TEXT, CMR_TOWER_TEXT, -1, 0, ""};
	A2("text_model.embeddings.token_embedding.weight", CMR_T_TOKEN, tc->vocab, tc->width, 0.02f, 0);
	A2("text_model.embeddings.position_embedding.weight", CMR_T_POS, tc->context, tc->width, 0.02f, 0);
	add_layers(&a, "text_model", tc);
	A1("text_model.final_layer_norm.weight", CMR_T_FINAL_LN_W, tc->width, 0, 1);
	A1("text_model.final_layer_norm.bias", CMR_T_FINAL_LN_B, tc->width, 0, 0);
	a.group = CMR_GROUP_VISION;
	a.tower = CMR_TOWER_VISION;
	A1("vision_model.embeddings.class_embedding", CMR_T_CLASS, vc->width, (float)pow(vc->width, -0.5), 0);
	add(&a, "vision_model.embeddings.patch_embedding.weight", CMR_T_PATCH, 4, vc->width, 3, vc->patch_size,
	    vc->patch_size, 0.02f, 0);
	A2("vision_model.embeddings.position_embedding.weight", CMR_T_POS, cmr_clip_vision_seq(vc), vc->width, 0.02f, 0);
	A1("vision_model.pre_layrnorm.weight", CMR_T_PRE_LN_W, vc->width, 0, 1);
	A1("vision_model.pre_layrnorm.bias", CMR_T_PRE_LN_B, vc->width, 0, 0);
	add_layers(&a, "vision_model", vc);
	A1("vision_model.post_layernorm.weight", CMR_T_FINAL_LN_W, vc->width, 0, 1);
	A1("vision_model.post_layernorm.bias", CMR_T_FINAL_LN_B, vc->width, 0, 0);
	a.group = CMR_GROUP_HEAD;
	A2("visual_projection.weight", CMR_T_PROJ, cfg->proj, vc->width, (float)pow(vc->width, -0.5), 0);
	a.tower = CMR_TOWER_TEXT;
	A2("text_projection.weight", CMR_T_PROJ, cfg->proj, tc->width, (float)pow(tc->width, -0.5), 0);
	a.tower = -1;
	m->logit = m->nparam;
	add(&a, "logit_scale", -1, 0, 0, 0, 0, 0, 0, 2.6592f);
	if (a.oom)
		goto bad;
	m->param[m->logit].flags |= CMR_PARAM_OPTIONAL;
	return m;
bad:
	cmr_clip_free(m);
	return NULL;
}

void cmr_clip_free(cmr_clip *m)
{
	if (!m)
		return;
	for (int i = 0; i < m->nparam; i++)
		if (m->param[i].owned)
			free(m->param[i].w);
	free(m->param);
	free(m->grad);
	free(m->tower[0].layer);
	free(m->tower[1].layer);
	priv_t *p = m->priv;
	for (int i = 0; p && i < p->nst; i++)
		cmr_st_close(p->st[i]);
	if (p)
		free(p->st);
	free(p);
	free(m);
}

/* the tower's view of parameter i */
static void bind(cmr_clip *m, cmr_param *p)
{
	if (p->tower < 0 || p->slot < 0)
		return;
	cmr_clip_tower *t = &m->tower[p->tower];
	if (p->layer >= 0) {
		t->layer[p->layer].w[p->slot] = p->w;
		t->layer[p->layer].g[p->slot] = p->g;
	} else {
		t->w[p->slot] = p->w;
		t->g[p->slot] = p->g;
	}
	if (p->slot == CMR_T_PREFIX && p->layer < 0)
		t->nprefix = (int)p->shape[0];
}

static int wanted(const cmr_param *p, unsigned mask)
{
	return p->tower >= 0 ? (mask >> p->tower) & 1 : (mask & CMR_TOWERS_BOTH) == CMR_TOWERS_BOTH;
}

/* PCG32 and Box-Muller: a fixed sequence of normals for a seed */
static uint32_t pcg(uint64_t *s)
{
	uint64_t old = *s;
	*s = old * 6364136223846793005ULL + 1442695040888963407ULL;
	uint32_t x = (uint32_t)(((old >> 18) ^ old) >> 27), r = (uint32_t)(old >> 59);
	return x >> r | x << ((32 - r) & 31);
}

static void init_one(const cmr_param *p, int i, uint64_t seed, float *w)
{
	/* each tensor its own stream, by its place in the table */
	uint64_t s = (seed + 1) * 0x9e3779b97f4a7c15ULL ^ (uint64_t)(i + 1) * 0xbf58476d1ce4e5b9ULL;
	for (size_t j = 0; j < p->n; j++) {
		if (p->init_std <= 0) {
			w[j] = p->init_val;
			continue;
		}
		double u1 = ((pcg(&s) >> 8) + 1) / 16777217.0, u2 = (pcg(&s) >> 8) / 16777216.0;
		w[j] = (float)(p->init_std * sqrt(-2.0 * log(u1)) * cos(2 * M_PI * u2));
	}
}

static int own(cmr_param *p, char *err, size_t errlen)
{
	if (!p->owned) {
		p->w = malloc(p->n * sizeof(float) + 1);
		if (!p->w)
			return fail(err, errlen, "out of memory for '%s' (%zu floats)", p->name, p->n);
		p->owned = 1;
	}
	return 0;
}

/* each tower's identity: its config and its tensors, in table order. A tower in mask is
 * hashed from the file's bytes (st) or its loaded values; any other tower whose tensors the
 * file holds is hashed from the file alone, without loading it, so that a model's identity
 * over both towers is known even when only one is loaded (cmr_clip_id). */
static void hash_towers(cmr_clip *m, unsigned mask, const cmr_st *st)
{
	for (int k = 0; k < 2; k++) {
		int loaded = (mask >> k) & 1;
		if (!loaded && !st)
			continue;
		cmr_clip_tower *t = &m->tower[k];
		const cmr_tower_cfg *c = &t->cfg;
		char desc[256];
		int n = snprintf(desc, sizeof desc, "%s width %d layers %d heads %d mlp %d act %d eps %.9g image %d patch %d "
						    "vocab %d context %d proj %d",
				 k == CMR_TOWER_VISION ? "vision" : "text", c->width, c->layers, c->heads, c->mlp, c->act,
				 (double)c->eps, c->image_size, c->patch_size, c->vocab, c->context, t->proj);
		XXH3_state_t *x = XXH3_createState();
		if (!x)
			continue;
		XXH3_64bits_reset(x);
		XXH3_64bits_update(x, desc, (size_t)n);
		int i;
		for (i = 0; i < m->nparam; i++) {
			const cmr_param *p = &m->param[i];
			if (p->tower != k || p->group == CMR_GROUP_PROMPT || p->group == CMR_GROUP_ADAPTER)
				continue; /* the base's own tensors: a tuning's identity is added to it */
			const cmr_st_tensor *ft = st ? cmr_st_get(st, p->name) : NULL;
			if (!ft && (!loaded || !p->w))
				break; /* not in this file: the tower's identity stays unknown */
			XXH3_64bits_update(x, p->name, strlen(p->name));
			if (ft)
				XXH3_64bits_update(x, ft->data, ft->nbytes);
			else
				XXH3_64bits_update(x, p->w, p->n * sizeof(float));
		}
		if (i == m->nparam) {
			t->hash = t->base_hash = XXH3_64bits_digest(x);
			m->hashed |= 1u << k;
		}
		XXH3_freeState(x);
	}
}

uint64_t cmr_clip_id(const cmr_clip *m)
{
	if ((m->hashed & CMR_TOWERS_BOTH) != CMR_TOWERS_BOTH)
		return 0;
	unsigned char b[16];
	for (int k = 0; k < 2; k++)
		for (int i = 0; i < 8; i++)
			b[8 * k + i] = (unsigned char)(m->tower[k].hash >> (8 * i));
	uint64_t id = XXH3_64bits_withSeed(b, sizeof b, 0x636d722d6d6f646cULL /* "cmr-modl" */);
	return id ? id : 1;
}

int cmr_clip_init(cmr_clip *m, uint64_t seed, char *err, size_t errlen)
{
	for (int i = 0; i < m->nparam; i++) {
		cmr_param *p = &m->param[i];
		if (own(p, err, errlen) < 0)
			return -1;
		init_one(p, i, seed, p->w);
		bind(m, p);
	}
	m->towers = CMR_TOWERS_BOTH;
	for (int k = 0; k < 2; k++)
		snprintf(m->tower[k].name, sizeof m->tower[k].name, "training");
	hash_towers(m, CMR_TOWERS_BOTH, NULL);
	return 0;
}

static char *shape_str(char *buf, size_t cap, int ndim, const int64_t *shape)
{
	buf[0] = 0;
	for (int i = 0; i < ndim; i++)
		snprintf(buf + strlen(buf), cap - strlen(buf), "%s%lld", i ? ", " : "", (long long)shape[i]);
	return buf;
}

int cmr_clip_set_tensor(cmr_clip *m, cmr_param *p, const struct cmr_st_tensor *t, const char *path, int copy,
			char *err, size_t errlen)
{
	int ok = t->ndim == p->ndim;
	for (int d = 0; ok && d < p->ndim; d++)
		ok = t->shape[d] == p->shape[d];
	if (!ok && p->ndim == 0) /* a scalar saved as [1] */
		ok = t->ndim == 1 && t->shape[0] == 1;
	if (!ok) {
		char want[128], got[128];
		fail(err, errlen, "%s: tensor '%s' has shape [%s], the config says [%s]", path, p->name,
		     shape_str(got, sizeof got, t->ndim, t->shape), shape_str(want, sizeof want, p->ndim, p->shape));
		return -1;
	}
	if (t->dtype != CMR_DTYPE_F32 && t->dtype != CMR_DTYPE_F16 && t->dtype != CMR_DTYPE_BF16) {
		fail(err, errlen, "%s: tensor '%s' has dtype %s; only F32, F16 and BF16 weights are read", path,
		     p->name, cmr_dtype_name(t->dtype));
		return -1;
	}
	if (!copy && t->dtype == CMR_DTYPE_F32 && !(p->flags & CMR_PARAM_TRAIN) && ((uintptr_t)t->data & 3) == 0) {
		if (p->owned)
			free(p->w);
		p->owned = 0;
		p->w = (float *)t->data; /* read only: frozen */
	} else {
		if (own(p, err, errlen) < 0)
			return -1;
		const unsigned char *src = t->data;
		if (t->dtype == CMR_DTYPE_F32)
			memcpy(p->w, src, p->n * 4);
		else
			for (size_t j = 0; j < p->n; j++) {
				uint16_t h;
				memcpy(&h, src + 2 * j, 2); /* the mapping need not be 2-aligned */
				p->w[j] = t->dtype == CMR_DTYPE_F16 ? cmr_f16_to_f32(h) : cmr_bf16_to_f32(h);
			}
	}
	bind(m, p);
	return 0;
}

int cmr_clip_load(cmr_clip *m, const char *path, unsigned mask, uint64_t seed, char *err, size_t errlen)
{
	cmr_st *st = cmr_st_open(path, err, errlen);
	return st ? cmr_clip_load_st(m, st, mask, seed, err, errlen) : -1;
}

int cmr_clip_load_st(cmr_clip *m, cmr_st *st, unsigned mask, uint64_t seed, char *err, size_t errlen)
{
	priv_t *pv = m->priv;
	const char *path = cmr_st_path(st);
	/* every tensor of the file must be one the table knows */
	for (size_t i = 0; i < cmr_st_count(st); i++) {
		const char *nm = cmr_st_at(st, i)->name;
		size_t l = strlen(nm);
		if (l >= 13 && strcmp(nm + l - 13, ".position_ids") == 0)
			continue; /* transformers' buffer, not a parameter */
		if (!cmr_clip_param(m, nm)) {
			fail(err, errlen, "%s: tensor '%s' is not part of this model (a tuning or module it was not "
					  "given? see cmr-checkpoint(5))", path, nm);
			cmr_st_close(st);
			return -1;
		}
	}
	for (int i = 0; i < m->nparam; i++) {
		cmr_param *p = &m->param[i];
		if (!wanted(p, mask))
			continue;
		const cmr_st_tensor *t = cmr_st_get(st, p->name);
		if (!t && (p->flags & CMR_PARAM_OPTIONAL)) {
			if (own(p, err, errlen) < 0)
				goto bad;
			init_one(p, i, seed, p->w);
			bind(m, p);
			continue;
		}
		if (!t) {
			fail(err, errlen, "%s: tensor '%s' is missing", path, p->name);
			goto bad;
		}
		if (cmr_clip_set_tensor(m, p, t, path, 0, err, errlen) < 0)
			goto bad;
	}
	cmr_st **l = realloc(pv->st, (size_t)(pv->nst + 1) * sizeof *l);
	if (!l) {
		fail(err, errlen, "out of memory");
		goto bad;
	}
	pv->st = l;
	pv->st[pv->nst++] = st;
	hash_towers(m, mask, st);
	m->towers |= mask;
	return 0;
bad:
	cmr_st_close(st);
	return -1;
}

cmr_clip *cmr_clip_open(const char *dir, unsigned mask, char *err, size_t errlen)
{
	cmr_clip_cfg cfg;
	if (cmr_clip_cfg_load(dir, &cfg, err, errlen) < 0)
		return NULL;
	cmr_clip *m = cmr_clip_new(&cfg);
	if (!m) {
		fail(err, errlen, "out of memory");
		return NULL;
	}
	char path[4096];
	snprintf(path, sizeof path, "%s/model.safetensors", dir);
	if (cmr_clip_load(m, path, mask, 0, err, errlen) < 0) {
		cmr_clip_free(m);
		return NULL;
	}
	cmr_clip_set_name(m, dir);
	return m;
}

void cmr_clip_set_name(cmr_clip *m, const char *dir)
{
	char name[256];
	snprintf(name, sizeof name, "%s", dir);
	size_t bl = strlen(name);
	while (bl > 1 && name[bl - 1] == '/')
		name[--bl] = 0;
	const char *base = strrchr(name, '/');
	for (int k = 0; k < 2; k++)
		snprintf(m->tower[k].name, sizeof m->tower[k].name, "%s", base && base[1] ? base + 1 : name);
}

int cmr_clip_save(const cmr_clip *m, const char *path, const char *metadata_json, char *err, size_t errlen)
{
	return cmr_clip_save_some(m, path, metadata_json, NULL, NULL, err, errlen);
}

int cmr_clip_save_some(const cmr_clip *m, const char *path, const char *metadata_json,
		       int (*want)(const cmr_clip *m, const cmr_param *p, const void *ctx), const void *ctx, char *err,
		       size_t errlen)
{
	cmr_st_out *o = calloc((size_t)m->nparam, sizeof *o);
	if (!o)
		return fail(err, errlen, "out of memory");
	size_t n = 0;
	for (int i = 0; i < m->nparam; i++) {
		const cmr_param *p = &m->param[i];
		if (!p->w || (want && !want(m, p, ctx)))
			continue;
		o[n].name = p->name;
		o[n].dtype = CMR_DTYPE_F32;
		o[n].ndim = p->ndim;
		for (int d = 0; d < p->ndim; d++)
			o[n].shape[d] = p->shape[d];
		o[n].data = p->w;
		n++;
	}
	int rc = cmr_st_write(path, o, n, metadata_json, err, errlen);
	free(o);
	return rc;
}

/* ---- gradients ---- */
/* how deep a parameter's gradient reaches in its tower */
static int depth(const cmr_clip *m, const cmr_param *p)
{
	if (p->layer >= 0)
		return p->layer;
	switch (p->slot) {
	case CMR_T_PRE_LN_W:
	case CMR_T_PRE_LN_B:
		return CMR_DEPTH_PRE_LN;
	case CMR_T_FINAL_LN_W:
	case CMR_T_FINAL_LN_B:
	case CMR_T_PROJ:
		return m->tower[p->tower].cfg.layers;
	default:
		return CMR_DEPTH_EMBED;
	}
}

int cmr_clip_grads(cmr_clip *m)
{
	size_t n = 0;
	for (int i = 0; i < m->nparam; i++)
		if (m->param[i].flags & CMR_PARAM_TRAIN) {
			m->param[i].at = n;
			n += (m->param[i].n + 15) & ~(size_t)15; /* 64-byte aligned starts */
		}
	free(m->grad);
	m->grad = n ? calloc(n, sizeof *m->grad) : NULL;
	if (n && !m->grad)
		return -1;
	m->ntrain = n;
	for (int k = 0; k < 2; k++)
		m->tower[k].grad_from = m->tower[k].cfg.layers + 1; /* none */
	for (int i = 0; i < m->nparam; i++) {
		cmr_param *p = &m->param[i];
		p->g = p->flags & CMR_PARAM_TRAIN ? m->grad + p->at : NULL;
		bind(m, p);
		if (p->g && p->tower >= 0 && p->slot >= 0) {
			int d = depth(m, p);
			if (d < m->tower[p->tower].grad_from)
				m->tower[p->tower].grad_from = d;
		}
	}
	for (int k = 0; k < 2; k++)
		for (cmr_hook *h = m->tower[k].hooks; h; h = h->next)
			if (h->trains && h->layer_min < m->tower[k].grad_from)
				m->tower[k].grad_from = h->layer_min;
	return 0;
}

void cmr_clip_zero_grad(cmr_clip *m)
{
	if (m->grad)
		memset(m->grad, 0, m->ntrain * sizeof *m->grad);
}

int cmr_clip_tower_trains(const cmr_clip *m, int tower)
{
	return m->tower[tower].grad_from <= m->tower[tower].cfg.layers;
}

void cmr_clip_attach(cmr_clip *m, int tower, cmr_hook *h)
{
	cmr_hook **at = &m->tower[tower].hooks;
	while (*at)
		at = &(*at)->next;
	h->next = NULL;
	*at = h;
}
