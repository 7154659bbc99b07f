/* promptcheck.c - prompt tuning's numerics against the committed PyTorch goldens
 * (tests/golden/prompt, made by tests/ref/prompt_reference.py): for a base checkpoint, a
 * batch of paired image and token records and the golden's prompts (their lengths and depth
 * read from its tensors), it checks
 *   - the prompted forward pass of both towers: each embedding's |c - ref| / |ref| (L2),
 *   - the captions cut to make room for the text prompts: the reference's count,
 *   - the loss, and the gradient of every prompt tensor (relative L2 error per tensor),
 * each against the tolerance given (the forward's and the gradients').
 *
 *   promptcheck MODEL_DIR IMAGES.cmr TOKENS.cmr GOLDEN.safetensors BACKEND FWD_TOL GRAD_TOL
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

int main(int argc, char **argv)
{
	if (argc < 8) {
		fprintf(stderr, "usage: promptcheck MODEL_DIR IMAGES.cmr TOKENS.cmr GOLDEN.safetensors BACKEND FWD_TOL GRAD_TOL\n");
		return 2;
	}
	const cmr_ops *ops = cmr_ops_find(argv[5]);
	double ftol = atof(argv[6]), gtol = atof(argv[7]);
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
		if (p->group != CMR_GROUP_PROMPT)
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
	snprintf(what, sizeof what, "image embeddings, %d vision prompts%s (worst relative L2)", t.vision_prompts,
		 t.deep ? ", deep" : "");
	double e = rows_error(emb, ei->data, B, P);
	check(e <= ftol, what, e, ftol);
	snprintf(what, sizeof what, "text embeddings, %d text prompts%s (worst relative L2)", t.text_prompts,
		 t.deep ? ", deep" : "");
	e = rows_error(emb + (size_t)B * P, et->data, B, P);
	check(e <= ftol, what, e, ftol);
	const cmr_st_tensor *tr = cmr_st_get(gold, "truncated");
	int cut = cmr_clip_ws_layout(ct)->truncated, want = (int)*(const float *)tr->data;
	snprintf(what, sizeof what, "captions cut for the text prompts: %d, reference %d", cut, want);
	check(cut == want, what, fabs((double)cut - want), 0);

	cmr_step_ws *sw = cmr_step_ws_new(m, ops, B, total);
	cmr_batch bi = {.B = B, .pixels = px}, bt = {.B = B, .ids = ids, .lens = tlen};
	cmr_loss_term term = {cmr_loss_find("infonce"), 1.0, 0};
	cmr_clip_zero_grad(m);
	double L = cmr_clip_batch_grad(m, ops, sw, &bi, &bt, &term, 1);
	double Lr = *(const float *)cmr_st_get(gold, "loss")->data;
	check(fabs(L - Lr) <= ftol * fabs(Lr), "loss (relative error)", fabs(L - Lr) / fabs(Lr), ftol);
	double worst = 0;
	const char *worst_name = "";
	for (int i = 0; i < m->nparam; i++) {
		const cmr_param *p = &m->param[i];
		if (p->group != CMR_GROUP_PROMPT)
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
		double rel = sqrt(num / den);
		if (rel > worst)
			worst = rel, worst_name = p->name;
	}
	snprintf(what, sizeof what, "gradients of all %d prompt tensors (worst: %s)", nprompt, worst_name);
	check(worst <= gtol, what, worst, gtol);
	/* nothing but the prompts has a gradient */
	int others = 0;
	for (int i = 0; i < m->nparam; i++)
		others += m->param[i].g && m->param[i].group != CMR_GROUP_PROMPT;
	check(others == 0, "frozen base: no other parameter has a gradient", others, 0);
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
