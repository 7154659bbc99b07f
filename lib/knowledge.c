/* knowledge.c - concept knowledge (MASK): the file, building prototypes, a word's prototype, the mapping's loss and training. */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "knowledge.h"
#include "format/safetensors.h"
#include "format/stream.h"
#include "util.h"

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_key(const void *k, const void *e)
{
	return strcmp(k, *(char *const *)e);
}

/* ---- word sets ---- */
int cmr_wordset_parse(cmr_wordset *s, const char *text, size_t len, const char *name, char *err, size_t errlen)
{
	memset(s, 0, sizeof *s);
	size_t cap = 0, line = 0;
	for (const char *p = text, *end = text + len; p < end;) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *e = nl ? nl : end;
		line++;
		const char *hash = memchr(p, '#', (size_t)(e - p));
		const char *we = hash ? hash : e;
		while (p < we && (*p == ' ' || *p == '\t'))
			p++;
		while (we > p && (we[-1] == ' ' || we[-1] == '\t' || we[-1] == '\r'))
			we--;
		if (we > p) {
			size_t n = (size_t)(we - p);
			if (n > CMR_WORDVEC_WORD_MAX || memchr(p, ' ', n) || memchr(p, '\t', n) || memchr(p, 0, n)) {
				cmr_wordset_free(s);
				return cmr_errf(err, errlen, "%s:%zu: not one word of at most %d bytes", name, line,
						CMR_WORDVEC_WORD_MAX);
			}
			if (s->n == cap) {
				cap = cap ? 2 * cap : 256;
				char **nw = realloc(s->w, cap * sizeof *nw);
				if (!nw)
					goto oom;
				s->w = nw;
			}
			if (!(s->w[s->n] = strndup(p, n)))
				goto oom;
			s->n++;
		}
		p = nl ? nl + 1 : end;
	}
	if (s->n)
		qsort(s->w, s->n, sizeof *s->w, cmp_str);
	size_t u = 0; /* unique */
	for (size_t i = 0; i < s->n; i++) {
		if (u && strcmp(s->w[u - 1], s->w[i]) == 0) {
			free(s->w[i]);
			continue;
		}
		s->w[u++] = s->w[i];
	}
	s->n = u;
	return 0;
oom:
	cmr_wordset_free(s);
	return cmr_errf(err, errlen, "%s: out of memory", name);
}

int cmr_wordset_has(const cmr_wordset *s, const char *word)
{
	return s && s->n && bsearch(word, s->w, s->n, sizeof *s->w, cmp_key) != NULL;
}

void cmr_wordset_free(cmr_wordset *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->w[i]);
	free(s->w);
	memset(s, 0, sizeof *s);
}

/* ---- the file ---- */
void cmr_knowledge_free(cmr_knowledge *kn)
{
	cmr_wordvec_free(&kn->words);
	free(kn->proto), free(kn->count), free(kn->centre), free(kn->map_w), free(kn->map_b);
	free(kn->provenance), free(kn->map_provenance);
	memset(kn, 0, sizeof *kn);
}

/* a tensor's values as fresh F32 [n] (F32, F16 or BF16 read), every one finite */
static float *take_f32(const cmr_st *st, const char *name, int ndim, const int64_t *shape, const char *file,
		       char *err, size_t errlen)
{
	const cmr_st_tensor *t = cmr_st_get(st, name);
	if (!t) {
		cmr_errf(err, errlen, "%s: no tensor '%s'", file, name);
		return NULL;
	}
	int same = t->ndim == ndim;
	for (int i = 0; same && i < ndim; i++)
		same = t->shape[i] == shape[i];
	if (!same) {
		char want[96] = "", got[96] = "";
		for (int i = 0; i < ndim; i++)
			snprintf(want + strlen(want), sizeof want - strlen(want), "%s%" PRId64, i ? "," : "", shape[i]);
		for (int i = 0; i < t->ndim && i < 8; i++)
			snprintf(got + strlen(got), sizeof got - strlen(got), "%s%" PRId64, i ? "," : "", t->shape[i]);
		cmr_errf(err, errlen, "%s: tensor '%s' is [%s], not [%s]", file, name, got, want);
		return NULL;
	}
	size_t n = 1;
	for (int i = 0; i < ndim; i++)
		n *= (size_t)shape[i];
	float *v = malloc(n * sizeof *v + 1);
	if (!v) {
		cmr_errf(err, errlen, "%s: out of memory", file);
		return NULL;
	}
	if (t->dtype != CMR_DTYPE_F32) {
		free(v);
		cmr_errf(err, errlen, "%s: tensor '%s' is not F32", file, name);
		return NULL;
	}
	memcpy(v, t->data, n * sizeof *v);
	for (size_t i = 0; i < n; i++)
		if (!isfinite(v[i])) {
			free(v);
			cmr_errf(err, errlen, "%s: tensor '%s' has a value that is not finite (element %zu)", file, name, i);
			return NULL;
		}
	return v;
}

