/* promptcheck.c - prompt tuning's numerics against the committed PyTorch goldens
 * (tests/golden/prompt, made by tests/ref/prompt_reference.py, and for adapters by
 * tests/ref/adapter_reference.py: the same checks): for a base checkpoint, a
 * batch of paired image and token records and the golden's prompts (their lengths and depth
 * read from its tensors), it checks
 *   - the prompted forward pass of both towers: each embedding's |c - ref| / |ref| (L2),
 *   - the captions cut to make room for the text prompts: the reference's count,
 *   - the loss, and the gradient of every prompt tensor (relative L2 error per tensor),
 * each against the tolerance given (the forward's and the gradients'). A pool's golden
 * (tests/ref/pool_reference.py: it holds prompt.vision.keys) is checked through the training
 * step's own function (cmr_tuning_batch_grad) with the descriptions of DESCS.cmr as views:
 *   - the queries, and the selection (the same ids in the same order),
 *   - the prompted image embeddings, the loss and its parts (captions, descriptions, pull),
 *   - the gradients of the pool's prompts and of its keys.
 *
 * The adapters' scales and the head modules' gates are checked as one vector, against
 * scale=TOL when given (each is a sum over every row and feature whose terms cancel, so less
 * exact than the others).
 *
 *   promptcheck MODEL_DIR IMAGES.cmr TOKENS.cmr GOLDEN.safetensors BACKEND FWD_TOL GRAD_TOL [DESCS.cmr] [scale=TOL]
 * Prints one line per check with the error measured; exit 0 when all pass, 1 otherwise. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/train.h"
#include "model/tuning.h"
#include "format/safetensors.h"
#include "format/stream.h"
#include "records.h"

static int failures;

static void check(int ok, const char *what, double v, double tol)
{
	printf("%s: %-64s %-10.3g (<= %g)\n", ok ? "ok  " : "FAIL", what, v, tol);
	failures += !ok;
}

/* worst relative L2 error of B rows of P against the reference's */
static double rows_error(const float *c, const float *r, int B, int P)
{
	double worst = 0;
	for (int b = 0; b < B; b++) {
		double num = 0, den = 0;
		for (int j = 0; j < P; j++) {
			double d = (double)c[b * P + j] - r[b * P + j];
			num += d * d;
			den += (double)r[b * P + j] * r[b * P + j];
		}
		worst = fmax(worst, sqrt(num / den));
	}
	return worst;
}

static double scalar(const cmr_st *gold, const char *name, int i)
{
	const cmr_st_tensor *t = cmr_st_get(gold, name);
	if (!t || t->dtype != CMR_DTYPE_F32 || t->nbytes < 4 * (size_t)(i + 1)) {
		fprintf(stderr, "promptcheck: the golden has no %s[%d]\n", name, i);
		exit(1);
	}
	return ((const float *)t->data)[i];
}

/* the descriptions of the B images img000.. by perspective: views[v] of rows and ids */
#define MAXV 8
typedef struct {
	int n[MAXV], row[MAXV][64], len[MAXV][64], nv;
	const int32_t *ids[MAXV][64];
	char name[MAXV][16];
} descs;

static void read_descs(const char *path, int B, descs *d)
{
	FILE *f = fopen(path, "rb");
	cmr_reader *r = f ? cmr_reader_new(f, path) : NULL;
	cmr_record rec;
	memset(d, 0, sizeof *d);
	while (r && cmr_reader_next(r, &rec) == 1) {
		int img;
		char v[16];
		if (rec.kind != CMR_KIND_DESC_TOKENS || sscanf(rec.key, "img%d#%15s", &img, v) != 2 || img >= B)
			continue;
		int k = 0;
		while (k < d->nv && strcmp(d->name[k], v) != 0)
			k++;
		if (k == d->nv && d->nv < MAXV)
			strcpy(d->name[d->nv++], v);
		if (k == MAXV || d->n[k] == 64)
			continue;
		int32_t *ids = malloc(rec.nbytes);
		memcpy(ids, rec.data, rec.nbytes);
		d->row[k][d->n[k]] = img, d->ids[k][d->n[k]] = ids, d->len[k][d->n[k]++] = (int)rec.dims[0];
	}
	if (!r || !d->nv) {
		fprintf(stderr, "promptcheck: %s: no descriptions\n", path);
		exit(1);
	}
	cmr_reader_free(r);
	fclose(f);
}

/* a tensor of the tuning: a prompt's or an adapter's */
static int tuned(const cmr_param *p)
{
	return p->group == CMR_GROUP_PROMPT || p->group == CMR_GROUP_ADAPTER;
}

