/* clip_model.c - CLIP towers from Hugging Face checkpoints, and their forward passes written
 * once over the backend's operation table. Shapes are noted as [rows, columns]. */
#include "util.h"
#include "clip_model.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>
#include <xxhash.h>

#include "half.h"
#include "safetensors.h"
#include "stream.h"

#define fail cmr_errf

/* ---- config ---- */
static int get_int(json_t *o, const char *k, int dflt)
{
	json_t *v = json_object_get(o, k);
	return json_is_integer(v) ? (int)json_integer_value(v) : dflt;
}

static float get_num(json_t *o, const char *k, float dflt)
{
	json_t *v = json_object_get(o, k);
	return json_is_number(v) ? (float)json_number_value(v) : dflt;
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
		return fail(err, errlen, "%s.hidden_act '%s' is not quick_gelu or gelu", where, s);
	return 0;
}

int cmr_clip_cfg_load(const char *dir, cmr_clip_cfg *cfg, char *err, size_t errlen)
{
	char path[4096];
	struct stat sb;
	int is_file = stat(dir, &sb) == 0 && S_ISREG(sb.st_mode); /* a config.json itself */
	snprintf(path, sizeof path, is_file ? "%s" : "%s/config.json", dir);
	json_error_t jerr;
	json_t *j = json_load_file(path, 0, &jerr);
	if (!j)
		return fail(err, errlen, "%s: %s", path, jerr.text);
	json_t *v = json_object_get(j, "vision_config"), *t = json_object_get(j, "text_config");
	if (!json_is_object(v))
		v = json_object(); /* absent: OpenAI ViT-B/32 values */
	else
		json_incref(v);
	if (!json_is_object(t))
		t = json_object();
	else
		json_incref(t);
	/* OpenAI ViT-B/32 defaults, as transformers' CLIPConfig */
	cfg->vision.width = get_int(v, "hidden_size", 768);
	cfg->vision.layers = get_int(v, "num_hidden_layers", 12);
	cfg->vision.heads = get_int(v, "num_attention_heads", 12);
	cfg->vision.mlp = get_int(v, "intermediate_size", 3072);
	cfg->vision.eps = get_num(v, "layer_norm_eps", 1e-5f);
	cfg->vision.image_size = get_int(v, "image_size", 224);
	cfg->vision.patch_size = get_int(v, "patch_size", 32);
	cfg->text.width = get_int(t, "hidden_size", 512);
	cfg->text.layers = get_int(t, "num_hidden_layers", 12);
	cfg->text.heads = get_int(t, "num_attention_heads", 8);
	cfg->text.mlp = get_int(t, "intermediate_size", 2048);
	cfg->text.eps = get_num(t, "layer_norm_eps", 1e-5f);
	cfg->text.vocab = get_int(t, "vocab_size", 49408);
	cfg->text.context = get_int(t, "max_position_embeddings", 77);
	cfg->proj = get_int(j, "projection_dim", 512);
	int rc = get_act(v, &cfg->vision.act, err, errlen, "vision_config");
	if (rc == 0)
		rc = get_act(t, &cfg->text.act, err, errlen, "text_config");
	const cmr_tower_cfg *tc[2] = {&cfg->vision, &cfg->text};
	for (int i = 0; i < 2 && rc == 0; i++)
		if (tc[i]->width <= 0 || tc[i]->layers < 0 || tc[i]->heads <= 0 || tc[i]->width % tc[i]->heads ||
		    tc[i]->mlp <= 0)
			rc = fail(err, errlen, "%s: %s: hidden_size %d, heads %d, intermediate_size %d are not "
				  "usable", path, i ? "text_config" : "vision_config", tc[i]->width, tc[i]->heads, tc[i]->mlp);
	if (rc == 0 && (cfg->vision.patch_size <= 0 || cfg->vision.image_size % cfg->vision.patch_size))
		rc = fail(err, errlen, "%s: image_size %d is not a multiple of patch_size %d", path,
			  cfg->vision.image_size, cfg->vision.patch_size);
	json_decref(v);
	json_decref(t);
	json_decref(j);
	if (rc)
		return rc;
	static const float mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
	static const float std[3] = {0.26862954f, 0.26130258f, 0.27577711f};
	memcpy(cfg->mean, mean, sizeof mean);
	memcpy(cfg->std, std, sizeof std);
	if (is_file)
		return 0;
	snprintf(path, sizeof path, "%s/preprocessor_config.json", dir);
	json_t *p = json_load_file(path, 0, &jerr);
	if (p) {
		json_t *m = json_object_get(p, "image_mean"), *s = json_object_get(p, "image_std");
		for (int i = 0; i < 3; i++) {
			if (json_is_number(json_array_get(m, (size_t)i)))
				cfg->mean[i] = (float)json_number_value(json_array_get(m, (size_t)i));
			if (json_is_number(json_array_get(s, (size_t)i)))
				cfg->std[i] = (float)json_number_value(json_array_get(s, (size_t)i));
		}
		json_decref(p);
	}
	return 0;
}

