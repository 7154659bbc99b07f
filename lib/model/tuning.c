/* model/tuning.c - tunings of a frozen base (model/tuning.h): the prompt parameters in the
 * model's table, adapter_config.json read and validated, the tuned tensors loaded and
 * written, and the identity of base + tuning. */
#include "util.h"
#include "model/tuning.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <xxhash.h>

#include "format/safetensors.h"
#include "model/adapter.h"
#include "model/levels.h"
#include "model/train.h"

#define fail cmr_errf

static const char *tower_word(int k) { return k == CMR_TOWER_VISION ? "vision" : "text"; }

static int is_pool(const cmr_tuning *t) { return strcmp(t->method, "pool") == 0; }
static int is_adapter(const cmr_tuning *t) { return strcmp(t->method, "adapter") == 0; }

/* the prefix rows a tuning gives each sample of tower k (0: the tower is not tuned) */
static int prompts_of(const cmr_tuning *t, int k)
{
	if (is_pool(t))
		return k == CMR_TOWER_VISION ? t->pool_topk * t->pool_length : 0;
	return k == CMR_TOWER_VISION ? t->vision_prompts : t->text_prompts;
}

/* whether the tuning changes tower k */
static int tunes(const cmr_tuning *t, int k)
{
	return is_adapter(t) ? t->adapter_width[k] > 0 || t->levels || t->inject : prompts_of(t, k) > 0;
}

/* the points of an adapter type (CMR_HOOK_*), -1 ended; NULL for an unknown type */
static const int *adapter_points(const char *type)
{
	static const int parallel[] = {CMR_HOOK_MLP, -1}, sequential[] = {CMR_HOOK_ATTN_OUT, CMR_HOOK_MLP_OUT, -1},
			 lora[] = {CMR_HOOK_Q, CMR_HOOK_K, CMR_HOOK_V, CMR_HOOK_O, -1}, none[] = {-1};
	return strcmp(type, "parallel") == 0     ? parallel
	       : strcmp(type, "sequential") == 0 ? sequential
	       : strcmp(type, "lora") == 0       ? lora
	       : strcmp(type, "none") == 0       ? none
						 : NULL;
}

static void free_adapter(void *p)
{
	cmr_adapter_free(p);
	free(p);
}

int cmr_tuning_check(const cmr_tuning *t, const cmr_clip_cfg *cfg, char *err, size_t errlen)
{
	if (is_pool(t)) {
		if (t->pool_size < 1 || t->pool_size > CMR_TUNING_MAX_POOL || t->pool_length < 1 ||
		    t->pool_length > CMR_TUNING_MAX_PROMPTS || t->pool_topk < 1 || t->pool_topk > t->pool_size)
			return fail(err, errlen, "a pool needs 1 to %d prompts of 1 to %d rows and a top-k from 1 to its size "
						 "(it has %d, %d and %d)", CMR_TUNING_MAX_POOL, CMR_TUNING_MAX_PROMPTS,
				    t->pool_size, t->pool_length, t->pool_topk);
		if (t->pool_topk * t->pool_length > CMR_TUNING_MAX_PROMPTS)
			return fail(err, errlen, "top-%d prompts of %d rows: %d rows per image, at most %d", t->pool_topk,
				    t->pool_length, t->pool_topk * t->pool_length, CMR_TUNING_MAX_PROMPTS);
		if (t->deep || t->text_prompts || t->vision_prompts)
			return fail(err, errlen, "a pool has no deep, text or fixed vision prompts");
		return 0;
	}
	if (is_adapter(t)) {
		if (!adapter_points(t->adapter_type))
			return fail(err, errlen, "adapter type '%s' is not parallel, sequential, lora or none", t->adapter_type);
		int none = strcmp(t->adapter_type, "none") == 0;
		for (int k = 0; k < 2; k++)
			if (t->adapter_width[k] < 0 || t->adapter_width[k] > CMR_TUNING_MAX_WIDTH || (none && t->adapter_width[k]))
				return fail(err, errlen, "an adapter width of %d: from %d to %d", t->adapter_width[k], 0,
					    none ? 0 : CMR_TUNING_MAX_WIDTH);
		if (t->levels < 0 || t->levels == 1 || t->levels > CMR_TUNING_MAX_LEVELS || t->inject < 0 ||
		    t->inject > CMR_TUNING_MAX_LEVELS || (t->inject && (t->inject_width < 1 || t->inject_width > CMR_TUNING_MAX_WIDTH)))
			return fail(err, errlen, "multi-level attention over %d layers, injection from %d (width %d): levels "
						 "are 0 or 2 to %d, injected layers 0 to %d, of width 1 to %d",
				    t->levels, t->inject, t->inject_width, CMR_TUNING_MAX_LEVELS, CMR_TUNING_MAX_LEVELS,
				    CMR_TUNING_MAX_WIDTH);
		int lmin = cfg->vision.layers < cfg->text.layers ? cfg->vision.layers : cfg->text.layers;
		if (t->levels > lmin || t->inject > lmin - 1)
			return fail(err, errlen, "multi-level attention over %d layers, injection from %d earlier ones: the "
						 "towers have %d and %d layers (at most %d levels and %d injected)",
				    t->levels, t->inject, cfg->vision.layers, cfg->text.layers, lmin, lmin - 1);
		if (!t->adapter_width[0] && !t->adapter_width[1] && !t->levels && !t->inject)
			return fail(err, errlen, "adapters of width 0 in both towers and no head module: an empty tuning");
		if (t->deep || t->text_prompts || t->vision_prompts)
			return fail(err, errlen, "an adapter tuning has no prompts");
		return 0;
	}
	if (strcmp(t->method, "prompts") != 0)
		return fail(err, errlen, "tuning method '%s' is not one this cmr knows (prompts, pool, adapter)", t->method);
	if (t->text_prompts < 0 || t->vision_prompts < 0 || t->text_prompts + t->vision_prompts == 0)
		return fail(err, errlen, "a prompt tuning needs text or vision prompts (it has %d and %d)", t->text_prompts,
			    t->vision_prompts);
	if (t->text_prompts > cfg->text.context - 2)
		return fail(err, errlen, "%d text prompts do not fit a context of %d with the start and end tokens (at "
					 "most %d)",
			    t->text_prompts, cfg->text.context, cfg->text.context - 2);
	if (t->vision_prompts > CMR_TUNING_MAX_PROMPTS)
		return fail(err, errlen, "%d vision prompts: at most %d", t->vision_prompts, CMR_TUNING_MAX_PROMPTS);
	return 0;
}

