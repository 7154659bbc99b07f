/* traincheck.c - cmr-train's numerics against the committed PyTorch debug state, as llm.c's
 * test_gpt2.c: for a checkpoint and a batch of paired image and token records it checks
 *   - the forward pass keeping activations against the inference one (identical: max abs 0),
 *   - the loss and every parameter's gradient against tests/ref/train_reference.py's:
 *     |c - ref| / max(|ref|, 1e-3 |all ref|) <= 1e-3 per tensor (L2 norms; the floor is for
 *     gradients that are zero in exact arithmetic, as the key bias's: softmax does not see a
 *     constant added to every score, so the reference's is 1e-16 and ours float noise), and
 *     the rows of token ids not in the batch exactly zero,
 *   - the losses of 10 AdamW steps (warm-up 2, cosine to 0 at 10, lr 1e-3, clip 1) against
 *     the reference's, each within 1e-3 relative.
 *
 *   traincheck MODEL_DIR IMAGES.cmr TOKENS.cmr DEBUG.safetensors [ref|blas]
 * Prints one line per check; exit 0 when all pass, 1 otherwise. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/train.h"
#include "format/safetensors.h"
#include "format/stream.h"
#include "records.h"

static int failures;

static void check(int ok, const char *fmt, const char *what, double v, double tol)
{
	printf("%s: %-60s ", ok ? "ok  " : "FAIL", what);
	printf(fmt, v, tol);
	printf("\n");
	failures += !ok;
}

int main(int argc, char **argv)
{
	if (argc < 5) {
		fprintf(stderr, "usage: traincheck MODEL_DIR IMAGES.cmr TOKENS.cmr DEBUG.safetensors [ref|blas]\n");
		return 2;
	}
	const cmr_ops *ops = cmr_ops_find(argc > 5 ? argv[5] : "ref");
	char err[1024], path[4096], what[256];
	cmr_clip_cfg cfg;
	if (!ops || cmr_clip_cfg_load(argv[1], &cfg, err, sizeof err) < 0) {
		fprintf(stderr, "traincheck: %s\n", ops ? err : "unknown backend");
		return 1;
	}
	cmr_clip *m = cmr_clip_new(&cfg);
	snprintf(path, sizeof path, "%s/model.safetensors", argv[1]);
	for (int i = 0; m && i < m->nparam; i++)
		m->param[i].flags |= CMR_PARAM_TRAIN;
	if (!m || cmr_clip_load(m, path, CMR_TOWERS_BOTH, 0, err, sizeof err) < 0 || cmr_clip_grads(m) < 0) {
		fprintf(stderr, "traincheck: %s\n", m ? err : "out of memory");
		return 1;
	}
	void **imgs, **toks;
	int *ilen, *tlen;
	int B = read_all(argv[2], &imgs, &ilen), ntok = read_all(argv[3], &toks, &tlen);
	cmr_st *dbg = cmr_st_open(argv[4], err, sizeof err);
	if (B != ntok || B < 1 || !dbg) {
		fprintf(stderr, "traincheck: %s\n", dbg ? "the streams do not pair up" : err);
		return 1;
	}
	int P = cfg.proj, total_tokens = 0;
	for (int b = 0; b < B; b++)
		total_tokens += tlen[b];
	cmr_step_ws *sw = cmr_step_ws_new(m, ops, B, total_tokens);
	float *emb = malloc(4 * (size_t)B * P * sizeof *emb), *e2 = malloc(2 * (size_t)B * P * sizeof *e2);
	const uint8_t *const *px = (const uint8_t *const *)imgs;
	const int32_t *const *ids = (const int32_t *const *)toks;

	/* the training forward pass is the inference one */
	cmr_clip_ws *ci = cmr_clip_ws_new(m, ops, CMR_TOWER_VISION, B, 0, 0);
	cmr_clip_ws *ct = cmr_clip_ws_new(m, ops, CMR_TOWER_TEXT, B, total_tokens, 0);
	cmr_clip_encode_images(m, ops, ci, px, B, e2);
	cmr_clip_encode_texts(m, ops, ct, ids, tlen, B, e2 + (size_t)B * P);
	cmr_batch bi = {.B = B, .pixels = px}, bt = {.B = B, .ids = ids, .lens = tlen};
	cmr_clip_forward(m, CMR_TOWER_VISION, ops, sw->ws[CMR_TOWER_VISION], &bi, emb);
	cmr_clip_forward(m, CMR_TOWER_TEXT, ops, sw->ws[CMR_TOWER_TEXT], &bt, emb + (size_t)B * P);
	double md = 0;
	for (size_t i = 0; i < 2 * (size_t)B * P; i++)
		md = fmax(md, fabs(emb[i] - e2[i]));
	check(md == 0, "%-10.3g (== %g)", "forward keeping activations = inference forward (max abs diff)", md, 0);
	cmr_loss_term term = {.loss = cmr_loss_find("infonce"), .weight = 1.0, .margin = 0};

	/* loss and gradients */
	cmr_clip_zero_grad(m);
	double L = cmr_clip_batch_grad(m, ops, sw, &bi, &bt, &term, 1);
	const cmr_st_tensor *t = cmr_st_get(dbg, "loss");
	double Lr = *(const float *)t->data;
	check(fabs(L - Lr) <= 1e-5 * fabs(Lr), "%-10.3g (<= %g)", "loss (relative error)", fabs(L - Lr) / fabs(Lr), 1e-5);
	double worst = 0, all = 0;
	const char *worst_name = "";
	for (size_t i = 0; i < cmr_st_count(dbg); i++) {
		t = cmr_st_at(dbg, i);
		if (strncmp(t->name, "grad.", 5) == 0)
			for (size_t j = 0; j < t->nbytes / 4; j++)
				all += (double)((const float *)t->data)[j] * ((const float *)t->data)[j];
	}
	all = sqrt(all);
	for (int i = 0; i < m->nparam; i++) {
		const cmr_param *p = &m->param[i];
		snprintf(what, sizeof what, "grad.%s", p->name);
		t = cmr_st_get(dbg, what);
		if (!t) {
			check(0, "", what, 0, 0);
			continue;
		}
		const float *gr = t->data, *gc = p->g;
		double num = 0, den = 0;
		if (strcmp(p->name, "text_model.embeddings.token_embedding.weight") == 0) {
			snprintf(what, sizeof what, "rows.%s", p->name);
			const cmr_st_tensor *rt = cmr_st_get(dbg, what);
			int64_t D = p->shape[1], nr = rt ? rt->shape[0] : 0;
			const unsigned char *rows = rt ? rt->data : NULL; /* i64, maybe not 8-aligned */
			char *used = calloc((size_t)p->shape[0], 1);
			for (int64_t r = 0; r < nr; r++) {
				int64_t id;
				memcpy(&id, rows + 8 * r, 8);
				used[id] = 1;
				for (int64_t d = 0; d < D; d++) {
					double a = gc[id * D + d], b = gr[r * D + d];
					num += (a - b) * (a - b);
					den += b * b;
				}
			}
			int zero = 1;
			for (int64_t r = 0; r < p->shape[0]; r++)
				for (int64_t d = 0; !used[r] && d < D; d++)
					zero &= gc[r * D + d] == 0;
			free(used);
			check(zero, "", "token embedding: rows of unused ids have no gradient", 1, 0);
		} else {
			for (size_t j = 0; j < p->n; j++) {
				num += ((double)gc[j] - gr[j]) * ((double)gc[j] - gr[j]);
				den += (double)gr[j] * gr[j];
			}
		}
		double rel = sqrt(num) / fmax(sqrt(den), 1e-3 * all);
		if (rel > worst)
			worst = rel, worst_name = p->name;
		if (rel > 1e-3) {
			snprintf(what, sizeof what, "grad %s", p->name);
			check(0, "%-10.3g (<= %g)", what, rel, 1e-3);
		}
	}
	snprintf(what, sizeof what, "all %d gradients (worst: %s)", m->nparam, worst_name);
	check(worst <= 1e-3, "%-10.3g (<= %g)", what, worst, 1e-3);

	/* 10 AdamW steps on the same batch */
	t = cmr_st_get(dbg, "losses");
	const float *lr10 = t ? t->data : NULL;
	float *mom = calloc(m->ntrain, sizeof *mom), *vel = calloc(m->ntrain, sizeof *vel);
	for (int step = 0; step < 10 && lr10; step++) {
		cmr_clip_zero_grad(m);
		L = cmr_clip_batch_grad(m, ops, sw, &bi, &bt, &term, 1);
		cmr_clip_grad_norm(m, ops, 1.0);
		cmr_clip_adamw_step(m, ops, mom, vel, step + 1, cmr_lr_cosine(step, 2, 10, 1e-3, 0), 0.9, 0.98, 1e-6, 0.2);
		double rel = fabs(L - lr10[step]) / fabs(lr10[step]);
		snprintf(what, sizeof what, "step %d loss %.6f, reference %.6f (relative error)", step, L, (double)lr10[step]);
		check(rel <= 1e-3, "%-10.3g (<= %g)", what, rel, 1e-3);
	}
	if (!lr10)
		check(0, "", "losses missing from the debug state", 0, 0);
	printf("%s\n", failures ? "FAILED" : "OK");
	cmr_st_close(dbg);
	cmr_clip_ws_free(ci);
	cmr_clip_ws_free(ct);
	cmr_step_ws_free(sw);
	cmr_clip_free(m);
	for (int b = 0; b < B; b++)
		free(imgs[b]), free(toks[b]);
	free(imgs), free(toks), free(ilen), free(tlen), free(emb), free(e2), free(mom), free(vel);
	return failures ? 1 : 0;
}
