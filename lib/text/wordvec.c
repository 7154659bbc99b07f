/* text/wordvec.c - word vectors: GloVe/word2vec text and JSON tables read with every field checked; lookup; a caption's words. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <utf8proc.h>

#include "text/clip_tok.h"
#include "text/wordvec.h"
#include "util.h"

#define WORDVEC_FILE_MAX ((size_t)8 << 30) /* 8 GiB: GloVe 840B's text is 5.6 GB */

/* a growing table while reading */
typedef struct {
	cmr_wordvec *wv;
	size_t cap;
} builder;

static int word_ok(const char *w, size_t n)
{
	if (!n || n > CMR_WORDVEC_WORD_MAX)
		return 0;
	for (size_t i = 0; i < n;) {
		utf8proc_int32_t c;
		utf8proc_ssize_t k = utf8proc_iterate((const uint8_t *)w + i, (utf8proc_ssize_t)(n - i), &c);
		if (k <= 0 || c < 0x20 || c == 0x7f)
			return 0;
		i += (size_t)k;
	}
	return 1;
}

static int add(builder *b, const char *w, size_t n, char *err, size_t errlen)
{
	cmr_wordvec *wv = b->wv;
	if (wv->n == b->cap) {
		b->cap = b->cap ? 2 * b->cap : 1024;
		char **nw = realloc(wv->word, b->cap * sizeof *nw);
		if (!nw)
			return cmr_errf(err, errlen, "out of memory");
		wv->word = nw;
		float *nv = realloc(wv->vec, b->cap * (size_t)wv->dim * sizeof *nv);
		if (!nv)
			return cmr_errf(err, errlen, "out of memory");
		wv->vec = nv;
	}
	if (!(wv->word[wv->n] = strndup(w, n)))
		return cmr_errf(err, errlen, "out of memory");
	wv->n++;
	return 0;
}

static int parse_text(builder *b, const char *buf, size_t len, const char *name, char *err, size_t errlen)
{
	cmr_wordvec *wv = b->wv;
	size_t line = 0, at = 0;
	int header_done = 0;
	while (at < len) {
		const char *s = buf + at, *nl = memchr(s, '\n', len - at);
		size_t n = nl ? (size_t)(nl - s) : len - at;
		at += n + (nl != NULL);
		line++;
		while (n && (s[n - 1] == '\r' || s[n - 1] == ' '))
			n--;
		if (!n)
			continue;
		const char *sp = memchr(s, ' ', n);
		if (!sp)
			return cmr_errf(err, errlen, "%s:%zu: a word without numbers", name, line);
		size_t wl = (size_t)(sp - s);
		/* the numbers: strtof over a NUL-terminated copy */
		char tmp[65536];
		size_t rest = n - wl - 1;
		if (rest >= sizeof tmp)
			return cmr_errf(err, errlen, "%s:%zu: a line of more than %zu bytes", name, line, sizeof tmp);
		memcpy(tmp, sp + 1, rest);
		tmp[rest] = 0;
		if (strlen(tmp) != rest)
			return cmr_errf(err, errlen, "%s:%zu: a NUL byte in the line", name, line);
		if (!header_done) { /* word2vec's "COUNT DIM" first line */
			header_done = 1;
			char first[32], *e1, *e2;
			snprintf(first, sizeof first, "%.*s", (int)(wl < 31 ? wl : 31), s); /* buf is not NUL-terminated */
			long a = strtol(first, &e1, 10), d = strtol(tmp, &e2, 10);
			if (wl < 31 && e1 == first + wl && wl && *e2 == 0 && a >= 0 && d >= 1) {
				if (d > CMR_WORDVEC_DIM_MAX)
					return cmr_errf(err, errlen, "%s:1: dimension %ld, at most %d", name, d, CMR_WORDVEC_DIM_MAX);
				wv->dim = (int)d;
				continue;
			}
		}
		if (!word_ok(s, wl))
			return cmr_errf(err, errlen, "%s:%zu: the word is empty, longer than %d bytes, or not valid UTF-8 text", name,
				    line, CMR_WORDVEC_WORD_MAX);
		float v[CMR_WORDVEC_DIM_MAX];
		int d = 0;
		char *p = tmp;
		while (*p) {
			while (*p == ' ')
				p++;
			if (!*p)
				break;
			if (d == CMR_WORDVEC_DIM_MAX)
				return cmr_errf(err, errlen, "%s:%zu: more than %d numbers", name, line, CMR_WORDVEC_DIM_MAX);
			char *e;
			errno = 0;
			float x = strtof(p, &e);
			if (e == p || (*e && *e != ' ') || !isfinite(x))
				return cmr_errf(err, errlen, "%s:%zu: value %d is not a finite number", name, line, d + 1);
			v[d++] = x;
			p = e;
		}
		if (d < 1)
			return cmr_errf(err, errlen, "%s:%zu: a word without numbers", name, line);
		if (!wv->dim)
			wv->dim = d;
		if (d != wv->dim)
			return cmr_errf(err, errlen, "%s:%zu: %d values, the file's vectors have %d", name, line, d, wv->dim);
		if (add(b, s, wl, err, errlen) < 0)
			return -1;
		memcpy(wv->vec + (wv->n - 1) * (size_t)wv->dim, v, (size_t)d * sizeof *v);
	}
	return 0;
}