int cmr_tuning_add(cmr_clip *m, const cmr_tuning *t, int train, char *err, size_t errlen)
{
	if (cmr_tuning_check(t, &m->cfg, err, errlen) < 0)
		return -1;
	unsigned fl = CMR_PARAM_OPTIONAL | (train ? CMR_PARAM_TRAIN : 0);
	if (is_pool(t)) { /* the pool's rows in the vision prefix slot, taken per image; its keys */
		cmr_clip_tower *tw = &m->tower[CMR_TOWER_VISION];
		tw->prefix_len = t->pool_length;
		tw->prefix_k = t->pool_topk;
		int64_t rows[2] = {(int64_t)t->pool_size * t->pool_length, m->cfg.vision.width};
		int64_t keys[2] = {t->pool_size, m->cfg.vision.width};
		if (cmr_clip_add(m, "prompt.vision.pool", CMR_GROUP_PROMPT, CMR_TOWER_VISION, -1, CMR_T_PREFIX, 2, rows, fl,
				 0.02f, 0) < 0 ||
		    cmr_clip_add(m, "prompt.vision.keys", CMR_GROUP_PROMPT, CMR_TOWER_VISION, -1, -1, 2, keys, fl, 1.0f,
				 0) < 0)
			return fail(err, errlen, "cannot add the pool (out of memory, or the model has one)");
		if (train && t->logit_scale)
			m->param[m->logit].flags |= CMR_PARAM_TRAIN;
		return 0;
	}
	if (is_adapter(t)) { /* every layer of each tower with a width; the model owns them */
		const int *pts = adapter_points(t->adapter_type);
		int seq = pts[0] == CMR_HOOK_ATTN_OUT, lora = pts[0] == CMR_HOOK_Q;
		for (int k = 0; k < 2; k++)
			for (int i = 0; t->adapter_width[k] && pts[i] >= 0; i++) {
				cmr_adapter *a = malloc(sizeof *a);
				/* LoRA: A = down (N(0, 1/width)), B = up (zero), gain alpha / r (alpha: the
				 * rank, so 1), no bias, no activation, no learnt scale */
				cmr_adapter_opts o = {
					.point = pts[i], .rank = t->adapter_width[k], .layer_min = 0,
					.layer_max = m->tower[k].cfg.layers - 1,
					.act = lora ? CMR_ADAPTER_LINEAR : seq ? CMR_ACT_GELU : CMR_ACT_RELU,
					.scale = lora ? 0 : seq ? 1.0f : 0.1f, .bias = !lora, .gain = 1.0f, .flags = fl};
				if (!a || cmr_clip_own(m, a, free_adapter) < 0) {
					free(a);
					return fail(err, errlen, "out of memory");
				}
				memset(a, 0, sizeof *a); /* the model frees it, added or not */
				if (cmr_adapter_add(m, a, k, &o, err, errlen) < 0)
					return -1;
			}
		for (int k = 0; k < 2; k++) /* the head's modules, both towers */
			for (int inj = 0; inj < 2; inj++) {
				int n = inj ? t->inject : t->levels;
				if (!n)
					continue;
				cmr_levels *lv = malloc(sizeof *lv);
				if (!lv || cmr_clip_own(m, lv, free) < 0) {
					free(lv);
					return fail(err, errlen, "out of memory");
				}
				if (cmr_levels_add(m, lv, k, inj, n, t->inject_width, fl, err, errlen) < 0)
					return -1;
			}
		if (train && t->logit_scale)
			m->param[m->logit].flags |= CMR_PARAM_TRAIN;
		return 0;
	}
	for (int k = 0; k < 2; k++) {
		int n = prompts_of(t, k);
		if (!n)
			continue;
		const cmr_tower_cfg *c = k == CMR_TOWER_VISION ? &m->cfg.vision : &m->cfg.text;
		int64_t shape[2] = {n, c->width};
		char nm[112];
		snprintf(nm, sizeof nm, "prompt.%s.embeddings", tower_word(k));
		if (cmr_clip_add(m, nm, CMR_GROUP_PROMPT, k, -1, CMR_T_PREFIX, 2, shape, fl, 0.02f, 0) < 0)
			return fail(err, errlen, "cannot add %s (out of memory, or the model has it)", nm);
		for (int l = 1; t->deep && l < c->layers; l++) {
			snprintf(nm, sizeof nm, "prompt.%s.layers.%d", tower_word(k), l);
			if (cmr_clip_add(m, nm, CMR_GROUP_PROMPT, k, l, CMR_L_PROMPT, 2, shape, fl, 0.02f, 0) < 0)
				return fail(err, errlen, "cannot add %s (out of memory, or the model has it)", nm);
		}
	}
	if (train && t->logit_scale)
		m->param[m->logit].flags |= CMR_PARAM_TRAIN;
	return 0;
}

