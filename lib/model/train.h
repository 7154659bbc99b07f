/* model/train.h - what a training step does with the model core: the loss terms over a
 * batch's [B, P] embeddings (a table, so that new losses plug in), the batch's loss and
 * gradients through both towers, gradient clipping, AdamW on the trainable parameters only,
 * and the learning-rate schedule. Never prints or exits. */
#ifndef CMR_MODEL_TRAIN_H
#define CMR_MODEL_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "model/clip.h"

/* A loss over raw embeddings img [B, P], txt [B, P] (pair i is row i of both): returns the
 * loss and accumulates dimg, dtxt and *dscale (the gradient of the log logit scale). */
typedef struct cmr_loss_args {
	const float *img, *txt;
	int B, P;
	float logit_scale; /* log of the logit scale */
	float margin;      /* vse's margin; relaxed-margin's delta */
	float alpha, tau, sigma; /* the soft terms' (cmr_loss_term) */
	const float *timg, *ttxt; /* a teacher's embeddings of the same pairs [B, tdim], or NULL */
	int tdim;
	const int *labels;        /* the pairs' classes [B] (class-wise terms), or NULL */
	float *dimg, *dtxt, *dscale;
} cmr_loss_args;

typedef struct cmr_loss {
	const char *name;
	const char *what;  /* one line for --help and the man page */
	int uses_scale;    /* reads the logit scale (so it is trained with it) */
	double (*fn)(const cmr_loss_args *a);
	int teacher;       /* needs a teacher's embeddings (NAN without; distill-mse: of width P);
			    * 2: the pairs' classes instead */
} cmr_loss;

/* The losses, NULL-terminated: "infonce" (CLIP's symmetric cross-entropy with the learnt
 * logit scale), "vse" (VSE++'s hinge with the hardest negatives), and those that learn from
 * a teacher's embeddings (backend/grad.h: Zeng et al.'s soft contrastive transfer, CLIP-KD):
 * "soft-labels" (alpha, tau), "selective" (tau), "relaxed-margin" (sigma, margin = delta),
 * "distill-kl" (tau), "distill-mse"; and from the pairs' classes, "class" (supervised
 * contrastive across modalities). */
extern const cmr_loss *const cmr_losses[];
const cmr_loss *cmr_loss_find(const char *name);

/* A weighted term of the training objective. */
typedef struct cmr_loss_term {
	const cmr_loss *loss;
	double weight;
	float margin;
	float alpha, tau, sigma; /* the soft terms' parameters (cmr_loss_args) */
} cmr_loss_term;

/* One set of texts aligned with a batch's images by its own terms: the captions (text j with
 * image j), or the descriptions of one perspective (APSE-IPIK's global, background, entities),
 * which some images may lack: text j then goes with image row[j]. */
typedef struct cmr_text_view {
	const cmr_batch *txt;
	const int *row;            /* txt->B image rows, distinct; NULL: text j with image j (B texts) */
	const cmr_loss_term *terms;
	int nterms;
	const float *timg, *ttxt;  /* a teacher's embeddings of the view's images and texts
				    * [txt->B, tdim] (the teacher terms'), or NULL */
	int tdim;
	const int *labels;         /* the view's pairs' classes [txt->B] (class-wise terms), or NULL */
} cmr_text_view;

/* The work of a batch: both towers' work spaces (keeping activations) and the embeddings. */
typedef struct cmr_step_ws {
	cmr_clip_ws *ws[2];
	float *emb; /* 6 * B * proj: the images' embeddings and gradients; a view's image rows,
		     * their gradients, its texts' embeddings and gradients */
	int max_batch;
	/* data parallel (NULL or one process: the whole batch here): this rank's towers take its
	 * slice of the images and of each view's texts (cmr_dist_slice); the embeddings are
	 * gathered, every rank computes the whole batch's terms, and the towers' backward passes
	 * take their slices' gradients: summed over the ranks (cmr_dist_sum of m->grad), the
	 * gradients are the whole batch's. The terms' own gradients (the logit scale's) are
	 * added on rank 0 only. A pool's selected prompts (prefix_sel) are not sliced. */
	const struct cmr_dist *dist;
} cmr_step_ws;
cmr_step_ws *cmr_step_ws_new(const cmr_clip *m, const cmr_ops *ops, int max_batch, int max_tokens);
void cmr_step_ws_free(cmr_step_ws *s);
/* After cmr_step_ws_new(max_batch) failed: the largest max_batch / 2^k that allocates, or 0. */
int cmr_step_ws_fit(const cmr_clip *m, const cmr_ops *ops, int max_batch, int tokens_per_sample);

/* The objective of a batch of B images and its gradients, accumulated into the trainable
 * parameters' g: the image pass, then for each view its text pass, its weighted terms over
 * its texts and their images, and the text tower's backward pass (when something in it
 * trains) before the next view's; last the image tower's backward pass with every view's
 * gradient. part (when not NULL) receives each view's weighted loss. Returns the
 * loss, or NAN for a batch that does not fit. A view of fewer than 2 texts adds nothing. */
double cmr_clip_views_grad(cmr_clip *m, const cmr_ops *ops, cmr_step_ws *s, const cmr_batch *img,
			   const cmr_text_view *views, int nviews, double *part);

/* The same with the one view of B pairs, image b with text b. */
double cmr_clip_batch_grad(cmr_clip *m, const cmr_ops *ops, cmr_step_ws *s, const cmr_batch *img,
			   const cmr_batch *txt, const cmr_loss_term *terms, int nterms);

/* The L2 norm of the trainable parameters' gradients; scales them by max_norm / (norm +
 * 1e-6) when that is below 1 and max_norm > 0 (torch's clip_grad_norm_). Returns the norm
 * before clipping. */
double cmr_clip_grad_norm(cmr_clip *m, const cmr_ops *ops, double max_norm);

/* One AdamW step (t >= 1) on the trainable parameters, with weight decay wd on those that
 * decay; mom and vel are the moments, m->ntrain floats each (a parameter's at p->at). Then
 * the log logit scale is clamped to [0, ln 100], as OpenCLIP does. */
void cmr_clip_adamw_step(cmr_clip *m, const cmr_ops *ops, float *mom, float *vel, int64_t t, double lr,
			 double beta1, double beta2, double eps, double wd);

/* The learning rate at step (0-based) of total: linear warm-up over warmup steps from
 * lr / warmup to lr, then a cosine down to min_lr at total (OpenCLIP's schedule). */
double cmr_lr_cosine(int64_t step, int64_t warmup, int64_t total, double lr, double min_lr);

#endif
