/* eval.h - retrieval metrics: ranks of the correct items for image->text and text->image
 * queries, from embeddings, in chunks so memory stays bounded; zero-shot classification
 * against class embeddings averaged from prompts. Never prints or exits. */
#ifndef CMR_EVAL_H
#define CMR_EVAL_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"

/* Ranks (1-based) from the similarity of unit vectors (dot products, the backend's
 * matmul_nt in chunks of rows; host arrays, so a backend with CMR_OPS_HOST). img [ni, d], txt [nt, d]; txt_img[t] is the image of text t.
 * i2t_rank[i]: the best rank among image i's texts when image i queries all texts.
 * t2i_rank[t]: the rank of text t's image when text t queries all images.
 * Ties: an item scoring the same as the correct one counts above it when it comes earlier in
 * input order (a stable sort by descending score). Returns 0, or -1 when out of memory or
 * an image has no text (i2t_rank cannot be defined). */
int cmr_eval_ranks(const cmr_ops *ops, const float *img, size_t ni, const float *txt, size_t nt, int d,
		   const uint32_t *txt_img, uint32_t *i2t_rank, uint32_t *t2i_rank, size_t chunk);

/* Multi-vector items (stream kind vectors [N, D], cmr-stream(5)): item k has the unit rows
 * v[off[k] .. off[k + 1]) of d floats, and a key. */
typedef struct cmr_multi {
	float *v;
	uint64_t *off; /* [n + 1] */
	char **keys;
	size_t n, cap;
	uint64_t rows, rcap;
	int d;
} cmr_multi;
/* Appends an item of nrows rows (copied). Returns 0, or -1 when out of memory or of another d. */
int cmr_multi_push(cmr_multi *m, const float *rows, uint64_t nrows, int d, const char *key);
void cmr_multi_free(cmr_multi *m);

/* Late interaction (MaxSim: ColBERT's, MACK's word-to-region score): the score of text t and
 * image i is the mean over t's rows w of the maximum over i's rows r of w . r (0 when either
 * has no rows). Fills
 * sim[a * ld + b] for texts [t0, t0 + m) and images [i0, i0 + k), or (transposed)
 * sim[b * ld + a] — image rows, as a query of images wants them — with the backend's
 * matmul_nt over blocks of rows (host arrays). Returns 0, or -1 when out of memory. */
int cmr_maxsim_block(const cmr_ops *ops, const cmr_multi *txt, size_t t0, size_t m, const cmr_multi *img, size_t i0,
		     size_t k, float *sim, size_t ld, int transposed);
/* cmr_eval_ranks with the late-interaction score (the same ranks, ties and errors). */
int cmr_eval_ranks_maxsim(const cmr_ops *ops, const cmr_multi *img, const cmr_multi *txt, const uint32_t *txt_img,
			  uint32_t *i2t_rank, uint32_t *t2i_rank, size_t chunk);

/* Search by late interaction: for each of the queries' items, the k items of highest score
 * (cmr_maxsim_block with the query as the text: the mean over the query's rows of their best
 * dot product among an item's rows), best first; an item scoring the same as another comes
 * after it when it comes later in items. ord[q * k + r] is the r-th hit's index and
 * score[q * k + r] its score; past the n items, UINT64_MAX and 0. Returns 0, or -1 when out of
 * memory or k < 1. */
int cmr_maxsim_search(const cmr_ops *ops, const cmr_multi *items, const cmr_multi *queries, int k, uint64_t *ord,
		      float *score);

/* cmr_eval_ranks re-ranked (fusion with a second model, MACK's and MASK's): each query's top
 * k candidates by the cosine of img and txt are put in the order of cosine + beta x the
 * late-interaction score of img2 and txt2 (items in the same order as img and txt; an item
 * without rows scores 0); candidates after the top k keep their ranks. Ties as above. Returns
 * 0, or -1 when out of memory, k < 1 or the counts differ. */
int cmr_eval_ranks_fused(const cmr_ops *ops, const float *img, size_t ni, const float *txt, size_t nt, int d,
			 const cmr_multi *img2, const cmr_multi *txt2, float beta, size_t k, const uint32_t *txt_img,
			 uint32_t *i2t_rank, uint32_t *t2i_rank, size_t chunk);

/* Recall@K in percent: the share of ranks <= k. */
double cmr_recall(const uint32_t *rank, size_t n, uint32_t k);
/* Median (the mean of the two middle values for an even count, as numpy.median) and mean
 * of ranks. */
double cmr_rank_median(const uint32_t *rank, size_t n);
double cmr_rank_mean(const uint32_t *rank, size_t n);

/* The effective rank (Roy and Vetterli 2007) of n rows of d features, centred: exp of the
 * entropy of the distribution of the singular values, from 1 (one direction) to d (all
 * alike). The eigenvalues of the d x d covariance by LAPACK's dsyev (OpenBLAS). Returns it,
 * or -1 when out of memory, n < 2 or LAPACK fails. */
double cmr_effective_rank(const float *x, size_t n, int d);

/* ---- zero-shot classification ---- */
typedef struct cmr_classes {
	size_t n;      /* classes, in the order their first text comes */
	char **name;   /* the key before its last '#' (the whole key when it has none) */
	float *emb;    /* [n, d]: the mean of the class's texts, made unit length */
	size_t *texts; /* how many texts each mean is of */
} cmr_classes;

/* Class embeddings from text embeddings keyed CLASS#T (CLASS alone: a class of one):
 * CLIP's prompt ensemble, the normalised mean of each class's normalised texts. Returns 0,
 * or -1 when out of memory. */
int cmr_class_means(const float *txt, char *const *keys, size_t nt, int d, cmr_classes *c);
void cmr_classes_free(cmr_classes *c);

/* Scores every image against every class (cosine; unit vectors): rank[i] is the rank of
 * class truth[i] for image i (1-based; a class scoring the same counts above it when it
 * comes earlier), best[i] the best class. Returns 0, or -1 when out of memory. */
int cmr_classify(const cmr_ops *ops, const float *img, size_t ni, const cmr_classes *c, int d,
		 const uint32_t *truth, uint32_t *rank, uint32_t *best, size_t chunk);

#endif