int cmr_tuning_select(const cmr_clip *m, const cmr_tuning *t, const float *query, int B, int32_t *sel,
		      float *score)
{
	const cmr_param *kp = is_pool(t) ? cmr_clip_param((cmr_clip *)m, "prompt.vision.keys") : NULL;
	if (!kp || !kp->w)
		return -1;
	int P = t->pool_size, K = t->pool_topk, D = (int)kp->shape[1];
	double *cs = malloc((size_t)P * sizeof *cs);
	if (!cs)
		return -1;
	for (int b = 0; b < B; b++) {
		const float *q = query + (size_t)b * D;
		double qq = 0;
		for (int d = 0; d < D; d++)
			qq += (double)q[d] * q[d];
		for (int p = 0; p < P; p++) {
			const float *k = kp->w + (size_t)p * D;
			double kk = 0, qk = 0;
			for (int d = 0; d < D; d++)
				kk += (double)k[d] * k[d], qk += (double)q[d] * k[d];
			cs[p] = qq > 0 && kk > 0 ? qk / sqrt(qq * kk) : 0;
		}
		/* the K best, best first, kept sorted as the ids go by: a later id displaces an
		 * entry only with a higher score, so among equal scores the lower id comes first */
		int32_t *sb = sel + (size_t)b * K;
		int n = 0;
		for (int p = 0; p < P; p++) {
			if (n == K && !(cs[p] > cs[sb[K - 1]]))
				continue;
			int at = n < K ? n++ : K - 1;
			while (at > 0 && cs[p] > cs[sb[at - 1]]) {
				sb[at] = sb[at - 1];
				at--;
			}
			sb[at] = p;
		}
		for (int j = 0; score && j < K; j++)
			score[(size_t)b * K + j] = (float)cs[sb[j]];
	}
	free(cs);
	return 0;
}

double cmr_tuning_pull(cmr_clip *m, const cmr_tuning *t, const float *query, const int32_t *sel, int B,
		       double lambda)
{
	cmr_param *kp = is_pool(t) ? cmr_clip_param(m, "prompt.vision.keys") : NULL;
	if (!kp || !kp->w || B < 1 || lambda == 0)
		return 0;
	int K = t->pool_topk, D = (int)kp->shape[1];
	double L = 0, c = -lambda / ((double)B * K);
	for (int b = 0; b < B; b++) {
		const float *q = query + (size_t)b * D;
		double qq = 0;
		for (int d = 0; d < D; d++)
			qq += (double)q[d] * q[d];
		for (int j = 0; j < K; j++) {
			int p = sel[(size_t)b * K + j];
			const float *k = kp->w + (size_t)p * D;
			double kk = 0, qk = 0;
			for (int d = 0; d < D; d++)
				kk += (double)k[d] * k[d], qk += (double)q[d] * k[d];
			if (!(qq > 0 && kk > 0))
				continue;
			double nq = sqrt(qq), nk = sqrt(kk), cs = qk / (nq * nk);
			L += c * cs;
			if (kp->g) /* d cos / d k = q / (|q||k|) - cos k / |k|^2 */
				for (int d = 0; d < D; d++)
					kp->g[(size_t)p * D + d] += (float)(c * (q[d] / (nq * nk) - cs * k[d] / kk));
		}
	}
	return L;
}

void cmr_tuning_majority(const cmr_tuning *t, int32_t *sel, int B)
{
	int P = t->pool_size, K = t->pool_topk;
	int *count = calloc((size_t)P, sizeof *count);
	int32_t *top = malloc((size_t)K * sizeof *top);
	if (!count || !top) { /* as selected: the majority is an option of training, not its correctness */
		free(count), free(top);
		return;
	}
	for (size_t i = 0; i < (size_t)B * K; i++)
		count[sel[i]]++;
	for (int j = 0; j < K; j++) { /* the K most chosen; ties: the lower id */
		int best = -1;
		for (int p = 0; p < P; p++)
			if (count[p] >= 0 && (best < 0 || count[p] > count[best]))
				best = p;
		top[j] = best;
		count[best] = -1;
	}
	for (int b = 0; b < B; b++)
		memcpy(sel + (size_t)b * K, top, (size_t)K * sizeof *top);
	free(count), free(top);
}

