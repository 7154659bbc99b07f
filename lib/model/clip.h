/* model/clip.h - the CLIP model core: one parameter table (the only description of the
 * architecture), one loader, initialiser and writer, and one forward pass (inference is the
 * training forward without keeping activations) with one backward pass, over a batch
 * layout computed once, with hook points where optional modules add their contribution.
 * Written over the backend table (backend.h). Never prints or exits. The design is
 * lib/model/README.md. */
#ifndef CMR_MODEL_CLIP_H
#define CMR_MODEL_CLIP_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"

enum cmr_act { CMR_ACT_QUICK_GELU, CMR_ACT_GELU, CMR_ACT_RELU }; /* ReLU: modules only (AdaptFormer) */
enum cmr_tower { CMR_TOWER_VISION, CMR_TOWER_TEXT };
#define CMR_TOWERS_BOTH ((1u << CMR_TOWER_VISION) | (1u << CMR_TOWER_TEXT))

typedef struct cmr_tower_cfg {
	int width;      /* hidden_size */
	int layers;     /* num_hidden_layers */
	int heads;      /* num_attention_heads */
	int mlp;        /* intermediate_size */
	int act;        /* enum cmr_act */
	float eps;      /* layer_norm_eps */
	int image_size, patch_size; /* vision (0 for text) */
	int vocab, context;         /* text: vocab_size, max_position_embeddings (0 for vision) */
	int features;   /* vision: 0 for pixels; F > 0: the input is a feature vector of F floats (a frozen,
			 * precomputed image tower's, as in LiT), embedded by a linear map as the one
			 * "patch", without a class token; pooled at that row */
} cmr_tower_cfg;

/* how a checkpoint names and lays out its tensors */
enum cmr_ckpt_layout {
	CMR_LAYOUT_HF,       /* transformers' CLIPModel: config.json, model.safetensors */
	CMR_LAYOUT_OPENCLIP, /* OpenCLIP / OpenAI state dict: open_clip_config.json,
			      * open_clip_model.safetensors (attention's q, k, v fused as in_proj,
			      * the projections stored transposed) */
};

typedef struct cmr_clip_cfg {
	cmr_tower_cfg vision, text;
	int proj;              /* projection_dim */
	float mean[3], std[3]; /* image normalisation */
	int layout;            /* enum cmr_ckpt_layout: which checkpoint files, which tensor names */
} cmr_clip_cfg;

/* The weights file of a checkpoint of this config: model.safetensors, or
 * open_clip_model.safetensors. */
const char *cmr_clip_weights_name(const cmr_clip_cfg *cfg);
/* transformers' config.json (CLIPConfig) of cfg, malloc'd, or NULL when out of memory: what
 * a checkpoint cmr-train writes from an OpenCLIP base says. */
char *cmr_clip_cfg_hf_json(const cmr_clip_cfg *cfg);

/* Where the model -m names is: a checkpoint directory (config.json, model.safetensors), a
 * config.json itself, or a Hugging Face hub id (ORG/NAME) found in the local cache
 * (HF_HUB_CACHE, HF_HOME/hub or ~/.cache/huggingface/hub: models--ORG--NAME/snapshots/REV,
 * REV from refs/main; offline). Anything else gets a message saying what was found and what
 * to do (an OpenCLIP layout, pickle weights only, a weights file given for the directory).
 * Returns 0 with the path in out, or -1. */
int cmr_model_resolve(const char *arg, char *out, size_t cap, char *err, size_t errlen);
/* Reads DIR/config.json (and DIR/preprocessor_config.json for mean/std); OpenAI's values
 * for what is absent. dir may also be a config.json file itself (OpenAI's mean and std).
 * Every field is set. Returns 0 or -1 with a message. */
int cmr_clip_cfg_load(const char *dir, cmr_clip_cfg *cfg, char *err, size_t errlen);
/* The config.json part of it from text (path names it in messages): every field range-
 * checked, OpenAI's mean and std. */
#define CMR_CONFIG_MAX (1 << 20)
int cmr_clip_cfg_parse(const char *text, size_t len, const char *path, cmr_clip_cfg *cfg, char *err, size_t errlen);
/* The same for an OpenCLIP open_clip_config.json ({"model_cfg": {"embed_dim", "quick_gelu",
 * "vision_cfg", "text_cfg"}, "preprocess_cfg": {"mean", "std"}}) of a CLIP ViT: towers
 * OpenCLIP builds otherwise (timm or Hugging Face towers, ResNets, attentional pooling,
 * layer scale, ...) are refused, naming the field. */
