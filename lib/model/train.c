/* model/train.c - the training step over the model core: the loss table, the batch's
 * gradients, clipping, AdamW on the trainable parameters, the schedule. */
#include "model/train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/grad.h"
#include "dist.h"

static double infonce(const cmr_loss_args *a)
{
	return cmr_infonce(a->img, a->txt, a->B, a->P, a->logit_scale, a->dimg, a->dtxt, a->dscale);
}

static double vse(const cmr_loss_args *a)
{
	return cmr_vse_hardest(a->img, a->txt, a->B, a->P, a->margin, a->dimg, a->dtxt);
}

static double soft_labels(const cmr_loss_args *a)
{
	return a->timg ? cmr_soft_labels(a->img, a->txt, a->B, a->P, a->logit_scale, a->timg, a->ttxt, a->tdim, a->alpha,
					 a->tau, a->dimg, a->dtxt, a->dscale)
		       : NAN;
}

static double selective(const cmr_loss_args *a)
{
	return a->timg ? cmr_selective(a->img, a->txt, a->B, a->P, a->logit_scale, a->timg, a->ttxt, a->tdim, a->tau,
				       a->dimg, a->dtxt, a->dscale)
		       : NAN;
}

static double relaxed_margin(const cmr_loss_args *a)
{
	return a->timg ? cmr_relaxed_margin(a->img, a->txt, a->B, a->P, a->timg, a->ttxt, a->tdim, a->sigma, a->margin,
					    a->dimg, a->dtxt)
		       : NAN;
}

static double distill_kl(const cmr_loss_args *a)
{
	return a->timg ? cmr_distill_kl(a->img, a->txt, a->B, a->P, a->logit_scale, a->timg, a->ttxt, a->tdim, a->tau,
					a->dimg, a->dtxt, a->dscale)
		       : NAN;
}

static double distill_mse(const cmr_loss_args *a)
{
	return a->timg && a->tdim == a->P ? cmr_distill_mse(a->img, a->txt, a->B, a->P, a->timg, a->ttxt, a->dimg, a->dtxt)
					  : NAN;
}

static double classwise(const cmr_loss_args *a)
{
	return a->labels ? cmr_supcon(a->img, a->txt, a->B, a->P, a->logit_scale, a->labels, a->dimg, a->dtxt, a->dscale)
			 : NAN;
}

static const cmr_loss loss_infonce = {"infonce", "CLIP's symmetric InfoNCE with the learnt logit scale", 1, infonce, 0};
static const cmr_loss loss_vse = {"vse", "VSE++ hinge with the hardest negatives (--margin)", 0, vse, 0};
static const cmr_loss loss_soft = {"soft-labels", "InfoNCE against (1 - alpha) I + alpha softmax(teacher / tau)", 1,
				   soft_labels, 1};
static const cmr_loss loss_sel = {"selective", "InfoNCE weighing down the pairs the teacher finds ambiguous", 1,
				  selective, 1};
static const cmr_loss loss_relaxed = {"relaxed-margin", "Kim et al.'s relaxed contrastive loss, the teacher's weights",
				      0, relaxed_margin, 1};
static const cmr_loss loss_kl = {"distill-kl", "KL of the teacher's similarity distributions from the student's", 1,
				 distill_kl, 1};
static const cmr_loss loss_mse = {"distill-mse", "squared distance to the teacher's unit embeddings", 0, distill_mse, 1};
static const cmr_loss loss_class = {"class", "supervised contrastive across modalities: a class's pairs are positives",
				    1, classwise, 2};
const cmr_loss *const cmr_losses[] = {&loss_infonce, &loss_vse, &loss_soft, &loss_sel, &loss_relaxed, &loss_kl,
				      &loss_mse, &loss_class, NULL};

const cmr_loss *cmr_loss_find(const char *name)
{
	for (int i = 0; cmr_losses[i]; i++)
		if (strcmp(cmr_losses[i]->name, name) == 0)
			return cmr_losses[i];
	return NULL;
}

void cmr_step_ws_free(cmr_step_ws *s)
{
	if (!s)
		return;
	cmr_clip_ws_free(s->ws[0]);
	cmr_clip_ws_free(s->ws[1]);
	free(s->emb);
	free(s);
}

