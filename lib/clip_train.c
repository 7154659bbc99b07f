/* clip_train.c - the trainable CLIP of clip_train.h: parameter table, initialisation,
 * checkpoint loading and saving, and a forward pass keeping its activations with the
 * backward pass through them, written over the backend table as clip_model.c's inference. */
#include "util.h"
#include "clip_train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grad.h"
#include "half.h"
#include "safetensors.h"
#include "stream.h"

#define fail cmr_errf

/* ---- the parameter table ---- */
typedef struct {
	cmr_clip_model *m;
	int cap, tower;
	int oom;
} table_t;

static size_t add(table_t *t, const char *name, int ndim, int64_t a, int64_t b, int64_t c, int64_t d, float std,
		  float val)
{
	cmr_clip_model *m = t->m;
	if (m->nparam == t->cap) {
		t->cap = t->cap ? 2 * t->cap : 64;
		cmr_param *p = realloc(m->param, (size_t)t->cap * sizeof *p);
		if (!p) {
			t->oom = 1;
			return 0;
		}
		m->param = p;
	}
	cmr_param *p = &m->param[m->nparam++];
	memset(p, 0, sizeof *p);
	snprintf(p->name, sizeof p->name, "%s", name);
	p->tower = t->tower;
	p->ndim = ndim;
	int64_t sh[4] = {a, b, c, d};
	p->n = 1;
	for (int i = 0; i < ndim; i++) {
		p->shape[i] = sh[i];
		p->n *= (size_t)sh[i];
	}
	p->off = m->total;
	p->decay = ndim >= 2;
	p->init_std = std;
	p->init_val = val;
	m->total += (p->n + 15) & ~(size_t)15; /* 64-byte aligned starts */
	return p->off;
}

/* offsets are recorded while the table grows and turned into pointers once w exists */
typedef struct {
	size_t class_emb, patch_w, pre_ln_w, pre_ln_b, post_ln_w, post_ln_b, tok_emb, final_ln_w, final_ln_b, pos_emb,
		proj_w;
} tower_off;

typedef struct {
	size_t ln1_w, ln1_b, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b, ln2_w, ln2_b, fc1_w, fc1_b, fc2_w, fc2_b;
} layer_off;

#define A1(nm, a, std, val) add(&t, nm, 1, a, 0, 0, 0, std, val)
#define A2(nm, a, b, std, val) add(&t, nm, 2, a, b, 0, 0, std, val)

static void add_layers(table_t *tt, const char *pre, const cmr_tower_cfg *c, layer_off *lo)
{
	table_t t = *tt;
	char nm[96];
	int64_t D = c->width, F = c->mlp;
	/* transformers' _init_weights with factor 1 */
	float in_std = (float)(pow((double)D, -0.5) * pow(2.0 * c->layers, -0.5)), out_std = (float)pow((double)D, -0.5);
	float fc_std = (float)pow(2.0 * D, -0.5);
	for (int l = 0; l < c->layers; l++) {
		layer_off *L = &lo[l];
#define N(s) (snprintf(nm, sizeof nm, "%s.encoder.layers.%d.%s", pre, l, s), nm)
		L->ln1_w = A1(N("layer_norm1.weight"), D, 0, 1);
		L->ln1_b = A1(N("layer_norm1.bias"), D, 0, 0);
		L->q_w = A2(N("self_attn.q_proj.weight"), D, D, in_std, 0);
		L->q_b = A1(N("self_attn.q_proj.bias"), D, 0, 0);
		L->k_w = A2(N("self_attn.k_proj.weight"), D, D, in_std, 0);
		L->k_b = A1(N("self_attn.k_proj.bias"), D, 0, 0);
		L->v_w = A2(N("self_attn.v_proj.weight"), D, D, in_std, 0);
		L->v_b = A1(N("self_attn.v_proj.bias"), D, 0, 0);
		L->o_w = A2(N("self_attn.out_proj.weight"), D, D, out_std, 0);
		L->o_b = A1(N("self_attn.out_proj.bias"), D, 0, 0);
		L->ln2_w = A1(N("layer_norm2.weight"), D, 0, 1);
		L->ln2_b = A1(N("layer_norm2.bias"), D, 0, 0);
		L->fc1_w = A2(N("mlp.fc1.weight"), F, D, fc_std, 0);
		L->fc1_b = A1(N("mlp.fc1.bias"), F, 0, 0);
		L->fc2_w = A2(N("mlp.fc2.weight"), D, F, in_std, 0);
		L->fc2_b = A1(N("mlp.fc2.bias"), D, 0, 0);
#undef N
	}
	*tt = t;
}

