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
		if (is_file(p)) { /* OpenCLIP's layout: its weights as safetensors */
			snprintf(p, sizeof p, "%s/open_clip_model.safetensors", arg);
			if (is_file(p)) {
				snprintf(out, cap, "%s", arg);
				return 0;
			}
			why = "an OpenCLIP checkpoint (open_clip_config.json) without open_clip_model.safetensors: cmr "
			      "reads safetensors, not PyTorch pickles (open_clip_pytorch_model.bin): convert it with "
			      "safetensors.torch.save_file(torch.load(BIN), 'open_clip_model.safetensors')";
		}
		snprintf(p, sizeof p, "%s/pytorch_model.bin", arg);
		if (!why && is_file(p))
			why = "PyTorch pickle weights (pytorch_model.bin) and no config.json: cmr reads config.json and "
			      "model.safetensors (transformers: CLIPModel.from_pretrained(DIR).save_pretrained(NEW, "
			      "safe_serialization=True))";
		return fail(err, errlen, "%s: no config.json: %s", arg,
			    why ? why
				: "not a CLIP checkpoint directory (Hugging Face: config.json, model.safetensors; "
				  "OpenCLIP: open_clip_config.json, open_clip_model.safetensors)");
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

/* the vision geometry both config layouts must give: whole patches, at most 16384 of them
 * (where: the fields' prefix in the message) */
static int check_patches(const cmr_tower_cfg *v, const char *path, const char *where, char *err, size_t errlen)
{
	if (v->features)
		return 0;
	if (v->image_size % v->patch_size)
		return fail(err, errlen, "%s: %simage_size %d is not a multiple of patch_size %d", path, where,
			    v->image_size, v->patch_size);
	if (cmr_clip_vision_seq(v) > 16385)
		return fail(err, errlen, "%s: image_size %d / patch_size %d gives %d patches, more than 16384", path,
			    v->image_size, v->patch_size, cmr_clip_vision_seq(v) - 1);
	return 0;
}

/* the OpenAI image mean and std, transformers' and OpenCLIP's default */
static const float openai_mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
static const float openai_std[3] = {0.26862954f, 0.26130258f, 0.27577711f};

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
	I(v, vw, "input_features", 0, 0, 65536, &cfg->vision.features); /* cmr's: a features tower */
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
	if (rc == 0)
		rc = check_patches(&cfg->vision, path, "", err, errlen);
	json_decref(v);
	json_decref(t);
	json_decref(j);
	if (rc)
		return rc;
	memcpy(cfg->mean, openai_mean, sizeof openai_mean);
	memcpy(cfg->std, openai_std, sizeof openai_std);
	cfg->layout = CMR_LAYOUT_HF;
	return 0;
}

const char *cmr_clip_weights_name(const cmr_clip_cfg *cfg)
{
	return cfg->layout == CMR_LAYOUT_OPENCLIP ? "open_clip_model.safetensors" : "model.safetensors";
}

/* an OpenCLIP tower option cmr does not build: refused when present and not its default */
static int refuse_option(json_t *o, const char *where, const char *k, json_t *dflt, char *err, size_t errlen)
{
	json_t *v = json_object_get(o, k);
	int same = !v || json_is_null(v) || (dflt && json_equal(v, dflt));
	json_decref(dflt);
	return same ? 0
		    : fail(err, errlen, "%s%s is set: cmr builds OpenCLIP's plain CLIP ViT towers only (no %s)", where,
			   k, k);
}