cmr_step_ws *cmr_step_ws_new(const cmr_clip *m, const cmr_ops *ops, int max_batch, int max_tokens)
{
	cmr_step_ws *s = calloc(1, sizeof *s);
	if (!s)
		return NULL;
	s->max_batch = max_batch;
	int keep = m->recompute ? CMR_KEEP_RECOMPUTE : 1;
	s->ws[CMR_TOWER_VISION] = cmr_clip_ws_new(m, ops, CMR_TOWER_VISION, max_batch, 0, keep);
	s->ws[CMR_TOWER_TEXT] = cmr_clip_ws_new(m, ops, CMR_TOWER_TEXT, max_batch, max_tokens, keep);
	s->emb = malloc(6 * (size_t)max_batch * m->cfg.proj * sizeof *s->emb);
	if (!s->ws[0] || !s->ws[1] || !s->emb) {
		cmr_step_ws_free(s);
		return NULL;
	}
	return s;
}

int cmr_step_ws_fit(const cmr_clip *m, const cmr_ops *ops, int max_batch, int tokens_per_sample)
{
	for (int b = max_batch / 2; b >= 1; b /= 2) {
		cmr_step_ws *s = cmr_step_ws_new(m, ops, b, b * tokens_per_sample);
		if (s) {
			cmr_step_ws_free(s);
			return b;
		}
	}
	return 0;
}

/* the weighted terms of one view over img [n, P] and txt [n, P]: gradients into dimg, dtxt
 * (zeroed first), the logit scale's into its g */
static double view_terms(cmr_clip *m, const cmr_text_view *v, const float *img, const float *txt, int n, int P,
			 float *dimg, float *dtxt, int own_scale)
{
	cmr_param *ls = &m->param[m->logit];
	memset(dimg, 0, (size_t)n * P * sizeof *dimg);
	memset(dtxt, 0, (size_t)n * P * sizeof *dtxt);
	float *wbuf = NULL;
	for (int i = 0; i < v->nterms && !wbuf; i++) /* one buffer for every weighted term */
		if (v->terms[i].weight != 1 && !(wbuf = calloc(2 * (size_t)n * P, sizeof *wbuf)))
			return NAN;
	double L = 0;
	float scale = cmr_clip_get1(m, ls), gscale = ls->g && own_scale ? cmr_clip_grad_get1(m, ls) : 0;
	for (int i = 0; i < v->nterms; i++) {
		const cmr_loss_term *tm = &v->terms[i];
		int w = tm->weight != 1; /* a weighted term's gradients, then scaled in */
		float *gi = w ? wbuf : dimg, *gt = w ? wbuf + (size_t)n * P : dtxt, dscale = 0;
		if (w)
			memset(wbuf, 0, 2 * (size_t)n * P * sizeof *wbuf);
		cmr_loss_args a = {.img = img, .txt = txt, .B = n, .P = P, .logit_scale = scale, .margin = tm->margin,
				   .alpha = tm->alpha, .tau = tm->tau, .sigma = tm->sigma, .timg = v->timg, .ttxt = v->ttxt,
				   .tdim = v->tdim, .labels = v->labels, .dimg = gi, .dtxt = gt, .dscale = &dscale};
		L += tm->weight * tm->loss->fn(&a);
		if (w)
			for (size_t j = 0; j < (size_t)n * P; j++) {
				dimg[j] += (float)tm->weight * wbuf[j];
				dtxt[j] += (float)tm->weight * wbuf[(size_t)n * P + j];
			}
		if (ls->g && own_scale)
			gscale += (float)tm->weight * dscale;
	}
	if (ls->g && own_scale)
		cmr_clip_grad_set1(m, ls, gscale);
	free(wbuf);
	return L;
}

