/* knowledge.h - concept knowledge for unpaired image-text matching (MASK, issue 21): concept
 * words with their word vectors and visual prototypes, the visual features' centre, and an
 * optional learned mapping of visual features into the word space; the file that holds them
 * (cmr-knowledge(5), a safetensors container), building the prototypes from an unlabelled
 * image pool and a classifier's confident predictions, the prototype rows of a caption's words
 * (out-of-vocabulary words through their word-vector neighbours), and the mapping's loss and
 * training. Never prints or exits. */
#ifndef CMR_KNOWLEDGE_H
#define CMR_KNOWLEDGE_H

#include <stddef.h>
#include <stdint.h>

#include "text/wordvec.h"

#define CMR_KNOWLEDGE_FORMAT "cmr-knowledge-1"
#define CMR_KNOWLEDGE_MAX_CONCEPTS 1000000
#define CMR_KNOWLEDGE_MAX_DIM 65536

typedef struct cmr_knowledge {
	size_t k;          /* concepts */
	int dv, dw;        /* visual and word-vector dimensions */
	cmr_wordvec words; /* the concept words (sorted, unique) and their unit vectors [k, dw] */
	float *proto;      /* [k, dv]: unit prototypes (centred), in the words' order */
	int32_t *count;    /* [k]: how many pool images each prototype is the mean of */
	float *centre;     /* [dv]: subtracted from a visual feature before it is made unit */
	float *map_w;      /* [dw, dv], or NULL: the learned mapping of visual features */
	float *map_b;      /* [dw] (with map_w) */
	char features[256];   /* the visual features' model (its file name) */
	uint64_t features_id; /* its identity: XXH3-64 as cmr-encode's provenance gives it */
	char *provenance;     /* the builder's provenance (JSON text), or NULL */
	char *map_provenance; /* the mapping's training (JSON text), or NULL */
} cmr_knowledge;

/* Reads and validates a knowledge file: every field (cmr-knowledge(5)). Returns 0, or -1
 * with a message naming the file and what is wrong. */
int cmr_knowledge_load(cmr_knowledge *kn, const char *path, char *err, size_t errlen);
/* The same from the bytes of a file in memory (copied: buf may go afterwards). */
int cmr_knowledge_from_memory(cmr_knowledge *kn, const void *buf, size_t size, const char *name, char *err,
			      size_t errlen);
/* Writes kn to path under a temporary name renamed into place. Returns 0 or -1. */
int cmr_knowledge_save(const cmr_knowledge *kn, const char *path, char *err, size_t errlen);
void cmr_knowledge_free(cmr_knowledge *kn);

/* A set of words (stop words): one a line, lower case; '#' starts a comment; blank lines are
 * ignored. */
typedef struct cmr_wordset {
	char **w; /* sorted, unique */
	size_t n;
} cmr_wordset;
int cmr_wordset_parse(cmr_wordset *s, const char *text, size_t len, const char *name, char *err, size_t errlen);
int cmr_wordset_has(const cmr_wordset *s, const char *word);
void cmr_wordset_free(cmr_wordset *s);

/* ---- building ---- */
/* The pool: n images' unit visual features x [n, dv], each image's most probable class
 * cls[i] (index into labels) and its probability prob[i]. A concept is a word of a class
 * label (cmr_text_words: lower case, letters and digits) with a vector in wv that is not in
 * stop; its prototype is the mean of the features of the images whose class's label has the
 * word and whose probability is at least min_prob, minus the centre (the mean of all n
 * features when centre is set, else zero), made unit; concepts with fewer than min_count
 * images, or whose mean is the centre, are left out. Returns 0, or -1 with a message (no
 * concept, out of memory). */
typedef struct cmr_knowledge_pool {
	const float *x;
	size_t n;
	int dv;
	const uint32_t *cls;
	const float *prob;
	char *const *labels;
	size_t nlabels;
} cmr_knowledge_pool;
int cmr_knowledge_build(cmr_knowledge *kn, const cmr_knowledge_pool *pool, const cmr_wordvec *wv,
			const cmr_wordset *stop, float min_prob, int min_count, int centre, char *err, size_t errlen);

/* ---- using ---- */
/* A visual feature in the prototypes' space: x [dv] becomes unit(x - centre). Returns 0, or
 * -1 when that is zero. */
int cmr_knowledge_visual(const cmr_knowledge *kn, float *x);
/* A visual feature in the word space (the mapping, which kn must have): out [dw] =
 * unit(W unit(x - centre) + b). Returns 0 or -1 (a zero vector). */
int cmr_knowledge_mapped(const cmr_knowledge *kn, const float *x, float *out);

/* The prototype of a caption word: its concept's when it is one (*how 'c'); else, with
 * m > 0 and a vector q [dw] of the word (NULL: none), the out-of-vocabulary bridge: the m
 * concepts whose word vectors are nearest q by cosine, weighted softmax(cos / tau), when the
 * nearest has a cosine of at least min_cos (*how 'o'); their weighted sum of prototypes, made
 * unit, into out [dv]. *near (may be NULL) gets the nearest concept (index into the words).
 * Returns 1 with a prototype, 0 without one (*how '-'), -1 when out of memory. */
int cmr_knowledge_word(const cmr_knowledge *kn, const char *word, const float *q, int m, float tau, float min_cos,
		       float *out, size_t *near, char *how);

/* ---- the learned mapping (MASK's consistency and prototype contrastive losses) ---- */
typedef struct cmr_map_hp {
	float tau;     /* temperature of the contrastive term (0.1) */
	float w_sim;   /* weight of the pairwise-similarity matching term (1) */
	float w_con;   /* weight of the contrastive term (1) */
	float decay;   /* AdamW weight decay of W (1e-4) */
	float lr;      /* Adam learning rate (1e-3) */
	int steps;     /* full-batch steps (500) */
	uint64_t seed; /* W's initial values */
} cmr_map_hp;
void cmr_map_hp_default(cmr_map_hp *hp);

/* The loss over the k pairs (prototype p_c [dv], unit word vector w_c [dw]) with u_c =
 * unit(W p_c + b): mean_c (1 - u_c.w_c) + w_sim mean_{c,c'} (u_c.u_c' - w_c.w_c')^2 + w_con
 * mean_c -log softmax_n(u_c.w_n / tau)[c]. With gw [dw, dv] and gb [dw] non-NULL, their
 * gradients are written there. The parts into parts[3] when non-NULL. Returns the loss, or a
 * negative value when out of memory. */
double cmr_map_loss(const float *W, const float *b, const float *P, const float *Wv, size_t k, int dv, int dw,
		    const cmr_map_hp *hp, float *gw, float *gb, double parts[3]);

/* Trains kn's mapping (replacing any) on its own pairs: prototypes -> word vectors, Adam with
 * decoupled weight decay. progress (may be NULL) is called after each step with the loss.
 * Returns 0, or -1 with a message. */
int cmr_knowledge_train_map(cmr_knowledge *kn, const cmr_map_hp *hp,
			    void (*progress)(void *ctx, int step, double loss, const double parts[3]), void *ctx,
			    char *err, size_t errlen);

#endif