int cmr_clip_cfg_parse_openclip(const char *text, size_t len, const char *path, cmr_clip_cfg *cfg, char *err,
				size_t errlen);
/* Rows of a vision sequence without extra rows: the class token and the patches (a
 * features tower: the one feature row). */
int cmr_clip_vision_seq(const cmr_tower_cfg *c);
/* Patches of one image (1 for a features tower) and the values of one patch (3 P^2, or F). */
int cmr_clip_vision_patches(const cmr_tower_cfg *c);
int cmr_clip_patch_dim(const cmr_tower_cfg *c);

/* ---- the parameter table ---- */
/* What a parameter belongs to: selection by group (--train, tools), reporting. */
enum cmr_group { CMR_GROUP_VISION, CMR_GROUP_TEXT, CMR_GROUP_HEAD, CMR_GROUP_PROMPT, CMR_GROUP_ADAPTER, CMR_NGROUP };
const char *cmr_group_name(int group);

enum {
	CMR_PARAM_TRAIN = 1,    /* trained: gets a gradient and optimiser moments, owned writable copy */
	CMR_PARAM_OPTIONAL = 2, /* may be absent from a checkpoint: then initialised */
	CMR_PARAM_DECAY = 4,    /* AdamW's weight decay applies (matrices and embeddings) */
};

/* The tensors of a tower outside its layers, and of a layer: a parameter is bound to one of
 * these slots of its tower's view (or to none: slot -1, used by a module through its own
 * pointer). */
enum {
	CMR_T_CLASS, CMR_T_PATCH, CMR_T_PRE_LN_W, CMR_T_PRE_LN_B, /* vision embeddings */
	CMR_T_TOKEN,                                              /* text embeddings */
	CMR_T_POS,                                                /* both */
	CMR_T_FINAL_LN_W, CMR_T_FINAL_LN_B,                       /* post_layernorm / final_layer_norm */
	CMR_T_PROJ,                                               /* visual_ / text_projection */
	CMR_T_PREFIX,                                             /* extra prefix rows [n, width] */
	CMR_T_N
};
enum {
	CMR_L_LN1_W, CMR_L_LN1_B, CMR_L_Q_W, CMR_L_Q_B, CMR_L_K_W, CMR_L_K_B, CMR_L_V_W, CMR_L_V_B, CMR_L_O_W,
	CMR_L_O_B, CMR_L_LN2_W, CMR_L_LN2_B, CMR_L_FC1_W, CMR_L_FC1_B, CMR_L_FC2_W, CMR_L_FC2_B,
	CMR_L_PROMPT, /* deep prompts [nprefix, width]: replace the prefix rows of layer l's input (l >= 1) */
	CMR_L_N
};

typedef struct cmr_param {
	char name[112];   /* the state dict's name */
	int group;        /* enum cmr_group */
	int tower;        /* the tower whose forward pass reads it, or -1 (the loss's logit scale) */
	int layer, slot;  /* its place in the tower's view: layer -1 for the tower's own tensors */
	int ndim;
	int64_t shape[4];
	size_t n;
	unsigned flags;   /* CMR_PARAM_* */
	float init_std;   /* initial values: normal with this deviation when > 0, else init_val */
	float init_val;
	float *w;         /* the values (NULL until loaded); in the checkpoint's mapping when frozen F32 */
	float *g;         /* the gradient: trainable parameters only, after cmr_clip_grads */
	size_t at;        /* offset of g in m->grad (and of the moments in an optimiser's arrays) */
	int owned;        /* w is ours to free */
	float *dev;       /* w's copy in the memory of a backend without CMR_OPS_HOST, where the
			   * model is placed (cmr_clip_place), or NULL: then the passes read w */
} cmr_param;

/* One layer's weights and gradients (NULL where frozen), PyTorch Linear layout (out, in). */
typedef struct cmr_layer {
	const float *w[CMR_L_N];
	float *g[CMR_L_N];
} cmr_layer;

typedef struct cmr_hook cmr_hook;
typedef struct cmr_layout cmr_layout;