typedef struct {
	tower_off to[2];
	layer_off *lo[2];
} model_priv;

static void bind(cmr_clip_model *m, const model_priv *mp)
{
	for (int k = 0; k < 2; k++) {
		cmr_clip_tower *t = &m->tower[k];
		const tower_off *o = &mp->to[k];
		const float *w = m->w;
		t->kind = k;
		t->cfg = k == CMR_TOWER_VISION ? m->cfg.vision : m->cfg.text;
		t->proj = m->cfg.proj;
		memcpy(t->mean, m->cfg.mean, sizeof t->mean);
		memcpy(t->std, m->cfg.std, sizeof t->std);
		snprintf(t->name, sizeof t->name, "training");
		if (k == CMR_TOWER_VISION) {
			t->class_emb = w + o->class_emb, t->patch_w = w + o->patch_w;
			t->pre_ln_w = w + o->pre_ln_w, t->pre_ln_b = w + o->pre_ln_b;
			t->post_ln_w = w + o->post_ln_w, t->post_ln_b = w + o->post_ln_b;
		} else {
			t->tok_emb = w + o->tok_emb;
			t->final_ln_w = w + o->final_ln_w, t->final_ln_b = w + o->final_ln_b;
		}
		t->pos_emb = w + o->pos_emb, t->proj_w = w + o->proj_w;
		for (int l = 0; l < t->cfg.layers; l++) {
			const layer_off *lo = &mp->lo[k][l];
			cmr_layer *L = &t->layer[l];
			L->ln1_w = w + lo->ln1_w, L->ln1_b = w + lo->ln1_b;
			L->q_w = w + lo->q_w, L->q_b = w + lo->q_b, L->k_w = w + lo->k_w, L->k_b = w + lo->k_b;
			L->v_w = w + lo->v_w, L->v_b = w + lo->v_b, L->o_w = w + lo->o_w, L->o_b = w + lo->o_b;
			L->ln2_w = w + lo->ln2_w, L->ln2_b = w + lo->ln2_b;
			L->fc1_w = w + lo->fc1_w, L->fc1_b = w + lo->fc1_b, L->fc2_w = w + lo->fc2_w, L->fc2_b = w + lo->fc2_b;
		}
	}
}