/* ---- loading ---- */
typedef struct {
	cmr_st *st;
	float **owned; /* converted tensors */
	size_t nowned;
	XXH3_state_t *xxh;
} priv_t;

/* The fp32 data of tensor name with the given shape (n dims), converting fp16/bf16. */
static const float *tensor(priv_t *p, const char *name, int n, const int64_t *shape, char *err, size_t errlen)
{
	const cmr_st_tensor *t = cmr_st_get(p->st, name);
	if (!t) {
		fail(err, errlen, "%s: tensor '%s' is missing", cmr_st_path(p->st), name);
		return NULL;
	}
	int ok = t->ndim == n;
	for (int i = 0; ok && i < n; i++)
		ok = t->shape[i] == shape[i];
	if (!ok) {
		char want[128] = "", got[128] = "";
		for (int i = 0; i < n; i++)
			snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", i ? ", " : "", (long long)shape[i]);
		for (int i = 0; i < t->ndim; i++)
			snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? ", " : "", (long long)t->shape[i]);
		fail(err, errlen, "%s: tensor '%s' has shape [%s], the config says [%s]", cmr_st_path(p->st), name, got, want);
		return NULL;
	}
	XXH3_64bits_update(p->xxh, name, strlen(name));
	XXH3_64bits_update(p->xxh, t->data, t->nbytes);
	size_t count = t->nbytes / (cmr_dtype_size(t->dtype) ? cmr_dtype_size(t->dtype) : 1);
	if (t->dtype == CMR_DTYPE_F32)
		return t->data;
	if (t->dtype != CMR_DTYPE_F16 && t->dtype != CMR_DTYPE_BF16) {
		fail(err, errlen, "%s: tensor '%s' has dtype %s; only F32, F16 and BF16 weights are read",
		     cmr_st_path(p->st), name, cmr_dtype_name(t->dtype));
		return NULL;
	}
	float *f = malloc(count * sizeof *f + 1);
	float **o = realloc(p->owned, (p->nowned + 1) * sizeof *o);
	if (!f || !o) {
		free(f);
		fail(err, errlen, "out of memory");
		return NULL;
	}
	p->owned = o;
	p->owned[p->nowned++] = f;
	const uint16_t *h = t->data;
	for (size_t i = 0; i < count; i++) {
		uint16_t x;
		memcpy(&x, h + i, 2); /* the mapping need not be 2-aligned */
		f[i] = t->dtype == CMR_DTYPE_F16 ? cmr_f16_to_f32(x) : cmr_bf16_to_f32(x);
	}
	return f;
}

#define T1(var, nm, a)                                                      \
	do {                                                                \
		int64_t s_[1] = {a};                                        \
		if (!((var) = tensor(p, nm, 1, s_, err, errlen)))          \
			goto bad;                                           \
	} while (0)
#define T2(var, nm, a, b)                                                   \
	do {                                                                \
		int64_t s_[2] = {a, b};                                     \
		if (!((var) = tensor(p, nm, 2, s_, err, errlen)))          \
			goto bad;                                           \
	} while (0)