double cmr_clip_views_grad(cmr_clip *m, const cmr_ops *ops, cmr_step_ws *s, const cmr_batch *img,
			   const cmr_text_view *views, int nviews, double *part)
{
	int P = m->cfg.proj, B = img->B;
	if (B > s->max_batch)
		return NAN;
	size_t bp = (size_t)B * P;
	float *ei = s->emb, *di = ei + bp, *vi = di + bp, *vdi = vi + bp, *et = vdi + bp, *dt = et + bp;
	/* this rank's images [i0, i1): all of them in one process */
	const cmr_dist *dd = s->dist && s->dist->size > 1 ? s->dist : NULL;
	int i0 = 0, i1 = B;
	if (dd) {
		cmr_dist_slice(B, dd->size, dd->rank, &i0, &i1);
		if (img->prefix_sel || i1 <= i0)
			return NAN;
	}
	cmr_batch lb = *img;
	lb.B = i1 - i0, lb.pixels = img->pixels + i0;
	if (cmr_clip_forward(m, CMR_TOWER_VISION, ops, s->ws[CMR_TOWER_VISION], &lb, ei + (size_t)i0 * P) < 0)
		return NAN;
	if (dd && cmr_dist_gather_rows(dd, ei, B, P) < 0)
		return NAN;
	memset(di, 0, bp * sizeof *di);
	int text_trains = cmr_clip_tower_trains(m, CMR_TOWER_TEXT);
	double L = 0;
	for (int v = 0; v < nviews; v++) {
		const cmr_text_view *w = &views[v];
		int n = w->txt->B;
		if (part)
			part[v] = 0;
		if (n > B || (!w->row && n != B))
			return NAN;
		if (n < 2)
			continue;
		for (int j = 0; w->row && j < n; j++) {
			if (w->row[j] < 0 || w->row[j] >= B)
				return NAN;
			memcpy(vi + (size_t)j * P, ei + (size_t)w->row[j] * P, (size_t)P * sizeof *vi);
		}
		int j0 = 0, j1 = n; /* this rank's texts */
		if (dd) {
			cmr_dist_slice(n, dd->size, dd->rank, &j0, &j1);
			if (w->txt->prefix_sel)
				return NAN;
		}
		cmr_batch lt = *w->txt;
		lt.B = j1 - j0, lt.ids = w->txt->ids + j0, lt.lens = w->txt->lens + j0;
		if (lt.B > 0 && cmr_clip_forward(m, CMR_TOWER_TEXT, ops, s->ws[CMR_TOWER_TEXT], &lt, et + (size_t)j0 * P) < 0)
			return NAN;
		if (dd && cmr_dist_gather_rows(dd, et, n, P) < 0)
			return NAN;
		double l = view_terms(m, w, w->row ? vi : ei, et, n, P, vdi, dt, !dd || dd->rank == 0);
		if (!isfinite(l))
			return NAN;
		L += l;
		if (part)
			part[v] = l;
		for (int j = 0; j < n; j++) {
			float *to = di + (size_t)(w->row ? w->row[j] : j) * P, *from = vdi + (size_t)j * P;
			for (int p = 0; p < P; p++)
				to[p] += from[p];
		}
		if (text_trains && lt.B > 0)
			cmr_clip_backward(m, CMR_TOWER_TEXT, ops, s->ws[CMR_TOWER_TEXT], dt + (size_t)j0 * P);
	}
	if (cmr_clip_tower_trains(m, CMR_TOWER_VISION))
		cmr_clip_backward(m, CMR_TOWER_VISION, ops, s->ws[CMR_TOWER_VISION], di + (size_t)i0 * P);
	return L;
}

double cmr_clip_batch_grad(cmr_clip *m, const cmr_ops *ops, cmr_step_ws *s, const cmr_batch *img,
			   const cmr_batch *txt, const cmr_loss_term *terms, int nterms)
{
	if (txt->B != img->B)
		return NAN;
	cmr_text_view v = {.txt = txt, .terms = terms, .nterms = nterms};
	return cmr_clip_views_grad(m, ops, s, img, &v, 1, NULL);
}

double cmr_clip_grad_norm(cmr_clip *m, const cmr_ops *ops, double max_norm)
{
	/* one array, in table order; the gaps between parameters are zero */
	if (!m->grad)
		return 0;
	double norm = sqrt(ops->sumsq(m->grad, m->ntrain)), coef = max_norm / (norm + 1e-6);
	if (max_norm > 0 && coef < 1)
		ops->scale(m->grad, m->ntrain, (float)coef);
	return norm;
}

void cmr_clip_adamw_step(cmr_clip *m, const cmr_ops *ops, float *mom, float *vel, int64_t t, double lr,
			 double beta1, double beta2, double eps, double wd)
{
	for (int i = 0; i < m->nparam; i++) {
		cmr_param *p = &m->param[i];
		if (!p->g)
			continue;
		ops->adamw(p->dev ? p->dev : p->w, p->g, mom + p->at, vel + p->at, p->n, (float)lr, (float)beta1, (float)beta2, (float)eps,
			  p->flags & CMR_PARAM_DECAY ? (float)wd : 0.0f, t);
	}
	cmr_param *ls = &m->param[m->logit];
	if (ls->g) {
		float v = cmr_clip_get1(m, ls), c = v < 0 ? 0 : v > (float)log(100.0) ? (float)log(100.0) : v;
		if (c != v)
			cmr_clip_set1(m, ls, c);
	}
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
