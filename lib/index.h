/* index.h - embedding indexes (formats/cmr-index.md): exact (flat) and inverted-file (IVF)
 * with a k-means coarse quantiser, vectors stored as f32, 8-bit scalar-quantised codes, or
 * product-quantised codes (PQ: IVF residuals, asymmetric distances through lookup tables);
 * building, adding, merging, writing atomically, memory-mapped reading, batched search.
 * Never prints or exits. */
#ifndef CMR_INDEX_H
#define CMR_INDEX_H

#include <stddef.h>
#include <stdint.h>

enum { CMR_INDEX_FLAT = 1, CMR_INDEX_IVF = 2 };
enum { CMR_CODE_F32 = 1, CMR_CODE_SQ8 = 2, CMR_CODE_PQ = 3 };
#define CMR_PQ_K 256 /* centroids per PQ sub-quantiser: one byte per code */

typedef struct cmr_index {
	uint32_t kind, code, dim, nlist;
	uint64_t n;
	const float *centroids;  /* [nlist, dim], unit rows (IVF) */
	const uint64_t *list_off; /* [nlist + 1]: rows of list l are [list_off[l], list_off[l+1]) */
	const void *vectors;     /* [n, dim] f32 or u8, rows grouped by list (IVF) */
	const float *sq;         /* [2, dim]: per-dimension minimum and step (SQ8) */
	uint32_t pq_m;           /* PQ sub-quantisers: the vectors are u8 [n, pq_m] codes */
	const float *pq;         /* [pq_m, 256, dim / pq_m]: the sub-quantisers' centroids, of
				  * the residuals from the list's centroid (IVF) or of the vectors */
	const float *pq_scale;   /* [nlist] (IVF-PQ): a vector's residual is from pq_scale[l] times
				  * its list's centroid: the mean cosine of the list's vectors with
				  * it, which leaves the least to quantise (a unit centroid lies
				  * further from the list's vectors than their mean does) */
	const float *exact;      /* [n, dim] f32 in ordinal order, or NULL: kept for re-ranking */
	const uint64_t *ord;     /* [n]: the input ordinal of each stored row */
	char **keys;             /* [n] keys by ordinal */
	char *provenance;        /* JSON text, or NULL */
	uint64_t quantizer_hash; /* XXH3 of centroids and SQ parameters: equal quantisers merge */
	void *priv;
} cmr_index;

/* Vectors to build from: n rows of dim floats, unit length, with their keys. */
typedef struct {
	float *v;
	char **keys;
	uint64_t n, cap;
	uint32_t dim;
} cmr_vecs;

int cmr_vecs_push(cmr_vecs *vs, const float *v, uint32_t dim, const char *key);
void cmr_vecs_free(cmr_vecs *vs);

typedef struct {
	uint32_t kind, code, nlist;
	uint32_t pq_m;    /* PQ: sub-quantisers (dim a multiple of it) */
	int keep_exact;   /* PQ: keep the f32 vectors too, for re-ranking */
	uint64_t seed;
	int iters;        /* k-means iterations (default 20; the PQ sub-quantisers' 25) */
	uint64_t sample;  /* k-means training sample, 0: 256 per list (PQ: 65536) */
	const cmr_index *quantizer; /* reuse its centroids and SQ parameters instead of training */
	const struct cmr_ops *ops;  /* the k-means score products (NULL: the BLAS backend) */
	void (*progress)(void *ctx, uint64_t done, uint64_t total); /* k-means iterations, or NULL */
	void *progress_ctx;
} cmr_build_opts;

/* Spherical k-means of the rows of vs (unit vectors) into o->nlist unit centroids [nlist,
 * dim], malloc'd, with o's sample, iterations, seed, backend and progress (the coarse
 * quantiser's; also a prompt pool's keys, cmr-promptpool). NULL with a message when there
 * are fewer rows than centroids or memory runs out. */
float *cmr_kmeans(const cmr_vecs *vs, const cmr_build_opts *o, char *err, size_t errlen);
/* Builds an index in memory from vs (which keeps ownership of its arrays). */
cmr_index *cmr_index_build(const cmr_vecs *vs, const cmr_build_opts *o, const char *provenance,
			   char *err, size_t errlen);
/* The same, but an f32 index takes vs's vector array instead of copying it (its rows moved
 * into list order in place; vs->v is NULL after, vs->n and the keys stay): half the memory.
 * Other codes copy as cmr_index_build. */
cmr_index *cmr_index_build_take(cmr_vecs *vs, const cmr_build_opts *o, const char *provenance, char *err,
				size_t errlen);
/* Concatenates indexes of one kind, code and dimension (vectors of b after those of a, and so
 * on); IVF and SQ8 indexes must share their quantiser (same quantizer_hash). */
cmr_index *cmr_index_merge(const cmr_index *const *ix, int n, const char *provenance, char *err,
			   size_t errlen);
/* The stored vector of row r as floats (decoded: SQ8's and PQ's approximations). */
void cmr_index_row(const cmr_index *ix, uint64_t r, float *out);

int cmr_index_write(const cmr_index *ix, const char *path, char *err, size_t errlen);
/* Maps and checks a file: magic, version, checksums, and every structural field (section
 * bounds and alignment, list offsets, ordinals, the keys' declared size and grammar), since
 * anyone can recompute a checksum. */
cmr_index *cmr_index_open(const char *path, char *err, size_t errlen);
/* The same checks on an index file's bytes in memory (8-byte aligned; kept by the caller
 * for the index's life); name is used in messages. */
cmr_index *cmr_index_from_memory(const void *buf, size_t size, const char *name, char *err, size_t errlen);
void cmr_index_free(cmr_index *ix);

/* How a search goes: IVF lists visited per query (nprobe, clamped to [1, nlist]); for PQ
 * codes, rerank > k re-scores that many best candidates with the exact vectors (the index
 * must keep them) before the top k are taken (0: none). */
typedef struct {
	int nprobe;
	int rerank;
} cmr_search_params;

/* Top-k by inner product for nq queries [nq, dim] (unit length): hits_ord [nq, k] ordinals
 * and hits_score [nq, k], best first; ties go to the smaller ordinal; missing hits (fewer
 * than k vectors reachable) have ordinal UINT64_MAX and score -inf. threads: worker threads.
 * Returns 0, or -1 (out of memory, or a re-ranking the index cannot do). */
int cmr_index_search(const cmr_index *ix, const float *q, uint64_t nq, int k, const cmr_search_params *sp,
		     int threads, uint64_t *hits_ord, float *hits_score);
/* The same over several indexes (shards) of one dimension, searched as one: ordinals run on
 * from one shard to the next (shard s's row r is r plus the sizes of shards 0 to s-1), and
 * the hits are those of the shards' merge (cmr_index_merge) in that order; sp applies to
 * each shard. */
int cmr_index_search_shards(const cmr_index *const *ix, int nshards, const float *q, uint64_t nq, int k,
			    const cmr_search_params *sp, int threads, uint64_t *hits_ord, float *hits_score);

#endif