static double rel(double c, double r)
{
	return fabs(c - r) / fmax(fabs(r), 1e-30);
}

/* a pool's golden: selection, prompted pass, loss with descriptions and pull, gradients */
static void check_pool(cmr_clip *m, const cmr_tuning *t, const cmr_ops *ops, const cmr_st *gold, const uint8_t *const *px,
		       const int32_t *const *ids, const int *tlen, int B, const char *desc_path, double ftol, double gtol)
{
	char what[256];
	int P = m->cfg.proj, D = m->cfg.vision.width, K = t->pool_topk, total = 0;
	descs ds;
	read_descs(desc_path, B, &ds);
	for (int b = 0; b < B; b++)
		total += tlen[b];
	for (int v = 0; v < ds.nv; v++)
		for (int j = 0; j < ds.n[v]; j++)
			total += ds.len[v][j];
	/* the query pass and the selection, as cmr-encode and cmr-promptpool select make them */
	float *emb = malloc((size_t)B * P * sizeof *emb), *q = malloc((size_t)B * D * sizeof *q);
	int32_t *sel = malloc((size_t)B * K * sizeof *sel);
	cmr_clip_ws *ci = cmr_clip_ws_new(m, ops, CMR_TOWER_VISION, B, 0, 0);
	cmr_batch qb = {.B = B, .pixels = px, .no_prefix = 1, .state = q};
	if (cmr_clip_forward(m, CMR_TOWER_VISION, ops, ci, &qb, emb) < 0 ||
	    cmr_tuning_encode_images(m, t, ops, ci, px, B, emb, sel) < 0) {
		fprintf(stderr, "promptcheck: the pool's passes failed\n");
		exit(1);
	}
	double e = rows_error(q, cmr_st_get(gold, "query")->data, B, D);
	check(e <= ftol, "queries: the plain tower's pooled state (worst relative L2)", e, ftol);
	int same = 0;
	for (int i = 0; i < B * K; i++)
		same += sel[i] == (int)scalar(gold, "select", i);
	snprintf(what, sizeof what, "selection: %d of %d ids as the reference's, in its order", same, B * K);
	check(same == B * K, what, B * K - same, 0);
	snprintf(what, sizeof what, "image embeddings, top %d of %d prompts of %d rows (worst relative L2)", K,
		 t->pool_size, t->pool_length);
	e = rows_error(emb, cmr_st_get(gold, "emb.image")->data, B, P);
	check(e <= ftol, what, e, ftol);
	/* the training step: captions, each perspective, pull */
	double wc = scalar(gold, "weights", 0), wt = scalar(gold, "weights", 1), mg = scalar(gold, "weights", 2),
	       lam = scalar(gold, "weights", 3);
	cmr_loss_term cap = {.loss = cmr_loss_find("infonce"), .weight = 1.0, .margin = 0};
	cmr_loss_term dt[2] = {{.loss = cmr_loss_find("infonce"), .weight = wc, .margin = 0}, {.loss = cmr_loss_find("vse"), .weight = wt, .margin = (float)mg}};
	cmr_text_view views[1 + MAXV];
	cmr_batch tb[1 + MAXV];
	tb[0] = (cmr_batch){.B = B, .ids = ids, .lens = tlen};
	views[0] = (cmr_text_view){.txt = &tb[0], .terms = &cap, .nterms = 1};
	for (int v = 0; v < ds.nv; v++) {
		tb[v + 1] = (cmr_batch){.B = ds.n[v], .ids = ds.ids[v], .lens = ds.len[v]};
		views[v + 1] = (cmr_text_view){.txt = &tb[v + 1], .row = ds.row[v], .terms = dt, .nterms = 2};
	}
	cmr_step_ws *sw = cmr_step_ws_new(m, ops, B, total);
	cmr_batch bi = {.B = B, .pixels = px};
	double part[2 + MAXV];
	cmr_clip_zero_grad(m);
	double L = cmr_tuning_batch_grad(m, t, ops, sw, &bi, views, 1 + ds.nv, lam, 0, part);
	double ld = 0;
	for (int v = 0; v < ds.nv; v++)
		ld += part[1 + v];
	check(rel(L, scalar(gold, "loss", 0)) <= ftol, "loss (relative error)", rel(L, scalar(gold, "loss", 0)), ftol);
	e = rel(part[0], scalar(gold, "loss.captions", 0));
	check(e <= ftol, "its captions' InfoNCE (relative error)", e, ftol);
	snprintf(what, sizeof what, "its descriptions' terms, %d perspectives (relative error)", ds.nv);
	e = rel(ld, scalar(gold, "loss.descriptions", 0));
	check(e <= ftol, what, e, ftol);
	e = rel(part[1 + ds.nv], scalar(gold, "loss.pull", 0));
	check(e <= ftol, "its key pull term (relative error)", e, ftol);
	const char *names[2] = {"prompt.vision.pool", "prompt.vision.keys"};
	for (int k = 0; k < 2; k++) {
		const cmr_param *p = cmr_clip_param(m, names[k]);
		snprintf(what, sizeof what, "grad.%s", names[k]);
		const float *gr = cmr_st_get(gold, what)->data;
		double num = 0, den = 0;
		for (size_t j = 0; j < p->n; j++) {
			num += ((double)p->g[j] - gr[j]) * ((double)p->g[j] - gr[j]);
			den += (double)gr[j] * gr[j];
		}
		snprintf(what, sizeof what, "gradient of %s (relative L2)", names[k]);
		check(sqrt(num / den) <= gtol, what, sqrt(num / den), gtol);
	}
	for (int v = 0; v < ds.nv; v++)
		for (int j = 0; j < ds.n[v]; j++)
			free((void *)ds.ids[v][j]);
	free(emb), free(q), free(sel);
	cmr_clip_ws_free(ci);
	cmr_step_ws_free(sw);
}