double cmr_tuning_batch_grad(cmr_clip *m, const cmr_tuning *t, const cmr_ops *ops, cmr_step_ws *s,
			     const cmr_batch *img, const cmr_text_view *views, int nviews, double pull, int majority,
			     double *part)
{
	if (!t || !is_pool(t))
		return cmr_clip_views_grad(m, ops, s, img, views, nviews, part);
	int B = img->B, K = t->pool_topk, D = m->cfg.vision.width;
	float *q = malloc((size_t)B * D * sizeof *q + 1), *emb = malloc((size_t)B * m->cfg.proj * sizeof *emb + 1);
	int32_t *sel = malloc((size_t)B * K * sizeof *sel + 1);
	double L = NAN;
	if (!q || !emb || !sel || B > s->max_batch)
		goto out;
	/* the query pass on the image work space: the prompted pass after it is the one kept */
	cmr_batch qb = {.B = B, .pixels = img->pixels, .no_prefix = 1, .state = q};
	if (cmr_clip_forward(m, CMR_TOWER_VISION, ops, s->ws[CMR_TOWER_VISION], &qb, emb) < 0 ||
	    cmr_tuning_select(m, t, q, B, sel, NULL) < 0)
		goto out;
	if (majority)
		cmr_tuning_majority(t, sel, B);
	cmr_batch pb = *img;
	pb.prefix_sel = sel;
	L = cmr_clip_views_grad(m, ops, s, &pb, views, nviews, part);
	if (isfinite(L)) {
		double lp = cmr_tuning_pull(m, t, q, sel, B, pull);
		if (part)
			part[nviews] = lp;
		L += lp;
	}
out:
	free(q), free(emb), free(sel);
	return L;
}

int cmr_tuning_merge(cmr_clip *m, const cmr_tuning *t, char *err, size_t errlen)
{
	if (!is_adapter(t) || strcmp(t->adapter_type, "lora") != 0)
		return 0;
	static const int slot[4] = {CMR_L_Q_W, CMR_L_K_W, CMR_L_V_W, CMR_L_O_W};
	for (int k = 0; k < 2; k++) {
		cmr_clip_tower *tw = &m->tower[k];
		if (!tw->layer || !((m->towers >> k) & 1))
			continue; /* not loaded (its modules never run) */
		for (cmr_hook *h = tw->hooks, *next; h; h = next) {
			next = h->next;
			const cmr_adapter *a = h->self;
			if (h->point < CMR_HOOK_Q || h->point > CMR_HOOK_O || a->tower != k) /* only LoRA's are there */
				continue;
			int D = tw->cfg.width, r = a->rank;
			for (int l = a->layer_min; l <= a->layer_max; l++) {
				const cmr_param *A = &m->param[a->down_w[l - a->layer_min]],
						*Bp = &m->param[a->up_w[l - a->layer_min]];
				cmr_param *W = NULL;
				for (int i = 0; i < m->nparam && !W; i++)
					if (m->param[i].tower == k && m->param[i].layer == l &&
					    m->param[i].slot == slot[h->point - CMR_HOOK_Q])
						W = &m->param[i];
				float *w = W && W->w && A->w && Bp->w ? cmr_clip_writable(m, W) : NULL;
				if (!w)
					return fail(err, errlen, "out of memory merging LoRA into layer %d", l);
				/* W [D, D] += gain B [D, r] A [r, D], accumulated in double */
				for (int i = 0; i < D; i++)
					for (int j = 0; j < D; j++) {
						double s = 0;
						for (int q = 0; q < r; q++)
							s += (double)Bp->w[(size_t)i * r + q] * A->w[(size_t)q * D + j];
						w[(size_t)i * D + j] += (float)(a->gain * s);
					}
			}
			cmr_clip_detach(m, k, h);
		}
	}
	return 0;
}

int cmr_tuning_encode_images(const cmr_clip *m, const cmr_tuning *t, const cmr_ops *ops, cmr_clip_ws *ws,
			     const uint8_t *const *pixels, int B, float *out, int32_t *sel)
{
	if (!t || !is_pool(t))
		return cmr_clip_encode_images(m, ops, ws, pixels, B, out);
	int D = m->cfg.vision.width, K = t->pool_topk;
	float *q = malloc((size_t)B * D * sizeof *q + 1);
	int32_t *own = sel ? NULL : malloc((size_t)B * K * sizeof *own + 1);
	int32_t *s = sel ? sel : own;
	int rc = -1;
	if (q && s) {
		cmr_batch qb = {.B = B, .pixels = pixels, .no_prefix = 1, .state = q};
		cmr_batch pb = {.B = B, .pixels = pixels, .prefix_sel = s};
		rc = cmr_clip_forward(m, CMR_TOWER_VISION, ops, ws, &qb, out) < 0 ||
				     cmr_tuning_select(m, t, q, B, s, NULL) < 0 ||
				     cmr_clip_forward(m, CMR_TOWER_VISION, ops, ws, &pb, out) < 0
			     ? -1
			     : 0;
	}
	free(q);
	free(own);
	return rc;
}