static int json_vector(builder *b, const char *w, size_t wl, json_t *arr, const char *name, char *err, size_t errlen)
{
	cmr_wordvec *wv = b->wv;
	if (!word_ok(w, wl))
		return cmr_errf(err, errlen, "%s: word %zu is empty, longer than %d bytes, or not text", name, wv->n + 1,
			    CMR_WORDVEC_WORD_MAX);
	if (!json_is_array(arr))
		return cmr_errf(err, errlen, "%s: the vector of '%s' is not an array", name, w);
	size_t d = json_array_size(arr);
	if (!wv->dim) {
		if (d < 1 || d > CMR_WORDVEC_DIM_MAX)
			return cmr_errf(err, errlen, "%s: vectors of %zu values (1 to %d)", name, d, CMR_WORDVEC_DIM_MAX);
		wv->dim = (int)d;
	}
	if (d != (size_t)wv->dim)
		return cmr_errf(err, errlen, "%s: the vector of '%s' has %zu values, the others %d", name, w, d, wv->dim);
	if (add(b, w, wl, err, errlen) < 0)
		return -1;
	float *v = wv->vec + (wv->n - 1) * (size_t)wv->dim;
	for (size_t i = 0; i < d; i++) {
		json_t *x = json_array_get(arr, i);
		if (!json_is_number(x) || !isfinite(json_number_value(x)) || fabs(json_number_value(x)) > 3e38)
			return cmr_errf(err, errlen, "%s: value %zu of '%s' is not a finite number", name, i + 1, w);
		v[i] = (float)json_number_value(x);
	}
	return 0;
}

static int parse_json(builder *b, const char *buf, size_t len, const char *name, char *err, size_t errlen)
{
	json_error_t je;
	json_t *j = json_loadb(buf, len, 0, &je);
	if (!j)
		return cmr_errf(err, errlen, "%s:%d: %s", name, je.line, je.text);
	int rc = 0;
	json_t *words = json_object_get(j, "words"), *vecs = json_object_get(j, "vectors");
	if (json_is_array(words) && json_is_array(vecs)) {
		if (json_array_size(words) != json_array_size(vecs))
			rc = cmr_errf(err, errlen, "%s: %zu words and %zu vectors", name, json_array_size(words), json_array_size(vecs));
		for (size_t i = 0; rc == 0 && i < json_array_size(words); i++) {
			json_t *w = json_array_get(words, i);
			if (!json_is_string(w))
				rc = cmr_errf(err, errlen, "%s: word %zu is not a string", name, i + 1);
			else
				rc = json_vector(b, json_string_value(w), json_string_length(w), json_array_get(vecs, i), name, err,
						 errlen);
		}
	} else if (json_is_object(vecs)) {
		const char *k;
		json_t *v;
		json_object_foreach(vecs, k, v) {
			if ((rc = json_vector(b, k, strlen(k), v, name, err, errlen)) < 0)
				break;
		}
	} else {
		rc = cmr_errf(err, errlen, "%s: neither {\"words\": [...], \"vectors\": [[...]]} nor {\"vectors\": {WORD: [...]}}",
			  name);
	}
	json_decref(j);
	return rc;
}

static const cmr_wordvec *sort_wv;
static int cmp_idx(const void *a, const void *b)
{
	size_t i = *(const size_t *)a, k = *(const size_t *)b;
	int c = strcmp(sort_wv->word[i], sort_wv->word[k]);
	return c ? c : (i < k ? -1 : i > k);
}

/* sorts the words (and their vectors) for bsearch; the first of a repeated word stays */
static int finish(cmr_wordvec *wv, char *err, size_t errlen)
{
	size_t n = wv->n, D = (size_t)wv->dim;
	size_t *idx = malloc((n ? n : 1) * sizeof *idx);
	char **w = malloc((n ? n : 1) * sizeof *w);
	float *v = malloc((n ? n : 1) * D * sizeof *v);
	if (!idx || !w || !v) {
		free(idx), free(w), free(v);
		return cmr_errf(err, errlen, "out of memory");
	}
	for (size_t i = 0; i < n; i++)
		idx[i] = i;
	sort_wv = wv;
	qsort(idx, n, sizeof *idx, cmp_idx);
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		if (k && strcmp(w[k - 1], wv->word[idx[i]]) == 0) {
			free(wv->word[idx[i]]);
			wv->duplicates++;
			continue;
		}
		w[k] = wv->word[idx[i]];
		memcpy(v + k * D, wv->vec + idx[i] * D, D * sizeof *v);
		k++;
	}
	free(idx), free(wv->word), free(wv->vec);
	wv->word = w, wv->vec = v, wv->n = k;
	return 0;
}