/* rows of a [n, d] table of unit length (within 1e-3) */
static long not_unit(const float *v, size_t n, int d)
{
	for (size_t i = 0; i < n; i++) {
		double s = 0;
		for (int j = 0; j < d; j++)
			s += (double)v[i * (size_t)d + j] * v[i * (size_t)d + j];
		if (fabs(sqrt(s) - 1) > 1e-3)
			return (long)i;
	}
	return -1;
}

static int valid_word(const char *w, size_t n)
{
	if (n == 0 || n > CMR_WORDVEC_WORD_MAX)
		return 0;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)w[i] <= ' ' || w[i] == 0x7f)
			return 0;
	return 1;
}

static int from_st(cmr_knowledge *kn, const cmr_st *st, const char *file, char *err, size_t errlen)
{
	memset(kn, 0, sizeof *kn);
	const char *fmt = cmr_st_metadata(st, "format");
	if (!fmt)
		return cmr_errf(err, errlen, "%s: not a knowledge file (its metadata has no format)", file);
	if (strcmp(fmt, CMR_KNOWLEDGE_FORMAT) != 0)
		return cmr_errf(err, errlen, "%s: format '%.64s' is not %s", file, fmt, CMR_KNOWLEDGE_FORMAT);
	const cmr_st_tensor *tp = cmr_st_get(st, "prototypes"), *tw = cmr_st_get(st, "word_vectors");
	if (!tp || !tw || tp->ndim != 2 || tw->ndim != 2)
		return cmr_errf(err, errlen, "%s: needs 2-d tensors 'prototypes' and 'word_vectors'", file);
	int64_t k = tp->shape[0], dv = tp->shape[1], dw = tw->shape[1];
	if (k < 1 || k > CMR_KNOWLEDGE_MAX_CONCEPTS || tw->shape[0] != k)
		return cmr_errf(err, errlen, "%s: %" PRId64 " prototypes and %" PRId64 " word vectors (1 to %d, equal)",
				file, k, tw->shape[0], CMR_KNOWLEDGE_MAX_CONCEPTS);
	if (dv < 1 || dv > CMR_KNOWLEDGE_MAX_DIM || dw < 1 || dw > CMR_WORDVEC_DIM_MAX)
		return cmr_errf(err, errlen, "%s: dimensions %" PRId64 " (visual, 1 to %d) and %" PRId64
				" (words, 1 to %d)", file, dv, CMR_KNOWLEDGE_MAX_DIM, dw, CMR_WORDVEC_DIM_MAX);
	kn->k = (size_t)k, kn->dv = (int)dv, kn->dw = (int)dw;
	/* the words: K lines, sorted, unique */
	const char *words = cmr_st_metadata(st, "words");
	if (!words)
		return cmr_errf(err, errlen, "%s: its metadata has no words", file);
	kn->words.dim = (int)dw;
	if (!(kn->words.word = calloc(kn->k, sizeof *kn->words.word)))
		goto oom;
	size_t n = 0;
	for (const char *p = words;;) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		if (n == kn->k) {
			cmr_knowledge_free(kn);
			return cmr_errf(err, errlen, "%s: more words than the %" PRId64 " prototypes", file, k);
		}
		if (!valid_word(p, len)) {
			cmr_knowledge_free(kn);
			return cmr_errf(err, errlen, "%s: word %zu is empty, too long or has a space or control byte",
					file, n + 1);
		}
		if (!(kn->words.word[n] = strndup(p, len)))
			goto oom;
		kn->words.n = ++n;
		if (n > 1 && strcmp(kn->words.word[n - 2], kn->words.word[n - 1]) >= 0) {
			cmr_errf(err, errlen, "%s: the words are not sorted and unique ('%s' then '%s')", file,
				 kn->words.word[n - 2], kn->words.word[n - 1]);
			cmr_knowledge_free(kn);
			return -1;
		}
		if (!nl)
			break;
		p = nl + 1;
	}
	if (n != kn->k) {
		cmr_knowledge_free(kn);
		return cmr_errf(err, errlen, "%s: %zu words for %" PRId64 " prototypes", file, n, k);
	}
	int64_t spw[2] = {k, dw}, spp[2] = {k, dv}, spc[1] = {dv}, spm[2] = {dw, dv}, spb[1] = {dw};
	if (!(kn->words.vec = take_f32(st, "word_vectors", 2, spw, file, err, errlen)) ||
	    !(kn->proto = take_f32(st, "prototypes", 2, spp, file, err, errlen)) ||
	    !(kn->centre = take_f32(st, "centre", 1, spc, file, err, errlen)))
		goto fail;
	long r;
	if ((r = not_unit(kn->words.vec, kn->k, kn->dw)) >= 0 || (r = not_unit(kn->proto, kn->k, kn->dv)) >= 0) {
		cmr_errf(err, errlen, "%s: the %s of '%s' is not of unit length", file,
			 not_unit(kn->words.vec, kn->k, kn->dw) >= 0 ? "word vector" : "prototype", kn->words.word[r]);
		goto fail;
	}
	const cmr_st_tensor *tc = cmr_st_get(st, "counts");
	if (!tc || tc->dtype != CMR_DTYPE_I32 || tc->ndim != 1 || tc->shape[0] != k) {
		cmr_errf(err, errlen, "%s: needs 'counts', I32 [%" PRId64 "]", file, k);
		goto fail;
	}
	if (!(kn->count = malloc(kn->k * sizeof *kn->count)))
		goto oom;
	memcpy(kn->count, tc->data, kn->k * sizeof *kn->count);
	for (size_t i = 0; i < kn->k; i++)
		if (kn->count[i] < 1) {
			cmr_errf(err, errlen, "%s: the count of '%s' is %" PRId32 " (at least 1)", file, kn->words.word[i],
				 kn->count[i]);
			goto fail;
		}
	const cmr_st_tensor *tm = cmr_st_get(st, "mapping.weight"), *tb = cmr_st_get(st, "mapping.bias");
	if (!tm != !tb) {
		cmr_errf(err, errlen, "%s: 'mapping.weight' and 'mapping.bias' go together", file);
		goto fail;
	}
	if (tm && (!(kn->map_w = take_f32(st, "mapping.weight", 2, spm, file, err, errlen)) ||
		   !(kn->map_b = take_f32(st, "mapping.bias", 1, spb, file, err, errlen))))
		goto fail;
	size_t expect = 4 + (tm ? 2 : 0);
	if (cmr_st_count(st) != expect) {
		for (size_t i = 0; i < cmr_st_count(st); i++) {
			const char *nm = cmr_st_at(st, i)->name;
			if (strcmp(nm, "prototypes") && strcmp(nm, "word_vectors") && strcmp(nm, "centre") &&
			    strcmp(nm, "counts") && strcmp(nm, "mapping.weight") && strcmp(nm, "mapping.bias")) {
				cmr_errf(err, errlen, "%s: unknown tensor '%s'", file, nm);
				goto fail;
			}
		}
	}
	const char *fm = cmr_st_metadata(st, "features_model"), *fid = cmr_st_metadata(st, "features_xxh3");
	if (!fm || !fid || cmr_parse_hex64(fid, &kn->features_id) < 0 || strlen(fm) >= sizeof kn->features) {
		cmr_errf(err, errlen, "%s: needs features_model (a name) and features_xxh3 (16 hex digits)", file);
		goto fail;
	}
	snprintf(kn->features, sizeof kn->features, "%s", fm);
	const char *pv = cmr_st_metadata(st, "provenance"), *mp = cmr_st_metadata(st, "mapping_provenance");
	if ((pv && !(kn->provenance = strdup(pv))) || (mp && !(kn->map_provenance = strdup(mp))))
		goto oom;
	return 0;