int cmr_clip_cfg_parse_openclip(const char *text, size_t len, const char *path, cmr_clip_cfg *cfg, char *err,
				size_t errlen)
{
	memset(cfg, 0, sizeof *cfg);
	json_error_t jerr;
	json_t *j = json_loadb(text, len, 0, &jerr);
	json_t *mc = json_object_get(j, "model_cfg");
	if (!json_is_object(mc)) {
		json_decref(j);
		return fail(err, errlen, "%s: %s", path, j ? "no \"model_cfg\" object" : jerr.text);
	}
	json_t *v = json_object_get(mc, "vision_cfg"), *t = json_object_get(mc, "text_cfg");
	char vw[4200], tw[4200], top[4200];
	snprintf(vw, sizeof vw, "%s: model_cfg.vision_cfg.", path);
	snprintf(tw, sizeof tw, "%s: model_cfg.text_cfg.", path);
	snprintf(top, sizeof top, "%s: model_cfg.", path);
	int rc = 0;
	if (!json_is_object(v) || !json_is_object(t))
		rc = fail(err, errlen, "%s: model_cfg needs vision_cfg and text_cfg objects", path);
	if (rc == 0 && json_is_array(json_object_get(v, "layers")))
		rc = fail(err, errlen, "%slayers is a list: a ResNet tower, which cmr does not build (CLIP ViTs only)", vw);
	static const char *const vrefuse[] = {"timm_model_name", "attentional_pool", "attn_pooler_queries",
					      "ls_init_value", "patch_dropout", "input_patchnorm", "no_ln_pre",
					      "final_ln_after_pool", "output_tokens", "act_kwargs", "norm_kwargs", NULL};
	static const char *const trefuse[] = {"hf_model_name", "ls_init_value", "embed_cls", "proj_bias",
					      "output_tokens", "no_causal_mask", "act_kwargs", "norm_kwargs", NULL};
	for (int i = 0; rc == 0 && vrefuse[i]; i++) {
		json_t *d = !strcmp(vrefuse[i], "patch_dropout") ? json_real(0)
			  : !strcmp(vrefuse[i], "attn_pooler_queries") ? json_integer(256)
			  : (!strcmp(vrefuse[i], "act_kwargs") || !strcmp(vrefuse[i], "norm_kwargs")) ? json_object()
			  : json_false();
		rc = refuse_option(v, vw, vrefuse[i], d, err, errlen);
	}
	for (int i = 0; rc == 0 && trefuse[i]; i++)
		rc = refuse_option(t, tw, trefuse[i],
				   (!strcmp(trefuse[i], "act_kwargs") || !strcmp(trefuse[i], "norm_kwargs")) ? json_object()
													     : json_false(),
				   err, errlen);
	if (rc == 0)
		rc = refuse_option(v, vw, "pool_type", json_string("tok"), err, errlen);
	if (rc == 0)
		rc = refuse_option(t, tw, "pool_type", json_string("argmax"), err, errlen);
	if (rc == 0)
		rc = refuse_option(t, tw, "pad_id", json_integer(0), err, errlen);
	int head_width = 64;
	float vratio = 4, tratio = 4;
#define I(obj, w, key, dflt, lo, hi, dst) \
	if (rc == 0) \
	rc = get_int(obj, w, key, dflt, lo, hi, dst, err, errlen)
	I(v, vw, "width", 768, 1, 16384, &cfg->vision.width);
	I(v, vw, "layers", 12, 0, 256, &cfg->vision.layers);
	I(v, vw, "head_width", 64, 1, 16384, &head_width);
	I(v, vw, "image_size", 224, 1, 4096, &cfg->vision.image_size);
	I(v, vw, "patch_size", 32, 1, 4096, &cfg->vision.patch_size);
	I(t, tw, "width", 512, 1, 16384, &cfg->text.width);
	I(t, tw, "layers", 12, 0, 256, &cfg->text.layers);
	I(t, tw, "heads", 8, 1, 1024, &cfg->text.heads);
	I(t, tw, "vocab_size", 49408, 1, 1 << 22, &cfg->text.vocab);
	I(t, tw, "context_length", 77, 2, 16384, &cfg->text.context);
	I(mc, top, "embed_dim", 512, 1, 16384, &cfg->proj);
#undef I
	if (rc == 0)
		rc = get_num(v, vw, "mlp_ratio", 4, 0, 64, &vratio, err, errlen);
	if (rc == 0)
		rc = get_num(t, tw, "mlp_ratio", 4, 0, 64, &tratio, err, errlen);
	json_t *qg = json_object_get(mc, "quick_gelu");
	if (rc == 0 && qg && !json_is_boolean(qg))
		rc = fail(err, errlen, "%squick_gelu must be true or false", top);
	if (rc == 0 && cfg->vision.width % head_width)
		rc = fail(err, errlen, "%swidth %d is not a multiple of head_width %d", vw, cfg->vision.width, head_width);
	if (rc == 0) {
		cfg->vision.heads = cfg->vision.width / head_width;
		cfg->vision.mlp = (int)(cfg->vision.width * (double)vratio);
		cfg->text.mlp = (int)(cfg->text.width * (double)tratio);
		if (cfg->vision.mlp < 1 || cfg->text.mlp < 1 || cfg->vision.mlp > 65536 || cfg->text.mlp > 65536)
			rc = fail(err, errlen, "%s: mlp_ratio gives an MLP width outside 1 to 65536", path);
		/* OpenCLIP's nn.GELU (erf) unless quick_gelu, as OpenAI's models; LayerNorm's eps */
		cfg->vision.act = cfg->text.act = json_is_true(qg) ? CMR_ACT_QUICK_GELU : CMR_ACT_GELU;
		cfg->vision.eps = cfg->text.eps = 1e-5f;
	}
	if (rc == 0 && cfg->text.width % cfg->text.heads)
		rc = fail(err, errlen, "%swidth %d is not a multiple of heads %d", tw, cfg->text.width, cfg->text.heads);
	if (rc == 0)
		rc = check_patches(&cfg->vision, path, "model_cfg.vision_cfg.", err, errlen);
	memcpy(cfg->mean, openai_mean, sizeof openai_mean);
	memcpy(cfg->std, openai_std, sizeof openai_std);
	json_t *pc = json_object_get(j, "preprocess_cfg");
	for (int k = 0; rc == 0 && k < 2 && pc; k++) {
		json_t *a = json_object_get(pc, k ? "std" : "mean");
		if (!a)
			continue;
		float *dst = k ? cfg->std : cfg->mean;
		if (!json_is_array(a) || json_array_size(a) != 3)
			rc = fail(err, errlen, "%s: preprocess_cfg.%s must be 3 numbers", path, k ? "std" : "mean");
		for (size_t i = 0; rc == 0 && i < 3; i++) {
			double x = json_number_value(json_array_get(a, i));
			if (!json_is_number(json_array_get(a, i)) || !isfinite(x) || (k && !(x > 0)))
				rc = fail(err, errlen, "%s: preprocess_cfg.%s must be finite numbers%s", path, k ? "std" : "mean",
					  k ? " above 0" : "");
			dst[i] = (float)x;
		}
	}
	json_decref(j);
	if (rc)
		return rc;
	cfg->layout = CMR_LAYOUT_OPENCLIP;
	return 0;
}