int cmr_tuning_init_phrase(cmr_clip *m, const int32_t *ids, int n, char *err, size_t errlen)
{
	cmr_param *p = cmr_clip_param(m, "prompt.text.embeddings");
	const cmr_clip_tower *t = &m->tower[CMR_TOWER_TEXT];
	if (!p || !p->w || !t->w[CMR_T_TOKEN])
		return fail(err, errlen, "a phrase initialises text prompts of a loaded text tower");
	int D = t->cfg.width;
	if (n > p->shape[0])
		return fail(err, errlen, "the phrase has %d tokens, more than the %d text prompts", n, (int)p->shape[0]);
	for (int i = 0; i < n; i++) {
		if (ids[i] < 0 || ids[i] >= t->cfg.vocab)
			return fail(err, errlen, "token %d of the phrase is outside the vocabulary", (int)ids[i]);
		memcpy(p->w + (size_t)i * D, t->w[CMR_T_TOKEN] + (size_t)ids[i] * D, (size_t)D * sizeof(float));
	}
	return 0;
}

int cmr_tuning_has(const cmr_tuning *t, const cmr_clip *m, const cmr_param *p)
{
	if (p->group == CMR_GROUP_PROMPT || p->group == CMR_GROUP_ADAPTER)
		return 1;
	return t->logit_scale && p == &m->param[m->logit];
}

/* ---- adapter_config.json ---- */

static int get_int(json_t *o, const char *key, int *v, int lo, int hi, const char *name, char *err, size_t errlen)
{
	json_t *j = json_object_get(o, key);
	if (!j) {
		*v = 0;
		return 0;
	}
	if (!json_is_integer(j) || json_integer_value(j) < lo || json_integer_value(j) > hi)
		return fail(err, errlen, "%s: \"%s\" must be an integer from %d to %d", name, key, lo, hi);
	*v = (int)json_integer_value(j);
	return 0;
}

static int get_bool(json_t *o, const char *key, int *v, const char *name, char *err, size_t errlen)
{
	json_t *j = json_object_get(o, key);
	if (j && !json_is_boolean(j))
		return fail(err, errlen, "%s: \"%s\" must be true or false", name, key);
	*v = j && json_is_true(j);
	return 0;
}

static int get_str(json_t *o, const char *key, char *buf, size_t cap, int required, const char *name, char *err,
		   size_t errlen)
{
	json_t *j = json_object_get(o, key);
	buf[0] = 0;
	if (!j || json_is_null(j)) {
		if (required)
			return fail(err, errlen, "%s: \"%s\" is missing", name, key);
		return 0;
	}
	if (!json_is_string(j) || json_string_length(j) >= cap || strlen(json_string_value(j)) != json_string_length(j))
		return fail(err, errlen, "%s: \"%s\" must be a string of at most %zu bytes", name, key, cap - 1);
	memcpy(buf, json_string_value(j), json_string_length(j) + 1);
	return 0;
}