/* A tower as the forward pass reads it: views into the parameter table. */
typedef struct cmr_clip_tower {
	int kind; /* enum cmr_tower */
	cmr_tower_cfg cfg;
	int proj;
	float mean[3], std[3];
	const float *w[CMR_T_N];
	float *g[CMR_T_N];
	cmr_layer *layer;
	int nprefix;      /* extra prefix rows per sample (CMR_T_PREFIX), 0 without */
	int prefix_len;   /* > 0: the prefix table is a pool of prompts of this many rows, of which
			   * each sample takes prefix_k (cmr_batch.prefix_sel): nprefix = k * len */
	int prefix_k;
	int prefix_table; /* rows of the CMR_T_PREFIX parameter (the pool: prompts x prefix_len) */
	cmr_hook *hooks;  /* modules attached to this tower's layers, or NULL */
	int grad_from;    /* the lowest depth a gradient is needed at (see cmr_clip_grads) */
	char name[256];   /* model directory's last component */
	uint64_t hash;    /* its identity: the base's, or that of base + tuning (model/tuning.h) */
	uint64_t base_hash; /* XXH3-64 of the config and of this tower's own tensors (not a module's) */
} cmr_clip_tower;

typedef struct cmr_clip {
	cmr_clip_cfg cfg;
	cmr_param *param;
	int nparam, cap;
	unsigned towers;  /* the towers loaded (1 << enum cmr_tower) */
	unsigned hashed;  /* the towers whose identity (hash, base_hash) is known: the loaded ones,
			   * and those whose tensors the loaded file holds */
	int recompute;    /* training work spaces keep only the residual stream and recompute q, k,
			   * v and fc1's output in the backward pass (lean work spaces only: no
			   * layer weight trains) */
	int logit;        /* index of logit_scale */
	size_t ntrain;    /* floats in trainable parameters: the size of grad and of the moments */
	float *grad;      /* in the placed backend's memory when placed */
	const cmr_ops *placed; /* the backend without CMR_OPS_HOST holding copies of the values and
				* the gradients (cmr_clip_place), or NULL: host memory */
	cmr_clip_tower tower[2];
	void *priv;       /* mappings */
} cmr_clip;

/* The table of a model with this config (text tower, vision tower, projections, logit scale:
 * transformers' state-dict order); no values yet. NULL when out of memory. */
cmr_clip *cmr_clip_new(const cmr_clip_cfg *cfg);
void cmr_clip_free(cmr_clip *m);
/* Adds a parameter (before values exist): extra groups such as prompts and adapters. Its
 * name must be new. Returns its index or -1. */
int cmr_clip_add(cmr_clip *m, const char *name, int group, int tower, int layer, int slot, int ndim,
		 const int64_t *shape, unsigned flags, float init_std, float init_val);
/* The parameter called name, or NULL. */
cmr_param *cmr_clip_param(cmr_clip *m, const char *name);

/* Values for the parameters of the towers in mask (and the logit scale when both) from a
 * safetensors file (F32, F16, BF16): frozen F32 tensors are used in place in the mapping,
 * others converted or copied. Optional parameters that are absent are initialised
 * (cmr_clip_init's values, with seed). A tensor of the file that the table does not know
 * is an error (a tuning this model was not told about), except HF's position_ids buffers.
 * Computes each loaded tower's hash. Returns 0, or -1 naming the tensor. */
int cmr_clip_load(cmr_clip *m, const char *path, unsigned mask, uint64_t seed, char *err, size_t errlen);
/* The same from an opened file, which the model keeps (closed at once on failure). */
struct cmr_st;
int cmr_clip_load_st(cmr_clip *m, struct cmr_st *st, unsigned mask, uint64_t seed, char *err, size_t errlen);
/* transformers' CLIPPreTrainedModel._init_weights (factor 1) for every parameter, from a
 * seeded generator, each tensor its own stream (so the same seed gives the same model on
 * every machine, and adding a tensor does not change the others). */
int cmr_clip_init(cmr_clip *m, uint64_t seed, char *err, size_t errlen);
/* Config, table and load of DIR (config.json, model.safetensors) for the towers in mask. */
cmr_clip *cmr_clip_open(const char *dir, unsigned mask, char *err, size_t errlen);
/* The model's identity over both towers (each tower's hash, tuning included): what every
 * embedding it computes carries (cmr-stream(5), model.id). 0 when a tower's is unknown. */