cmr_clip_tower *cmr_clip_tower_load(const char *dir, int kind, char *err, size_t errlen)
{
	cmr_clip_cfg cfg;
	if (cmr_clip_cfg_load(dir, &cfg, err, errlen) < 0)
		return NULL;
	cmr_clip_tower *t = calloc(1, sizeof *t);
	priv_t *p = calloc(1, sizeof *p);
	if (!t || !p) {
		free(t);
		free(p);
		fail(err, errlen, "out of memory");
		return NULL;
	}
	t->priv = p;
	t->kind = kind;
	t->cfg = kind == CMR_TOWER_VISION ? cfg.vision : cfg.text;
	t->proj = cfg.proj;
	memcpy(t->mean, cfg.mean, sizeof t->mean);
	memcpy(t->std, cfg.std, sizeof t->std);
	const char *base = strrchr(dir, '/');
	base = base && base[1] ? base + 1 : dir;
	snprintf(t->name, sizeof t->name, "%s", base);
	size_t bl = strlen(t->name);
	while (bl > 1 && t->name[bl - 1] == '/')
		t->name[--bl] = 0;
	char path[4096];
	snprintf(path, sizeof path, "%s/model.safetensors", dir);
	p->st = cmr_st_open(path, err, errlen);
	p->xxh = XXH3_createState();
	if (!p->st || !p->xxh)
		goto bad;
	XXH3_64bits_reset(p->xxh);
	XXH3_64bits_update(p->xxh, &t->cfg, sizeof t->cfg);
	const cmr_tower_cfg *c = &t->cfg;
	int64_t D = c->width, F = c->mlp;
	const char *pre = kind == CMR_TOWER_VISION ? "vision_model" : "text_model";
	char nm[256];
	if (kind == CMR_TOWER_VISION) {
		int64_t g = c->image_size / c->patch_size;
		T1(t->class_emb, "vision_model.embeddings.class_embedding", D);
		int64_t ps[4] = {D, 3, c->patch_size, c->patch_size};
		if (!(t->patch_w = tensor(p, "vision_model.embeddings.patch_embedding.weight", 4, ps, err, errlen)))
			goto bad;
		T2(t->pos_emb, "vision_model.embeddings.position_embedding.weight", g * g + 1, D);
		T1(t->pre_ln_w, "vision_model.pre_layrnorm.weight", D);
		T1(t->pre_ln_b, "vision_model.pre_layrnorm.bias", D);
		T1(t->post_ln_w, "vision_model.post_layernorm.weight", D);
		T1(t->post_ln_b, "vision_model.post_layernorm.bias", D);
		T2(t->proj_w, "visual_projection.weight", t->proj, D);
	} else {
		T2(t->tok_emb, "text_model.embeddings.token_embedding.weight", c->vocab, D);
		T2(t->pos_emb, "text_model.embeddings.position_embedding.weight", c->context, D);
		T1(t->final_ln_w, "text_model.final_layer_norm.weight", D);
		T1(t->final_ln_b, "text_model.final_layer_norm.bias", D);
		T2(t->proj_w, "text_projection.weight", t->proj, D);
	}
	t->layer = calloc((size_t)c->layers + 1, sizeof *t->layer);
	if (!t->layer)
		goto bad;
	for (int l = 0; l < c->layers; l++) {
		cmr_layer *L = &t->layer[l];
#define LN(field, suffix, ...)                                                                 \
	snprintf(nm, sizeof nm, "%s.encoder.layers.%d.%s", pre, l, suffix);                   \
	__VA_ARGS__;
		LN(ln1_w, "layer_norm1.weight", T1(L->ln1_w, nm, D))
		LN(ln1_b, "layer_norm1.bias", T1(L->ln1_b, nm, D))
		LN(q_w, "self_attn.q_proj.weight", T2(L->q_w, nm, D, D))
		LN(q_b, "self_attn.q_proj.bias", T1(L->q_b, nm, D))
		LN(k_w, "self_attn.k_proj.weight", T2(L->k_w, nm, D, D))
		LN(k_b, "self_attn.k_proj.bias", T1(L->k_b, nm, D))
		LN(v_w, "self_attn.v_proj.weight", T2(L->v_w, nm, D, D))
		LN(v_b, "self_attn.v_proj.bias", T1(L->v_b, nm, D))
		LN(o_w, "self_attn.out_proj.weight", T2(L->o_w, nm, D, D))
		LN(o_b, "self_attn.out_proj.bias", T1(L->o_b, nm, D))
		LN(ln2_w, "layer_norm2.weight", T1(L->ln2_w, nm, D))
		LN(ln2_b, "layer_norm2.bias", T1(L->ln2_b, nm, D))
		LN(fc1_w, "mlp.fc1.weight", T2(L->fc1_w, nm, F, D))
		LN(fc1_b, "mlp.fc1.bias", T1(L->fc1_b, nm, F))
		LN(fc2_w, "mlp.fc2.weight", T2(L->fc2_w, nm, D, F))
		LN(fc2_b, "mlp.fc2.bias", T1(L->fc2_b, nm, D))
#undef LN
	}
	t->hash = XXH3_64bits_digest(p->xxh);
	return t;
bad:
	cmr_clip_tower_free(t);
	return NULL;
}

