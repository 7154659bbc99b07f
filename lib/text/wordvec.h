/* text/wordvec.h - word vectors (GloVe and word2vec text files, JSON tables): loading, lookup, the words of a caption.
 *
 * Formats read (the file is untrusted: every line and number is checked):
 *   - GloVe text: "WORD V1 ... VD" per line, D the same on every line;
 *   - word2vec text: the same after a first line "COUNT D";
 *   - JSON: {"words": [W...], "vectors": [[V...]...]} or {"vectors": {"W": [V...], ...}}.
 * Words are kept as given and looked up exactly (callers lower-case, as GloVe's are). A word
 * given twice keeps its first vector. This layer never prints and never exits. */
#ifndef CMR_WORDVEC_H
#define CMR_WORDVEC_H

#include <stddef.h>

#define CMR_WORDVEC_DIM_MAX 4096
#define CMR_WORDVEC_WORD_MAX 255

typedef struct cmr_wordvec {
	int dim;
	size_t n;          /* words */
	char **word;       /* sorted (strcmp) */
	float *vec;        /* [n, dim], in word's order */
	size_t duplicates; /* words given again, ignored */
} cmr_wordvec;

/* Loads path (its format by its first non-blank byte: '{' JSON, else text). Returns 0 or -1
 * with a message naming the file and line. */
int cmr_wordvec_load(cmr_wordvec *wv, const char *path, char *err, size_t errlen);
/* The same from memory (name in messages). */
int cmr_wordvec_parse(cmr_wordvec *wv, const char *buf, size_t len, const char *name, char *err, size_t errlen);
void cmr_wordvec_free(cmr_wordvec *wv);
/* The vector of word (NUL-terminated), or NULL. */
const float *cmr_wordvec_find(const cmr_wordvec *wv, const char *word);

/* Out-of-vocabulary bridging (MASK, ICLR 2026): the m words among the candidates cand[0..nc)
 * (indices into wv's words, e.g. those with a visual prototype) whose vectors have the largest
 * cosine with q [dim], best first, into idx, and their weights softmax(cos / tau) over those
 * m into w (tau > 0; MASK's softmax of the dot products of unit vectors is tau = 1). A word
 * equal to q (cosine 1) is found like any other. Returns the count (min(m, nc)), or -1 for a
 * zero q or m < 1. */
int cmr_wordvec_bridge(const cmr_wordvec *wv, const float *q, const size_t *cand, size_t nc, int m, float tau,
		       size_t *idx, float *w);

/* The words of a text: CLIP's clean-up (cmr_clip_clean: HTML entities, whitespace, lower
 * case), then maximal runs of letters and digits (Unicode categories L* and N*), each at most
 * CMR_WORDVEC_WORD_MAX bytes (longer runs are cut). Returns the count with the words in *out
 * (one malloc'd block; free(*out[0]) then free(*out)), or -1 when out of memory. */
int cmr_text_words(const char *text, size_t len, char ***out);

#endif