uint64_t cmr_clip_id(const cmr_clip *m);
/* The towers' name: the last component of the model directory. */
void cmr_clip_set_name(cmr_clip *m, const char *dir);
/* Writes every loaded parameter as F32 in table order, atomically; with held, the complete
 * file is left under its temporary name there for the caller to rename (cmr_st_write_held). */
struct cmr_atomic;
int cmr_clip_save(const cmr_clip *m, const char *path, const char *metadata_json, struct cmr_atomic *held,
		  char *err, size_t errlen);
/* The same for the parameters want() accepts (ctx is its). */
int cmr_clip_save_some(const cmr_clip *m, const char *path, const char *metadata_json,
		       int (*want)(const cmr_clip *m, const cmr_param *p, const void *ctx), const void *ctx,
		       struct cmr_atomic *held, char *err, size_t errlen);
/* Parameter p's values from tensor t of a safetensors file (path: for messages): the shape
 * checked, F16/BF16 converted; a frozen F32 tensor is used in place unless copy (then the
 * file may be closed). Returns 0 or -1 naming the tensor. */
struct cmr_st_tensor;
int cmr_clip_set_tensor(cmr_clip *m, cmr_param *p, const struct cmr_st_tensor *t, const char *path, int copy,
			char *err, size_t errlen);

/* Gradient arrays for the trainable parameters (zeroed), and each tower's grad_from: the
 * lowest depth whose gradient is needed (CMR_DEPTH_EMBED, CMR_DEPTH_PRE_LN, a layer, or
 * the number of layers for the head only). Call after setting the flags and loading. */
enum { CMR_DEPTH_EMBED = -2, CMR_DEPTH_PRE_LN = -1 };
int cmr_clip_grads(cmr_clip *m);
void cmr_clip_zero_grad(cmr_clip *m);
/* 1 if a parameter read by tower is trainable (its backward pass is needed). */
int cmr_clip_tower_trains(const cmr_clip *m, int tower);

/* ---- hooks: optional modules on the layers ---- */
/* Where a module reads and where it adds, in layer l of its tower:
 *   CMR_HOOK_ATTN   reads the attention block's input (after layer_norm1) and adds to its
 *                   output (before the residual sum): a parallel adapter on attention;
 *   CMR_HOOK_MLP    the same around the MLP block;
 *   CMR_HOOK_RESID  reads the residual stream entering the layer and adds to it (beside the
 *                   attention block's output);
 *   CMR_HOOK_ATTN_OUT  reads the attention block's output (after out_proj) and adds to it
 *                   before the others and the residual sum: a sequential adapter (Houlsby).
 *                   in and out are the same array, so the module keeps in its scratch what
 *                   its backward pass needs of in; backward gets in = NULL, dout the gradient
 *                   of the block's output after the module, din holding dout already (the
 *                   identity path), to which it adds J^T dout;
 *   CMR_HOOK_MLP_OUT   the same on the MLP block's output (after fc2);
 *   CMR_HOOK_Q, _K, _V read the attention's input (after layer_norm1) and add to the query,
 *                   key or value projection's output (the query before its 1/sqrt(head
 *                   dim) scale): LoRA on those weights;
 *   CMR_HOOK_O      reads the attention's output (the heads concatenated) and adds to
 *                   out_proj's output, before the attn_out modules;
 *   CMR_HOOK_HEAD   a module on the head, not in a layer: reads the pooled rows after the
 *                   final layer norm (in [B, width], rows = B) and adds to what the projection
 *                   reads (out); it also reads the residual stream after each layer l it
 *                   applies to (taps[l], [layout rows, width], kept in inference too) and in
 *                   the backward pass adds that tap's gradient to dtaps[l] (NULL when not
 *                   needed: the layer is not walked back). Its layer_min is the tower's layer
 *                   count (the head's depth); its scratch is one set of floats per layout row,
 *                   not one per layer. Multi-level attention and injection (model/levels.h). */
enum { CMR_HOOK_ATTN, CMR_HOOK_MLP, CMR_HOOK_RESID, CMR_HOOK_ATTN_OUT, CMR_HOOK_MLP_OUT, CMR_HOOK_Q, CMR_HOOK_K,
       CMR_HOOK_V, CMR_HOOK_O, CMR_HOOK_HEAD };