void cmr_clip_tower_free(cmr_clip_tower *t)
{
	if (!t)
		return;
	priv_t *p = t->priv;
	if (p) {
		for (size_t i = 0; i < p->nowned; i++)
			free(p->owned[i]);
		free(p->owned);
		cmr_st_close(p->st);
		XXH3_freeState(p->xxh);
		free(p);
	}
	free(t->layer);
	free(t);
}

/* ---- forward ---- */
struct cmr_clip_ws {
	int max_rows, max_batch, max_len;
	float *x, *h, *q, *k, *v, *a, *f, *scratch, *pooled, *patches;
	int *start, *len, *pool;
};

void cmr_clip_ws_free(cmr_clip_ws *ws)
{
	if (!ws)
		return;
	free(ws->x);
	free(ws->h);
	free(ws->q);
	free(ws->k);
	free(ws->v);
	free(ws->a);
	free(ws->f);
	free(ws->scratch);
	free(ws->pooled);
	free(ws->patches);
	free(ws->start);
	free(ws->len);
	free(ws->pool);
	free(ws);
}

cmr_clip_ws *cmr_clip_ws_new(const cmr_clip_tower *t, int max_batch, int max_tokens)
{
	cmr_clip_ws *ws = calloc(1, sizeof *ws);
	if (!ws)
		return NULL;
	const cmr_tower_cfg *c = &t->cfg;
	int g = c->image_size / (c->patch_size ? c->patch_size : 1);
	int seq = t->kind == CMR_TOWER_VISION ? g * g + 1 : c->context;
	ws->max_len = seq;
	ws->max_batch = max_batch;
	ws->max_rows = t->kind == CMR_TOWER_VISION ? max_batch * seq : max_tokens;
	size_t R = (size_t)ws->max_rows, D = (size_t)c->width;
	ws->x = malloc(R * D * sizeof(float));
	ws->h = malloc(R * D * sizeof(float));
	ws->q = malloc(R * D * sizeof(float));
	ws->k = malloc(R * D * sizeof(float));
	ws->v = malloc(R * D * sizeof(float));
	ws->a = malloc(R * D * sizeof(float));
	ws->f = malloc(R * (size_t)c->mlp * sizeof(float));
	ws->scratch = malloc((size_t)seq * seq * sizeof(float));
	ws->pooled = malloc((size_t)max_batch * D * 2 * sizeof(float));
	ws->start = malloc((size_t)max_batch * sizeof(int));
	ws->len = malloc((size_t)max_batch * sizeof(int));
	ws->pool = malloc((size_t)max_batch * sizeof(int));
	if (t->kind == CMR_TOWER_VISION)
		ws->patches = malloc((size_t)max_batch * g * g * 3 * c->patch_size * c->patch_size * sizeof(float));
	if (!ws->x || !ws->h || !ws->q || !ws->k || !ws->v || !ws->a || !ws->f || !ws->scratch ||
	    !ws->pooled || !ws->start || !ws->len || !ws->pool || (t->kind == CMR_TOWER_VISION && !ws->patches)) {
		cmr_clip_ws_free(ws);
		return NULL;
	}
	return ws;
}