char *cmr_clip_cfg_hf_json(const cmr_clip_cfg *cfg)
{
	const cmr_tower_cfg *t = &cfg->text, *v = &cfg->vision;
	const char *act[2] = {"quick_gelu", "gelu"};
	json_t *j = json_pack(
		"{s:[s], s:s, s:i, s:f, s:{s:i, s:i, s:i, s:i, s:i, s:i, s:s, s:f}, s:{s:i, s:i, s:i, s:i, s:i, s:i, "
		"s:s, s:f}}",
		"architectures", "CLIPModel", "model_type", "clip", "projection_dim", cfg->proj,
		"logit_scale_init_value", 2.6592, "text_config", "hidden_size", t->width, "num_hidden_layers", t->layers,
		"num_attention_heads", t->heads, "intermediate_size", t->mlp, "vocab_size", t->vocab,
		"max_position_embeddings", t->context, "hidden_act", act[t->act == CMR_ACT_GELU], "layer_norm_eps",
		(double)t->eps, "vision_config", "hidden_size", v->width, "num_hidden_layers", v->layers,
		"num_attention_heads", v->heads, "intermediate_size", v->mlp, "image_size", v->image_size, "patch_size",
		v->patch_size, "hidden_act", act[v->act == CMR_ACT_GELU], "layer_norm_eps", (double)v->eps);
	if (j && v->features)
		json_object_set_new(json_object_get(j, "vision_config"), "input_features", json_integer(v->features));
	char *s = j ? json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9)) : NULL;
	json_decref(j);
	return s;
}