typedef struct cmr_hook_io {
	const cmr_ops *ops;
	int layer, rows, width;
	const float *in; /* [rows, width] */
	float *out;      /* forward: out += f(in) */
	const float *dout;
	float *din;      /* backward: din += J^T dout (may be NULL: not needed), parameters' g += */
	float *scratch;  /* h->scratch floats per row, kept per layer when training (backend memory) */
	const cmr_layout *lay; /* the batch's layout in the backend's memory */
	/* the head's modules (CMR_HOOK_HEAD) only: */
	const float *const *taps; /* [layers]: the residual stream after layer l, or NULL */
	float *const *dtaps;      /* [layers]: its gradient (backward), or NULL */
	float *att;               /* the attention's scratch (2 x the longest segment squared) */
	int layout_rows;          /* the layout's rows (the taps' and the scratch's) */
} cmr_hook_io;

struct cmr_hook {
	int point;       /* CMR_HOOK_* */
	int layer_min;   /* the lowest layer it is attached to (it decides per layer with io.layer) */
	size_t scratch;  /* floats per row it keeps between its forward and backward passes, per layer */
	int (*applies)(const cmr_hook *h, int layer);
	void (*forward)(const cmr_hook *h, const cmr_hook_io *io);
	void (*backward)(const cmr_hook *h, const cmr_hook_io *io);
	int trains;      /* it has trainable parameters */
	void *self;
	cmr_hook *next;
};
/* Attaches h to a tower (kept by the caller, who frees it after the model, or gives it to
 * the model with cmr_clip_own). */
void cmr_clip_attach(cmr_clip *m, int tower, cmr_hook *h);
/* Detaches h from its tower (LoRA merged into the weights needs no pass of its own). */
void cmr_clip_detach(cmr_clip *m, int tower, cmr_hook *h);
/* After a work space for max_batch did not fit: the largest max_batch / 2^k whose work space
 * does (tried and freed), or 0. */
int cmr_clip_ws_fit(const cmr_clip *m, const cmr_ops *ops, int tower, int max_batch, int tokens_per_sample, int keep);
/* Placing a model on a backend without CMR_OPS_HOST (a device's memory): every parameter
 * with values gets a copy there (dev), uploaded now, and the gradient array lives there; the
 * towers' views point at those copies, so the passes read only the backend's memory. The host
 * values stay as loaded until cmr_clip_fetch. Modules on the towers (adapters, multi-level
 * attention, injection) still do some arithmetic on the host and are refused. A host backend:
 * nothing to do. Returns 0, or -1 with err (out of the backend's memory: how much was asked). */
int cmr_clip_place(cmr_clip *m, const cmr_ops *ops, char *err, size_t errlen);
/* The trained parameters' values copied back from the placed backend into w (before a
 * checkpoint is written or the values are read on the host). Nothing when not placed. */
void cmr_clip_fetch(cmr_clip *m);
/* The first value of p and of its gradient, wherever they live (scalars: the logit scale,
 * gates); setting them writes both copies of the value. */
float cmr_clip_get1(const cmr_clip *m, const cmr_param *p);
void cmr_clip_set1(cmr_clip *m, cmr_param *p, float v);
float cmr_clip_grad_get1(const cmr_clip *m, const cmr_param *p);
void cmr_clip_grad_set1(cmr_clip *m, cmr_param *p, float v);
/* An array of n floats for per-parameter optimiser state (the moments), zeroed, where the
 * gradients live; NULL when out of memory. Freed with cmr_clip_state_free. */
float *cmr_clip_state_new(const cmr_clip *m, size_t n);
void cmr_clip_state_free(const cmr_clip *m, float *s);
/* Parameter p's values as a writable copy the model owns (frozen weights are read-only
 * mappings of the checkpoint), bound where the tower reads them. NULL when out of memory. */
float *cmr_clip_writable(cmr_clip *m, cmr_param *p);
/* The model frees p with fn when it is freed (last given, first freed). Returns 0 or -1. */
int cmr_clip_own(cmr_clip *m, void *p, void (*fn)(void *));

