/* model/run.c - the training run of model/run.h, moved out of cmr-train so that any tool
 * trains with the same pairing, sampler, state, evaluation, checkpoints, log and signals. */
#include "model/run.h"
#include "model/tuning.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "atomic.h"
#include "eval.h"
#include "fe.h"
#include "format/safetensors.h"
#include "format/stream.h"
#include "util.h"

/* ---- data ---- */
/* a token record's ids, checked against the model: a copy */
static int32_t *take_tokens(const cmr_record *rec, const char *input, const cmr_pairs *d, const char *what)
{
	if (rec->dtype != CMR_DTYPE_I32 || rec->rank != 1 || rec->dims[0] < 2 || rec->dims[0] > (uint32_t)d->context)
		cmr_die("%s: record %" PRIu64 " (key '%s'), byte %" PRIu64 ": %s must be i32 [2..%d] (the model's "
			"context; cmr-caption-ingest -c %d)",
			input, rec->index, rec->key, rec->offset, what, d->context, d->context);
	int32_t *t = malloc(rec->nbytes);
	if (!t)
		cmr_die("out of memory");
	memcpy(t, rec->data, rec->nbytes);
	for (uint32_t i = 0; i < rec->dims[0]; i++) /* before the first step, not as a NaN loss */
		if (t[i] < 0 || t[i] >= d->vocab)
			cmr_die("%s: record %" PRIu64 " (key '%s'), byte %" PRIu64 ": token %u is id %d, outside the "
				"model's vocabulary of %d", input, rec->index, rec->key, rec->offset, i, (int)t[i], d->vocab);
	return t;
}

/* grows the token arrays (ids, lengths, keys) of n entries to hold one more */
static void grow_tokens(int32_t ***tok, int **len, char ***key, size_t n, size_t *cap)
{
	if (n < *cap)
		return;
	*cap = *cap ? 2 * *cap : 4096;
	*tok = realloc(*tok, *cap * sizeof **tok);
	*len = realloc(*len, *cap * sizeof **len);
	*key = realloc(*key, *cap * sizeof **key);
	if (!*tok || !*len || !*key)
		cmr_die("out of memory");
}