int cmr_clip_cfg_load(const char *dir, cmr_clip_cfg *cfg, char *err, size_t errlen)
{
	char path[4096];
	struct stat sb;
	int is_file = stat(dir, &sb) == 0 && S_ISREG(sb.st_mode); /* a config.json itself */
	snprintf(path, sizeof path, is_file ? "%s" : "%s/config.json", dir);
	memset(cfg, 0, sizeof *cfg);
	int openclip = 0;
	if (!is_file && stat(path, &sb) < 0) { /* no config.json: OpenCLIP's layout? */
		snprintf(path, sizeof path, "%s/open_clip_config.json", dir);
		openclip = stat(path, &sb) == 0;
		if (!openclip)
			snprintf(path, sizeof path, "%s/config.json", dir);
	} else if (is_file) {
		size_t l = strlen(dir);
		openclip = l >= 21 && strcmp(dir + l - 21, "open_clip_config.json") == 0;
	}
	size_t len;
	char *text = cmr_read_file(path, CMR_CONFIG_MAX - 1, &len, err, errlen);
	if (!text)
		return -1;
	int rc = openclip ? cmr_clip_cfg_parse_openclip(text, len, path, cfg, err, errlen)
			  : cmr_clip_cfg_parse(text, len, path, cfg, err, errlen);
	free(text);
	if (rc || is_file || openclip)
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

int cmr_clip_vision_patches(const cmr_tower_cfg *c)
{
	if (c->features)
		return 1;
	int g = c->image_size / (c->patch_size > 0 ? c->patch_size : 1);
	return g * g;
}

int cmr_clip_vision_seq(const cmr_tower_cfg *c)
{
	return cmr_clip_vision_patches(c) + !c->features;
}

int cmr_clip_patch_dim(const cmr_tower_cfg *c)
{
	return c->features ? c->features : 3 * c->patch_size * c->patch_size;
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
	struct owned {
		void *p;
		void (*fn)(void *);
	} *own; /* modules' memory (cmr_clip_own) */
	int nown;
} priv_t;

int cmr_clip_own(cmr_clip *m, void *p, void (*fn)(void *))
{
	priv_t *pv = m->priv;
	struct owned *o = realloc(pv->own, (size_t)(pv->nown + 1) * sizeof *o);
	if (!o)
		return -1;
	pv->own = o;
	o[pv->nown++] = (struct owned){p, fn};
	return 0;
}

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
	if (vc->features) { /* a features tower: the feature vector's linear embedding, no class token */
		A2("vision_model.embeddings.feature_embedding.weight", CMR_T_PATCH, vc->width, vc->features, 0.02f, 0);
	} else {
		A1("vision_model.embeddings.class_embedding", CMR_T_CLASS, vc->width, (float)pow(vc->width, -0.5), 0);
		add(&a, "vision_model.embeddings.patch_embedding.weight", CMR_T_PATCH, 4, vc->width, 3, vc->patch_size,
		    vc->patch_size, 0.02f, 0);
	}
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
	for (int i = 0; i < m->nparam; i++) {
		if (m->param[i].owned)
			free(m->param[i].w);
		if (m->param[i].dev)
			m->placed->free(m->param[i].dev);
	}
	free(m->param);
	cmr_clip_state_free(m, m->grad);
	free(m->tower[0].layer);
	free(m->tower[1].layer);
	priv_t *p = m->priv;
	for (int i = 0; p && i < p->nst; i++)
		cmr_st_close(p->st[i]);
	for (int i = p ? p->nown - 1 : -1; i >= 0; i--)
		p->own[i].fn(p->own[i].p);
	if (p)
		free(p->st), free(p->own);
	free(p);
	free(m);
}

