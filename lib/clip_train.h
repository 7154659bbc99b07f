/* clip_train.h - a trainable CLIP: every parameter of both towers and the logit scale in one
 * flat fp32 array (with a gradient array of the same layout), named as in Hugging Face's
 * CLIPModel state dict; initialised as transformers does or loaded from a checkpoint; a
 * forward pass that keeps the activations and the backward pass through them. The towers'
 * cmr_clip_tower views point into the array, so cmr_clip_encode_* (clip_model.h) run the
 * model being trained as it stands. Never prints or exits. */
#ifndef CMR_CLIP_TRAIN_H
#define CMR_CLIP_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "clip_model.h"

typedef struct cmr_param {
	char name[96];  /* the state dict's name */
	int tower;      /* enum cmr_tower, or -1 for the logit scale */
	int ndim;
	int64_t shape[4];
	size_t off, n;  /* into the flat arrays */
	int frozen;     /* not updated (set by the caller) */
	int decay;      /* weight decay applies: matrices and embeddings, not gains, biases or the scale */
	float init_std; /* initial values: normal with this deviation when > 0, else init_val */
	float init_val;
} cmr_param;

typedef struct cmr_clip_model {
	cmr_clip_cfg cfg;
	cmr_param *param;
	int nparam;
	size_t total;      /* floats in w and g */
	float *w, *g;      /* parameters, gradients */
	size_t logit_off;  /* the log logit scale's place in w */
	cmr_clip_tower tower[2]; /* views into w: [CMR_TOWER_VISION], [CMR_TOWER_TEXT] */
} cmr_clip_model;

/* The parameters of a model with this config, zeroed. NULL when out of memory. */
cmr_clip_model *cmr_clip_model_new(const cmr_clip_cfg *cfg);
void cmr_clip_model_free(cmr_clip_model *m);
/* transformers' CLIPPreTrainedModel._init_weights (initializer_factor 1, range 0.02): normal
 * weights of the stated deviations, zero biases, unit gains, logit scale ln(1 / 0.07); from
 * a seeded generator, so the same seed gives the same model on every machine. */
void cmr_clip_model_init(cmr_clip_model *m, uint64_t seed);
/* Loads every parameter from a safetensors file (F32, F16 or BF16); a missing logit_scale
 * gets ln(1 / 0.07). Returns 0, or -1 naming the tensor. */
int cmr_clip_model_load(cmr_clip_model *m, const char *path, char *err, size_t errlen);
/* Writes the parameters as F32 in the state dict's layout, atomically. */
int cmr_clip_model_save(const cmr_clip_model *m, const char *path, const char *metadata_json, char *err,
			size_t errlen);
/* The parameter called name, or NULL. */
cmr_param *cmr_clip_model_param(cmr_clip_model *m, const char *name);

/* Activations of one tower's forward pass, kept for its backward pass. */
typedef struct cmr_train_ws cmr_train_ws;
/* For batches up to max_batch samples (text: up to max_tokens tokens in all). */
cmr_train_ws *cmr_train_ws_new(const cmr_clip_model *m, int tower, int max_batch, int max_tokens);
void cmr_train_ws_free(cmr_train_ws *ws);

/* Forward passes keeping activations; out [B, proj] (raw projections, not normalised).
 * Return 0, or -1 for a batch that does not fit ws or a token id outside the vocabulary. */
int cmr_train_forward_images(const cmr_clip_model *m, const cmr_ops *ops, cmr_train_ws *ws,
			     const uint8_t *const *pixels, int B, float *out);
int cmr_train_forward_texts(const cmr_clip_model *m, const cmr_ops *ops, cmr_train_ws *ws,
			    const int32_t *const *ids, const int *lens, int B, float *out);
/* The backward pass of the last forward pass on ws, from dout [B, proj]: accumulates into
 * m->g the gradients of that tower's parameters. */
void cmr_train_backward(cmr_clip_model *m, const cmr_ops *ops, cmr_train_ws *ws, const float *dout);

/* The learning rate at step (0-based) of total: linear warm-up over warmup steps from
 * lr / warmup to lr, then a cosine down to min_lr at total (OpenCLIP's schedule). */
double cmr_lr_cosine(int64_t step, int64_t warmup, int64_t total, double lr, double min_lr);

/* The L2 norm of the gradients of the parameters that are not frozen; scales them by
 * max_norm / (norm + 1e-6) when that is below 1 and max_norm > 0 (torch's
 * clip_grad_norm_). Returns the norm before clipping. */
double cmr_clip_grad_norm(cmr_clip_model *m, double max_norm);

/* The loss of a batch of B pairs (image b with text b) and its gradients, accumulated into
 * m->g: both forward passes, the loss (CMR_LOSS_INFONCE with the model's logit scale, or
 * CMR_LOSS_VSE, VSE++'s hinge with the hardest negatives and margin), both backward passes
 * (a tower all of whose parameters are frozen is not walked back). emb is scratch of
 * 4 * B * proj floats. Returns the loss, or NAN for a batch that does not fit. */
enum { CMR_LOSS_INFONCE, CMR_LOSS_VSE };
double cmr_clip_batch_grad(cmr_clip_model *m, const cmr_ops *ops, cmr_train_ws *wi, cmr_train_ws *wt,
			   const uint8_t *const *pixels, const int32_t *const *ids, const int *lens, int B,
			   int loss, float margin, float *emb);

/* One AdamW step (t >= 1) on every parameter that is not frozen, with weight decay wd on
 * those that decay; mom and vel are the moments, laid out as m->w. Then the log logit
 * scale is clamped to [0, ln 100], as OpenCLIP does. */
void cmr_clip_adamw_step(cmr_clip_model *m, float *mom, float *vel, int64_t t, double lr, double beta1,
			 double beta2, double eps, double wd);

#endif