/* The transformer: x [rows, D] through every layer (pre-layernorm blocks). */
static void transformer(const cmr_clip_tower *t, const cmr_ops *ops, cmr_clip_ws *ws, int rows, int nseg, int causal)
{
	const cmr_tower_cfg *c = &t->cfg;
	int D = c->width, F = c->mlp, H = c->heads, Dh = D / H;
	float scale = 1.0f / sqrtf((float)Dh);
	size_t n = (size_t)rows * D;
	for (int l = 0; l < c->layers; l++) {
		const cmr_layer *L = &t->layer[l];
		ops->layernorm(ws->x, L->ln1_w, L->ln1_b, ws->h, rows, D, c->eps);
		ops->linear(ws->h, L->q_w, L->q_b, ws->q, rows, D, D);
		ops->linear(ws->h, L->k_w, L->k_b, ws->k, rows, D, D);
		ops->linear(ws->h, L->v_w, L->v_b, ws->v, rows, D, D);
		for (size_t i = 0; i < n; i++) /* HF scales the projected queries */
			ws->q[i] *= scale;
		ops->attention(ws->q, ws->k, ws->v, ws->a, nseg, ws->start, ws->len, H, Dh, causal, ws->scratch);
		ops->linear(ws->a, L->o_w, L->o_b, ws->h, rows, D, D);
		for (size_t i = 0; i < n; i++)
			ws->x[i] += ws->h[i];
		ops->layernorm(ws->x, L->ln2_w, L->ln2_b, ws->h, rows, D, c->eps);
		ops->linear(ws->h, L->fc1_w, L->fc1_b, ws->f, rows, D, F);
		ops->act(ws->f, (size_t)rows * F, c->act);
		ops->linear(ws->f, L->fc2_w, L->fc2_b, ws->h, rows, F, D);
		for (size_t i = 0; i < n; i++)
			ws->x[i] += ws->h[i];
	}
}

void cmr_clip_patches(const cmr_clip_tower *t, const uint8_t *const *pixels, int B, float *out)
{
	const cmr_tower_cfg *c = &t->cfg;
	int S = c->image_size, P = c->patch_size, g = S / P, np = g * g, K = 3 * P * P;
	/* patches [B * np, 3 * P * P], in the conv weight's (channel, y, x) order, normalised */
	for (int b = 0; b < B; b++)
		for (int py = 0; py < g; py++)
			for (int px = 0; px < g; px++) {
				float *row = out + ((size_t)b * np + (size_t)py * g + px) * K;
				for (int ch = 0; ch < 3; ch++)
					for (int y = 0; y < P; y++)
						for (int x = 0; x < P; x++) {
							uint8_t v = pixels[b][((size_t)(py * P + y) * S + (px * P + x)) * 3 + ch];
							row[(ch * P + y) * P + x] = ((float)v / 255.0f - t->mean[ch]) / t->std[ch];
						}
			}
}

void cmr_clip_embed_images(const cmr_clip_tower *t, const cmr_ops *ops, const uint8_t *const *pixels, int B,
			   float *patches, float *tmp, float *x, int *start, int *len)
{
	const cmr_tower_cfg *c = &t->cfg;
	int P = c->patch_size, g = c->image_size / P, np = g * g, D = c->width, K = 3 * P * P, seq = np + 1;
	cmr_clip_patches(t, pixels, B, patches);
	/* patch embeddings [B * np, D] (the conv has no bias) */
	ops->linear(patches, t->patch_w, NULL, tmp, B * np, K, D);
	/* x [B * seq, D] = [class; patches] + positions */
	for (int b = 0; b < B; b++) {
		float *xb = x + (size_t)b * seq * D;
		for (int d = 0; d < D; d++)
			xb[d] = t->class_emb[d] + t->pos_emb[d];
		for (int i = 0; i < np; i++)
			for (int d = 0; d < D; d++)
				xb[(size_t)(i + 1) * D + d] = tmp[((size_t)b * np + i) * D + d] + t->pos_emb[(size_t)(i + 1) * D + d];
		start[b] = b * seq;
		len[b] = seq;
	}
}

