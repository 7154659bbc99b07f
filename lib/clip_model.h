/* clip_model.h - CLIP image and text towers loaded from a Hugging Face checkpoint directory
 * (config.json, model.safetensors, optional preprocessor_config.json), and their forward
 * passes on a compute backend. Never prints or exits. */
#ifndef CMR_CLIP_MODEL_H
#define CMR_CLIP_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"

enum cmr_act { CMR_ACT_QUICK_GELU, CMR_ACT_GELU };
enum cmr_tower { CMR_TOWER_VISION, CMR_TOWER_TEXT };

typedef struct cmr_tower_cfg {
	int width;      /* hidden_size */
	int layers;     /* num_hidden_layers */
	int heads;      /* num_attention_heads */
	int mlp;        /* intermediate_size */
	int act;        /* enum cmr_act */
	float eps;      /* layer_norm_eps */
	int image_size, patch_size; /* vision */
	int vocab, context;         /* text: vocab_size, max_position_embeddings */
} cmr_tower_cfg;

typedef struct cmr_clip_cfg {
	cmr_tower_cfg vision, text;
	int proj;             /* projection_dim */
	float mean[3], std[3]; /* image normalisation */
} cmr_clip_cfg;

/* Reads DIR/config.json (and DIR/preprocessor_config.json for mean/std); OpenAI's values
 * for what is absent. dir may also be a config.json file itself (OpenAI's mean and std). Returns 0 or -1 with a message. */
int cmr_clip_cfg_load(const char *dir, cmr_clip_cfg *cfg, char *err, size_t errlen);

/* One layer's weights, fp32, PyTorch Linear layout (out, in). */
typedef struct {
	const float *ln1_w, *ln1_b, *q_w, *q_b, *k_w, *k_b, *v_w, *v_b, *o_w, *o_b;
	const float *ln2_w, *ln2_b, *fc1_w, *fc1_b, *fc2_w, *fc2_b;
} cmr_layer;

typedef struct cmr_clip_tower {
	int kind; /* enum cmr_tower */
	cmr_tower_cfg cfg;
	int proj;
	float mean[3], std[3];
	/* vision */
	const float *class_emb, *patch_w, *pre_ln_w, *pre_ln_b, *post_ln_w, *post_ln_b;
	/* text */
	const float *tok_emb, *final_ln_w, *final_ln_b;
	/* both */
	const float *pos_emb, *proj_w;
	cmr_layer *layer;
	char name[256];   /* model directory's last component */
	uint64_t hash;    /* XXH3-64 of the config and of this tower's tensors */
	void *priv;       /* mapping and converted tensors */
} cmr_clip_tower;

/* Loads one tower; touches none of the other tower's tensors. fp16 and bf16 tensors are
 * converted to fp32. Errors name the tensor (missing, wrong shape, unknown dtype). */
cmr_clip_tower *cmr_clip_tower_load(const char *dir, int kind, char *err, size_t errlen);
void cmr_clip_tower_free(cmr_clip_tower *t);

/* Work space for batches up to max_batch samples (text: up to max_tokens tokens in all). */
typedef struct cmr_clip_ws cmr_clip_ws;
cmr_clip_ws *cmr_clip_ws_new(const cmr_clip_tower *t, int max_batch, int max_tokens);
void cmr_clip_ws_free(cmr_clip_ws *ws);

/* Image embeddings: pixels are B images u8 [H, W, 3] with H = W = image_size; out is
 * [B, proj]. Returns 0 or -1. */
int cmr_clip_encode_images(const cmr_clip_tower *t, const cmr_ops *ops, cmr_clip_ws *ws,
			   const uint8_t *const *pixels, int B, float *out);
/* The normalised patches of B images as rows [B * g * g, 3 * P * P] in the patch
 * convolution's (channel, y, x) order: the convolution is then a linear layer. */
void cmr_clip_patches(const cmr_clip_tower *t, const uint8_t *const *pixels, int B, float *out);
/* The steps both forward passes share (this file's and clip_train.c's), so that training
 * and inference run the same code:
 * the vision transformer's input rows before pre_layrnorm, x [B * seq, D] = [class; patch
 * embeddings] + positions (patches [B * g * g, 3 * P * P] and tmp [B * g * g, D] are work
 * space), with each sample's segment in start and len; */
void cmr_clip_embed_images(const cmr_clip_tower *t, const cmr_ops *ops, const uint8_t *const *pixels, int B,
			   float *patches, float *tmp, float *x, int *start, int *len);
/* the text transformer's input rows, token plus position embeddings, with the segments and
 * the row pooled per sample (its first end token, the largest id, as CLIP's argmax); returns
 * the number of rows, or -1 for a sequence that is empty, longer than the context, beyond
 * max_rows in all, or with an id outside the vocabulary; */
int cmr_clip_embed_texts(const cmr_clip_tower *t, const int32_t *const *ids, const int *lens, int B, int max_rows,
			 float *x, int *start, int *len, int *pool);
/* and the head: the pooled rows of x [B, D], their final layernorm pooled_ln, and the
 * projection out [B, proj]. */
void cmr_clip_head(const cmr_clip_tower *t, const cmr_ops *ops, const float *x, const int *pool, int B,
		   float *pooled, float *pooled_ln, float *out);

/* Text embeddings: B token sequences (lens[b] ids each, with start and end tokens); each is
 * pooled at its first end-of-text token (the largest id, as CLIP's argmax). out [B, proj]. */
int cmr_clip_encode_texts(const cmr_clip_tower *t, const cmr_ops *ops, cmr_clip_ws *ws,
			  const int32_t *const *ids, const int *lens, int B, float *out);

/* Multiply-adds of one sample's forward pass (for GFLOP/s). */
double cmr_clip_flops(const cmr_clip_tower *t, int tokens);

#endif