int cmr_tuning_parse(const char *text, size_t len, const char *name, cmr_tuning *t, char *err, size_t errlen)
{
	memset(t, 0, sizeof *t);
	json_error_t je;
	json_t *o = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
	if (!o)
		return fail(err, errlen, "%s: line %d: %s", name, je.line, je.text);
	int rc = -1;
	char fmt[32];
	if (!json_is_object(o)) {
		fail(err, errlen, "%s: not a JSON object", name);
		goto out;
	}
	if (get_str(o, "format", fmt, sizeof fmt, 1, name, err, errlen) < 0)
		goto out;
	if (strcmp(fmt, CMR_TUNING_FORMAT) != 0) {
		fail(err, errlen, "%s: format '%s' is not " CMR_TUNING_FORMAT " (made by another version of cmr? see "
				  "cmr-tuning(5))", name, fmt);
		goto out;
	}
	if (get_str(o, "method", t->method, sizeof t->method, 1, name, err, errlen) < 0 ||
	    get_str(o, "base_model_name_or_path", t->base, sizeof t->base, 0, name, err, errlen) < 0 ||
	    get_str(o, "prompt_init", t->init, sizeof t->init, 0, name, err, errlen) < 0 ||
	    get_int(o, "text_prompts", &t->text_prompts, 0, CMR_TUNING_MAX_PROMPTS, name, err, errlen) < 0 ||
	    get_int(o, "vision_prompts", &t->vision_prompts, 0, CMR_TUNING_MAX_PROMPTS, name, err, errlen) < 0 ||
	    get_bool(o, "deep", &t->deep, name, err, errlen) < 0 ||
	    get_bool(o, "train_logit_scale", &t->logit_scale, name, err, errlen) < 0)
		goto out;
	if (strcmp(t->method, "prompts") != 0 && !is_pool(t) && !is_adapter(t)) {
		fail(err, errlen, "%s: method '%s' is not one this cmr knows (prompts, pool, adapter)", name, t->method);
		goto out;
	}
	if (is_adapter(t)) {
		json_t *ad = json_object_get(o, "adapter");
		if (!json_is_object(ad)) {
			fail(err, errlen, "%s: an adapter tuning needs \"adapter\": {\"type\", \"vision\", \"text\"}", name);
			goto out;
		}
		if (get_str(ad, "type", t->adapter_type, sizeof t->adapter_type, 1, name, err, errlen) < 0 ||
		    get_int(ad, "vision", &t->adapter_width[CMR_TOWER_VISION], 0, CMR_TUNING_MAX_WIDTH, name, err, errlen) < 0 ||
		    get_int(ad, "text", &t->adapter_width[CMR_TOWER_TEXT], 0, CMR_TUNING_MAX_WIDTH, name, err, errlen) < 0 ||
		    get_int(ad, "levels", &t->levels, 0, CMR_TUNING_MAX_LEVELS, name, err, errlen) < 0 ||
		    get_int(ad, "inject", &t->inject, 0, CMR_TUNING_MAX_LEVELS, name, err, errlen) < 0 ||
		    get_int(ad, "inject_width", &t->inject_width, 0, CMR_TUNING_MAX_WIDTH, name, err, errlen) < 0)
			goto out;
		int head = t->levels || t->inject, none = strcmp(t->adapter_type, "none") == 0;
		if (!adapter_points(t->adapter_type) || (!t->adapter_width[0] && !t->adapter_width[1] && !head) ||
		    (none && (t->adapter_width[0] || t->adapter_width[1] || !head)) || t->levels == 1 ||
		    (t->inject && !t->inject_width) || t->deep || t->text_prompts || t->vision_prompts) {
			fail(err, errlen, "%s: adapters of type '%s', widths vision %d and text %d, levels %d, inject %d of "
					  "width %d: the type must be parallel, sequential, lora or none (the head's "
					  "modules alone), a width at least 1 (0 for none), levels 0 or at least 2, an "
					  "injection a width, and no prompts beside them",
			     name, t->adapter_type, t->adapter_width[0], t->adapter_width[1], t->levels, t->inject,
			     t->inject_width);
			goto out;
		}
	} else if (is_pool(t)) {
		json_t *po = json_object_get(o, "pool");
		if (!json_is_object(po) ||
		    get_int(po, "size", &t->pool_size, 1, CMR_TUNING_MAX_POOL, name, err, errlen) < 0 ||
		    get_int(po, "length", &t->pool_length, 1, CMR_TUNING_MAX_PROMPTS, name, err, errlen) < 0 ||
		    get_int(po, "top_k", &t->pool_topk, 1, CMR_TUNING_MAX_POOL, name, err, errlen) < 0) {
			if (!json_is_object(po))
				fail(err, errlen, "%s: a pool needs \"pool\": {\"size\", \"length\", \"top_k\"}", name);
			goto out;
		}
		if (t->pool_topk > t->pool_size || t->pool_topk * t->pool_length > CMR_TUNING_MAX_PROMPTS ||
		    !t->pool_size || !t->pool_length || !t->pool_topk || t->deep || t->text_prompts || t->vision_prompts) {
			fail(err, errlen, "%s: pool of %d prompts of %d rows, top %d: the sizes must be at least 1, top_k at "
					  "most the size and at most %d rows per image, and no fixed or deep prompts beside it",
			     name, t->pool_size, t->pool_length, t->pool_topk, CMR_TUNING_MAX_PROMPTS);
			goto out;
		}
	} else if (t->text_prompts + t->vision_prompts == 0) {
		fail(err, errlen, "%s: neither text_prompts nor vision_prompts: an empty tuning", name);
		goto out;
	}
	json_t *h = json_object_get(o, "base_model_hash");
	if (!json_is_object(h)) {
		fail(err, errlen, "%s: \"base_model_hash\" must be an object {\"vision\", \"text\"}", name);
		goto out;
	}
	for (int k = 0; k < 2; k++) {
		json_t *v = json_object_get(h, tower_word(k));
		if (!v && !tunes(t, k))
			continue;
		if (!json_is_string(v) || cmr_parse_hex64(json_string_value(v), &t->base_hash[k]) < 0) {
			fail(err, errlen, "%s: base_model_hash.%s must be 16 lowercase hex digits", name, tower_word(k));
			goto out;
		}
	}
	rc = 0;
out:
	json_decref(o);
	return rc;
}

int cmr_tuning_read(const char *dir, cmr_tuning *t, char *err, size_t errlen)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/" CMR_TUNING_CONFIG, dir);
	size_t n;
	char *buf = cmr_read_file(path, (1 << 20) - 1, &n, err, errlen);
	if (!buf)
		return errno == ENOENT ? fail(err, errlen, "%s: %s (not a tuning directory: see cmr-tuning(5))", path,
					      strerror(ENOENT))
				       : -1;
	int rc = cmr_tuning_parse(buf, n, path, t, err, errlen);
	free(buf);
	return rc;
}

/* ---- the tuned tensors ---- */
static int tuned_tower(const cmr_tuning *t, const cmr_param *p)
{
	(void)t;
	return p->group == CMR_GROUP_PROMPT || p->group == CMR_GROUP_ADAPTER ? p->tower : -1;
}