static int on_record(const cmr_record *rec, const char *input, void *ctx)
{
	cmr_pairs *d = ctx;
	if (rec->type != CMR_TYPE_TENSOR)
		return 0;
	if (d->reading_desc) {
		if (rec->kind != CMR_KIND_DESC_TOKENS)
			return 0;
		grow_tokens(&d->dtok, &d->dlen, &d->dkey, d->ndesc, &d->capdesc);
		d->dtok[d->ndesc] = take_tokens(rec, input, d, "descriptions");
		if (!(d->dkey[d->ndesc] = strdup(rec->key)))
			cmr_die("out of memory");
		d->dlen[d->ndesc++] = (int)rec->dims[0];
	} else if (d->features ? rec->kind == CMR_KIND_EMBEDDING : rec->kind == CMR_KIND_IMAGE) {
		if (d->features && (rec->dtype != CMR_DTYPE_F32 || rec->rank != 1 || rec->dims[0] != (uint32_t)d->features))
			cmr_die("%s: record %" PRIu64 " (key '%s'), byte %" PRIu64 ": the image features are %s [%u]; the "
				"model's features tower takes f32 [%d] (cmr-encode -m MODEL.tflite)", input, rec->index,
				rec->key, rec->offset, cmr_dtype_name(rec->dtype), rec->dims[0], d->features);
		if (!d->features && (rec->dtype != CMR_DTYPE_U8 || rec->rank != 3 || rec->dims[2] != 3 || rec->dims[0] != (uint32_t)d->size ||
		    rec->dims[1] != (uint32_t)d->size))
			cmr_die("%s: record %" PRIu64 " (key '%s'), byte %" PRIu64 ": the image is %s [%u, %u, %u]; the model "
				"takes u8 [%d, %d, 3] (cmr-decode -s %d)",
				input, rec->index, rec->key, rec->offset, cmr_dtype_name(rec->dtype), rec->dims[0], rec->rank > 1 ? rec->dims[1] : 0,
				rec->rank > 2 ? rec->dims[2] : 0, d->size, d->size, d->size);
		if (d->nimg == d->capimg) {
			d->capimg = d->capimg ? 2 * d->capimg : 1024;
			if (!(d->img = realloc(d->img, d->capimg * sizeof *d->img)))
				cmr_die("out of memory");
		}
		cmr_pair_image *im = &d->img[d->nimg++];
		memset(im, 0, sizeof *im);
		for (int p = 0; p < CMR_MAX_PERSPECTIVES; p++)
			im->desc[p] = -1;
		im->key = strdup(rec->key);
		im->px = malloc(rec->nbytes);
		if (!im->key || !im->px)
			cmr_die("out of memory");
		memcpy(im->px, rec->data, rec->nbytes);
	} else if (rec->kind == CMR_KIND_TOKENS) {
		grow_tokens(&d->tok, &d->len, &d->tkey, d->ntok, &d->captok);
		d->tok[d->ntok] = take_tokens(rec, input, d, "tokens");
		if (!(d->tkey[d->ntok] = strdup(rec->key)))
			cmr_die("out of memory");
		d->len[d->ntok++] = (int)rec->dims[0];
	}
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_image(const void *a, const void *b)
{
	return strcmp(((const cmr_pair_image *)a)->key, ((const cmr_pair_image *)b)->key);
}

/* reads the streams, pairs captions with images; images without captions are dropped */
void cmr_pairs_load(cmr_pairs *d, char *const *inputs, int n)
{
	cmr_each_record(inputs, n, on_record, d);
	if (!d->nimg || !d->ntok)
		cmr_die("the %s streams hold %zu image and %zu token records; both are needed", d->what, d->nimg, d->ntok);
	/* a copy sorted by key for the lookup */
	cmr_pair_image *sorted = malloc(d->nimg * sizeof *sorted);
	if (!sorted)
		cmr_die("out of memory");
	memcpy(sorted, d->img, d->nimg * sizeof *sorted);
	qsort(sorted, d->nimg, sizeof *sorted, cmp_image);
	for (size_t i = 1; i < d->nimg; i++)
		if (strcmp(sorted[i].key, sorted[i - 1].key) == 0)
			cmr_die("the %s streams hold two images with the key '%s'", d->what, sorted[i].key);
	/* caption keys unique, as cmr-eval wants them */
	char **tk = malloc(d->ntok * sizeof *tk);
	if (!tk)
		cmr_die("out of memory");
	memcpy(tk, d->tkey, d->ntok * sizeof *tk);
	qsort(tk, d->ntok, sizeof *tk, cmp_str);
	for (size_t i = 1; i < d->ntok; i++)
		if (strcmp(tk[i], tk[i - 1]) == 0)
			cmr_die("the %s streams hold two captions with the key '%s'", d->what, tk[i]);
	free(tk);
	size_t orphans = 0;
	for (size_t t = 0; t < d->ntok; t++) {
		char key[CMR_KEY_MAX + 1];
		snprintf(key, sizeof key, "%s", d->tkey[t]);
		char *hash = strrchr(key, '#');
		if (hash)
			*hash = 0;
		cmr_pair_image probe = {.key = key};
		cmr_pair_image *im = bsearch(&probe, sorted, d->nimg, sizeof *sorted, cmp_image);
		if (!im) {
			orphans++;
			continue;
		}
		if (!(im->cap = realloc(im->cap, (size_t)(im->ncap + 1) * sizeof *im->cap)))
			cmr_die("out of memory");
		im->cap[im->ncap++] = (int)t;
	}
	/* back to input order, keeping the images that have captions */
	for (size_t i = 0; i < d->nimg; i++) {
		cmr_pair_image probe = {.key = d->img[i].key};
		cmr_pair_image *im = bsearch(&probe, sorted, d->nimg, sizeof *sorted, cmp_image);
		d->img[i].cap = im->cap;
		d->img[i].ncap = im->ncap;
	}
	size_t kept = 0, dropped = 0;
	for (size_t i = 0; i < d->nimg; i++) {
		if (d->img[i].ncap)
			d->img[kept++] = d->img[i];
		else {
			free(d->img[i].px);
			free(d->img[i].key);
			dropped++;
		}
	}
	d->nimg = kept;
	free(sorted);
	if (orphans || dropped)
		cmr_warn("%s data: %zu captions without an image and %zu images without a caption left out", d->what,
			 orphans, dropped);
	if (!kept)
		cmr_die("no caption of the %s streams names one of their images (keys <image key>#<n>)", d->what);
}

void cmr_pairs_free(cmr_pairs *d)
{
	for (size_t i = 0; i < d->nimg; i++)
		free(d->img[i].key), free(d->img[i].px), free(d->img[i].cap);
	for (size_t t = 0; t < d->ntok; t++)
		free(d->tok[t]), free(d->tkey[t]);
	for (size_t t = 0; t < d->ndesc; t++)
		free(d->dtok[t]), free(d->dkey[t]);
	free(d->img), free(d->tok), free(d->len), free(d->tkey);
	free(d->dtok), free(d->dlen), free(d->dkey);
	free(d->teacher_img), free(d->teacher_txt), free(d->label);
}

typedef struct {
	const char *key;
	size_t at;
} key_at;

static int cmp_key_at(const void *a, const void *b)
{
	return strcmp(((const key_at *)a)->key, ((const key_at *)b)->key);
}

/* the images by key, sorted (keys unique: cmr_pairs_load), malloc'd; dies when out of memory */
static key_at *image_index(const cmr_pairs *d)
{
	key_at *ix = malloc((d->nimg + 1) * sizeof *ix);
	if (!ix)
		cmr_die("out of memory");
	for (size_t i = 0; i < d->nimg; i++)
		ix[i] = (key_at){d->img[i].key, i};
	qsort(ix, d->nimg, sizeof *ix, cmp_key_at);
	return ix;
}

void cmr_pairs_load_desc(cmr_pairs *d, char *const *inputs, int n)
{
	d->reading_desc = 1;
	cmr_each_record(inputs, n, on_record, d);
	d->reading_desc = 0;
	if (!d->ndesc)
		cmr_die("the description streams hold no desc-tokens records (cmr-caption-ingest --desc makes them)");
	key_at *ix = image_index(d);
	size_t orphans = 0;
	for (size_t t = 0; t < d->ndesc; t++) {
		char key[CMR_KEY_MAX + 1];
		snprintf(key, sizeof key, "%s", d->dkey[t]);
		char *hash = strrchr(key, '#');
		if (!hash || !hash[1])
			cmr_die("description '%s': its key is not <image key>#<perspective>", d->dkey[t]);
		*hash = 0;
		const char *persp = hash + 1;
		int p = 0;
		while (p < d->npersp && strcmp(d->persp[p], persp) != 0)
			p++;
		if (p == d->npersp) {
			if (d->npersp == CMR_MAX_PERSPECTIVES)
				cmr_die("description '%s': more than %d perspectives (the part of a key after its last '#')",
					d->dkey[t], CMR_MAX_PERSPECTIVES);
			if (strlen(persp) >= sizeof d->persp[0])
				cmr_die("description '%s': a perspective name of at most %zu bytes", d->dkey[t],
					sizeof d->persp[0] - 1);
			snprintf(d->persp[d->npersp++], sizeof d->persp[0], "%s", persp);
		}
		key_at probe = {key, 0}, *hit = bsearch(&probe, ix, d->nimg, sizeof *ix, cmp_key_at);
		if (!hit) {
			orphans++;
			continue;
		}
		cmr_pair_image *im = &d->img[hit->at];
		if (im->desc[p] >= 0)
			cmr_die("two descriptions with the key '%s'", d->dkey[t]);
		im->desc[p] = (int)t;
		d->persp_count[p]++;
	}
	free(ix);
	if (orphans)
		cmr_warn("%zu of %zu descriptions name no %s image; left out", orphans, d->ndesc, d->what);
	if (orphans == d->ndesc)
		cmr_die("no description names one of the %s images (keys <image key>#<perspective>)", d->what);
}

/* ---- a teacher's embeddings of the pairs ---- */
typedef struct {
	cmr_pairs *d;
	key_at *ix;      /* the keys wanted, sorted */
	size_t n, found, ignored;
	float **dst;     /* where the rows go (d->teacher_img or _txt) */
	char *seen;
	const char *what;
} teacher_read;

static int on_teacher(const cmr_record *rec, const char *input, void *ctx)
{
	teacher_read *t = ctx;
	if (rec->type != CMR_TYPE_TENSOR)
		return 0;
	if (rec->kind != CMR_KIND_EMBEDDING)
		cmr_die("%s: record %" PRIu64 " (key '%s'): a %s record, not an embedding (the teacher's are cmr-encode's "
			"output)", input, rec->index, rec->key, cmr_kind_name(rec->kind) ? cmr_kind_name(rec->kind) : "unknown");
	key_at probe = {rec->key, 0}, *hit = bsearch(&probe, t->ix, t->n, sizeof *t->ix, cmp_key_at);
	if (!hit) {
		t->ignored++;
		return 0;
	}
	cmr_pairs *d = t->d;
	if (rec->rank != 1 || rec->dims[0] < 1 || rec->dims[0] > 65536 ||
	    (d->teacher_dim && rec->dims[0] != (uint32_t)d->teacher_dim))
		cmr_die("%s: record %" PRIu64 " (key '%s'): an embedding of %u values where the teacher's others have %d",
			input, rec->index, rec->key, rec->rank == 1 ? rec->dims[0] : 0, d->teacher_dim);
	if (!d->teacher_dim) {
		d->teacher_dim = (int)rec->dims[0];
		if (!d->teacher_img && !(d->teacher_img = calloc(d->nimg * (size_t)d->teacher_dim + 1, sizeof(float))))
			cmr_die("out of memory");
		if (!(d->teacher_txt = calloc(d->ntok * (size_t)d->teacher_dim + 1, sizeof(float))))
			cmr_die("out of memory");
	}
	if (t->seen[hit->at])
		cmr_die("%s: two teacher %s embeddings with the key '%s'", input, t->what, rec->key);
	const char *why;
	if (cmr_unit_embedding(rec, *t->dst + hit->at * (size_t)d->teacher_dim, &why) < 0)
		cmr_die("%s: record %" PRIu64 " (key '%s'): %s", input, rec->index, rec->key, why);
	t->seen[hit->at] = 1;
	t->found++;
	return 0;
}

/* reads one of the teacher's streams for n keys; dies naming the first key without a row */
static void teacher_stream(cmr_pairs *d, const char *path, char **keys, size_t n, const int *wanted, float **dst,
			   const char *what)
{
	teacher_read t = {.d = d, .dst = dst, .what = what};
	t.ix = malloc((n + 1) * sizeof *t.ix);
	t.seen = calloc(n + 1, 1);
	if (!t.ix || !t.seen)
		cmr_die("out of memory");
	for (size_t i = 0; i < n; i++)
		if (wanted[i])
			t.ix[t.n++] = (key_at){keys[i], i};
	qsort(t.ix, t.n, sizeof *t.ix, cmp_key_at);
	char *in[1] = {(char *)path};
	cmr_each_record(in, 1, on_teacher, &t);
	if (t.found < t.n) {
		size_t first = 0;
		while (first < n && (!wanted[first] || t.seen[first]))
			first++;
		cmr_die("%s: %zu of the %zu training %s have no teacher embedding (the first: '%s'); encode the same "
			"streams with the teacher (cmr-encode)", path, t.n - t.found, t.n, what, keys[first]);
	}
	if (t.ignored)
		cmr_warn("%s: %zu embeddings name no training %s; left out", path, t.ignored, what);
	free(t.ix), free(t.seen);
}

void cmr_pairs_load_teacher(cmr_pairs *d, const char *images, const char *texts)
{
	char **ik = malloc((d->nimg + 1) * sizeof *ik);
	int *iw = malloc((d->nimg + 1) * sizeof *iw), *tw = calloc(d->ntok + 1, sizeof *tw);
	if (!ik || !iw || !tw)
		cmr_die("out of memory");
	for (size_t i = 0; i < d->nimg; i++) {
		ik[i] = d->img[i].key, iw[i] = 1;
		for (int c = 0; c < d->img[i].ncap; c++) /* the captions training draws: its images' */
			tw[d->img[i].cap[c]] = 1;
	}
	d->teacher_dim = 0;
	teacher_stream(d, images, ik, d->nimg, iw, &d->teacher_img, "images");
	teacher_stream(d, texts, d->tkey, d->ntok, tw, &d->teacher_txt, "captions");
	free(ik), free(iw), free(tw);
}

/* ---- the images' classes ---- */
void cmr_pairs_load_labels(cmr_pairs *d, const char *path)
{
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
	if (!f)
		cmr_die("%s: %s", path, strerror(errno));
	key_at *ix = image_index(d);
	char **names = NULL;
	size_t cap = 0, ignored = 0, line_no = 0, len = 0;
	free(d->label);
	if (!(d->label = malloc((d->nimg + 1) * sizeof *d->label)))
		cmr_die("out of memory");
	for (size_t i = 0; i < d->nimg; i++)
		d->label[i] = -1;
	d->nclass = 0;
	char *line = NULL;
	ssize_t n;
	while ((n = getline(&line, &len, f)) >= 0) {
		line_no++;
		while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			line[--n] = 0;
		if (n == 0 || line[0] == '#')
			continue;
		char *tab = strchr(line, '\t');
		if (!tab || tab == line || !tab[1] || strchr(tab + 1, '\t') || (size_t)(tab - line) > CMR_KEY_MAX ||
		    strlen(tab + 1) > 255)
			cmr_die("%s:%zu: not KEY<TAB>CLASS (a key of at most %d bytes, a class of at most 255)", path, line_no,
				CMR_KEY_MAX);
		*tab = 0;
		key_at probe = {line, 0}, *hit = bsearch(&probe, ix, d->nimg, sizeof *ix, cmp_key_at);
		if (!hit) {
			ignored++;
			continue;
		}
		if (d->label[hit->at] >= 0)
			cmr_die("%s:%zu: a second class for '%s'", path, line_no, line);
		int c = 0;
		while (c < d->nclass && strcmp(names[c], tab + 1) != 0)
			c++;
		if (c == d->nclass) {
			if ((size_t)d->nclass == cap && !(names = realloc(names, (cap = cap ? 2 * cap : 64) * sizeof *names)))
				cmr_die("out of memory");
			if (!(names[d->nclass++] = strdup(tab + 1)))
				cmr_die("out of memory");
		}
		d->label[hit->at] = c;
	}
	if (ferror(f))
		cmr_die("%s: %s", path, strerror(errno));
	free(line);
	if (f != stdin)
		fclose(f);
	size_t missing = 0, first = 0;
	for (size_t i = d->nimg; i-- > 0;)
		if (d->label[i] < 0)
			missing++, first = i;
	if (missing)
		cmr_die("%s: %zu of the %zu %s images have no class (the first: '%s')", path, missing, d->nimg, d->what,
			d->img[first].key);
	if (ignored)
		cmr_warn("%s: %zu entries name no %s image; left out", path, ignored, d->what);
	for (int c = 0; c < d->nclass; c++)
		free(names[c]);
	free(names), free(ix);
}

/* ---- randomness: pure functions of (seed, what), so that a resumed run draws the same ---- */
static uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

static void shuffle(size_t *perm, size_t n, uint64_t seed, int64_t epoch)
{
	for (size_t i = 0; i < n; i++)
		perm[i] = i;
	uint64_t s = mix(seed ^ mix((uint64_t)epoch + 1));
	for (size_t i = n - 1; i > 0; i--) {
		s = mix(s);
		size_t j = (size_t)(s % (i + 1));
		size_t t = perm[i];
		perm[i] = perm[j];
		perm[j] = t;
	}
}


/* a checkpoint's files, all written complete under temporary names before any is put in
 * place (atomic.h): on a failure (a full disk) or a signal none of them appears */
enum { CK_MAX = 4 };
typedef struct {
	cmr_atomic f[CK_MAX];
	int n;
	const char *dir;
	int made_dir; /* this save made the directory: removed again when the save fails */
} ckpt;

static void ck_fail(ckpt *c, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
static void ck_fail(ckpt *c, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	for (int i = 0; i < c->n; i++)
		cmr_atomic_abort(&c->f[i]);
	if (c->made_dir)
		rmdir(c->dir);
	cmr_die("%s%s", msg, c->made_dir ? " (nothing was saved)" : " (the previous checkpoint is kept)");
}

static void ck_text(ckpt *c, const char *name, const char *text, size_t len)
{
	char path[4096], err[1024];
	snprintf(path, sizeof path, "%s/%s", c->dir, name);
	cmr_atomic *a = &c->f[c->n];
	if (cmr_atomic_open(a, path, err, sizeof err) < 0)
		ck_fail(c, "%s", err);
	c->n++;
	if (fwrite(text, 1, len, a->f) != len) {
		int e = errno;
		ck_fail(c, "write error on %s: %s", path, strerror(e));
	}
	if (cmr_atomic_finish(a, err, sizeof err) < 0)
		ck_fail(c, "%s", err);
}

typedef struct {
	const cmr_run_opts *o;
	cmr_clip *m;
	float *mom, *vel; /* AdamW's moments of the trainable parameters, m->ntrain each */
	int64_t total, spe;
	size_t npairs;
	FILE *log;
} run_t;

static void save(run_t *r, int64_t step)
{
	char path[4096], err[1024];
	const cmr_run_opts *o = r->o;
	ckpt c = {.dir = o->output};
	if (mkdir(o->output, 0777) == 0)
		c.made_dir = 1;
	else if (errno != EEXIST)
		cmr_die("%s: %s", o->output, strerror(errno));
	if (o->tuning) { /* a tuning directory (cmr-tuning(5)): the config, the tuned tensors */
		char *cj = cmr_tuning_config_json(r->m, o->tuning, o->provenance);
		if (!cj)
			ck_fail(&c, "out of memory");
		ck_text(&c, CMR_TUNING_CONFIG, cj, strlen(cj));
		free(cj);
	} else {
		ck_text(&c, "config.json", o->config_text, o->config_len);
		ck_text(&c, "preprocessor_config.json", o->pre_text, o->pre_len);
	}
	int64_t st[5] = {step, (int64_t)o->seed, o->batch, (int64_t)r->npairs, r->total};
	/* the values and moments from a device backend's memory */
	cmr_clip_fetch(r->m);
	const cmr_clip *m = r->m;
	float *mom = r->mom, *vel = r->vel;
	if (m->placed) {
		mom = malloc(2 * (m->ntrain + 1) * sizeof *mom), vel = mom + m->ntrain + 1;
		if (!mom)
			ck_fail(&c, "out of memory");
		m->placed->download(mom, r->mom, m->ntrain * sizeof *mom);
		m->placed->download(vel, r->vel, m->ntrain * sizeof *vel);
	}
	/* the moments of each trainable parameter, under its name */
	cmr_st_out *t = calloc(2 * (size_t)m->nparam + 2, sizeof *t); /* the moments, the counters, the threads */
	char (*names)[128] = calloc(2 * (size_t)m->nparam, sizeof *names);
	if (!t || !names)
		ck_fail(&c, "out of memory");
	size_t nt = 0;
	for (int i = 0; i < m->nparam; i++) {
		const cmr_param *p = &m->param[i];
		if (!p->g)
			continue;
		for (int k = 0; k < 2; k++) {
			snprintf(names[nt], sizeof names[nt], "%s/%s", k ? "exp_avg_sq" : "exp_avg", p->name);
			t[nt] = (cmr_st_out){names[nt], CMR_DTYPE_F32, p->ndim, {0}, (k ? vel : mom) + p->at};
			memcpy(t[nt].shape, p->shape, sizeof p->shape);
			nt++;
		}
	}
	/* Every file is written complete under a temporary name first, so a full disk or a
	 * signal leaves the previous checkpoint as it was (and a first save leaves nothing).
	 * Then the old state becomes train-state.prev, the new state and the new model are
	 * renamed into place, and prev goes. A kill between two renames leaves a model whose
	 * step is that of train-state.prev, which --resume then takes (cmr-checkpoint(5)). */
	const char *mname = o->tuning ? CMR_TUNING_TENSORS : "model.safetensors";
	char sfinal[4096], mfinal[4096], sprev[4096];
	snprintf(sfinal, sizeof sfinal, "%s/train-state.safetensors", o->output);
	snprintf(sprev, sizeof sprev, "%s/train-state.prev.safetensors", o->output);
	snprintf(mfinal, sizeof mfinal, "%s/%s", o->output, mname);
	t[nt++] = (cmr_st_out){"step_seed_batch_pairs_total", CMR_DTYPE_I64, 1, {5}, st};
	int64_t threads = cmr_ops_threads(); /* results are bit-identical for one thread count */
	t[nt++] = (cmr_st_out){"threads", CMR_DTYPE_I64, 1, {1}, &threads};
	cmr_atomic *state = &c.f[c.n], *model = &c.f[c.n + 1];
	int rc = cmr_st_write_held(state, sfinal, t, nt, "{\"format\": \"cmr-train-2\"}", err, sizeof err);
	free(t);
	free(names);
	if (m->placed)
		free(mom);
	if (rc < 0)
		ck_fail(&c, "%s", err);
	c.n++;
	json_t *meta = json_pack("{s:s, s:s, s:s}", "format", "pt", "cmr-train", o->provenance, "step",
				 (snprintf(path, sizeof path, "%" PRId64, step), path));
	char *mj = json_dumps(meta, JSON_COMPACT);
	json_decref(meta);
	if (!mj)
		ck_fail(&c, "out of memory");
	rc = o->tuning ? cmr_tuning_save_tensors(r->m, o->tuning, mfinal, mj, model, err, sizeof err)
		       : cmr_clip_save(r->m, mfinal, mj, model, err, sizeof err);
	free(mj);
	if (rc < 0)
		ck_fail(&c, "%s", err);
	c.n++;
	/* all complete: into place, the configs first (the same text at every save) */
	for (int i = 0; i < c.n - 2; i++)
		if (cmr_atomic_rename(&c.f[i], err, sizeof err) < 0)
			ck_fail(&c, "%s", err);
	if (rename(sfinal, sprev) < 0 && errno != ENOENT)
		ck_fail(&c, "%s: cannot put the checkpoint in place: %s", o->output, strerror(errno));
	if (cmr_atomic_rename(state, err, sizeof err) < 0 || cmr_atomic_rename(model, err, sizeof err) < 0)
		cmr_die("%s: cannot put the checkpoint in place: %s", o->output, err);
	unlink(sprev);
	cmr_info("%s: checkpoint at step %" PRId64, o->output, step);
}

/* ---- evaluation ---- */
static void evaluate(run_t *r, const cmr_pairs *ev, int64_t step)
{
	cmr_clip *m = r->m;
	int P = m->cfg.proj, B = r->o->batch;
	float *ei = malloc(ev->nimg * (size_t)P * sizeof *ei), *et = malloc(ev->ntok * (size_t)P * sizeof *et);
	uint32_t *ti = malloc(ev->ntok * sizeof *ti), *ri = malloc(ev->nimg * sizeof *ri), *rt = malloc(ev->ntok * sizeof *rt);
	cmr_clip_ws *wi = cmr_clip_ws_new(m, r->o->ops, CMR_TOWER_VISION, B, 0, 0);
	cmr_clip_ws *wt = cmr_clip_ws_new(m, r->o->ops, CMR_TOWER_TEXT, B, B * m->cfg.text.context, 0);
	const uint8_t **px = malloc((size_t)B * sizeof *px);
	if (!ei || !et || !ti || !ri || !rt || !wi || !wt || !px)
		cmr_die("out of memory");
	for (size_t i = 0; i < ev->nimg; i += (size_t)B) {
		int n = (int)(ev->nimg - i < (size_t)B ? ev->nimg - i : (size_t)B);
		for (int b = 0; b < n; b++)
			px[b] = ev->img[i + b].px;
		if (cmr_tuning_encode_images(m, r->o->tuning, r->o->ops, wi, px, n, ei + i * P, NULL) < 0)
			cmr_die("evaluation: the images could not be encoded");
	}
	/* texts in caption order; each text's image */
	size_t nt = 0;
	for (size_t i = 0; i < ev->nimg; i++)
		for (int c = 0; c < ev->img[i].ncap; c++)
			ti[nt++] = (uint32_t)i;
	const int32_t **ids = malloc((size_t)B * sizeof *ids);
	int *lens = malloc((size_t)B * sizeof *lens);
	size_t t = 0;
	for (size_t i = 0; i < ev->nimg; i++)
		for (int c = 0; c < ev->img[i].ncap; c++) {
			int at = (int)(t % (size_t)B);
			ids[at] = ev->tok[ev->img[i].cap[c]];
			lens[at] = ev->len[ev->img[i].cap[c]];
			t++;
			if (at == B - 1 || t == nt)
				cmr_clip_encode_texts(m, r->o->ops, wt, ids, lens, at + 1,
						      et + (t - (size_t)at - 1) * P);
		}
	cmr_unit_rows(ei, ev->nimg, P);
	cmr_unit_rows(et, nt, P);
	/* the scores of host arrays: on the BLAS backend when training runs on a device's */
	const cmr_ops *so = r->o->ops->caps & CMR_OPS_HOST ? r->o->ops : &cmr_ops_blas;
	if (cmr_eval_ranks(so, ei, ev->nimg, et, nt, P, ti, ri, rt, 1024) < 0)
		cmr_die("out of memory");
	static const uint32_t ks[3] = {1, 5, 10};
	double rec[2][3];
	for (int k = 0; k < 3; k++) {
		rec[0][k] = cmr_recall(ri, ev->nimg, ks[k]);
		rec[1][k] = cmr_recall(rt, nt, ks[k]);
	}
	cmr_progress_clear(NULL);
	if (cmr_verbose >= 0)
		fprintf(stderr, "%s: eval at step %" PRId64 " (%zu images, %zu texts): image->text R@1 %.1f R@5 %.1f R@10 %.1f, "
				"text->image R@1 %.1f R@5 %.1f R@10 %.1f\n",
			cmr_progname, step, ev->nimg, nt, rec[0][0], rec[0][1], rec[0][2], rec[1][0], rec[1][1], rec[1][2]);
	if (r->log) {
		fprintf(r->log, "{\"step\": %" PRId64 ", \"eval\": {\"images\": %zu, \"texts\": %zu, \"image_to_text\": "
				"{\"R@1\": %.2f, \"R@5\": %.2f, \"R@10\": %.2f}, \"text_to_image\": {\"R@1\": %.2f, \"R@5\": "
				"%.2f, \"R@10\": %.2f}}}\n",
			step, ev->nimg, nt, rec[0][0], rec[0][1], rec[0][2], rec[1][0], rec[1][1], rec[1][2]);
		fflush(r->log);
	}
	free(ei), free(et), free(ti), free(ri), free(rt), free(px), free(ids), free(lens);
	cmr_clip_ws_free(wi);
	cmr_clip_ws_free(wt);
}

/* SIGINT, SIGTERM, SIGHUP during training: finish the step, save, exit 128 + signal; a second
 * signal gets the usual handling (temporary files removed, killed) */
static volatile sig_atomic_t stop_signal;
static const int stop_sigs[3] = {SIGINT, SIGTERM, SIGHUP};
static struct sigaction saved_sa[3];

static void on_stop(int sig)
{
	stop_signal = sig;
	for (int i = 0; i < 3; i++)
		sigaction(stop_sigs[i], &saved_sa[i], NULL);
}

static void catch_stop(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_stop;
	sigemptyset(&sa.sa_mask);
	for (int i = 0; i < 3; i++)
		sigaction(stop_sigs[i], &sa, &saved_sa[i]);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* the step a state file records, or -1 when it is absent or not readable */
static int64_t state_step(const char *path)
{
	char err[1024];
	cmr_st *st = cmr_st_open(path, err, sizeof err);
	const cmr_st_tensor *s = st ? cmr_st_get(st, "step_seed_batch_pairs_total") : NULL;
	int64_t step = -1;
	if (s && s->dtype == CMR_DTYPE_I64 && s->nbytes == 40)
		memcpy(&step, s->data, sizeof step);
	cmr_st_close(st);
	return step;
}

/* load_state's fatal errors: the message made while the state's strings are valid, then
 * the files it has open closed (a fuzzed or resumed run leaks nothing), then cmr_die */
static cmr_st *state_open[2];
static void state_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void state_die(const char *fmt, ...)
{
	char msg[4096];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	for (int i = 0; i < 2; i++) {
		cmr_st_close(state_open[i]);
		state_open[i] = NULL;
	}
	cmr_die("%s", msg);
}

/* resume: the state file of DIR, checked against this run: train-state.safetensors, or
 * train-state.prev.safetensors when a save was cut between its renames and the model is
 * still the previous one */
static int64_t load_state(run_t *r, const char *dir)
{
	char path[4096], err[1024], mpath[4096];
	snprintf(path, sizeof path, "%s/train-state.safetensors", dir);
	{
		char prev[4096];
		snprintf(prev, sizeof prev, "%s/train-state.prev.safetensors", dir);
		snprintf(mpath, sizeof mpath, "%s/%s", dir, r->o->tuning ? CMR_TUNING_TENSORS : "model.safetensors");
		cmr_st *ms = cmr_st_open(mpath, err, sizeof err);
		const char *mstep = ms ? cmr_st_metadata(ms, "step") : NULL;
		char want[32] = "";
		int64_t ps = state_step(prev);
		if (ps >= 0)
			snprintf(want, sizeof want, "%" PRId64, ps);
		if (mstep && ps >= 0 && strcmp(mstep, want) == 0 && state_step(path) != ps) {
			cmr_warn("%s: the last save was cut short; resuming from the checkpoint before it (step %s)", dir,
				 mstep);
			snprintf(path, sizeof path, "%s", prev);
		}
		cmr_st_close(ms);
	}
	cmr_st *st = state_open[0] = cmr_st_open(path, err, sizeof err);
	if (!st)
		state_die("%s", err);
	const char *fmt = cmr_st_metadata(st, "format");
	if (!fmt || strcmp(fmt, "cmr-train-2") != 0)
		state_die("%s: not a cmr-train state of this version (metadata format '%s', this cmr-train reads "
			"'cmr-train-2'; see cmr-checkpoint(5))", path, fmt ? fmt : "");
	const cmr_st_tensor *s = cmr_st_get(st, "step_seed_batch_pairs_total");
	if (!s || s->dtype != CMR_DTYPE_I64 || s->nbytes != 40)
		state_die("%s: not a training state (step_seed_batch_pairs_total missing or of another type)", path);
	/* the moments of exactly the parameters this run trains */
	size_t have = 0;
	for (int i = 0; i < r->m->nparam; i++) {
		const cmr_param *p = &r->m->param[i];
		if (!p->g)
			continue;
		for (int k = 0; k < 2; k++) {
			snprintf(mpath, sizeof mpath, "%s/%s", k ? "exp_avg_sq" : "exp_avg", p->name);
			const cmr_st_tensor *t = cmr_st_get(st, mpath);
			if (!t)
				state_die("%s: no '%s': the run being resumed did not train %s (give the same --train and "
					"--freeze)", path, mpath, p->name);
			if (t->dtype != CMR_DTYPE_F32 || t->nbytes != p->n * 4)
				state_die("%s: '%s' is not F32 of %zu values", path, mpath, p->n);
			float *to = (k ? r->vel : r->mom) + p->at;
			if (r->m->placed)
				r->m->placed->upload(to, t->data, t->nbytes);
			else
				memcpy(to, t->data, t->nbytes);
			have++;
		}
	}
	const cmr_st_tensor *th = cmr_st_get(st, "threads");
	int64_t was_threads = -1; /* checked last: the other mismatches say more */
	int has_threads = th != NULL;
	if (th) { /* states before it have none: not checked */
		if (th->dtype == CMR_DTYPE_I64 && th->nbytes == 8)
			memcpy(&was_threads, th->data, 8);
		else
			was_threads = 0;
		have++;
	}
	if (have + 1 != cmr_st_count(st)) { /* a tensor this run does not know: name it */
		const char *extra = "?";
		for (size_t i = 0; i < cmr_st_count(st); i++) {
			const char *n = cmr_st_at(st, i)->name, *slash = strchr(n, '/');
			cmr_param *p = slash && (!strncmp(n, "exp_avg/", 8) || !strncmp(n, "exp_avg_sq/", 11))
					       ? cmr_clip_param(r->m, slash + 1) : NULL;
			if (strcmp(n, "step_seed_batch_pairs_total") && strcmp(n, "threads") && (!p || !p->g)) {
				extra = n;
				break;
			}
		}
		state_die("%s: holds '%s', which this run does not train: the run being resumed trained %zu parameter "
			  "tensors, this one %zu (give the same --train and --freeze)", path, extra,
			  (cmr_st_count(st) - 1 - (th != NULL)) / 2, (have - (th != NULL)) / 2);
	}
	int64_t x[5];
	memcpy(x, s->data, sizeof x);
	/* the model must be the one saved with this state */
	snprintf(mpath, sizeof mpath, "%s/%s", dir, r->o->tuning ? CMR_TUNING_TENSORS : "model.safetensors");
	cmr_st *ms = state_open[1] = cmr_st_open(mpath, err, sizeof err);
	if (!ms)
		state_die("%s", err);
	const char *ms_step = cmr_st_metadata(ms, "step");
	char want[32];
	snprintf(want, sizeof want, "%" PRId64, x[0]);
	if (!ms_step || strcmp(ms_step, want) != 0)
		state_die("%s is at step %s, %s at step %s (interrupted while saving?): not resumable", mpath,
			ms_step ? ms_step : "(none recorded)", path, want);
	state_open[0] = state_open[1] = NULL;
	cmr_st_close(ms);
	cmr_st_close(st);
	const cmr_run_opts *o = r->o;
	if ((uint64_t)x[1] != o->seed || x[2] != o->batch || (size_t)x[3] != r->npairs || x[4] != r->total)
		cmr_die("%s: the run being resumed had --seed %" PRIu64 ", --batch %" PRId64 ", %" PRId64
			" images and %" PRId64 " steps; this one has %" PRIu64 ", %d, %zu and %" PRId64
			": give the same data and options",
			path, (uint64_t)x[1], x[2], x[3], x[4], o->seed, o->batch, r->npairs, r->total);
	if (has_threads && was_threads != cmr_ops_threads())
		cmr_die("%s: the run being resumed used %" PRId64 " threads, this one %d: the results depend on the thread "
			"count in their last bits, so give -t %" PRId64 " to go on bit for bit", path, was_threads,
			cmr_ops_threads(), was_threads);
	return x[0];
}


int cmr_run_train(cmr_clip *m, const cmr_run_opts *o, const cmr_pairs *d, const cmr_pairs *ev)
{
	char err[64], path[64];
	run_t r = {.o = o, .m = m};
	size_t nall = 0, ntrain = 0;
	for (int i = 0; i < m->nparam; i++) {
		nall += m->param[i].n;
		ntrain += m->param[i].g ? m->param[i].n : 0;
	}
	int B = o->batch;
	if ((size_t)B > d->nimg)
		cmr_die("--batch %d is more than the %zu images with captions; give a smaller -b", B, d->nimg);
	const cmr_dist *dist = o->dist && o->dist->size > 1 ? o->dist : NULL;
	int lead = !dist || dist->rank == 0; /* logs, evaluates, writes */
	if (dist && B < dist->size)
		cmr_die("--batch %d is split over %d processes: give each at least one pair", B, dist->size);
	if (dist && o->tuning && strcmp(o->tuning->method, "pool") == 0)
		cmr_die("a prompt pool is tuned in one process (its prompt selection is not split over MPI ranks yet)");
	r.npairs = d->nimg;
	r.spe = (int64_t)(d->nimg / (size_t)B);
	r.total = o->steps ? o->steps : (int64_t)o->epochs * r.spe;
	int64_t warmup = o->warmup >= 0 ? o->warmup : r.total / 10;
	int pool = o->tuning && strcmp(o->tuning->method, "pool") == 0;
	if (pool && !(o->ops->caps & CMR_OPS_HOST))
		cmr_die("--backend %s: a prompt pool is tuned on a host backend only, for now (blas or ref)", o->ops->name);
	char perr[512];
	if (cmr_clip_place(m, o->ops, perr, sizeof perr) < 0)
		cmr_die("%s", perr);
	r.mom = cmr_clip_state_new(m, m->ntrain);
	r.vel = cmr_clip_state_new(m, m->ntrain);
	if (!r.mom || !r.vel)
		cmr_die("out of %s memory for the optimizer state (%.1f MiB)", m->placed ? m->placed->name : "host",
			2 * m->ntrain * 4.0 / 1048576);
	int64_t step = 0;
	if (o->resume) {
		step = load_state(&r, o->resume);
		if (step >= r.total)
			cmr_die("%s: the run is already complete (step %" PRId64 " of %" PRId64 ")", o->resume, step, r.total);
	}
	int64_t stop = o->max_steps && o->max_steps < r.total ? o->max_steps : r.total;
	if (lead && o->log && !(r.log = fopen(o->log, o->resume ? "a" : "w")))
		cmr_die("%s: %s", o->log, strerror(errno));
	if (r.log && !o->resume)
		fprintf(r.log, "{\"parameters\": %zu, \"trained\": %zu, \"steps\": %" PRId64 ", \"batch\": %d}\n", nall,
			ntrain, r.total, B);
	int maxlen = 0;
	for (size_t t = 0; t < d->ntok; t++)
		maxlen = d->len[t] > maxlen ? d->len[t] : maxlen;
	/* descriptions: a view of the batch per perspective (its images that have one) */
	int npersp = o->desc_terms ? d->npersp : 0;
	for (size_t t = 0; npersp && t < d->ndesc; t++)
		maxlen = d->dlen[t] > maxlen ? d->dlen[t] : maxlen;
	cmr_text_view views[1 + CMR_MAX_PERSPECTIVES];
	cmr_batch vb[1 + CMR_MAX_PERSPECTIVES];
	double part[2 + CMR_MAX_PERSPECTIVES];
	const int32_t **vids = malloc((size_t)(npersp + 1) * B * sizeof *vids);
	int *vlens = malloc((size_t)(npersp + 1) * B * sizeof *vlens), *vrow = malloc((size_t)(npersp + 1) * B * sizeof *vrow);
	if (!vids || !vlens || !vrow)
		cmr_die("out of memory");
	cmr_step_ws *sw = cmr_step_ws_new(m, o->ops, B, B * maxlen);
	size_t *perm = malloc(d->nimg * sizeof *perm);
	const uint8_t **px = malloc((size_t)B * sizeof *px);
	const int32_t **ids = malloc((size_t)B * sizeof *ids);
	int *lens = malloc((size_t)B * sizeof *lens), td = d->teacher_dim, *blab = malloc((size_t)B * sizeof *blab);
	float *tbi = td ? malloc(2 * (size_t)B * td * sizeof *tbi) : NULL, *tbt = tbi ? tbi + (size_t)B * td : NULL;
	if (!sw)
		cmr_die_batch(o->ops, B, cmr_step_ws_fit(m, o->ops, B, maxlen));
	if (!perm || !px || !ids || !lens || !blab || (td && !tbi))
		cmr_die("out of memory for a batch of %d (make -b smaller)", B);
	sw->dist = dist;
	if (cmr_verbose >= 0)
		fprintf(stderr, "%s: %zu images, %zu captions; %s parameters, %s trained; %" PRId64 " steps of %d pairs "
				"(%" PRId64 " per epoch)%s\n",
			cmr_progname, d->nimg, d->ntok, (snprintf(err, 64, "%.2fM", nall / 1e6), err),
			(ntrain < 100000 ? snprintf(path, 64, "%zu", ntrain) : snprintf(path, 64, "%.2fM", ntrain / 1e6), path), r.total, B, r.spe, o->resume ? ", resumed" : "");
	/* on a terminal (or CMR_PROGRESS=1) a progress line with the ETA; every --log-every steps
	 * a line that stays */
	cmr_progress pr;
	cmr_progress_start(&pr, "steps", (uint64_t)r.total);
	pr.base = (uint64_t)step;
	int64_t perm_epoch = -1;
	catch_stop();
	double t0 = now();
	int64_t since = 0;
	for (; step < stop; step++) {
		int64_t epoch = step / r.spe, at = step % r.spe;
		if (epoch != perm_epoch) {
			shuffle(perm, d->nimg, o->seed, epoch);
			perm_epoch = epoch;
		}
		for (int b = 0; b < B; b++) {
			const cmr_pair_image *im = &d->img[perm[at * B + b]];
			int c = im->ncap == 1 ? 0 : (int)(mix(o->seed ^ mix((uint64_t)step * 0x10001 + (uint64_t)b)) % (uint64_t)im->ncap);
			px[b] = im->px;
			ids[b] = d->tok[im->cap[c]];
			lens[b] = d->len[im->cap[c]];
			blab[b] = d->label ? d->label[perm[at * B + b]] : -1;
			if (td) { /* the teacher's rows of this pair */
				memcpy(tbi + (size_t)b * td, d->teacher_img + (perm[at * B + b]) * (size_t)td, td * sizeof *tbi);
				memcpy(tbt + (size_t)b * td, d->teacher_txt + (size_t)im->cap[c] * td, td * sizeof *tbt);
			}
		}
		cmr_clip_zero_grad(m);
		cmr_batch bi = {.B = B, .pixels = px}, bt = {.B = B, .ids = ids, .lens = lens};
		views[0] = (cmr_text_view){.txt = &bt, .terms = o->terms, .nterms = o->nterms, .timg = tbi, .ttxt = tbt,
					   .tdim = td, .labels = d->label ? blab : NULL};
		for (int p = 0; p < npersp; p++) {
			const int32_t **pi = vids + (size_t)(p + 1) * B;
			int *pl = vlens + (size_t)(p + 1) * B, *prow = vrow + (size_t)(p + 1) * B, n = 0;
			for (int b = 0; b < B; b++) {
				const cmr_pair_image *im = &d->img[perm[at * B + b]];
				if (im->desc[p] < 0)
					continue;
				pi[n] = d->dtok[im->desc[p]], pl[n] = d->dlen[im->desc[p]], prow[n++] = b;
			}
			vb[p + 1] = (cmr_batch){.B = n, .ids = pi, .lens = pl};
			views[p + 1] = (cmr_text_view){.txt = &vb[p + 1], .row = prow, .terms = o->desc_terms,
						      .nterms = o->ndesc_terms};
		}
		/* a pool: each image's prompts, chosen by its query (the plain frozen tower) */
		double loss = cmr_tuning_batch_grad(m, o->tuning, o->ops, sw, &bi, views, 1 + npersp, o->pull,
						    o->majority, part);
		if (!isfinite(loss))
			cmr_die("the loss is %g at step %" PRId64 " (learning rate too high?); the last checkpoint is kept",
				loss, step);
		if (dist && cmr_dist_sum(dist, m->grad, m->ntrain) < 0)
			cmr_die("summing the gradients over the MPI ranks failed at step %" PRId64, step);
		double desc_loss = 0, pull = pool ? part[1 + npersp] : 0;
		for (int p = 0; p < npersp; p++)
			desc_loss += part[p + 1];
		double gnorm = cmr_clip_grad_norm(m, o->ops, o->clip);
		double lr = cmr_lr_cosine(step, warmup, r.total, o->lr, o->min_lr);
		cmr_clip_adamw_step(m, o->ops, r.mom, r.vel, step + 1, lr, o->beta1, o->beta2, o->eps, o->wd);
		since++;
		double t = now(), scale = exp(cmr_clip_get1(m, &m->param[m->logit]));
		if (r.log)
			fprintf(r.log, "{\"step\": %" PRId64 ", \"epoch\": %.4f, \"loss\": %.6f, %s%s%s%s%s\"lr\": %.6g, "
					"\"grad_norm\": %.6g, \"logit_scale\": %.4f, \"pairs_per_s\": %.1f}\n",
				step + 1, (double)(step + 1) / r.spe, loss, npersp ? "\"descriptions\": " : "",
				npersp ? (snprintf(err, sizeof err, "%.6f", desc_loss), err) : "", npersp ? ", " : "",
				pool ? "\"pull\": " : "", pool ? (snprintf(path, sizeof path, "%.6f, ", pull), path) : "", lr,
				gnorm, scale, B / ((t - t0) / (double)since));
		if (cmr_verbose >= 0) {
			double pps = B * since / (t - t0);
			double ep = (double)(step + 1) / r.spe;
			cmr_progress_detail(&pr, "epoch %.2f loss %.4f lr %.3g scale %.1f %.0f pairs/s", ep, loss, lr, scale,
					    pps);
			if ((step + 1) % o->log_every == 0 || step + 1 == stop) {
				cmr_progress_clear(&pr);
				fprintf(stderr, "step %" PRId64 "/%" PRId64 " epoch %.2f loss %.4f lr %.3g scale %.1f %.0f pairs/s\n",
					step + 1, r.total, ep, loss, lr, scale, pps);
			}
			cmr_progress_update(&pr, (uint64_t)(step + 1));
		}
		int saving = o->save_every && (step + 1) % o->save_every == 0 && step + 1 < stop;
		int evaluating = o->eval_every && (step + 1) % o->eval_every == 0 && step + 1 < stop;
		if (lead && saving)
			save(&r, step + 1);
		if (lead && evaluating)
			evaluate(&r, ev, step + 1);
		/* the other ranks wait for rank 0's checkpoint or evaluation without spinning */
		if (dist && (saving || evaluating) && cmr_dist_idle_barrier(dist) < 0)
			cmr_die("the MPI ranks could not wait for rank 0 at step %" PRId64, step);
		if (dist) { /* a signal to any rank stops them all after this step */
			int any = cmr_dist_any(dist, stop_signal);
			if (any < 0)
				cmr_die("the MPI ranks could not agree on going on at step %" PRId64, step);
			if (any && !stop_signal)
				stop_signal = SIGTERM;
		}
		if (stop_signal) {
			step++;
			break;
		}
	}
	cmr_progress_stop(&pr);
	if (lead)
		save(&r, step);
	int sig = stop_signal;
	if (lead && ev && !sig)
		evaluate(&r, ev, step);
	if (dist && cmr_dist_idle_barrier(dist) < 0) /* all end together, none spinning */
		cmr_die("the MPI ranks could not wait for rank 0 at the end");
	if (sig && lead)
		cmr_error("interrupted by signal %d at step %" PRId64 " of %" PRId64 "; the checkpoint is saved: go on with "
			  "--resume %s", sig, step, r.total, o->output);
	else if (!sig && cmr_verbose >= 0)
		fprintf(stderr, "%s: %s: step %" PRId64 " of %" PRId64 " in %.1f s%s\n", cmr_progname, o->output, step,
			r.total, now() - t0, step < r.total ? " (go on with --resume)" : "");
	if (r.log && fclose(r.log) != 0)
		cmr_die("%s: %s", o->log, strerror(errno));
	cmr_step_ws_free(sw);
	free(perm), free(px), free(ids), free(lens), free(tbi), free(blab);
	cmr_clip_state_free(m, r.mom), cmr_clip_state_free(m, r.vel);
	free(vids), free(vlens), free(vrow);
	return sig ? 128 + sig : 0;
}
