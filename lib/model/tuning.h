/* model/tuning.h - a tuning of a frozen base model: what a parameter-efficient method adds
 * to the base (trainable prompts now: text prompts after the start token, vision prompts
 * after the class token, shallow or deep), its parameters in the model's table, and the
 * small directory it is saved as, in Hugging Face PEFT's layout (adapter_config.json,
 * adapter_model.safetensors; cmr-tuning(5)). The base's identity is checked when a tuning is
 * applied, and the identity of base + tuning is what the tuned towers then carry. Never
 * prints or exits. */
#ifndef CMR_MODEL_TUNING_H
#define CMR_MODEL_TUNING_H

#include <stddef.h>
#include <stdint.h>

#include "model/clip.h"

#define CMR_TUNING_FORMAT "cmr-tuning-1"
#define CMR_TUNING_CONFIG "adapter_config.json"
#define CMR_TUNING_TENSORS "adapter_model.safetensors"
#define CMR_TUNING_MAX_PROMPTS 1024
#define CMR_TUNING_MAX_POOL 1024 /* prompts in a pool */
#define CMR_TUNING_MAX_WIDTH 4096 /* an adapter's bottleneck */
#define CMR_TUNING_MAX_LEVELS 16  /* layers the head's modules read (CMR_LEVELS_MAX) */

typedef struct cmr_tuning {
	char method[32];        /* "prompts", "pool" (an instance-level prompt pool, issue 17) or
				 * "adapter" */
	int text_prompts;       /* rows after the start token (0: none) */
	int vision_prompts;     /* rows after the class token (0: none) */
	int deep;               /* a separate set per layer >= 1 */
	int logit_scale;        /* the logit scale is part of the tuning */
	/* pool: pool_size vision prompts of pool_length rows, each with a key [vision width];
	 * an image takes the pool_topk prompts whose keys are most similar (cosine) to its query
	 * (the frozen vision tower's pooled state after the final layer norm, before the
	 * projection), their rows after the class token in order of similarity */
	int pool_size, pool_length, pool_topk;
	/* adapter (issue 18): bottleneck adapters in every layer of the towers with a width,
	 * frozen base; type "parallel" (AdaptFormer: beside each MLP, reading its input, ReLU, a
	 * learnt scale from 0.1), "sequential" (Houlsby: on each attention and MLP block's
	 * output, GELU, a learnt scale from 1) or "lora" (W + B A on the attention's q, k, v and
	 * out projections, merged when applied); up projections (B) start at zero */
	char adapter_type[16];  /* or "none": the head's modules alone */
	int adapter_width[2];   /* the bottleneck per tower (enum cmr_tower); 0: none */
	/* and on both towers' heads (model/levels.h): multi-level attention over `levels`
	 * layers (0: none, else 2 or more) and injection from `inject` earlier layers with a
	 * cross-attention of width inject_width (cut to each tower's width) */
	int levels, inject, inject_width;
	char init[256];         /* the text prompts' initial phrase ("" : random) */
	char base[1024];        /* the base model's directory, as given */
	uint64_t base_hash[2];  /* the base towers' identity (0: not recorded, for a tower without prompts) */
} cmr_tuning;

/* Checks a tuning's lengths against a model's config: text prompts leave the start and end
 * tokens room in the context. Returns 0 or -1 with a message. */
int cmr_tuning_check(const cmr_tuning *t, const cmr_clip_cfg *cfg, char *err, size_t errlen);

/* Adds the tuning's parameters to m's table (before values are loaded): group prompt,
 * "prompt.text.embeddings" [n, width] in the text tower's prefix slot,
 * "prompt.vision.embeddings" likewise, and with deep "prompt.<tower>.layers.<l>" for l >= 1;
 * initialised N(0, 0.02) when absent from a checkpoint; flags CMR_PARAM_TRAIN to train them.
 * With t->logit_scale and train, the logit scale trains too. */
int cmr_tuning_add(cmr_clip *m, const cmr_tuning *t, int train, char *err, size_t errlen);

/* A pool's selection for B images from their queries [B, vision width] (cmr_batch.state of a
 * no_prefix pass): sel [B, pool_topk] the prompt ids, best first (ties: the lower id), and
 * score [B, pool_topk] (may be NULL) their keys' cosine with the query. The keys must be
 * loaded. Returns 0 or -1 (not a pool). */
int cmr_tuning_select(const cmr_clip *m, const cmr_tuning *t, const float *query, int B, int32_t *sel,
		      float *score);