cmr_clip_model *cmr_clip_model_new(const cmr_clip_cfg *cfg)
{
	cmr_clip_model *m = calloc(1, sizeof *m);
	model_priv mp;
	memset(&mp, 0, sizeof mp);
	if (!m)
		return NULL;
	m->cfg = *cfg;
	const cmr_tower_cfg *vc = &cfg->vision, *tc = &cfg->text;
	mp.lo[0] = calloc((size_t)vc->layers + 1, sizeof(layer_off));
	mp.lo[1] = calloc((size_t)tc->layers + 1, sizeof(layer_off));
	m->tower[0].layer = calloc((size_t)vc->layers + 1, sizeof(cmr_layer));
	m->tower[1].layer = calloc((size_t)tc->layers + 1, sizeof(cmr_layer));
	table_t t = {m, 0, CMR_TOWER_TEXT, 0};
	if (!mp.lo[0] || !mp.lo[1] || !m->tower[0].layer || !m->tower[1].layer)
		goto bad;
	/* the order of transformers' state dict: text, vision, projections, scale */
	tower_off *o = &mp.to[CMR_TOWER_TEXT];
	o->tok_emb = A2("text_model.embeddings.token_embedding.weight", tc->vocab, tc->width, 0.02f, 0);
	o->pos_emb = A2("text_model.embeddings.position_embedding.weight", tc->context, tc->width, 0.02f, 0);
	add_layers(&t, "text_model", tc, mp.lo[1]);
	o->final_ln_w = A1("text_model.final_layer_norm.weight", tc->width, 0, 1);
	o->final_ln_b = A1("text_model.final_layer_norm.bias", tc->width, 0, 0);
	t.tower = CMR_TOWER_VISION;
	o = &mp.to[CMR_TOWER_VISION];
	int g = vc->image_size / vc->patch_size;
	o->class_emb = A1("vision_model.embeddings.class_embedding", vc->width, (float)pow(vc->width, -0.5), 0);
	o->patch_w = add(&t, "vision_model.embeddings.patch_embedding.weight", 4, vc->width, 3, vc->patch_size,
			 vc->patch_size, 0.02f, 0);
	o->pos_emb = A2("vision_model.embeddings.position_embedding.weight", (int64_t)g * g + 1, vc->width, 0.02f, 0);
	o->pre_ln_w = A1("vision_model.pre_layrnorm.weight", vc->width, 0, 1);
	o->pre_ln_b = A1("vision_model.pre_layrnorm.bias", vc->width, 0, 0);
	add_layers(&t, "vision_model", vc, mp.lo[0]);
	o->post_ln_w = A1("vision_model.post_layernorm.weight", vc->width, 0, 1);
	o->post_ln_b = A1("vision_model.post_layernorm.bias", vc->width, 0, 0);
	mp.to[CMR_TOWER_VISION].proj_w = A2("visual_projection.weight", cfg->proj, vc->width, (float)pow(vc->width, -0.5), 0);
	mp.to[CMR_TOWER_TEXT].proj_w = A2("text_projection.weight", cfg->proj, tc->width, (float)pow(tc->width, -0.5), 0);
	t.tower = -1;
	m->logit_off = add(&t, "logit_scale", 0, 0, 0, 0, 0, 0, 2.6592f);
	if (t.oom)
		goto bad;
	m->w = calloc(m->total, sizeof *m->w);
	m->g = calloc(m->total, sizeof *m->g);
	if (!m->w || !m->g)
		goto bad;
	bind(m, &mp);
	free(mp.lo[0]);
	free(mp.lo[1]);
	return m;
bad:
	free(mp.lo[0]);
	free(mp.lo[1]);
	cmr_clip_model_free(m);
	return NULL;
}

void cmr_clip_model_free(cmr_clip_model *m)
{
	if (!m)
		return;
	free(m->param);
	free(m->w);
	free(m->g);
	free(m->tower[0].layer);
	free(m->tower[1].layer);
	free(m);
}

cmr_param *cmr_clip_model_param(cmr_clip_model *m, const char *name)
{
	for (int i = 0; i < m->nparam; i++)
		if (strcmp(m->param[i].name, name) == 0)
			return &m->param[i];
	return NULL;
}

/* PCG32 and Box-Muller: a fixed sequence of normals for a seed */
static uint32_t pcg(uint64_t *s)
{
	uint64_t old = *s;
	*s = old * 6364136223846793005ULL + 1442695040888963407ULL;
	uint32_t x = (uint32_t)(((old >> 18) ^ old) >> 27), r = (uint32_t)(old >> 59);
	return x >> r | x << ((32 - r) & 31);
}