/* the tower's view of parameter i */
static void bind(cmr_clip *m, cmr_param *p)
{
	if (p->tower < 0 || p->slot < 0)
		return;
	cmr_clip_tower *t = &m->tower[p->tower];
	float *w = p->dev ? p->dev : p->w; /* what the passes read: the placed copy */
	if (p->layer >= 0) {
		t->layer[p->layer].w[p->slot] = w;
		t->layer[p->layer].g[p->slot] = p->g;
	} else {
		t->w[p->slot] = w;
		t->g[p->slot] = p->g;
	}
	if (p->slot == CMR_T_PREFIX && p->layer < 0) {
		t->prefix_table = (int)p->shape[0];
		t->nprefix = t->prefix_len > 0 ? t->prefix_k * t->prefix_len : (int)p->shape[0];
	}
}

/* new host values for p: into its placed copy too, then bound */
static void set_bound(cmr_clip *m, cmr_param *p)
{
	if (p->dev)
		m->placed->upload(p->dev, p->w, p->n * sizeof(float));
	bind(m, p);
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

/* ---- checkpoint layouts: where a parameter's values are in a file ---- */
typedef struct {
	char name[160];
	int part, nparts; /* rows part/nparts of the file's tensor (q, k, v in OpenCLIP's in_proj) */
	int transpose;    /* stored transposed (OpenCLIP's projections: x @ proj) */
} src_ref;

/* transformers' names (the table's) to OpenCLIP's (OpenAI's state dict); the conversion
 * is transformers' convert_clip_original_pytorch_to_hf.py read backwards */
static void source_of(const cmr_clip *m, const cmr_param *p, src_ref *r)
{
	memset(r, 0, sizeof *r);
	r->nparts = 1;
	snprintf(r->name, sizeof r->name, "%s", p->name);
	if (m->cfg.layout != CMR_LAYOUT_OPENCLIP)
		return;
	static const struct {
		const char *hf, *oc;
		int transpose;
	} whole[] = {
		{"text_model.embeddings.token_embedding.weight", "token_embedding.weight", 0},
		{"text_model.embeddings.position_embedding.weight", "positional_embedding", 0},
		{"text_model.final_layer_norm.weight", "ln_final.weight", 0},
		{"text_model.final_layer_norm.bias", "ln_final.bias", 0},
		{"vision_model.embeddings.class_embedding", "visual.class_embedding", 0},
		{"vision_model.embeddings.patch_embedding.weight", "visual.conv1.weight", 0},
		{"vision_model.embeddings.position_embedding.weight", "visual.positional_embedding", 0},
		{"vision_model.pre_layrnorm.weight", "visual.ln_pre.weight", 0},
		{"vision_model.pre_layrnorm.bias", "visual.ln_pre.bias", 0},
		{"vision_model.post_layernorm.weight", "visual.ln_post.weight", 0},
		{"vision_model.post_layernorm.bias", "visual.ln_post.bias", 0},
		{"visual_projection.weight", "visual.proj", 1},
		{"text_projection.weight", "text_projection", 1},
		{"logit_scale", "logit_scale", 0},
	};
	for (size_t i = 0; i < sizeof whole / sizeof whole[0]; i++)
		if (strcmp(p->name, whole[i].hf) == 0) {
			snprintf(r->name, sizeof r->name, "%s", whole[i].oc);
			r->transpose = whole[i].transpose;
			return;
		}
	static const struct {
		const char *hf, *oc;
		int part;
	} sub[] = {
		{"layer_norm1.weight", "ln_1.weight", -1},
		{"layer_norm1.bias", "ln_1.bias", -1},
		{"layer_norm2.weight", "ln_2.weight", -1},
		{"layer_norm2.bias", "ln_2.bias", -1},
		{"self_attn.q_proj.weight", "attn.in_proj_weight", 0},
		{"self_attn.k_proj.weight", "attn.in_proj_weight", 1},
		{"self_attn.v_proj.weight", "attn.in_proj_weight", 2},
		{"self_attn.q_proj.bias", "attn.in_proj_bias", 0},
		{"self_attn.k_proj.bias", "attn.in_proj_bias", 1},
		{"self_attn.v_proj.bias", "attn.in_proj_bias", 2},
		{"self_attn.out_proj.weight", "attn.out_proj.weight", -1},
		{"self_attn.out_proj.bias", "attn.out_proj.bias", -1},
		{"mlp.fc1.weight", "mlp.c_fc.weight", -1},
		{"mlp.fc1.bias", "mlp.c_fc.bias", -1},
		{"mlp.fc2.weight", "mlp.c_proj.weight", -1},
		{"mlp.fc2.bias", "mlp.c_proj.bias", -1},
	};
	const char *tp = p->tower == CMR_TOWER_VISION ? "vision_model.encoder.layers." : "text_model.encoder.layers.";
	if (p->layer < 0 || strncmp(p->name, tp, strlen(tp)) != 0)
		return; /* prompts, adapters: a tuning's own names */
	const char *rest = strchr(p->name + strlen(tp), '.');
	for (size_t i = 0; rest && i < sizeof sub / sizeof sub[0]; i++)
		if (strcmp(rest + 1, sub[i].hf) == 0) {
			snprintf(r->name, sizeof r->name, "%stransformer.resblocks.%d.%s",
				 p->tower == CMR_TOWER_VISION ? "visual." : "", p->layer, sub[i].oc);
			if (sub[i].part >= 0)
				r->part = sub[i].part, r->nparts = 3;
			return;
		}
}

/* the bytes of p's values in the file (its part of a fused tensor), or NULL */
static const cmr_st_tensor *source_tensor(const cmr_clip *m, const cmr_param *p, const cmr_st *st, src_ref *r,
					  cmr_st_tensor *view)
{
	source_of(m, p, r);
	const cmr_st_tensor *t = st ? cmr_st_get(st, r->name) : NULL;
	if (!t || r->nparts == 1)
		return t;
	if (t->ndim < 1 || t->shape[0] % r->nparts)
		return t; /* the shape check names it */
	*view = *t;
	view->shape[0] = t->shape[0] / r->nparts;
	view->nbytes = t->nbytes / (size_t)r->nparts;
	view->data = (const unsigned char *)t->data + (size_t)r->part * view->nbytes;
	return view;
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
		if (c->features) /* only then: every other model keeps its identity */
			n += snprintf(desc + n, sizeof desc - (size_t)n, " features %d", c->features);
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
			src_ref sr;
			cmr_st_tensor view;
			const cmr_st_tensor *ft = source_tensor(m, p, st, &sr, &view);
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
		set_bound(m, p);
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
	set_bound(m, p);
	return 0;
}

/* p from a 2-D tensor stored transposed (OpenCLIP's projections): always a copy */
static int set_transposed(cmr_clip *m, cmr_param *p, const cmr_st_tensor *t, const char *path, char *err,
			  size_t errlen)
{
	if (p->ndim != 2 || t->ndim != 2 || t->shape[0] != p->shape[1] || t->shape[1] != p->shape[0]) {
		char want[128], got[128];
		int64_t tr[2] = {p->shape[1], p->shape[0]};
		return fail(err, errlen, "%s: tensor '%s' has shape [%s], the config says [%s]", path, t->name,
			    shape_str(got, sizeof got, t->ndim, t->shape), shape_str(want, sizeof want, 2, tr));
	}
	if (t->dtype != CMR_DTYPE_F32 && t->dtype != CMR_DTYPE_F16 && t->dtype != CMR_DTYPE_BF16)
		return fail(err, errlen, "%s: tensor '%s' has dtype %s; only F32, F16 and BF16 weights are read", path,
			    t->name, cmr_dtype_name(t->dtype));
	if (own(p, err, errlen) < 0)
		return -1;
	size_t rows = (size_t)t->shape[0], cols = (size_t)t->shape[1], es = t->dtype == CMR_DTYPE_F32 ? 4 : 2;
	const unsigned char *src = t->data;
	for (size_t i = 0; i < rows; i++)
		for (size_t j = 0; j < cols; j++) {
			const unsigned char *e = src + (i * cols + j) * es;
			float v;
			uint16_t h;
			if (es == 4)
				memcpy(&v, e, 4);
			else
				memcpy(&h, e, 2), v = t->dtype == CMR_DTYPE_F16 ? cmr_f16_to_f32(h) : cmr_bf16_to_f32(h);
			p->w[j * rows + i] = v;
		}
	set_bound(m, p);
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
		if (m->cfg.layout == CMR_LAYOUT_OPENCLIP) {
			/* OpenAI's state dicts hold these three numbers too; buffers are not parameters */
			if (!strcmp(nm, "input_resolution") || !strcmp(nm, "context_length") || !strcmp(nm, "vocab_size") ||
			    (l >= 9 && strcmp(nm + l - 9, "attn_mask") == 0))
				continue;
			int known = 0;
			for (int k = 0; k < m->nparam && !known; k++) {
				src_ref r;
				source_of(m, &m->param[k], &r);
				known = strcmp(r.name, nm) == 0;
			}
			if (!known) {
				fail(err, errlen, "%s: tensor '%s' is not part of an OpenCLIP CLIP ViT (see cmr-checkpoint(5))",
				     path, nm);
				cmr_st_close(st);
				return -1;
			}
			continue;
		}
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
		src_ref sr;
		cmr_st_tensor view;
		const cmr_st_tensor *t = source_tensor(m, p, st, &sr, &view);
		if (!t && (p->flags & CMR_PARAM_OPTIONAL)) {
			if (own(p, err, errlen) < 0)
				goto bad;
			init_one(p, i, seed, p->w);
			set_bound(m, p);
			continue;
		}
		if (!t) {
			fail(err, errlen, "%s: tensor '%s' is missing", path, sr.name);
			goto bad;
		}
		if ((sr.transpose ? set_transposed(m, p, t, path, err, errlen)
				  : cmr_clip_set_tensor(m, p, t, path, 0, err, errlen)) < 0)
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
	snprintf(path, sizeof path, "%s/%s", dir, cmr_clip_weights_name(&cfg));
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

int cmr_clip_save(const cmr_clip *m, const char *path, const char *metadata_json, struct cmr_atomic *held,
		  char *err, size_t errlen)
{
	return cmr_clip_save_some(m, path, metadata_json, NULL, NULL, held, err, errlen);
}

int cmr_clip_save_some(const cmr_clip *m, const char *path, const char *metadata_json,
		       int (*want)(const cmr_clip *m, const cmr_param *p, const void *ctx), const void *ctx,
		       struct cmr_atomic *held, char *err, size_t errlen)
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
	int rc = held ? cmr_st_write_held(held, path, o, n, metadata_json, err, errlen)
		      : cmr_st_write(path, o, n, metadata_json, err, errlen);
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
	cmr_clip_state_free(m, m->grad);
	m->grad = n ? cmr_clip_state_new(m, n) : NULL;
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
	if (m->grad && m->placed)
		m->placed->zero(m->grad, m->ntrain);
	else if (m->grad)
		memset(m->grad, 0, m->ntrain * sizeof *m->grad);
}

/* ---- placement on a device backend ---- */
float *cmr_clip_state_new(const cmr_clip *m, size_t n)
{
	if (!m->placed)
		return calloc(n + 1, sizeof(float));
	float *s = m->placed->alloc((n + 1) * sizeof(float));
	if (s)
		m->placed->zero(s, n + 1);
	return s;
}

void cmr_clip_state_free(const cmr_clip *m, float *s)
{
	if (s && m->placed)
		m->placed->free(s);
	else
		free(s);
}

int cmr_clip_place(cmr_clip *m, const cmr_ops *ops, char *err, size_t errlen)
{
	if (ops->caps & CMR_OPS_HOST)
		return 0;
	if (m->placed && m->placed != ops) {
		snprintf(err, errlen, "the model is placed on the %s backend already", m->placed->name);
		return -1;
	}
	for (int k = 0; k < 2; k++)
		if (m->tower[k].hooks) {
			snprintf(err, errlen,
				 "--backend %s: modules on the %s tower (adapters, multi-level attention, "
				 "injection) run on a host backend only, for now (blas or ref)",
				 ops->name, k == CMR_TOWER_VISION ? "vision" : "text");
			return -1;
		}
	m->placed = ops;
	size_t placed = 0;
	for (int i = 0; i < m->nparam; i++) {
		cmr_param *p = &m->param[i];
		if (!p->w || p->dev)
			continue;
		if (!(p->dev = ops->alloc(p->n * sizeof(float) + 4))) {
			snprintf(err, errlen, "out of %s memory: %s (%.1f MiB) did not fit after %.1f MiB of weights",
				 ops->name, p->name, p->n * 4.0 / 1048576, placed * 4.0 / 1048576);
			return -1;
		}
		ops->upload(p->dev, p->w, p->n * sizeof(float));
		placed += p->n;
		bind(m, p);
	}
	if (m->grad) { /* the host gradients made before placing move too */
		float *g = ops->alloc((m->ntrain + 1) * sizeof *g);
		if (!g) {
			snprintf(err, errlen, "out of %s memory for %.1f MiB of gradients after %.1f MiB of weights",
				 ops->name, m->ntrain * 4.0 / 1048576, placed * 4.0 / 1048576);
			return -1;
		}
		ops->upload(g, m->grad, m->ntrain * sizeof *g);
		free(m->grad);
		m->grad = g;
		for (int i = 0; i < m->nparam; i++)
			if (m->param[i].g) {
				m->param[i].g = m->grad + m->param[i].at;
				bind(m, &m->param[i]);
			}
	}
	return 0;
}

void cmr_clip_fetch(cmr_clip *m)
{
	for (int i = 0; m->placed && i < m->nparam; i++) {
		cmr_param *p = &m->param[i];
		if (p->dev && p->g && p->owned) /* trained parameters have values of their own */
			m->placed->download(p->w, p->dev, p->n * sizeof(float));
	}
}

float cmr_clip_get1(const cmr_clip *m, const cmr_param *p)
{
	float v = p->w ? p->w[0] : 0;
	if (p->dev)
		m->placed->download(&v, p->dev, sizeof v);
	return v;
}

void cmr_clip_set1(cmr_clip *m, cmr_param *p, float v)
{
	if (p->dev)
		m->placed->upload(p->dev, &v, sizeof v);
	else
		p->w[0] = v;
}

float cmr_clip_grad_get1(const cmr_clip *m, const cmr_param *p)
{
	float v = 0;
	if (p->g && m->placed)
		m->placed->download(&v, p->g, sizeof v);
	else if (p->g)
		v = p->g[0];
	return v;
}

void cmr_clip_grad_set1(cmr_clip *m, cmr_param *p, float v)
{
	if (p->g && m->placed)
		m->placed->upload(p->g, &v, sizeof v);
	else if (p->g)
		p->g[0] = v;
}

int cmr_clip_tower_trains(const cmr_clip *m, int tower)
{
	return m->tower[tower].grad_from <= m->tower[tower].cfg.layers;
}

void cmr_clip_detach(cmr_clip *m, int tower, cmr_hook *h)
{
	for (cmr_hook **at = &m->tower[tower].hooks; *at; at = &(*at)->next)
		if (*at == h) {
			*at = h->next;
			h->next = NULL;
			return;
		}
}

float *cmr_clip_writable(cmr_clip *m, cmr_param *p)
{
	if (!p->owned) {
		float *w = malloc(p->n * sizeof *w + 1);
		if (!w)
			return NULL;
		memcpy(w, p->w, p->n * sizeof *w);
		p->w = w;
		p->owned = 1;
		bind(m, p);
	}
	return p->w;
}

void cmr_clip_attach(cmr_clip *m, int tower, cmr_hook *h)
{
	cmr_hook **at = &m->tower[tower].hooks;
	while (*at)
		at = &(*at)->next;
	h->next = NULL;
	*at = h;
}