int cmr_clip_embed_texts(const cmr_clip_tower *t, const int32_t *const *ids, const int *lens, int B, int max_rows,
			 float *x, int *start, int *len, int *pool)
{
	const cmr_tower_cfg *c = &t->cfg;
	int D = c->width, rows = 0;
	for (int b = 0; b < B; b++) {
		if (lens[b] < 1 || lens[b] > c->context || rows + lens[b] > max_rows)
			return -1;
		start[b] = rows;
		len[b] = lens[b];
		int at = 0; /* the first occurrence of the largest id: the end token, as CLIP's argmax */
		for (int i = 0; i < lens[b]; i++) {
			int32_t id = ids[b][i];
			if (id < 0 || id >= c->vocab)
				return -1;
			if (id > ids[b][at])
				at = i;
			for (int d = 0; d < D; d++)
				x[(size_t)(rows + i) * D + d] = t->tok_emb[(size_t)id * D + d] + t->pos_emb[(size_t)i * D + d];
		}
		pool[b] = rows + at;
		rows += lens[b];
	}
	return rows;
}

void cmr_clip_head(const cmr_clip_tower *t, const cmr_ops *ops, const float *x, const int *pool, int B,
		   float *pooled, float *pooled_ln, float *out)
{
	int D = t->cfg.width, vision = t->kind == CMR_TOWER_VISION;
	for (int b = 0; b < B; b++)
		memcpy(pooled + (size_t)b * D, x + (size_t)pool[b] * D, (size_t)D * sizeof(float));
	ops->layernorm(pooled, vision ? t->post_ln_w : t->final_ln_w, vision ? t->post_ln_b : t->final_ln_b, pooled_ln,
		       B, D, t->cfg.eps);
	ops->linear(pooled_ln, t->proj_w, NULL, out, B, D, t->proj);
}

int cmr_clip_encode_images(const cmr_clip_tower *t, const cmr_ops *ops, cmr_clip_ws *ws,
			   const uint8_t *const *pixels, int B, float *out)
{
	const cmr_tower_cfg *c = &t->cfg;
	if (t->kind != CMR_TOWER_VISION || B > ws->max_batch)
		return -1;
	int g = c->image_size / c->patch_size, seq = g * g + 1, D = c->width;
	cmr_clip_embed_images(t, ops, pixels, B, ws->patches, ws->h, ws->x, ws->start, ws->len);
	ops->layernorm(ws->x, t->pre_ln_w, t->pre_ln_b, ws->x, B * seq, D, c->eps);
	transformer(t, ops, ws, B * seq, B, 0);
	for (int b = 0; b < B; b++)
		ws->pool[b] = b * seq; /* the class token */
	cmr_clip_head(t, ops, ws->x, ws->pool, B, ws->pooled, ws->pooled + (size_t)B * D, out);
	return 0;
}

int cmr_clip_encode_texts(const cmr_clip_tower *t, const cmr_ops *ops, cmr_clip_ws *ws,
			  const int32_t *const *ids, const int *lens, int B, float *out)
{
	if (t->kind != CMR_TOWER_TEXT || B > ws->max_batch)
		return -1;
	int rows = cmr_clip_embed_texts(t, ids, lens, B, ws->max_rows, ws->x, ws->start, ws->len, ws->pool);
	if (rows < 0)
		return -1;
	transformer(t, ops, ws, rows, B, 1);
	cmr_clip_head(t, ops, ws->x, ws->pool, B, ws->pooled, ws->pooled + (size_t)B * t->cfg.width, out);
	return 0;
}

double cmr_clip_flops(const cmr_clip_tower *t, int tokens)
{
	const cmr_tower_cfg *c = &t->cfg;
	double D = c->width, F = c->mlp, S = tokens;
	if (t->kind == CMR_TOWER_VISION) {
		int g = c->image_size / c->patch_size;
		S = g * g + 1;
	}
	double per_layer = S * (4 * D * D + 2 * D * F) + 2 * S * S * D;
	double f = c->layers * per_layer + D * t->proj;
	if (t->kind == CMR_TOWER_VISION)
		f += (S - 1) * 3.0 * c->patch_size * c->patch_size * D;
	return 2 * f; /* multiply-adds to floating-point operations */
}