int cmr_tuning_load(cmr_clip *m, const cmr_tuning *t, const char *dir, unsigned mask, char *err, size_t errlen)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/" CMR_TUNING_TENSORS, dir);
	unsigned known = mask | m->hashed; /* towers to check and to give an identity */
	for (int k = 0; k < 2; k++) {
		const cmr_clip_tower *tw = &m->tower[k];
		if (!((known >> k) & 1) || !tunes(t, k))
			continue;
		if (tw->base_hash != t->base_hash[k])
			return fail(err, errlen, "%s: made for a base whose %s tower is %016" PRIx64 ", not this one (%s, "
						 "%016" PRIx64 "): give the base it was tuned on",
				    dir, tower_word(k), t->base_hash[k], tw->name, tw->base_hash);
	}
	cmr_st *st = cmr_st_open(path, err, errlen);
	if (!st)
		return -1;
	int rc = -1;
	for (size_t i = 0; i < cmr_st_count(st); i++) {
		const char *nm = cmr_st_at(st, i)->name;
		cmr_param *p = cmr_clip_param(m, nm);
		if (!p || !cmr_tuning_has(t, m, p)) {
			fail(err, errlen, "%s: tensor '%s' is not part of this tuning (%s)", path, nm, CMR_TUNING_CONFIG);
			goto out;
		}
	}
	for (int i = 0; i < m->nparam; i++) {
		cmr_param *p = &m->param[i];
		if (!cmr_tuning_has(t, m, p))
			continue;
		int k = tuned_tower(t, p);
		if (k >= 0 ? !((mask >> k) & 1) : (mask & CMR_TOWERS_BOTH) != CMR_TOWERS_BOTH)
			continue;
		const cmr_st_tensor *ft = cmr_st_get(st, p->name);
		if (!ft) {
			fail(err, errlen, "%s: tensor '%s' is missing", path, p->name);
			goto out;
		}
		if (cmr_clip_set_tensor(m, p, ft, path, 1, err, errlen) < 0)
			goto out;
		for (size_t j = 0; j < p->n; j++)
			if (!isfinite(p->w[j])) {
				fail(err, errlen, "%s: tensor '%s' has a value that is not finite (at %zu)", path, p->name, j);
				goto out;
			}
	}
	/* the identity of each tuned tower: its base's and its tuned tensors as the file holds
	 * them (so that a tower not loaded has one too) */
	for (int k = 0; k < 2; k++) {
		if (!((known >> k) & 1) || !tunes(t, k))
			continue;
		XXH3_state_t *x = XXH3_createState();
		if (!x) {
			fail(err, errlen, "out of memory");
			goto out;
		}
		XXH3_64bits_reset_withSeed(x, m->tower[k].base_hash);
		char desc[128];
		int n = is_pool(t)      ? snprintf(desc, sizeof desc, "pool size %d length %d top %d", t->pool_size,
						   t->pool_length, t->pool_topk)
			: is_adapter(t) ? snprintf(desc, sizeof desc, "adapter %s width %d", t->adapter_type,
						   t->adapter_width[k])
					: snprintf(desc, sizeof desc, "%s prompts %d deep %d", t->method, prompts_of(t, k),
						   t->deep);
		if (is_adapter(t) && (t->levels || t->inject)) /* (so that a tuning without them keeps its identity) */
			n += snprintf(desc + n, sizeof desc - (size_t)n, " levels %d inject %d width %d", t->levels, t->inject,
				      t->inject ? t->inject_width : 0);
		XXH3_64bits_update(x, desc, (size_t)n);
		for (int i = 0; i < m->nparam; i++) {
			const cmr_param *p = &m->param[i];
			if ((p->group != CMR_GROUP_PROMPT && p->group != CMR_GROUP_ADAPTER) || p->tower != k)
				continue;
			const cmr_st_tensor *ft = cmr_st_get(st, p->name);
			if (!ft) {
				XXH3_freeState(x);
				fail(err, errlen, "%s: tensor '%s' is missing", path, p->name);
				goto out;
			}
			XXH3_64bits_update(x, p->name, strlen(p->name));
			XXH3_64bits_update(x, ft->data, ft->nbytes);
		}
		m->tower[k].hash = XXH3_64bits_digest(x);
		m->hashed |= 1u << k;
		XXH3_freeState(x);
	}
	rc = 0;
out:
	cmr_st_close(st);
	return rc;
}