/* ---- one forward pass, one backward pass ---- */
/* The layout of a batch, computed once per batch: for sample b its rows [start[b], start[b]
 * + len[b]) of the tower's row arrays, laid out as
 *   row 0: the class token (vision) or the start token (text),
 *   rows 1..nprefix: the tower's extra prefix rows (vision: no position embedding; text: they
 *   take positions 1..nprefix and the tokens after them shift),
 *   the rest: the patches (vision) or the remaining tokens (text),
 * its segment (the attention sees only its own rows; text is causal) and its pooling row
 * pool[b] (the class token; the first end token, the largest id, as CLIP's argmax). What
 * each row is made of, -1 where it has none of it: tok[r] its token id, pos[r] its position
 * row, pre[r] its prefix row, patch[r] its patch (in the batch's patch rows), cls[r] 0 for
 * the class token; prow[j] is the row of the batch's patch j. A text sequence that fits the
 * context but not with the prefix rows is cut to context - nprefix tokens, its end token
 * moved to the last row kept (counted in truncated). Deep prompts (a layer's CMR_L_PROMPT)
 * replace the prefix rows of that layer's input. The work space holds it on the
 * host and a copy in the backend's memory, which the backend's operations take. */
struct cmr_layout {
	int B, rows, npatch;
	int truncated; /* text: sequences cut to context - nprefix tokens (their end token kept) */
	int *start, *len, *pool;
	int *tok, *pos, *pre, *patch, *cls, *prow;
	int *seg; /* [rows]: the sample each row belongs to */
};

/* Work space of one tower, in the backend's memory, for batches up to max_batch samples
 * (text: up to max_tokens tokens in all). keep: keep what the backward pass needs (from the
 * tower's grad_from up; nothing for a tower that trains nothing); 0 for inference;
 * CMR_KEEP_RECOMPUTE: keep, but when no layer weight trains keep only each layer's x_in and
 * x_mid and recompute q, k, v and fc1's output in the backward pass (less memory, more time). The passes must be given this backend. */
#define CMR_KEEP_RECOMPUTE 2
typedef struct cmr_clip_ws cmr_clip_ws;
cmr_clip_ws *cmr_clip_ws_new(const cmr_clip *m, const cmr_ops *ops, int tower, int max_batch, int max_tokens,
			     int keep);
void cmr_clip_ws_free(cmr_clip_ws *ws);
const cmr_layout *cmr_clip_ws_layout(const cmr_clip_ws *ws);

/* The batch: B images u8 [H, W, 3] (H = W = image_size), or for a features tower B feature
 * vectors of F floats (pixels[b] points to their bytes, host order), or B token sequences
 * (lens[b] ids each, with start and end tokens). */
typedef struct cmr_batch {
	int B;
	const uint8_t *const *pixels;
	const int32_t *const *ids;
	const int *lens;
	/* a tower whose prefix table is a pool (prefix_len > 0): the prompts each sample takes,
	 * B x prefix_k ids into the table's prompts of prefix_len rows each, in order; NULL: the
	 * first prefix_k prompts */
	const int32_t *prefix_sel;
	int no_prefix;  /* run the plain model: no prefix rows (a pool's query pass) */
	float *state;   /* when not NULL: [B, width] receives the pooled rows after the final layer
			 * norm, before the head's modules and the projection (host memory) */
} cmr_batch;

/* The forward pass: out [B, proj] (host memory; raw projections, not normalised). Returns 0,
 * or -1 for a batch that does not fit ws (longer than the context, more rows), an empty
 * sequence, a token id outside the vocabulary, or a backend without CMR_OPS_HOST (the
 * weights are host memory; a device backend's copy of them is still to come). */
int cmr_clip_forward(const cmr_clip *m, int tower, const cmr_ops *ops, cmr_clip_ws *ws, const cmr_batch *in,
		     float *out);
/* The backward pass of the last forward pass on ws (made with keep), from dout [B, proj]
 * (host memory):
 * accumulates into the trainable parameters' g; walks back no lower than grad_from, and
 * computes no gradient for a frozen weight. */
void cmr_clip_backward(const cmr_clip *m, int tower, const cmr_ops *ops, cmr_clip_ws *ws, const float *dout);

/* Inference helpers over cmr_clip_forward. */
int cmr_clip_encode_images(const cmr_clip *m, const cmr_ops *ops, cmr_clip_ws *ws, const uint8_t *const *pixels,
			   int B, float *out);
int cmr_clip_encode_texts(const cmr_clip *m, const cmr_ops *ops, cmr_clip_ws *ws, const int32_t *const *ids,
			  const int *lens, int B, float *out);
/* Multiply-adds of one sample's forward pass (for GFLOP/s). */
double cmr_clip_flops(const cmr_clip_tower *t, int tokens);

#endif