int main(int argc, char **argv)
{
	if (argc < 8) {
		fprintf(stderr, "usage: promptcheck MODEL_DIR IMAGES.cmr TOKENS.cmr GOLDEN.safetensors BACKEND FWD_TOL GRAD_TOL "
				"[DESCS.cmr]\n");
		return 2;
	}
	const cmr_ops *ops = cmr_ops_find(argv[5]);
	double ftol = atof(argv[6]), gtol = atof(argv[7]), stol = gtol;
	if (argc > 8 && strncmp(argv[argc - 1], "scale=", 6) == 0) /* the scales' own tolerance */
		stol = atof(argv[--argc] + 6);
	char err[1024], path[4096], what[256];
	cmr_clip_cfg cfg;
	cmr_st *gold = cmr_st_open(argv[4], err, sizeof err);
	if (!ops || !gold || cmr_clip_cfg_load(argv[1], &cfg, err, sizeof err) < 0) {
		fprintf(stderr, "promptcheck: %s\n", ops ? err : "unknown backend");
		return 1;
	}
	/* the tuning the golden describes */
	cmr_tuning t;
	memset(&t, 0, sizeof t);
	strcpy(t.method, "prompts");
	const cmr_st_tensor *pt = cmr_st_get(gold, "prompt.text.embeddings"), *pv = cmr_st_get(gold, "prompt.vision.embeddings");
	t.text_prompts = pt ? (int)pt->shape[0] : 0;
	t.vision_prompts = pv ? (int)pv->shape[0] : 0;
	t.deep = cmr_st_get(gold, "prompt.text.layers.1") || cmr_st_get(gold, "prompt.vision.layers.1");
	int pool = cmr_st_get(gold, "prompt.vision.keys") != NULL;
	if (cmr_st_get(gold, "adapter")) { /* tests/ref/adapter_reference.py's: [type, widths, levels,
					   * inject, its width] */
		strcpy(t.method, "adapter");
		static const char *types[4] = {"parallel", "sequential", "lora", "none"};
		int ty = (int)scalar(gold, "adapter", 0);
		strcpy(t.adapter_type, types[ty >= 0 && ty < 4 ? ty : 0]);
		t.adapter_width[CMR_TOWER_VISION] = (int)scalar(gold, "adapter", 1);
		t.adapter_width[CMR_TOWER_TEXT] = (int)scalar(gold, "adapter", 2);
		if (cmr_st_get(gold, "adapter")->nbytes >= 6 * sizeof(float)) {
			t.levels = (int)scalar(gold, "adapter", 3);
			t.inject = (int)scalar(gold, "adapter", 4);
			t.inject_width = (int)scalar(gold, "adapter", 5);
		}
	}
	if (pool) {
		strcpy(t.method, "pool");
		t.pool_size = (int)scalar(gold, "pool", 0), t.pool_length = (int)scalar(gold, "pool", 1);
		t.pool_topk = (int)scalar(gold, "pool", 2);
		if (argc < 9) {
			fprintf(stderr, "promptcheck: a pool's golden is checked with its DESCS.cmr\n");
			return 2;
		}
	}
	cmr_clip *m = cmr_clip_new(&cfg);
	snprintf(path, sizeof path, "%s/model.safetensors", argv[1]);
	if (!m || cmr_tuning_add(m, &t, 1, err, sizeof err) < 0 ||
	    cmr_clip_load(m, path, CMR_TOWERS_BOTH, 0, err, sizeof err) < 0) {
		fprintf(stderr, "promptcheck: %s\n", m ? err : "out of memory");
		return 1;
	}
	int nprompt = 0;
	for (int i = 0; i < m->nparam; i++) {
		cmr_param *p = &m->param[i];
		if (!tuned(p))
			continue;
		const cmr_st_tensor *gt = cmr_st_get(gold, p->name);
		if (!gt || cmr_clip_set_tensor(m, p, gt, argv[4], 1, err, sizeof err) < 0) {
			fprintf(stderr, "promptcheck: %s: %s\n", p->name, gt ? err : "not in the golden");
			return 1;
		}
		nprompt++;
	}
	if (cmr_clip_grads(m) < 0)
		return 1;
	void **imgs, **toks;
	int *ilen, *tlen;
	int B = read_all(argv[2], &imgs, &ilen), ntok = read_all(argv[3], &toks, &tlen);
	if (B != ntok || B < 1) {
		fprintf(stderr, "promptcheck: the streams do not pair up\n");
		return 1;
	}
	int P = cfg.proj, total = 0;
	for (int b = 0; b < B; b++)
		total += tlen[b];
	if (pool) {
		check_pool(m, &t, ops, gold, (const uint8_t *const *)imgs, (const int32_t *const *)toks, tlen, B, argv[8],
			   ftol, gtol);
		int others = 0;
		for (int i = 0; i < m->nparam; i++)
			others += m->param[i].g && m->param[i].group != CMR_GROUP_PROMPT;
		check(others == 0, "frozen base: no other parameter has a gradient", others, 0);
		printf("%s\n", failures ? "FAILED" : "OK");
		fflush(stdout);
		for (int b = 0; b < B; b++)
			free(imgs[b]), free(toks[b]);
		free(imgs), free(toks), free(ilen), free(tlen);
		cmr_clip_free(m);
		cmr_st_close(gold);
		return failures ? 1 : 0;
	}
	const uint8_t *const *px = (const uint8_t *const *)imgs;
	const int32_t *const *ids = (const int32_t *const *)toks;
	float *emb = malloc(2 * (size_t)B * P * sizeof *emb);
	cmr_clip_ws *ci = cmr_clip_ws_new(m, ops, CMR_TOWER_VISION, B, 0, 0);
	cmr_clip_ws *ct = cmr_clip_ws_new(m, ops, CMR_TOWER_TEXT, B, total, 0);
	if (cmr_clip_encode_images(m, ops, ci, px, B, emb) < 0 ||
	    cmr_clip_encode_texts(m, ops, ct, ids, tlen, B, emb + (size_t)B * P) < 0) {
		fprintf(stderr, "promptcheck: the batch does not fit\n");
		return 1;
	}
	const cmr_st_tensor *ei = cmr_st_get(gold, "emb.image"), *et = cmr_st_get(gold, "emb.text");
	char kind[2][96];
	for (int k = 0; k < 2; k++)
		if (strcmp(t.method, "adapter") == 0)
			snprintf(kind[k], sizeof kind[k], "%s adapters of width %d%s", t.adapter_type, t.adapter_width[k],
				 t.levels || t.inject ? ", head modules" : "");
		else
			snprintf(kind[k], sizeof kind[k], "%d %s prompts%s", k ? t.text_prompts : t.vision_prompts,
				 k ? "text" : "vision", t.deep ? ", deep" : "");
	snprintf(what, sizeof what, "image embeddings, %s (worst relative L2)", kind[CMR_TOWER_VISION]);
	double e = rows_error(emb, ei->data, B, P);
	check(e <= ftol, what, e, ftol);
	snprintf(what, sizeof what, "text embeddings, %s (worst relative L2)", kind[CMR_TOWER_TEXT]);
	e = rows_error(emb + (size_t)B * P, et->data, B, P);
	check(e <= ftol, what, e, ftol);
	const cmr_st_tensor *tr = cmr_st_get(gold, "truncated");
	if (tr) {
		int cut = cmr_clip_ws_layout(ct)->truncated, want = (int)*(const float *)tr->data;
		snprintf(what, sizeof what, "captions cut for the text prompts: %d, reference %d", cut, want);
		check(cut == want, what, fabs((double)cut - want), 0);
	}

	cmr_step_ws *sw = cmr_step_ws_new(m, ops, B, total);
	cmr_batch bi = {.B = B, .pixels = px}, bt = {.B = B, .ids = ids, .lens = tlen};
	cmr_loss_term term = {.loss = cmr_loss_find("infonce"), .weight = 1.0, .margin = 0};
	cmr_clip_zero_grad(m);
	double L = cmr_clip_batch_grad(m, ops, sw, &bi, &bt, &term, 1);
	double Lr = *(const float *)cmr_st_get(gold, "loss")->data;
	check(fabs(L - Lr) <= ftol * fabs(Lr), "loss (relative error)", fabs(L - Lr) / fabs(Lr), ftol);
	double worst = 0, snum = 0, sden = 0;
	int nscale = 0;
	const char *worst_name = "";
	for (int i = 0; i < m->nparam; i++) {
		const cmr_param *p = &m->param[i];
		if (!tuned(p))
			continue;
		snprintf(what, sizeof what, "grad.%s", p->name);
		const cmr_st_tensor *g = cmr_st_get(gold, what);
		if (!g) {
			check(0, what, 1, 0);
			continue;
		}
		const float *gr = g->data;
		double num = 0, den = 0;
		for (size_t j = 0; j < p->n; j++) {
			num += ((double)p->g[j] - gr[j]) * ((double)p->g[j] - gr[j]);
			den += (double)gr[j] * gr[j];
		}
		if (p->n == 1 && (strstr(p->name, ".scale") || strstr(p->name, ".gate"))) { /* one vector, below */
			snum += num, sden += den, nscale++;
			continue;
		}
		double rel = sqrt(num / den);
		if (rel > worst)
			worst = rel, worst_name = p->name;
	}
	snprintf(what, sizeof what, "gradients of all %d %s tensors (worst: %s)", nprompt - nscale, t.method, worst_name);
	check(worst <= gtol, what, worst, gtol);
	if (nscale) { /* each a sum over every row and feature that cancels: as one vector */
		snprintf(what, sizeof what, "gradients of the %d adapters' scales and gates (one vector, relative L2)",
			 nscale);
		check(sqrt(snum / sden) <= stol, what, sqrt(snum / sden), stol);
	}
	/* nothing but the prompts has a gradient */
	int others = 0;
	for (int i = 0; i < m->nparam; i++)
		others += m->param[i].g && !tuned(&m->param[i]);
	check(others == 0, "frozen base: no other parameter has a gradient", others, 0);
	if (strcmp(t.method, "adapter") == 0 && strcmp(t.adapter_type, "lora") == 0) {
		/* merged into the weights (as cmr-encode applies it): the same embeddings, no module */
		float *me = malloc(2 * (size_t)B * P * sizeof *me);
		cmr_clip_ws *mi = NULL, *mt = NULL;
		if (!me || cmr_tuning_merge(m, &t, err, sizeof err) < 0 ||
		    !(mi = cmr_clip_ws_new(m, ops, CMR_TOWER_VISION, B, 0, 0)) ||
		    !(mt = cmr_clip_ws_new(m, ops, CMR_TOWER_TEXT, B, total, 0)) ||
		    cmr_clip_encode_images(m, ops, mi, px, B, me) < 0 ||
		    cmr_clip_encode_texts(m, ops, mt, ids, tlen, B, me + (size_t)B * P) < 0) {
			fprintf(stderr, "promptcheck: merging failed\n");
			return 1;
		}
		double mw = fmax(rows_error(me, emb, B, P), rows_error(me + (size_t)B * P, emb + (size_t)B * P, B, P));
		check(mw <= ftol, "LoRA merged into the weights: the unmerged embeddings (worst relative L2)", mw, ftol);
		int left = 0; /* the head's modules stay */
		for (int k = 0; k < 2; k++)
			for (const cmr_hook *h = m->tower[k].hooks; h; h = h->next)
				left += h->point != CMR_HOOK_HEAD;
		check(left == 0, "merged: no module left on the layers", left, 0);
		free(me);
		cmr_clip_ws_free(mi);
		cmr_clip_ws_free(mt);
	}
	printf("%s\n", failures ? "FAILED" : "OK");
	fflush(stdout); /* before any sanitizer report at exit */
	for (int b = 0; b < B; b++)
		free(imgs[b]), free(toks[b]);
	free(imgs), free(toks), free(ilen), free(tlen), free(emb);
	cmr_step_ws_free(sw);
	cmr_clip_ws_free(ci);
	cmr_clip_ws_free(ct);
	cmr_clip_free(m);
	cmr_st_close(gold);
	return failures ? 1 : 0;
}