cmr_clip *cmr_tuning_open(const char *base, const char *tuning_dir, unsigned mask, cmr_tuning *t, char *err,
			  size_t errlen)
{
	char path[4096];
	cmr_clip_cfg cfg;
	if (cmr_tuning_read(tuning_dir, t, err, errlen) < 0 || cmr_clip_cfg_load(base, &cfg, err, errlen) < 0)
		return NULL;
	cmr_clip *m = cmr_clip_new(&cfg);
	if (!m) {
		fail(err, errlen, "out of memory for the model");
		return NULL;
	}
	snprintf(path, sizeof path, "%s/%s", base, cmr_clip_weights_name(&cfg));
	if (cmr_tuning_add(m, t, 0, err, errlen) < 0 || cmr_clip_load(m, path, mask, 0, err, errlen) < 0) {
		size_t l = strlen(err);
		if (l + 40 < errlen && strncmp(err, tuning_dir, strlen(tuning_dir)) != 0)
			snprintf(err + l, errlen - l, " (tuning %s)", tuning_dir);
		cmr_clip_free(m);
		return NULL;
	}
	cmr_clip_set_name(m, base);
	if (cmr_tuning_load(m, t, tuning_dir, mask, err, errlen) < 0 || cmr_tuning_merge(m, t, err, errlen) < 0) {
		cmr_clip_free(m);
		return NULL;
	}
	return m;
}

/* o as indented JSON text ending in a newline, malloc'd (o is released); NULL when out of
 * memory */
static char *dumps_line(json_t *o)
{
	char *s = o ? json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
	json_decref(o);
	if (!s)
		return NULL;
	size_t l = strlen(s);
	char *r = realloc(s, l + 2);
	if (!r) {
		free(s);
		return NULL;
	}
	r[l] = '\n', r[l + 1] = 0;
	return r;
}

char *cmr_tuning_config_json(const cmr_clip *m, const cmr_tuning *t, const char *training_json)
{
	char h[2][17];
	json_t *hash = json_object();
	for (int k = 0; k < 2; k++)
		if (tunes(t, k)) {
			snprintf(h[k], sizeof h[k], "%016" PRIx64, m->tower[k].base_hash);
			json_object_set_new(hash, tower_word(k), json_string(h[k]));
		}
	json_t *tr = training_json ? json_loads(training_json, 0, NULL) : NULL;
	if (is_adapter(t)) {
		json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:o, s:{s:s, s:i, s:i, s:s, s:s}, s:b, s:o}", "format",
				      CMR_TUNING_FORMAT, "peft_type", "CMR_ADAPTER", "method", t->method,
				      "base_model_name_or_path", t->base, "base_model_hash", hash, "adapter", "type",
				      t->adapter_type, "vision", t->adapter_width[CMR_TOWER_VISION], "text",
				      t->adapter_width[CMR_TOWER_TEXT], "placement",
				      strcmp(t->adapter_type, "parallel") == 0   ? "beside each MLP, reading its input"
				      : strcmp(t->adapter_type, "sequential") == 0 ? "on each attention and MLP block's output"
				      : strcmp(t->adapter_type, "none") == 0       ? "none in the layers"
										   : "on the attention's q, k, v and out projections",
				      "scale", strcmp(t->adapter_type, "none") == 0 ? "none"
				      : strcmp(t->adapter_type, "lora") == 0 ? "alpha / r = 1, merged into the weights when applied"
									       : "learnt, per tower, layer and place", "train_logit_scale", t->logit_scale,
				      "training", tr ? tr : json_null());
		json_t *ad = o ? json_object_get(o, "adapter") : NULL;
		if (ad && t->levels)
			json_object_set_new(ad, "levels", json_integer(t->levels));
		if (ad && t->inject) {
			json_object_set_new(ad, "inject", json_integer(t->inject));
			json_object_set_new(ad, "inject_width", json_integer(t->inject_width));
		}
		if (ad && (t->levels || t->inject))
			json_object_set_new(ad, "head", json_string("gated by scalars from zero, after the final layer norm"));
		return dumps_line(o);
	}
	if (is_pool(t)) {
		json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:o, s:{s:i, s:i, s:i}, s:s, s:s, s:b, s:o}", "format",
				      CMR_TUNING_FORMAT, "peft_type", "CMR_PROMPT_POOL", "method", t->method,
				      "base_model_name_or_path", t->base, "base_model_hash", hash, "pool", "size",
				      t->pool_size, "length", t->pool_length, "top_k", t->pool_topk, "placement",
				      "vision after-class, chosen per image", "query", "vision post-layernorm class state",
				      "train_logit_scale", t->logit_scale, "training", tr ? tr : json_null());
		return dumps_line(o);
	}
	json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:o, s:i, s:i, s:b, s:{s:s, s:s}, s:o, s:b, s:o}", "format",
			      CMR_TUNING_FORMAT, "peft_type", "CMR_PROMPTS", "method", t->method,
			      "base_model_name_or_path", t->base, "base_model_hash", hash, "text_prompts", t->text_prompts,
			      "vision_prompts", t->vision_prompts, "deep", t->deep, "placement", "text", "after-start",
			      "vision", "after-class", "prompt_init", t->init[0] ? json_string(t->init) : json_null(),
			      "train_logit_scale", t->logit_scale, "training", tr ? tr : json_null());
	return dumps_line(o);
}

static int want_tuned(const cmr_clip *m, const cmr_param *p, const void *ctx)
{
	return cmr_tuning_has(ctx, m, p);
}

int cmr_tuning_save_tensors(const cmr_clip *m, const cmr_tuning *t, const char *path, const char *metadata_json,
			    struct cmr_atomic *held, char *err, size_t errlen)
{
	return cmr_clip_save_some(m, path, metadata_json, want_tuned, t, held, err, errlen);
}