/* Encodes B images with tuning t applied (NULL or not a pool: cmr_clip_encode_images): for a
 * pool, the query pass, the selection, then the prompted pass; sel (may be NULL) receives
 * the selection [B, pool_topk]. Returns 0 or -1. */
int cmr_tuning_encode_images(const cmr_clip *m, const cmr_tuning *t, const cmr_ops *ops, cmr_clip_ws *ws,
			     const uint8_t *const *pixels, int B, float *out, int32_t *sel);

/* L2P's key pull term for a pool: -lambda times the mean over the B images and their
 * pool_topk chosen prompts of cos(key, query). Returns it, and adds its gradient with respect
 * to the keys to their gradient array (when they train). The queries get none (the frozen
 * tower's). */
double cmr_tuning_pull(cmr_clip *m, const cmr_tuning *t, const float *query, const int32_t *sel, int B,
		       double lambda);

/* L2P's batch-wise selection, for training: the pool_topk prompts chosen most often over
 * the batch's B selections (ties: the lower id) replace every image's. */
void cmr_tuning_majority(const cmr_tuning *t, int32_t *sel, int B);

/* The objective of a training batch for tuning t (NULL: none) and its gradients: for a pool,
 * the query pass (the plain frozen tower, on s's image work space), each image's selection
 * (with majority, cmr_tuning_majority), the views over the prompted pass
 * (cmr_clip_views_grad) and the key pull term of weight pull; otherwise the views alone.
 * part (may be NULL): each view's loss, then the pull term (nviews + 1 values). Returns the
 * loss, or NAN. */
struct cmr_step_ws;
struct cmr_text_view;
double cmr_tuning_batch_grad(cmr_clip *m, const cmr_tuning *t, const cmr_ops *ops, struct cmr_step_ws *s,
			     const cmr_batch *img, const struct cmr_text_view *views, int nviews, double pull,
			     int majority, double *part);

/* The text prompts' first rows from token ids (a phrase's tokens, without the start and end
 * tokens): their token embeddings. The text tower must be loaded. */
int cmr_tuning_init_phrase(cmr_clip *m, const int32_t *ids, int n, char *err, size_t errlen);

/* Parses adapter_config.json's text (name: for messages), validating every field. */
int cmr_tuning_parse(const char *text, size_t len, const char *name, cmr_tuning *t, char *err, size_t errlen);
/* Reads DIR/adapter_config.json. */
int cmr_tuning_read(const char *dir, cmr_tuning *t, char *err, size_t errlen);

/* For the towers in mask, already loaded from the base: checks that the base is the one the
 * tuning was made for, reads the tuning's tensors from DIR/adapter_model.safetensors (every
 * one the tuning needs, nothing else, each of its shape and finite) and sets each tuned
 * tower's hash to the identity of base + tuning (base_hash keeps the base's). Returns 0 or
 * -1 naming the file. */
int cmr_tuning_load(cmr_clip *m, const cmr_tuning *t, const char *dir, unsigned mask, char *err, size_t errlen);

/* LoRA's adapters (type lora) merged into the attention weights they sit on, W += gain B A,
 * and detached: inference then costs what the base does. Other tunings: nothing. Returns 0
 * or -1 (out of memory). cmr_tuning_open does it. */
int cmr_tuning_merge(cmr_clip *m, const cmr_tuning *t, char *err, size_t errlen);

/* Opens base DIR with the tuning of TUNING_DIR for the towers in mask (config, table, the
 * tuning's parameters, base weights, tuning tensors); t receives the tuning's description. */
cmr_clip *cmr_tuning_open(const char *base, const char *tuning_dir, unsigned mask, cmr_tuning *t, char *err,
			  size_t errlen);

/* adapter_config.json's text for tuning t on m (the base hashes are m's towers'; training: a
 * JSON object of how it was trained, or NULL), malloc'd; NULL when out of memory. The
 * caller writes it (cmr-train: under a temporary name, renamed). */
char *cmr_tuning_config_json(const cmr_clip *m, const cmr_tuning *t, const char *training_json);
/* Writes the tuned tensors as F32 to path (adapter_model.safetensors), atomically (held: as
 * cmr_clip_save). */
int cmr_tuning_save_tensors(const cmr_clip *m, const cmr_tuning *t, const char *path, const char *metadata_json,
			    struct cmr_atomic *held, char *err, size_t errlen);

/* Whether parameter p is part of tuning t (what its file holds). */
int cmr_tuning_has(const cmr_tuning *t, const cmr_clip *m, const cmr_param *p);

#endif