void cmr_clip_model_init(cmr_clip_model *m, uint64_t seed)
{
	for (int i = 0; i < m->nparam; i++) {
		const cmr_param *p = &m->param[i];
		float *w = m->w + p->off;
		/* each tensor its own stream: adding a tensor does not change the others */
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
}

int cmr_clip_model_load(cmr_clip_model *m, const char *path, char *err, size_t errlen)
{
	cmr_st *st = cmr_st_open(path, err, errlen);
	if (!st)
		return -1;
	int rc = 0;
	for (int i = 0; i < m->nparam && rc == 0; i++) {
		const cmr_param *p = &m->param[i];
		float *w = m->w + p->off;
		const cmr_st_tensor *t = cmr_st_get(st, p->name);
		if (!t && p->tower < 0) {
			*w = p->init_val;
			continue;
		}
		if (!t) {
			rc = fail(err, errlen, "%s: tensor '%s' is missing", path, p->name);
			break;
		}
		int64_t n = 1;
		for (int d = 0; d < t->ndim; d++)
			n *= t->shape[d];
		int ok = (size_t)n == p->n && (t->ndim == p->ndim || p->tower < 0);
		for (int d = 0; ok && p->tower >= 0 && d < p->ndim; d++)
			ok = t->shape[d] == p->shape[d];
		if (!ok) {
			rc = fail(err, errlen, "%s: tensor '%s' does not have the shape the config gives it", path, p->name);
			break;
		}
		const unsigned char *src = t->data;
		for (size_t j = 0; j < p->n; j++) {
			if (t->dtype == CMR_DTYPE_F32) {
				memcpy(w + j, src + 4 * j, 4);
			} else if (t->dtype == CMR_DTYPE_F16 || t->dtype == CMR_DTYPE_BF16) {
				uint16_t h;
				memcpy(&h, src + 2 * j, 2);
				w[j] = t->dtype == CMR_DTYPE_F16 ? cmr_f16_to_f32(h) : cmr_bf16_to_f32(h);
			} else {
				rc = fail(err, errlen, "%s: tensor '%s' has dtype %s; only F32, F16 and BF16 weights are read",
					  path, p->name, cmr_dtype_name(t->dtype));
				break;
			}
		}
	}
	cmr_st_close(st);
	return rc;
}

int cmr_clip_model_save(const cmr_clip_model *m, const char *path, const char *metadata_json, char *err,
			size_t errlen)
{
	cmr_st_out *o = calloc((size_t)m->nparam, sizeof *o);
	if (!o)
		return fail(err, errlen, "out of memory");
	for (int i = 0; i < m->nparam; i++) {
		const cmr_param *p = &m->param[i];
		o[i].name = p->name;
		o[i].dtype = CMR_DTYPE_F32;
		o[i].ndim = p->ndim;
		for (int d = 0; d < p->ndim; d++)
			o[i].shape[d] = p->shape[d];
		o[i].data = m->w + p->off;
	}
	int rc = cmr_st_write(path, o, (size_t)m->nparam, metadata_json, err, errlen);
	free(o);
	return rc;
}

/* ---- forward keeping activations, backward ---- */
struct cmr_train_ws {
	int tower, max_batch, max_rows, max_len;
	int B, rows;
	int *start, *len, *pool; /* segments, the row pooled per sample */
	int32_t *tok, *pos;      /* text: token id and position of each row */
	float *patches;          /* vision [B * np, K] */
	float *emb;              /* [rows, D]: the embeddings before the first layer (and pre-LN) */
	float *xin;              /* (layers + 1) x [rows, D]: each layer's input, then the output */
	float *h1, *q, *k, *v, *a, *xmid, *h2; /* layers x [rows, D] */
	float *fpre, *fact;      /* layers x [rows, F] */
	float *pooled, *pooled_ln; /* [B, D] */
	/* backward scratch */
	float *dx, *dh, *dq, *dk, *dv, *da, *df, *df2, *scratch, *dpool, *dpool_ln;
};

void cmr_train_ws_free(cmr_train_ws *ws)
{
	if (!ws)
		return;
	void *p[] = {ws->start, ws->len, ws->pool, ws->tok, ws->pos, ws->patches, ws->emb, ws->xin, ws->h1,
		     ws->q, ws->k, ws->v, ws->a, ws->xmid, ws->h2, ws->fpre, ws->fact, ws->pooled, ws->pooled_ln,
		     ws->dx, ws->dh, ws->dq, ws->dk, ws->dv, ws->da, ws->df, ws->df2, ws->scratch, ws->dpool,
		     ws->dpool_ln};
	for (size_t i = 0; i < sizeof p / sizeof p[0]; i++)
		free(p[i]);
	free(ws);
}

cmr_train_ws *cmr_train_ws_new(const cmr_clip_model *m, int tower, int max_batch, int max_tokens)
{
	cmr_train_ws *ws = calloc(1, sizeof *ws);
	if (!ws)
		return NULL;
	const cmr_tower_cfg *c = tower == CMR_TOWER_VISION ? &m->cfg.vision : &m->cfg.text;
	int g = c->image_size / (c->patch_size ? c->patch_size : 1);
	int seq = tower == CMR_TOWER_VISION ? g * g + 1 : c->context;
	ws->tower = tower;
	ws->max_batch = max_batch;
	ws->max_len = seq;
	ws->max_rows = tower == CMR_TOWER_VISION ? max_batch * seq : max_tokens;
	size_t R = (size_t)ws->max_rows, D = (size_t)c->width, F = (size_t)c->mlp, L = (size_t)c->layers;
	size_t RD = R * D * sizeof(float), RF = R * F * sizeof(float);
	int ok = 1;
#define ALLOC(f, bytes) ok &= ((ws->f = malloc((bytes) + 1)) != NULL)
	ALLOC(start, (size_t)max_batch * sizeof(int));
	ALLOC(len, (size_t)max_batch * sizeof(int));
	ALLOC(pool, (size_t)max_batch * sizeof(int));
	ALLOC(emb, RD);
	ALLOC(xin, (L + 1) * RD);
	ALLOC(h1, L * RD);
	ALLOC(q, L * RD);
	ALLOC(k, L * RD);
	ALLOC(v, L * RD);
	ALLOC(a, L * RD);
	ALLOC(xmid, L * RD);
	ALLOC(h2, L * RD);
	ALLOC(fpre, L * RF);
	ALLOC(fact, L * RF);
	ALLOC(pooled, (size_t)max_batch * D * sizeof(float));
	ALLOC(pooled_ln, (size_t)max_batch * D * sizeof(float));
	ALLOC(dpool, (size_t)max_batch * D * sizeof(float));
	ALLOC(dpool_ln, (size_t)max_batch * D * sizeof(float));
	ALLOC(dx, RD);
	ALLOC(dh, RD);
	ALLOC(dq, RD);
	ALLOC(dk, RD);
	ALLOC(dv, RD);
	ALLOC(da, RD);
	ALLOC(df, RF);
	ALLOC(df2, RF);
	ALLOC(scratch, 2 * (size_t)seq * seq * sizeof(float));
	if (tower == CMR_TOWER_VISION) {
		ALLOC(patches, (size_t)max_batch * g * g * 3 * c->patch_size * c->patch_size * sizeof(float));
	} else {
		ALLOC(tok, R * sizeof(int32_t));
		ALLOC(pos, R * sizeof(int32_t));
	}
#undef ALLOC
	if (!ok) {
		cmr_train_ws_free(ws);
		return NULL;
	}
	return ws;
}

/* the layers from ws->xin[0] (rows of ws->rows) */
static void layers_forward(const cmr_clip_tower *t, const cmr_ops *ops, cmr_train_ws *ws, int causal)
{
	const cmr_tower_cfg *c = &t->cfg;
	int D = c->width, F = c->mlp, H = c->heads, Dh = D / H, R = ws->rows;
	float scale = 1.0f / sqrtf((float)Dh);
	size_t n = (size_t)R * D, RD = (size_t)ws->max_rows * D, RF = (size_t)ws->max_rows * F;
	for (int l = 0; l < c->layers; l++) {
		const cmr_layer *L = &t->layer[l];
		float *xin = ws->xin + l * RD, *xout = ws->xin + (l + 1) * RD, *h1 = ws->h1 + l * RD;
		float *q = ws->q + l * RD, *k = ws->k + l * RD, *v = ws->v + l * RD, *a = ws->a + l * RD;
		float *xmid = ws->xmid + l * RD, *h2 = ws->h2 + l * RD, *fpre = ws->fpre + l * RF, *fact = ws->fact + l * RF;
		ops->layernorm(xin, L->ln1_w, L->ln1_b, h1, R, D, c->eps);
		ops->linear(h1, L->q_w, L->q_b, q, R, D, D);
		ops->linear(h1, L->k_w, L->k_b, k, R, D, D);
		ops->linear(h1, L->v_w, L->v_b, v, R, D, D);
		for (size_t i = 0; i < n; i++)
			q[i] *= scale;
		ops->attention(q, k, v, a, ws->B, ws->start, ws->len, H, Dh, causal, ws->scratch);
		ops->linear(a, L->o_w, L->o_b, ws->dh, R, D, D);
		for (size_t i = 0; i < n; i++)
			xmid[i] = xin[i] + ws->dh[i];
		ops->layernorm(xmid, L->ln2_w, L->ln2_b, h2, R, D, c->eps);
		ops->linear(h2, L->fc1_w, L->fc1_b, fpre, R, D, F);
		memcpy(fact, fpre, (size_t)R * F * sizeof *fact);
		ops->act(fact, (size_t)R * F, c->act);
		ops->linear(fact, L->fc2_w, L->fc2_b, ws->dh, R, F, D);
		for (size_t i = 0; i < n; i++)
			xout[i] = xmid[i] + ws->dh[i];
	}
}

int cmr_train_forward_images(const cmr_clip_model *m, const cmr_ops *ops, cmr_train_ws *ws,
			     const uint8_t *const *pixels, int B, float *out)
{
	const cmr_clip_tower *t = &m->tower[CMR_TOWER_VISION];
	const cmr_tower_cfg *c = &t->cfg;
	if (ws->tower != CMR_TOWER_VISION || B > ws->max_batch || B < 1)
		return -1;
	int g = c->image_size / c->patch_size, seq = g * g + 1, D = c->width;
	ws->B = B;
	ws->rows = B * seq;
	cmr_clip_embed_images(t, ops, pixels, B, ws->patches, ws->dh, ws->emb, ws->start, ws->len);
	for (int b = 0; b < B; b++)
		ws->pool[b] = b * seq;
	ops->layernorm(ws->emb, t->pre_ln_w, t->pre_ln_b, ws->xin, ws->rows, D, c->eps);
	layers_forward(t, ops, ws, 0);
	cmr_clip_head(t, ops, ws->xin + (size_t)c->layers * ws->max_rows * D, ws->pool, B, ws->pooled, ws->pooled_ln,
		      out);
	return 0;
}

int cmr_train_forward_texts(const cmr_clip_model *m, const cmr_ops *ops, cmr_train_ws *ws,
			    const int32_t *const *ids, const int *lens, int B, float *out)
{
	const cmr_clip_tower *t = &m->tower[CMR_TOWER_TEXT];
	const cmr_tower_cfg *c = &t->cfg;
	int D = c->width;
	if (ws->tower != CMR_TOWER_TEXT || B > ws->max_batch || B < 1)
		return -1;
	int rows = cmr_clip_embed_texts(t, ids, lens, B, ws->max_rows, ws->emb, ws->start, ws->len, ws->pool);
	if (rows < 0)
		return -1;
	/* each row's token and position, for the embeddings' backward pass */
	for (int b = 0; b < B; b++)
		for (int i = 0; i < lens[b]; i++) {
			ws->tok[ws->start[b] + i] = ids[b][i];
			ws->pos[ws->start[b] + i] = i;
		}
	ws->B = B;
	ws->rows = rows;
	memcpy(ws->xin, ws->emb, (size_t)rows * D * sizeof(float));
	layers_forward(t, ops, ws, 1);
	cmr_clip_head(t, ops, ws->xin + (size_t)c->layers * ws->max_rows * D, ws->pool, B, ws->pooled, ws->pooled_ln,
		      out);
	return 0;
}

void cmr_train_backward(cmr_clip_model *m, const cmr_ops *ops, cmr_train_ws *ws, const float *dout)
{
	const cmr_clip_tower *t = &m->tower[ws->tower];
	const cmr_tower_cfg *c = &t->cfg;
	int D = c->width, F = c->mlp, H = c->heads, Dh = D / H, R = ws->rows, B = ws->B;
	float scale = 1.0f / sqrtf((float)Dh);
	size_t n = (size_t)R * D, RD = (size_t)ws->max_rows * D, RF = (size_t)ws->max_rows * F;
#define G(p) (m->g + ((p) - m->w))
	int vision = ws->tower == CMR_TOWER_VISION;
	const float *ln_w = vision ? t->post_ln_w : t->final_ln_w, *ln_b = vision ? t->post_ln_b : t->final_ln_b;
	/* head */
	memset(ws->dpool_ln, 0, (size_t)B * D * sizeof(float));
	memset(ws->dpool, 0, (size_t)B * D * sizeof(float));
	ops->linear_bw(ws->pooled_ln, t->proj_w, dout, ws->dpool_ln, G(t->proj_w), NULL, B, D, t->proj);
	ops->layernorm_bw(ws->pooled, ln_w, ws->dpool_ln, ws->dpool, G(ln_w), G(ln_b), B, D, c->eps);
	memset(ws->dx, 0, n * sizeof(float));
	for (int b = 0; b < B; b++)
		for (int d = 0; d < D; d++)
			ws->dx[(size_t)ws->pool[b] * D + d] += ws->dpool[(size_t)b * D + d];
	/* layers, last first; ws->dx is the gradient of the current layer's output */
	for (int l = c->layers - 1; l >= 0; l--) {
		const cmr_layer *L = &t->layer[l];
		const float *xin = ws->xin + l * RD, *h1 = ws->h1 + l * RD;
		const float *q = ws->q + l * RD, *k = ws->k + l * RD, *v = ws->v + l * RD, *a = ws->a + l * RD;
		const float *xmid = ws->xmid + l * RD, *h2 = ws->h2 + l * RD, *fpre = ws->fpre + l * RF;
		const float *fact = ws->fact + l * RF;
		/* x_out = x_mid + fc2(act(fc1(ln2(x_mid)))) */
		memset(ws->df, 0, (size_t)R * F * sizeof(float));
		memset(ws->df2, 0, (size_t)R * F * sizeof(float));
		memset(ws->dh, 0, n * sizeof(float));
		ops->linear_bw(fact, L->fc2_w, ws->dx, ws->df, G(L->fc2_w), G(L->fc2_b), R, F, D);
		ops->act_bw(fpre, ws->df, ws->df2, (size_t)R * F, c->act);
		ops->linear_bw(h2, L->fc1_w, ws->df2, ws->dh, G(L->fc1_w), G(L->fc1_b), R, D, F);
		ops->layernorm_bw(xmid, L->ln2_w, ws->dh, ws->dx, G(L->ln2_w), G(L->ln2_b), R, D, c->eps);
		/* x_mid = x_in + out_proj(attention(q, k, v)) */
		memset(ws->da, 0, n * sizeof(float));
		memset(ws->dq, 0, n * sizeof(float));
		memset(ws->dk, 0, n * sizeof(float));
		memset(ws->dv, 0, n * sizeof(float));
		ops->linear_bw(a, L->o_w, ws->dx, ws->da, G(L->o_w), G(L->o_b), R, D, D);
		ops->attention_bw(q, k, v, ws->da, ws->dq, ws->dk, ws->dv, B, ws->start, ws->len, H, Dh, !vision,
				  ws->scratch);
		for (size_t i = 0; i < n; i++)
			ws->dq[i] *= scale;
		memset(ws->dh, 0, n * sizeof(float));
		ops->linear_bw(h1, L->q_w, ws->dq, ws->dh, G(L->q_w), G(L->q_b), R, D, D);
		ops->linear_bw(h1, L->k_w, ws->dk, ws->dh, G(L->k_w), G(L->k_b), R, D, D);
		ops->linear_bw(h1, L->v_w, ws->dv, ws->dh, G(L->v_w), G(L->v_b), R, D, D);
		ops->layernorm_bw(xin, L->ln1_w, ws->dh, ws->dx, G(L->ln1_w), G(L->ln1_b), R, D, c->eps);
	}
	/* embeddings */
	float *gpos = G(t->pos_emb);
	if (vision) {
		int P = c->patch_size, g = c->image_size / P, np = g * g, K = 3 * P * P, seq = np + 1;
		memset(ws->dh, 0, n * sizeof(float));
		ops->layernorm_bw(ws->emb, t->pre_ln_w, ws->dx, ws->dh, G(t->pre_ln_w), G(t->pre_ln_b), R, D, c->eps);
		float *gcls = G(t->class_emb);
		/* the class and position rows; the patch rows packed into dq for the conv */
		for (int b = 0; b < B; b++)
			for (int i = 0; i < seq; i++) {
				const float *r = ws->dh + ((size_t)b * seq + i) * D;
				for (int d = 0; d < D; d++)
					gpos[(size_t)i * D + d] += r[d];
				if (i == 0)
					for (int d = 0; d < D; d++)
						gcls[d] += r[d];
				else
					memcpy(ws->dq + ((size_t)b * np + i - 1) * D, r, (size_t)D * sizeof(float));
			}
		ops->linear_bw(ws->patches, t->patch_w, ws->dq, NULL, G(t->patch_w), NULL, B * np, K, D);
	} else {
		float *gtok = G(t->tok_emb);
		for (int r = 0; r < R; r++)
			for (int d = 0; d < D; d++) {
				gtok[(size_t)ws->tok[r] * D + d] += ws->dx[(size_t)r * D + d];
				gpos[(size_t)ws->pos[r] * D + d] += ws->dx[(size_t)r * D + d];
			}
	}
#undef G
}

double cmr_lr_cosine(int64_t step, int64_t warmup, int64_t total, double lr, double min_lr)
{
	if (step < warmup)
		return lr * (double)(step + 1) / (double)warmup;
	if (total <= warmup)
		return lr;
	double e = (double)(step - warmup) / (double)(total - warmup);
	if (e > 1)
		e = 1;
	return min_lr + 0.5 * (1 + cos(M_PI * e)) * (lr - min_lr);
}

double cmr_clip_grad_norm(cmr_clip_model *m, double max_norm)
{
	double s = 0;
	for (int i = 0; i < m->nparam; i++) {
		const cmr_param *p = &m->param[i];
		if (p->frozen)
			continue;
		for (size_t j = 0; j < p->n; j++)
			s += (double)m->g[p->off + j] * m->g[p->off + j];
	}
	double norm = sqrt(s), coef = max_norm / (norm + 1e-6);
	if (max_norm > 0 && coef < 1)
		for (int i = 0; i < m->nparam; i++) {
			const cmr_param *p = &m->param[i];
			if (!p->frozen)
				for (size_t j = 0; j < p->n; j++)
					m->g[p->off + j] *= (float)coef;
		}
	return norm;
}

static int tower_frozen(const cmr_clip_model *m, int tower)
{
	for (int i = 0; i < m->nparam; i++)
		if (m->param[i].tower == tower && !m->param[i].frozen)
			return 0;
	return 1;
}

double cmr_clip_batch_grad(cmr_clip_model *m, const cmr_ops *ops, cmr_train_ws *wi, cmr_train_ws *wt,
			   const uint8_t *const *pixels, const int32_t *const *ids, const int *lens, int B,
			   int loss, float margin, float *emb)
{
	int P = m->cfg.proj;
	float *ei = emb, *et = emb + (size_t)B * P, *di = et + (size_t)B * P, *dt = di + (size_t)B * P;
	if (cmr_train_forward_images(m, ops, wi, pixels, B, ei) < 0 ||
	    cmr_train_forward_texts(m, ops, wt, ids, lens, B, et) < 0)
		return NAN;
	memset(di, 0, 2 * (size_t)B * P * sizeof *di);
	double L;
	if (loss == CMR_LOSS_VSE)
		L = cmr_vse_hardest(ei, et, B, P, margin, di, dt);
	else
		L = cmr_infonce(ei, et, B, P, m->w[m->logit_off], di, dt, &m->g[m->logit_off]);
	if (!tower_frozen(m, CMR_TOWER_VISION))
		cmr_train_backward(m, ops, wi, di);
	if (!tower_frozen(m, CMR_TOWER_TEXT))
		cmr_train_backward(m, ops, wt, dt);
	return L;
}

void cmr_clip_adamw_step(cmr_clip_model *m, float *mom, float *vel, int64_t t, double lr, double beta1,
			 double beta2, double eps, double wd)
{
	for (int i = 0; i < m->nparam; i++) {
		const cmr_param *p = &m->param[i];
		if (p->frozen)
			continue;
		cmr_adamw(m->w + p->off, m->g + p->off, mom + p->off, vel + p->off, p->n, (float)lr, (float)beta1,
			  (float)beta2, (float)eps, p->decay ? (float)wd : 0.0f, t);
	}
	float *s = &m->w[m->logit_off];
	if (*s < 0)
		*s = 0;
	if (*s > (float)log(100.0))
		*s = (float)log(100.0);
}