int cmr_wordvec_parse(cmr_wordvec *wv, const char *buf, size_t len, const char *name, char *err, size_t errlen)
{
	memset(wv, 0, sizeof *wv);
	builder b = {wv, 0};
	size_t i = 0;
	while (i < len && (buf[i] == ' ' || buf[i] == '\n' || buf[i] == '\r' || buf[i] == '\t'))
		i++;
	int rc = i < len && buf[i] == '{' ? parse_json(&b, buf, len, name, err, errlen)
					  : parse_text(&b, buf, len, name, err, errlen);
	if (rc == 0 && !wv->n)
		rc = cmr_errf(err, errlen, "%s: no word vectors", name);
	if (rc == 0)
		rc = finish(wv, err, errlen);
	if (rc < 0)
		cmr_wordvec_free(wv);
	return rc;
}

int cmr_wordvec_load(cmr_wordvec *wv, const char *path, char *err, size_t errlen)
{
	size_t len;
	char *buf = cmr_read_file(path, WORDVEC_FILE_MAX, &len, err, errlen);
	if (!buf)
		return -1;
	int rc = cmr_wordvec_parse(wv, buf, len, path, err, errlen);
	free(buf);
	return rc;
}

void cmr_wordvec_free(cmr_wordvec *wv)
{
	for (size_t i = 0; wv->word && i < wv->n; i++)
		free(wv->word[i]);
	free(wv->word), free(wv->vec);
	memset(wv, 0, sizeof *wv);
}

static int cmp_key(const void *k, const void *e)
{
	return strcmp(k, *(char *const *)e);
}

const float *cmr_wordvec_find(const cmr_wordvec *wv, const char *word)
{
	char *const *w = bsearch(word, wv->word, wv->n, sizeof *wv->word, cmp_key);
	return w ? wv->vec + (size_t)(w - wv->word) * (size_t)wv->dim : NULL;
}

static double cosine(const float *a, const float *b, int d)
{
	double ab = 0, aa = 0, bb = 0;
	for (int i = 0; i < d; i++)
		ab += (double)a[i] * b[i], aa += (double)a[i] * a[i], bb += (double)b[i] * b[i];
	return aa > 0 && bb > 0 ? ab / sqrt(aa * bb) : -2; /* a zero vector ranks last */
}

int cmr_wordvec_bridge(const cmr_wordvec *wv, const float *q, const size_t *cand, size_t nc, int m, float tau,
		       size_t *idx, float *w)
{
	double qq = 0;
	for (int i = 0; i < wv->dim; i++)
		qq += (double)q[i] * q[i];
	if (!(qq > 0) || m < 1 || !(tau > 0))
		return -1;
	int n = 0;
	double best[256];
	if (m > 256)
		m = 256;
	for (size_t c = 0; c < nc; c++) { /* insertion into the m best so far (m is small) */
		double s = cosine(q, wv->vec + cand[c] * (size_t)wv->dim, wv->dim);
		if (n == m && s <= best[n - 1])
			continue;
		int at = n < m ? n++ : m - 1;
		while (at > 0 && best[at - 1] < s) {
			best[at] = best[at - 1], idx[at] = idx[at - 1];
			at--;
		}
		best[at] = s, idx[at] = cand[c];
	}
	double z = 0;
	for (int i = 0; i < n; i++)
		z += exp((best[i] - best[0]) / tau);
	for (int i = 0; i < n; i++)
		w[i] = (float)(exp((best[i] - best[0]) / tau) / z);
	return n;
}

int cmr_text_words(const char *text, size_t len, char ***out)
{
	*out = NULL;
	char *c = cmr_clip_clean(text, len);
	if (!c)
		return -1;
	size_t n = strlen(c), nw = 0;
	char **w = malloc((n + 1) * sizeof *w); /* at most one word a byte */
	char *blk = malloc(2 * n + 2);           /* the words, each with its NUL */
	if (!w || !blk) {
		free(c), free(w), free(blk);
		return -1;
	}
	size_t at = 0, i = 0;
	while (i < n) {
		utf8proc_int32_t ch;
		utf8proc_ssize_t k = utf8proc_iterate((const uint8_t *)c + i, (utf8proc_ssize_t)(n - i), &ch);
		if (k <= 0) { /* cmr_clip_clean gives valid UTF-8; be safe */
			i++;
			continue;
		}
		utf8proc_category_t cat = utf8proc_category(ch);
		int wordish = (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO) ||
			      (cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO);
		if (!wordish) {
			i += (size_t)k;
			continue;
		}
		size_t start = i, end = i;
		while (end < n) {
			k = utf8proc_iterate((const uint8_t *)c + end, (utf8proc_ssize_t)(n - end), &ch);
			if (k <= 0)
				break;
			cat = utf8proc_category(ch);
			if (!((cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO) ||
			      (cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO)))
				break;
			if (end + (size_t)k - start > CMR_WORDVEC_WORD_MAX)
				break;
			end += (size_t)k;
		}
		memcpy(blk + at, c + start, end - start);
		w[nw++] = blk + at;
		at += end - start;
		blk[at++] = 0;
		i = end;
	}
	free(c);
	if (!nw) {
		free(w), free(blk);
		return 0;
	}
	/* w[0] is blk: the caller frees *out[0] then *out */
	*out = w;
	return (int)nw;
}