oom:
	cmr_errf(err, errlen, "%s: out of memory", file);
fail:
	cmr_knowledge_free(kn);
	return -1;
}

int cmr_knowledge_load(cmr_knowledge *kn, const char *path, char *err, size_t errlen)
{
	memset(kn, 0, sizeof *kn);
	cmr_st *st = cmr_st_open(path, err, errlen);
	if (!st)
		return -1;
	int rc = from_st(kn, st, path, err, errlen);
	cmr_st_close(st);
	return rc;
}

int cmr_knowledge_from_memory(cmr_knowledge *kn, const void *buf, size_t size, const char *name, char *err,
			      size_t errlen)
{
	memset(kn, 0, sizeof *kn);
	cmr_st *st = cmr_st_from_memory(buf, size, name, err, errlen);
	if (!st)
		return -1;
	int rc = from_st(kn, st, name, err, errlen);
	cmr_st_close(st);
	return rc;
}

int cmr_knowledge_save(const cmr_knowledge *kn, const char *path, char *err, size_t errlen)
{
	json_t *m = json_object();
	size_t wl = 0;
	for (size_t i = 0; i < kn->k; i++)
		wl += strlen(kn->words.word[i]) + 1;
	char *words = malloc(wl + 1), *p = words;
	if (!m || !words) {
		json_decref(m);
		free(words);
		return cmr_errf(err, errlen, "%s: out of memory", path);
	}
	for (size_t i = 0; i < kn->k; i++) {
		size_t n = strlen(kn->words.word[i]);
		memcpy(p, kn->words.word[i], n);
		p += n;
		*p++ = '\n';
	}
	p[kn->k ? -1 : 0] = 0;
	char id[17];
	snprintf(id, sizeof id, "%016" PRIx64, kn->features_id);
	json_object_set_new(m, "format", json_string(CMR_KNOWLEDGE_FORMAT));
	json_object_set_new(m, "words", json_string(words));
	json_object_set_new(m, "features_model", json_string(kn->features));
	json_object_set_new(m, "features_xxh3", json_string(id));
	if (kn->provenance)
		json_object_set_new(m, "provenance", json_string(kn->provenance));
	if (kn->map_provenance)
		json_object_set_new(m, "mapping_provenance", json_string(kn->map_provenance));
	free(words);
	char *meta = json_dumps(m, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(m);
	if (!meta)
		return cmr_errf(err, errlen, "%s: out of memory", path);
	int64_t k = (int64_t)kn->k, dv = kn->dv, dw = kn->dw;
	cmr_st_out t[6] = {
		{"word_vectors", CMR_DTYPE_F32, 2, {k, dw}, kn->words.vec},
		{"prototypes", CMR_DTYPE_F32, 2, {k, dv}, kn->proto},
		{"counts", CMR_DTYPE_I32, 1, {k}, kn->count},
		{"centre", CMR_DTYPE_F32, 1, {dv}, kn->centre},
		{"mapping.weight", CMR_DTYPE_F32, 2, {dw, dv}, kn->map_w},
		{"mapping.bias", CMR_DTYPE_F32, 1, {dw}, kn->map_b},
	};
	int rc = cmr_st_write(path, t, kn->map_w ? 6 : 4, meta, err, errlen);
	free(meta);
	return rc;
}

/* ---- building ---- */
int cmr_knowledge_build(cmr_knowledge *kn, const cmr_knowledge_pool *pool, const cmr_wordvec *wv,
			const cmr_wordset *stop, float min_prob, int min_count, int centre, char *err, size_t errlen)
{
	memset(kn, 0, sizeof *kn);
	int dv = pool->dv, dw = wv->dim;
	/* the candidate words: of every label, with a vector, not stop words; sorted, unique */
	char **cand = NULL;
	size_t nc = 0, ccap = 0;
	char ***lw = calloc(pool->nlabels + 1, sizeof *lw); /* each label's words */
	int *nlw = calloc(pool->nlabels + 1, sizeof *nlw);
	double *sum = NULL;
	if (!lw || !nlw)
		goto oom;
	for (size_t c = 0; c < pool->nlabels; c++) {
		nlw[c] = cmr_text_words(pool->labels[c], strlen(pool->labels[c]), &lw[c]);
		if (nlw[c] < 0)
			goto oom;
		for (int i = 0; i < nlw[c]; i++) {
			const char *w = lw[c][i];
			if (cmr_wordset_has(stop, w) || !cmr_wordvec_find(wv, w))
				continue;
			if (nc == ccap) {
				ccap = ccap ? 2 * ccap : 512;
				char **nw = realloc(cand, ccap * sizeof *nw);
				if (!nw)
					goto oom;
				cand = nw;
			}
			cand[nc++] = (char *)w;
		}
	}
	if (nc)
		qsort(cand, nc, sizeof *cand, cmp_str);
	size_t u = 0;
	for (size_t i = 0; i < nc; i++)
		if (!u || strcmp(cand[u - 1], cand[i]) != 0)
			cand[u++] = cand[i];
	nc = u;
	/* per candidate: the sum of its images' features and their count */
	sum = calloc(nc * (size_t)dv + (size_t)dv + 1, sizeof *sum);
	int32_t *cnt = calloc(nc + 1, sizeof *cnt);
	kn->centre = calloc((size_t)dv, sizeof *kn->centre);
	if (!sum || !cnt || !kn->centre) {
		free(cnt);
		goto oom;
	}
	double *mean = sum + nc * (size_t)dv;
	for (size_t i = 0; i < pool->n; i++) {
		const float *x = pool->x + i * (size_t)dv;
		for (int d = 0; d < dv; d++)
			mean[d] += x[d];
		uint32_t c = pool->cls[i];
		if (c >= pool->nlabels || !(pool->prob[i] >= min_prob))
			continue;
		for (int j = 0; j < nlw[c]; j++) {
			char **f = nc ? bsearch(lw[c][j], cand, nc, sizeof *cand, cmp_key) : NULL;
			if (!f)
				continue;
			int dup = 0; /* a label naming a word twice counts the image once */
			for (int e = 0; e < j; e++)
				dup |= strcmp(lw[c][e], lw[c][j]) == 0;
			if (dup)
				continue;
			size_t w = (size_t)(f - cand);
			for (int d = 0; d < dv; d++)
				sum[w * (size_t)dv + d] += x[d];
			cnt[w]++;
		}
	}
	if (centre && pool->n)
		for (int d = 0; d < dv; d++)
			kn->centre[d] = (float)(mean[d] / (double)pool->n);
	/* a concept whose images' mean is the centre (every image of the pool in it) tells
	 * nothing apart: left out with those of too few images */
	size_t k = 0, at_centre = 0;
	for (size_t w = 0; w < nc; w++) {
		if (cnt[w] < min_count || cnt[w] < 1)
			continue;
		double s = 0;
		for (int d = 0; d < dv; d++) {
			double v = sum[w * (size_t)dv + d] / cnt[w] - kn->centre[d];
			s += v * v;
		}
		if (!(s > 1e-10)) {
			cnt[w] = 0;
			at_centre++;
			continue;
		}
		k++;
	}
	if (!k) {
		free(cnt);
		if (at_centre)
			cmr_errf(err, errlen, "every concept's prototype is the pool's centre (all %zu images in one "
				 "concept): a larger pool, or no centre", pool->n);
		else
			cmr_errf(err, errlen, "no concept has %d image%s with a probability of at least %g (%zu words of "
				 "labels have vectors)", min_count, min_count == 1 ? "" : "s", min_prob, nc);
		goto fail;
	}
	kn->k = k, kn->dv = dv, kn->dw = dw;
	kn->words.dim = dw;
	kn->words.word = calloc(k, sizeof *kn->words.word);
	kn->words.vec = malloc(k * (size_t)dw * sizeof *kn->words.vec);
	kn->proto = malloc(k * (size_t)dv * sizeof *kn->proto);
	kn->count = malloc(k * sizeof *kn->count);
	if (!kn->words.word || !kn->words.vec || !kn->proto || !kn->count) {
		free(cnt);
		goto oom;
	}
	size_t at = 0;
	for (size_t w = 0; w < nc; w++) {
		if (cnt[w] < min_count || cnt[w] < 1)
			continue;
		if (!(kn->words.word[at] = strdup(cand[w]))) {
			free(cnt);
			goto oom;
		}
		kn->words.n = at + 1;
		memcpy(kn->words.vec + at * (size_t)dw, cmr_wordvec_find(wv, cand[w]), (size_t)dw * sizeof(float));
		cmr_unit_rows(kn->words.vec + at * (size_t)dw, 1, dw);
		float *pr = kn->proto + at * (size_t)dv;
		for (int d = 0; d < dv; d++)
			pr[d] = (float)(sum[w * (size_t)dv + d] / cnt[w]) - kn->centre[d];
		cmr_unit_rows(pr, 1, dv);
		kn->count[at] = cnt[w];
		at++;
	}
	free(cnt);
	free(sum);
	free(cand);
	for (size_t c = 0; c < pool->nlabels; c++)
		if (nlw[c] > 0) {
			free(lw[c][0]);
			free(lw[c]);
		}
	free(lw), free(nlw);
	return 0;
oom:
	cmr_errf(err, errlen, "out of memory");
fail:
	free(sum);
	free(cand);
	for (size_t c = 0; lw && c < pool->nlabels; c++)
		if (nlw[c] > 0) {
			free(lw[c][0]);
			free(lw[c]);
		}
	free(lw), free(nlw);
	cmr_knowledge_free(kn);
	return -1;
}

/* ---- using ---- */
static int unit(float *v, int d)
{
	double s = 0;
	for (int i = 0; i < d; i++)
		s += (double)v[i] * v[i];
	if (!(s > 0) || !isfinite(s))
		return -1;
	float r = (float)(1 / sqrt(s));
	for (int i = 0; i < d; i++)
		v[i] *= r;
	return 0;
}

int cmr_knowledge_visual(const cmr_knowledge *kn, float *x)
{
	for (int d = 0; d < kn->dv; d++)
		x[d] -= kn->centre[d];
	return unit(x, kn->dv);
}

int cmr_knowledge_mapped(const cmr_knowledge *kn, const float *x, float *out)
{
	float *v = malloc((size_t)kn->dv * sizeof *v);
	if (!v || !kn->map_w) {
		free(v);
		return -1;
	}
	memcpy(v, x, (size_t)kn->dv * sizeof *v);
	int rc = cmr_knowledge_visual(kn, v);
	for (int j = 0; rc == 0 && j < kn->dw; j++) {
		const float *wr = kn->map_w + (size_t)j * kn->dv;
		double s = kn->map_b[j];
		for (int d = 0; d < kn->dv; d++)
			s += (double)wr[d] * v[d];
		out[j] = (float)s;
	}
	free(v);
	return rc < 0 ? -1 : unit(out, kn->dw);
}

int cmr_knowledge_word(const cmr_knowledge *kn, const char *word, const float *q, int m, float tau, float min_cos,
		       float *out, size_t *near, char *how)
{
	char *const *f = bsearch(word, kn->words.word, kn->k, sizeof *kn->words.word, cmp_key);
	*how = '-';
	if (f) {
		size_t c = (size_t)(f - kn->words.word);
		memcpy(out, kn->proto + c * (size_t)kn->dv, (size_t)kn->dv * sizeof *out);
		if (near)
			*near = c;
		*how = 'c';
		return 1;
	}
	if (m < 1 || !q)
		return 0;
	size_t *cand = malloc(kn->k * sizeof *cand), *idx = malloc((size_t)m * sizeof *idx);
	float *w = malloc((size_t)m * sizeof *w);
	if (!cand || !idx || !w) {
		free(cand), free(idx), free(w);
		return -1;
	}
	for (size_t c = 0; c < kn->k; c++)
		cand[c] = c;
	int n = cmr_wordvec_bridge(&kn->words, q, cand, kn->k, m, tau, idx, w);
	int rc = 0;
	if (n > 0) {
		double qq = 0, dot = 0;
		const float *b = kn->words.vec + idx[0] * (size_t)kn->dw; /* unit */
		for (int d = 0; d < kn->dw; d++)
			qq += (double)q[d] * q[d], dot += (double)q[d] * b[d];
		if (dot / sqrt(qq) >= min_cos) {
			memset(out, 0, (size_t)kn->dv * sizeof *out);
			for (int i = 0; i < n; i++)
				for (int d = 0; d < kn->dv; d++)
					out[d] += w[i] * kn->proto[idx[i] * (size_t)kn->dv + d];
			if (unit(out, kn->dv) == 0) {
				rc = 1;
				*how = 'o';
				if (near)
					*near = idx[0];
			}
		}
	}
	free(cand), free(idx), free(w);
	return rc;
}

/* ---- the mapping ---- */
void cmr_map_hp_default(cmr_map_hp *hp)
{
	*hp = (cmr_map_hp){0.1f, 1.0f, 1.0f, 1e-4f, 1e-3f, 500, 1};
}

double cmr_map_loss(const float *W, const float *b, const float *P, const float *Wv, size_t k, int dv, int dw,
		    const cmr_map_hp *hp, float *gw, float *gb, double parts[3])
{
	size_t K = k;
	double *h = malloc(K * (size_t)dw * sizeof *h), *u = malloc(K * (size_t)dw * sizeof *u);
	double *nrm = malloc(K * sizeof *nrm), *du = calloc(K * (size_t)dw, sizeof *du);
	double *z = malloc(K * sizeof *z);
	if (!h || !u || !nrm || !du || !z) {
		free(h), free(u), free(nrm), free(du), free(z);
		return -1;
	}
	/* h = W p + b, u = h / |h| */
	for (size_t c = 0; c < K; c++) {
		const float *p = P + c * (size_t)dv;
		double s2 = 0;
		for (int j = 0; j < dw; j++) {
			const float *wr = W + (size_t)j * dv;
			double s = b[j];
			for (int d = 0; d < dv; d++)
				s += (double)wr[d] * p[d];
			h[c * dw + j] = s;
			s2 += s * s;
		}
		nrm[c] = sqrt(s2) > 1e-12 ? sqrt(s2) : 1e-12;
		for (int j = 0; j < dw; j++)
			u[c * dw + j] = h[c * dw + j] / nrm[c];
	}
	double lcons = 0, lsim = 0, lcon = 0;
	/* consistency: mean (1 - u.w) */
	for (size_t c = 0; c < K; c++) {
		double s = 0;
		for (int j = 0; j < dw; j++) {
			s += u[c * dw + j] * Wv[c * dw + j];
			du[c * dw + j] -= Wv[c * dw + j] / (double)K;
		}
		lcons += (1 - s) / (double)K;
	}
	/* pairwise similarities: mean over (c, c') of (u_c.u_c' - w_c.w_c')^2 */
	if (hp->w_sim != 0)
		for (size_t c = 0; c < K; c++)
			for (size_t e = 0; e < K; e++) {
				double su = 0, sw = 0;
				for (int j = 0; j < dw; j++)
					su += u[c * dw + j] * u[e * dw + j], sw += (double)Wv[c * dw + j] * Wv[e * dw + j];
				double r = su - sw;
				lsim += hp->w_sim * r * r / ((double)K * K);
				/* d/du_c of r^2 through su (both c and e positions: symmetric, counted once each) */
				double g = hp->w_sim * 2 * r / ((double)K * K);
				for (int j = 0; j < dw; j++) {
					du[c * dw + j] += g * u[e * dw + j];
					du[e * dw + j] += g * u[c * dw + j];
				}
			}
	/* contrastive: mean_c -log softmax_n(u_c.w_n / tau)[c] */
	if (hp->w_con != 0)
		for (size_t c = 0; c < K; c++) {
			double mx = -INFINITY;
			for (size_t n = 0; n < K; n++) {
				double s = 0;
				for (int j = 0; j < dw; j++)
					s += u[c * dw + j] * Wv[n * dw + j];
				z[n] = s / hp->tau;
				mx = z[n] > mx ? z[n] : mx;
			}
			double se = 0;
			for (size_t n = 0; n < K; n++)
				se += exp(z[n] - mx);
			lcon += hp->w_con * (log(se) + mx - z[c]) / (double)K;
			for (size_t n = 0; n < K; n++) {
				double g = hp->w_con * (exp(z[n] - mx) / se - (n == c)) / ((double)K * hp->tau);
				for (int j = 0; j < dw; j++)
					du[c * dw + j] += g * Wv[n * dw + j];
			}
		}
	if (gw && gb) {
		memset(gw, 0, (size_t)dw * dv * sizeof *gw);
		memset(gb, 0, (size_t)dw * sizeof *gb);
		double *dh = h; /* reused */
		for (size_t c = 0; c < K; c++) {
			double dot = 0;
			for (int j = 0; j < dw; j++)
				dot += du[c * dw + j] * u[c * dw + j];
			for (int j = 0; j < dw; j++)
				dh[c * dw + j] = (du[c * dw + j] - dot * u[c * dw + j]) / nrm[c];
		}
		for (int j = 0; j < dw; j++) {
			float *gr = gw + (size_t)j * dv;
			double sb = 0;
			for (size_t c = 0; c < K; c++) {
				double g = dh[c * dw + j];
				const float *p = P + c * (size_t)dv;
				sb += g;
				for (int d = 0; d < dv; d++)
					gr[d] += (float)(g * p[d]);
			}
			gb[j] = (float)sb;
		}
	}
	free(h), free(u), free(nrm), free(du), free(z);
	if (parts)
		parts[0] = lcons, parts[1] = lsim, parts[2] = lcon;
	return lcons + lsim + lcon;
}

static uint64_t mix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

int cmr_knowledge_train_map(cmr_knowledge *kn, const cmr_map_hp *hp,
			    void (*progress)(void *ctx, int step, double loss, const double parts[3]), void *ctx,
			    char *err, size_t errlen)
{
	size_t nw = (size_t)kn->dw * kn->dv, nb = (size_t)kn->dw, np = nw + nb;
	float *prm = malloc(np * sizeof *prm), *g = malloc(np * sizeof *g);
	double *m1 = calloc(np, sizeof *m1), *m2 = calloc(np, sizeof *m2);
	if (!prm || !g || !m1 || !m2) {
		free(prm), free(g), free(m1), free(m2);
		return cmr_errf(err, errlen, "out of memory");
	}
	/* W ~ N(0, 1/dv) by Box-Muller from splitmix64; b = 0 */
	uint64_t s = hp->seed;
	float sd = (float)(1 / sqrt((double)kn->dv));
	for (size_t i = 0; i < nw; i++) {
		double a = ((double)(mix(&s) >> 11) + 0.5) / 9007199254740992.0;
		double c = ((double)(mix(&s) >> 11) + 0.5) / 9007199254740992.0;
		prm[i] = sd * (float)(sqrt(-2 * log(a)) * cos(2 * M_PI * c));
	}
	memset(prm + nw, 0, nb * sizeof *prm);
	const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
	for (int t = 1; t <= hp->steps; t++) {
		double parts[3];
		double loss = cmr_map_loss(prm, prm + nw, kn->proto, kn->words.vec, kn->k, kn->dv, kn->dw, hp, g, g + nw,
					   parts);
		if (loss < 0 || !isfinite(loss)) {
			free(prm), free(g), free(m1), free(m2);
			return cmr_errf(err, errlen, loss < 0 ? "out of memory" : "the loss is not finite at step %d", t);
		}
		double c1 = 1 - pow(b1, t), c2 = 1 - pow(b2, t);
		for (size_t i = 0; i < np; i++) {
			m1[i] = b1 * m1[i] + (1 - b1) * g[i];
			m2[i] = b2 * m2[i] + (1 - b2) * (double)g[i] * g[i];
			double upd = (m1[i] / c1) / (sqrt(m2[i] / c2) + eps);
			if (i < nw)
				upd += hp->decay * prm[i];
			prm[i] -= (float)(hp->lr * upd);
		}
		if (progress)
			progress(ctx, t, loss, parts);
	}
	free(kn->map_w), free(kn->map_b);
	kn->map_w = prm;
	kn->map_b = malloc(nb * sizeof *kn->map_b);
	if (!kn->map_b) {
		kn->map_w = NULL;
		free(prm), free(g), free(m1), free(m2);
		return cmr_errf(err, errlen, "out of memory");
	}
	memcpy(kn->map_b, prm + nw, nb * sizeof *kn->map_b);
	free(g), free(m1), free(m2);
	return 0;
}
