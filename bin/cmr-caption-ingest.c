/* cmr-caption-ingest - caption files (Flickr token files, COCO and Karpathy JSON, webdataset
 * tars, TSV, JSON Lines, plain text) to CLIP token records, tokenized exactly as CLIP does. */
#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <jansson.h>
#include <utf8proc.h>

#include "text/clip_tok.h"
#include "text/wordvec.h"
#include "fe.h"
#include "knowledge.h"
#include "model/clip.h"
#include "util.h"
#include "format/stream.h"

static const cmr_tool tool = {
	"cmr-caption-ingest",
	"[-f FORMAT] [--split SPLIT] [--key-field F] [--text-field F] [--desc] [-c N | -m MODEL]\n"
	"[--template T]... [--templates FILE]\n"
	"[--only LIST] [--strict] [--bpe FILE | --hf DIR] [-z N] [-o OUT.cmr] [INPUT...]\n"
	"--word-vectors FILE [--mean] [--stopwords FILE] [...]\n"
	"--knowledge FILE [--word-vectors FILE [--ood-neighbours M] [--ood-min-cos C]] [...]",
	"Tokenize captions with OpenAI CLIP's tokenizer into token records (i32 [T] with start\n"
	"and end tokens, no padding; cmr-stream(5)). With no INPUT, or '-', standard input is\n"
	"read (one caption per line when typed by a person). A caption's key is\n"
	"<image key>#<n>: the image's file name without directories and extensions, and the\n"
	"caption's number for that image.\n"
	"\nFormats (-f; detected when not given):\n"
	"  flickr    Flickr8k/30k token file: IMAGE.jpg#N<TAB>caption per line\n"
	"  coco      COCO captions JSON (images[].file_name, annotations[].caption)\n"
	"  karpathy  Karpathy split JSON (images[].filename, split, sentences[].raw)\n"
	"  wds       webdataset tar: KEY.txt (a caption per line; with --desc KEY.desc, a\n"
	"            description per line) or KEY.json (--text-field)\n"
	"  tsv       tab-separated with a header naming --key-field and --text-field\n"
	"  jsonl     JSON Lines: objects with --key-field and --text-field, or bare strings\n"
	"  text      one caption per line; keys are line numbers\n"
	"  classes   a class name per line, put through every template (zero-shot\n"
	"            classification): keys CLASS#T, T the template's number\n"
	"\nOptions:\n"
	"  -f, --format FORMAT   the input format (default: detected)\n"
	"      --split LIST      karpathy: splits to keep, comma-separated (train, val, test,\n"
	"                        restval; default all)\n"
	"      --key-field F     tsv, jsonl: the column naming the image (default image)\n"
	"      --text-field F    tsv, jsonl, wds .json: the caption column (default caption)\n"
	"      --desc            the texts are auxiliary descriptions made by a captioning\n"
	"                        model, not ground truth: records of kind desc-tokens, keyed\n"
	"                        <image key>#<n>, n the perspective (the description's place\n"
	"                        among its image's, as for captions; cmr-train --desc)\n"
	"      --template T      classes: a prompt template, {} standing for the class name\n"
	"                        (repeat for an ensemble; default 'a photo of a {}.')\n"
	"      --templates FILE  classes: templates, one per line\n"
	"      --only LIST       keep the captions of the images named in LIST, one file name or\n"
	"                        key per line (e.g. Flickr8k's dev.txt)\n"
	"  -c, --context N       context length: ids per caption with start and end (default 77)\n"
	"  -m, --model DIR       the context length of a CLIP checkpoint (its config.json's\n"
	"                        text_config.max_position_embeddings)\n"
	"      --strict          stop at the first bad caption (default: skip, count, exit 1)\n"
	"      --max-bytes N     refuse captions longer than N bytes (default 16384)\n"
	"      --bpe FILE        CLIP merges file (bpe_simple_vocab_16e6.txt[.gz]) instead of\n"
	"                        the built-in one\n"
	"      --hf DIR          a Hugging Face tokenizer: DIR/vocab.json and DIR/merges.txt\n"
	"      --word-vectors FILE\n"
	"                        write each caption's word vectors instead of tokens: kind\n"
	"                        vectors [N, D], the unit vectors of its words (CLIP's clean-up,\n"
	"                        lower case, runs of letters and digits) found in FILE (GloVe or\n"
	"                        word2vec text, or JSON {words, vectors} / {vectors: {WORD: ...}});\n"
	"                        words without one are skipped and counted (a caption with none\n"
	"                        has no rows)\n"
	"      --mean            with --word-vectors: one embedding [D] per caption, the mean of\n"
	"                        its unit word vectors, unit length\n"
	"      --stopwords FILE  words never written (one a line, '#' comments; e.g.\n"
	"                        examples/stopwords-en.txt)\n"
	"      --knowledge FILE  write each caption's visual prototypes instead of tokens (MASK's\n"
	"                        unpaired matching, cmr-knowledge(5)): kind vectors [N, D], the\n"
	"                        prototypes of its distinct words that are concepts of FILE and,\n"
	"                        with --word-vectors, of the words whose vectors lie near a\n"
	"                        concept's (out of vocabulary); a caption with none has no rows\n"
	"      --ood-neighbours M\n"
	"                        a word that is not a concept takes the weighted mean of the\n"
	"                        prototypes of the M concepts nearest its word vector, weights\n"
	"                        softmax(cosine / tau) (default 10; 0: concepts only)\n"
	"      --ood-min-cos C   only when the nearest concept's cosine is at least C (default 0.7)\n"
	"      --ood-tau T       the softmax temperature (default 0.1)\n"
	"  -z, --compress N      zstd level 1-19 for payloads (default 0, stored)\n"
	"  -o, --output FILE     write here instead of standard output\n",
};

enum fmt { F_AUTO, F_FLICKR, F_COCO, F_KARPATHY, F_WDS, F_TSV, F_JSONL, F_TEXT, F_CLASSES };
static const char *fmt_names[] = {"auto", "flickr", "coco", "karpathy", "wds", "tsv", "jsonl", "text", "classes"};

struct opts {
	enum fmt fmt;
	const char *split;
	const char *key_field, *text_field;
	int desc;
	int context, context_given;
	const char *model;
	int strict;
	long long max_bytes;
	const char *bpe, *hf;
	const char *only;
	char **templates; /* classes: the prompt templates */
	int ntemplates;
	const char *templates_file;
	int level;
	const char *output;
	const char *wordvec; /* --word-vectors */
	int mean;            /* --mean */
	const char *stopwords, *knowledge;
	int ood_m;
	float ood_min_cos, ood_tau;
	char **inputs;
	int ninputs;
};

enum { OPT_SPLIT = 256, OPT_KEYF, OPT_TEXTF, OPT_DESC, OPT_STRICT, OPT_MAXB, OPT_BPE, OPT_HF, OPT_ONLY, OPT_TEMPLATE,
       OPT_TEMPLATES, OPT_WORDVEC, OPT_MEAN, OPT_STOP, OPT_KNOW, OPT_OODM, OPT_OODC, OPT_OODT };

static void add_template(struct opts *o, const char *t, size_t len, const char *where)
{
	const char *b = memchr(t, '{', len);
	if (!b || b + 1 >= t + len || b[1] != '}')
		cmr_usage_error("%s: the template '%.*s' has no {} for the class name", where, (int)len, t);
	char **p = realloc(o->templates, (size_t)(o->ntemplates + 1) * sizeof *p);
	if (!p || !(p[o->ntemplates] = strndup(t, len)))
		cmr_die("out of memory");
	o->templates = p;
	o->ntemplates++;
}

static void parse_cmdline(int argc, char **argv, struct opts *o)
{
	static const struct option longopts[] = {
		{"format", required_argument, NULL, 'f'},
		{"split", required_argument, NULL, OPT_SPLIT},
		{"key-field", required_argument, NULL, OPT_KEYF},
		{"text-field", required_argument, NULL, OPT_TEXTF},
		{"desc", no_argument, NULL, OPT_DESC},
		{"context", required_argument, NULL, 'c'},
		{"model", required_argument, NULL, 'm'},
		{"strict", no_argument, NULL, OPT_STRICT},
		{"max-bytes", required_argument, NULL, OPT_MAXB},
		{"bpe", required_argument, NULL, OPT_BPE},
		{"hf", required_argument, NULL, OPT_HF},
		{"only", required_argument, NULL, OPT_ONLY},
		{"template", required_argument, NULL, OPT_TEMPLATE},
		{"templates", required_argument, NULL, OPT_TEMPLATES},
		{"word-vectors", required_argument, NULL, OPT_WORDVEC},
		{"mean", no_argument, NULL, OPT_MEAN},
		{"stopwords", required_argument, NULL, OPT_STOP},
		{"knowledge", required_argument, NULL, OPT_KNOW},
		{"ood-neighbours", required_argument, NULL, OPT_OODM},
		{"ood-min-cos", required_argument, NULL, OPT_OODC},
		{"ood-tau", required_argument, NULL, OPT_OODT},
		{"compress", required_argument, NULL, 'z'},
		{"output", required_argument, NULL, 'o'},
		CMR_COMMON_LONGOPTS,
		{NULL, 0, NULL, 0},
	};
	memset(o, 0, sizeof *o);
	o->key_field = "image";
	o->text_field = "caption";
	o->context = CMR_CLIP_CONTEXT;
	o->max_bytes = 16384;
	o->ood_m = 10, o->ood_min_cos = 0.7f, o->ood_tau = 0.1f;
	int ood_given = 0;
	int c;
	while ((c = getopt_long(argc, argv, "f:c:m:z:o:" CMR_COMMON_SHORTOPTS, longopts, NULL)) != -1) {
		switch (c) {
		case 'f': {
			size_t i;
			for (i = 0; i < sizeof fmt_names / sizeof fmt_names[0]; i++)
				if (strcmp(optarg, fmt_names[i]) == 0)
					break;
			if (i == sizeof fmt_names / sizeof fmt_names[0])
				cmr_usage_error("--format: '%s' is not flickr, coco, karpathy, wds, tsv, jsonl, text or classes",
						optarg);
			o->fmt = (enum fmt)i;
			break;
		}
		case OPT_SPLIT: o->split = optarg; break;
		case OPT_KEYF: o->key_field = optarg; break;
		case OPT_TEXTF: o->text_field = optarg; break;
		case OPT_DESC: o->desc = 1; break;
		case 'c': o->context = (int)cmr_parse_int("--context", optarg, 2, 65536), o->context_given = 1; break;
		case 'm': o->model = cmr_parse_model(optarg); break;
		case OPT_STRICT: o->strict = 1; break;
		case OPT_MAXB: o->max_bytes = cmr_parse_int("--max-bytes", optarg, 1, 1 << 30); break;
		case OPT_BPE: o->bpe = optarg; break;
		case OPT_HF: o->hf = optarg; break;
		case OPT_ONLY: o->only = optarg; break;
		case OPT_TEMPLATE: add_template(o, optarg, strlen(optarg), "--template"); break;
		case OPT_TEMPLATES: o->templates_file = optarg; break;
		case OPT_WORDVEC: o->wordvec = optarg; break;
		case OPT_MEAN: o->mean = 1; break;
		case OPT_STOP: o->stopwords = optarg; break;
		case OPT_KNOW: o->knowledge = optarg; break;
		case OPT_OODM: o->ood_m = (int)cmr_parse_int("--ood-neighbours", optarg, 0, 256), ood_given = 1; break;
		case OPT_OODC: o->ood_min_cos = (float)cmr_parse_double("--ood-min-cos", optarg, -1, 1), ood_given = 1; break;
		case OPT_OODT: o->ood_tau = (float)cmr_parse_double("--ood-tau", optarg, 1e-4, 100), ood_given = 1; break;
		case 'z': o->level = (int)cmr_parse_int("--compress", optarg, 0, 19); break;
		case 'o': o->output = optarg; break;
		default:
			if (!cmr_common_option(c))
				cmr_usage_error("unhandled option");
		}
	}
	if (o->mean && (!o->wordvec || o->knowledge))
		cmr_usage_error("--mean averages word vectors: it needs --word-vectors FILE (and no --knowledge)");
	if (ood_given && !(o->knowledge && o->wordvec))
		cmr_usage_error("--ood-neighbours, --ood-min-cos and --ood-tau bridge words to concepts: they need "
				"--knowledge FILE and --word-vectors FILE");
	if (o->stopwords && !o->wordvec && !o->knowledge)
		cmr_usage_error("--stopwords is for --word-vectors or --knowledge");
	if (o->knowledge && (o->bpe || o->hf || o->model || o->context_given))
		cmr_usage_error("--knowledge writes prototypes, not tokens: --bpe, --hf, -m and -c do not apply");
	if (o->wordvec && (o->bpe || o->hf || o->model || o->context_given))
		cmr_usage_error("--word-vectors writes word vectors, not tokens: --bpe, --hf, -m and -c do not apply");
	if (o->model) { /* the model says its context: one statement of the geometry */
		cmr_clip_cfg cfg;
		char err[4400];
		if (cmr_clip_cfg_load(o->model, &cfg, err, sizeof err) < 0)
			cmr_die("%s", err);
		if (o->context_given && o->context != cfg.text.context)
			cmr_usage_error("-c %d disagrees with %s, whose context is %d: give one of them", o->context, o->model,
					cfg.text.context);
		o->context = cfg.text.context;
	}
	if (o->bpe && o->hf)
		cmr_usage_error("--bpe and --hf exclude each other");
	if ((o->ntemplates || o->templates_file) && o->fmt != F_CLASSES)
		cmr_usage_error("--template and --templates are for -f classes");
	if (o->templates_file) {
		char err[4200];
		size_t n;
		char *text = cmr_read_file(o->templates_file, 1 << 20, &n, err, sizeof err);
		if (!text)
			cmr_die("%s", err);
		for (char *p = text, *end = text + n; p < end;) {
			char *nl = memchr(p, '\n', (size_t)(end - p));
			size_t len = (size_t)((nl ? nl : end) - p);
			if (len && p[len - 1] == '\r')
				len--;
			if (len)
				add_template(o, p, len, o->templates_file);
			p = nl ? nl + 1 : end;
		}
		free(text);
		if (!o->ntemplates)
			cmr_die("%s: no templates in it", o->templates_file);
	}
	if (o->fmt == F_CLASSES && !o->ntemplates)
		add_template(o, "a photo of a {}.", 16, "the default template");
	o->inputs = argv + optind;
	o->ninputs = argc - optind;
}

/* ---- output ---- */
static struct {
	const struct opts *o;
	cmr_clip_tok *tok;
	cmr_writer *w;
	int32_t *ids;
	uint64_t written, errors, truncated, filtered;
	char **only; /* sorted image keys of --only */
	size_t nonly;
	/* --word-vectors */
	cmr_wordvec wv;
	float *vrows;
	size_t vcap;
	uint64_t words, unknown, novector; /* words seen, without a vector; captions with none */
	char unknown_eg[5][64];
	int neg;
	cmr_wordset stop; /* --stopwords */
	uint64_t stopped;
	cmr_knowledge kn; /* --knowledge */
	uint64_t concept, bridged, noproto; /* words: concepts, bridged to concepts, neither */
	char noproto_eg[5][64];
	int npeg;
} g;

static void example(char eg[5][64], int *n, const char *w)
{
	for (int e = 0; e < *n; e++)
		if (strcmp(eg[e], w) == 0)
			return;
	if (*n < 5)
		snprintf(eg[(*n)++], sizeof eg[0], "%s", w);
}

static void examples(char *out, size_t cap, char eg[5][64], int n)
{
	out[0] = 0;
	for (int e = 0; e < n; e++)
		snprintf(out + strlen(out), cap - strlen(out), "%s'%s'", e ? ", " : "", eg[e]);
}

/* Writes a caption's word vectors (kind vectors [k, D], unit rows) or their mean (kind
 * embedding [D], unit length) in place of its tokens; with --knowledge its words' visual
 * prototypes (kind vectors [k, D]), each distinct word once. */
static void emit_words(const char *key, const char *text, size_t len)
{
	char **w;
	int n = cmr_text_words(text, len, &w);
	if (n < 0)
		cmr_die("out of memory");
	int kn = g.o->knowledge != NULL;
	int D = kn ? g.kn.dv : g.wv.dim, k = 0;
	if ((size_t)n * D > g.vcap) {
		g.vcap = (size_t)n * D;
		if (!(g.vrows = realloc(g.vrows, g.vcap * sizeof *g.vrows)))
			cmr_die("out of memory");
	}
	for (int i = 0; i < n; i++) {
		if (cmr_wordset_has(&g.stop, w[i])) {
			g.stopped++;
			continue;
		}
		int again = 0;
		for (int e = 0; kn && e < i && !again; e++)
			again = strcmp(w[e], w[i]) == 0;
		if (again)
			continue;
		const float *v = g.o->wordvec ? cmr_wordvec_find(&g.wv, w[i]) : NULL;
		g.words++;
		if (kn) {
			char how;
			int r = cmr_knowledge_word(&g.kn, w[i], v, g.o->wordvec ? g.o->ood_m : 0, g.o->ood_tau,
						   g.o->ood_min_cos, g.vrows + (size_t)k * D, NULL, &how);
			if (r < 0)
				cmr_die("out of memory");
			if (r == 0) {
				g.noproto++;
				example(g.noproto_eg, &g.npeg, w[i]);
				continue;
			}
			if (how == 'o')
				g.bridged++;
			else
				g.concept++;
			k++;
			continue;
		}
		if (!v) {
			g.unknown++;
			example(g.unknown_eg, &g.neg, w[i]);
			continue;
		}
		memcpy(g.vrows + (size_t)k * D, v, (size_t)D * sizeof *v);
		cmr_unit_rows(g.vrows + (size_t)k * D, 1, D);
		k++;
	}
	if (n)
		free(w[0]);
	free(w);
	if (!k) { /* still a query: no rows, scoring 0 (a --mean embedding cannot be empty) */
		g.novector++;
		if (g.o->mean)
			return;
	}
	cmr_record rec;
	if (g.o->mean) {
		for (int i = 1; i < k; i++)
			for (int d = 0; d < D; d++)
				g.vrows[d] += g.vrows[(size_t)i * D + d];
		cmr_unit_rows(g.vrows, 1, D);
		uint32_t dims[1] = {(uint32_t)D};
		cmr_record_tensor(&rec, CMR_KIND_EMBEDDING, CMR_DTYPE_F32, 1, dims, key, g.vrows);
	} else {
		uint32_t dims[2] = {(uint32_t)k, (uint32_t)D};
		cmr_record_tensor(&rec, CMR_KIND_VECTORS, CMR_DTYPE_F32, 2, dims, key, g.vrows);
	}
	if (cmr_writer_put(g.w, &rec) < 0)
		cmr_die_writer(g.w);
	g.written++;
}

/* A bad caption (or file): reported, counted; with --strict the end. */
static void bad(const char *where, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bad(const char *where, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	g.errors++;
	if (g.o->strict)
		cmr_die("%s: %s", where, msg);
	cmr_skip(where, msg);
}

/* The image key of a file name: no directories, nothing from the first dot. */
static void image_key(const char *name, size_t len, char *out, size_t cap)
{
	const char *base = name;
	for (size_t i = 0; i < len; i++)
		if (name[i] == '/')
			base = name + i + 1;
	size_t n = 0;
	while (base + n < name + len && base[n] != '.' && n + 1 < cap)
		n++;
	memcpy(out, base, n);
	out[n] = 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Is the image of this caption key in --only's list? */
static int wanted(const char *key)
{
	if (!g.only)
		return 1;
	char ik[CMR_KEY_MAX + 1];
	const char *hash = strrchr(key, '#');
	size_t n = hash ? (size_t)(hash - key) : strlen(key);
	snprintf(ik, sizeof ik, "%.*s", (int)n, key);
	const char *k = ik;
	return bsearch(&k, g.only, g.nonly, sizeof *g.only, cmp_str) != NULL;
}

/* Tokenizes one caption and writes its record. where names it in messages. */
static void emit(const char *key, const char *text, size_t len, const char *where)
{
	if (!wanted(key)) {
		g.filtered++;
		return;
	}
	if ((long long)len > g.o->max_bytes) {
		bad(where, "caption of %zu bytes is longer than --max-bytes %lld", len, g.o->max_bytes);
		return;
	}
	for (size_t i = 0; i < len;) {
		utf8proc_int32_t c;
		utf8proc_ssize_t n = utf8proc_iterate((const uint8_t *)text + i, (utf8proc_ssize_t)(len - i), &c);
		if (n <= 0) {
			bad(where, "not valid UTF-8 at byte %zu of the caption", i);
			return;
		}
		i += (size_t)n;
	}
	const char *why;
	if (!*key || cmr_key_check(key, strlen(key), &why) < 0) {
		bad(where, "bad key '%s': %s", key, *key ? why : "empty");
		return;
	}
	if (g.o->wordvec || g.o->knowledge) {
		emit_words(key, text, len);
		return;
	}
	int trunc;
	int n = cmr_clip_tokenize(g.tok, text, len, g.o->context, g.ids, &trunc);
	if (n < 0)
		cmr_die("out of memory");
	g.truncated += (uint64_t)trunc;
	cmr_record rec;
	uint32_t dims[1] = {(uint32_t)n};
	cmr_record_tensor(&rec, g.o->desc ? CMR_KIND_DESC_TOKENS : CMR_KIND_TOKENS, CMR_DTYPE_I32, 1, dims, key, g.ids);
	if (cmr_writer_put(g.w, &rec) < 0)
		cmr_die_writer(g.w);
	g.written++;
}

/* ---- per-image caption numbering (coco, tsv, jsonl, karpathy) ---- */
typedef struct {
	char **keys;
	char **names; /* the image name that first gave each key */
	int *count;
	size_t n, cap;
} counter;

/* the next caption number of the image key; -1 when the key was first given by another
 * image name (a/x.jpg and b/x.jpg both give x: two images under one key) */
static int next_index(counter *c, const char *key, const char *name, const char **first)
{
	/* linear probing over a small open table keyed by the image key */
	if ((c->n + 1) * 2 > c->cap) {
		size_t cap = c->cap ? 2 * c->cap : 1024;
		char **k = calloc(cap, sizeof *k), **nm = calloc(cap, sizeof *nm);
		int *v = calloc(cap, sizeof *v);
		if (!k || !v || !nm)
			cmr_die("out of memory");
		for (size_t i = 0; i < c->cap; i++)
			if (c->keys[i]) {
				size_t h = strlen(c->keys[i]);
				for (const char *p = c->keys[i]; *p; p++)
					h = h * 31 + (unsigned char)*p;
				h &= cap - 1;
				while (k[h])
					h = (h + 1) & (cap - 1);
				k[h] = c->keys[i];
				nm[h] = c->names[i];
				v[h] = c->count[i];
			}
		free(c->keys);
		free(c->names);
		free(c->count);
		c->keys = k;
		c->names = nm;
		c->count = v;
		c->cap = cap;
	}
	size_t h = strlen(key);
	for (const char *p = key; *p; p++)
		h = h * 31 + (unsigned char)*p;
	h &= c->cap - 1;
	while (c->keys[h] && strcmp(c->keys[h], key) != 0)
		h = (h + 1) & (c->cap - 1);
	if (!c->keys[h]) {
		if (!(c->keys[h] = strdup(key)) || !(c->names[h] = strdup(name)))
			cmr_die("out of memory");
		c->n++;
	} else if (strcmp(c->names[h], name) != 0) {
		*first = c->names[h];
		return -1;
	}
	return c->count[h]++;
}

static void counter_free(counter *c)
{
	for (size_t i = 0; i < c->cap; i++) {
		free(c->keys[i]);
		free(c->names[i]);
	}
	free(c->keys);
	free(c->names);
	free(c->count);
	memset(c, 0, sizeof *c);
}

static void emit_numbered(counter *c, const char *image, const char *text, size_t len, const char *where)
{
	char ik[CMR_KEY_MAX + 1], key[CMR_KEY_MAX + 16];
	image_key(image, strlen(image), ik, sizeof ik);
	if (!ik[0]) {
		bad(where, "the image name '%s' gives an empty key (cmr-stream(5): the name without directories, "
			   "up to its first dot)", image);
		return;
	}
	const char *first = NULL;
	int n = next_index(c, ik, image, &first);
	if (n < 0) {
		bad(where, "the images '%s' and '%s' both have the key '%s': captions of two images would be mixed "
			   "(rename one)", first, image, ik);
		return;
	}
	snprintf(key, sizeof key, "%s#%d", ik, n);
	emit(key, text, len, where);
}

/* ---- line formats ---- */
typedef struct {
	char *p, *end;
	uint64_t line;
} lines;

static int next_line(lines *l, char **s, size_t *len)
{
	if (l->p >= l->end)
		return 0;
	char *nl = memchr(l->p, '\n', (size_t)(l->end - l->p));
	*s = l->p;
	*len = nl ? (size_t)(nl - l->p) : (size_t)(l->end - l->p);
	if (*len && (*s)[*len - 1] == '\r')
		(*len)--;
	l->p = nl ? nl + 1 : l->end;
	l->line++;
	return 1;
}

static void do_flickr(const char *name, char *buf, size_t n)
{
	lines l = {buf, buf + n, 0};
	char *s, where[600];
	size_t len;
	while (next_line(&l, &s, &len)) {
		snprintf(where, sizeof where, "%s:%" PRIu64, name, l.line);
		if (len == 0)
			continue;
		char *tab = memchr(s, '\t', len);
		if (!tab) {
			bad(where, "no tab between IMAGE#N and the caption");
			continue;
		}
		char *hash = memchr(s, '#', (size_t)(tab - s));
		char *q = hash ? hash + 1 : NULL;
		while (q && q < tab && *q >= '0' && *q <= '9')
			q++;
		if (!hash || q != tab || q == hash + 1) {
			bad(where, "'%.*s' is not IMAGE#N", (int)(tab - s > 80 ? 80 : tab - s), s);
			continue;
		}
		char ik[CMR_KEY_MAX + 1], key[CMR_KEY_MAX + 32];
		image_key(s, (size_t)(hash - s), ik, sizeof ik);
		snprintf(key, sizeof key, "%s#%.*s", ik, (int)(tab - hash - 1), hash + 1);
		emit(key, tab + 1, len - (size_t)(tab + 1 - s), where);
	}
}

static void do_text(const char *name, char *buf, size_t n)
{
	lines l = {buf, buf + n, 0};
	char *s, where[600], key[32];
	size_t len;
	while (next_line(&l, &s, &len)) {
		snprintf(where, sizeof where, "%s:%" PRIu64, name, l.line);
		snprintf(key, sizeof key, "%" PRIu64, l.line);
		emit(key, s, len, where);
	}
}

/* classes: each class name through each template, key CLASS#T (cmr-eval --labels averages
 * a class's prompts into its embedding) */
static void do_classes(const char *name, char *buf, size_t n)
{
	lines l = {buf, buf + n, 0};
	char *s, where[600];
	size_t len;
	counter seen = {0};
	while (next_line(&l, &s, &len)) {
		snprintf(where, sizeof where, "%s:%" PRIu64, name, l.line);
		if (len == 0)
			continue;
		char cls[CMR_KEY_MAX + 1];
		if (len > CMR_KEY_MAX - 12 || memchr(s, '#', len)) {
			bad(where, "the class name '%.*s' %s", (int)(len > 80 ? 80 : len), s,
			    len > CMR_KEY_MAX - 12 ? "is too long for a key" : "holds '#', which keys use to number a prompt");
			continue;
		}
		snprintf(cls, sizeof cls, "%.*s", (int)len, s);
		const char *first = NULL;
		if (next_index(&seen, cls, cls, &first) > 0) {
			bad(where, "the class '%s' is given twice", cls);
			continue;
		}
		for (int t = 0; t < g.o->ntemplates; t++) {
			const char *tp = g.o->templates[t], *b = strstr(tp, "{}");
			char text[2 * CMR_KEY_MAX + 4096], key[CMR_KEY_MAX + 16];
			int tl = snprintf(text, sizeof text, "%.*s%s%s", (int)(b - tp), tp, cls, b + 2);
			snprintf(key, sizeof key, "%s#%d", cls, t);
			emit(key, text, (size_t)tl < sizeof text ? (size_t)tl : sizeof text - 1, where);
		}
	}
	counter_free(&seen);
}

static void do_tsv(const char *name, char *buf, size_t n)
{
	lines l = {buf, buf + n, 0};
	char *s, where[600];
	size_t len;
	int kcol = -1, tcol = -1, ncol = 0;
	counter cnt = {0};
	if (!next_line(&l, &s, &len))
		return;
	for (char *f = s, *end = s + len; f <= end; ncol++) {
		char *tab = memchr(f, '\t', (size_t)(end - f));
		size_t fl = tab ? (size_t)(tab - f) : (size_t)(end - f);
		if (fl == strlen(g.o->key_field) && memcmp(f, g.o->key_field, fl) == 0)
			kcol = ncol;
		if (fl == strlen(g.o->text_field) && memcmp(f, g.o->text_field, fl) == 0)
			tcol = ncol;
		f = tab ? tab + 1 : end + 1;
	}
	if (kcol < 0 || tcol < 0)
		cmr_die("%s:1: the header has no column '%s'", name, kcol < 0 ? g.o->key_field : g.o->text_field);
	while (next_line(&l, &s, &len)) {
		snprintf(where, sizeof where, "%s:%" PRIu64, name, l.line);
		if (len == 0)
			continue;
		char *fs[2] = {NULL, NULL};
		size_t fls[2] = {0, 0};
		int col = 0;
		for (char *f = s, *end = s + len; f <= end; col++) {
			char *tab = memchr(f, '\t', (size_t)(end - f));
			size_t fl = tab ? (size_t)(tab - f) : (size_t)(end - f);
			if (col == kcol || col == tcol) {
				fs[col == tcol] = f;
				fls[col == tcol] = fl;
			}
			f = tab ? tab + 1 : end + 1;
		}
		if (!fs[0] || !fs[1]) {
			bad(where, "%d columns, the header has %d", col, ncol);
			continue;
		}
		char image[CMR_KEY_MAX + 1];
		snprintf(image, sizeof image, "%.*s", (int)fls[0], fs[0]);
		emit_numbered(&cnt, image, fs[1], fls[1], where);
	}
	counter_free(&cnt);
}

static void do_jsonl(const char *name, char *buf, size_t n)
{
	lines l = {buf, buf + n, 0};
	char *s, where[600], key[32];
	size_t len;
	counter cnt = {0};
	while (next_line(&l, &s, &len)) {
		snprintf(where, sizeof where, "%s:%" PRIu64, name, l.line);
		if (len == 0)
			continue;
		json_error_t jerr;
		json_t *j = json_loadb(s, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
		if (!j) {
			bad(where, "not JSON: %s", jerr.text);
			continue;
		}
		if (json_is_string(j)) {
			snprintf(key, sizeof key, "%" PRIu64, l.line);
			emit(key, json_string_value(j), json_string_length(j), where);
		} else if (json_is_object(j)) {
			json_t *k = json_object_get(j, g.o->key_field), *t = json_object_get(j, g.o->text_field);
			if (!json_is_string(k) || !json_is_string(t))
				bad(where, "\"%s\" and \"%s\" must be strings", g.o->key_field, g.o->text_field);
			else if (strlen(json_string_value(k)) != json_string_length(k))
				bad(where, "\"%s\" holds a NUL character (\\u0000): not a key", g.o->key_field);
			else
				emit_numbered(&cnt, json_string_value(k), json_string_value(t), json_string_length(t), where);
		} else {
			bad(where, "neither an object nor a string");
		}
		json_decref(j);
	}
	counter_free(&cnt);
}

/* ---- JSON formats ---- */
static json_t *load_json(const char *name, char *buf, size_t n)
{
	json_error_t jerr;
	json_t *j = json_loadb(buf, n, 0, &jerr);
	if (!j)
		cmr_die("%s:%d:%d: not valid JSON: %s", name, jerr.line, jerr.column, jerr.text);
	return j;
}

typedef struct {
	json_int_t id;
	const char *file;
} coco_image;

static int cmp_coco_image(const void *a, const void *b)
{
	json_int_t x = ((const coco_image *)a)->id, y = ((const coco_image *)b)->id;
	return x < y ? -1 : x > y;
}

static void do_coco(const char *name, json_t *j)
{
	json_t *images = json_object_get(j, "images"), *anns = json_object_get(j, "annotations");
	if (!json_is_array(images) || !json_is_array(anns))
		cmr_die("%s: COCO captions JSON needs the arrays \"images\" and \"annotations\"", name);
	/* image id -> file name: sorted by id, looked up by bisection (linear in the annotations
	 * whatever their order) */
	size_t ni = json_array_size(images);
	coco_image *im = malloc((ni + 1) * sizeof *im);
	if (!im)
		cmr_die("out of memory");
	for (size_t i = 0; i < ni; i++) {
		json_t *o = json_array_get(images, i);
		json_t *id = json_object_get(o, "id"), *fn = json_object_get(o, "file_name");
		if (!json_is_integer(id) || !json_is_string(fn))
			cmr_die("%s: images[%zu]: needs an integer \"id\" and a string \"file_name\"", name, i);
		im[i] = (coco_image){json_integer_value(id), json_string_value(fn)};
	}
	qsort(im, ni, sizeof *im, cmp_coco_image);
	for (size_t i = 1; i < ni; i++)
		if (im[i].id == im[i - 1].id)
			cmr_die("%s: image id %" JSON_INTEGER_FORMAT " occurs twice in \"images\"", name, im[i].id);
	counter cnt = {0};
	char where[600];
	for (size_t a = 0; a < json_array_size(anns); a++) {
		snprintf(where, sizeof where, "%s: annotations[%zu]", name, a);
		json_t *an = json_array_get(anns, a);
		json_t *iid = json_object_get(an, "image_id"), *cap = json_object_get(an, "caption");
		if (!json_is_integer(iid) || !json_is_string(cap)) {
			bad(where, "needs an integer \"image_id\" and a string \"caption\"");
			continue;
		}
		coco_image want = {json_integer_value(iid), NULL};
		const coco_image *hit = bsearch(&want, im, ni, sizeof *im, cmp_coco_image);
		if (!hit) {
			bad(where, "image_id %" JSON_INTEGER_FORMAT " is not in \"images\"", want.id);
			continue;
		}
		emit_numbered(&cnt, hit->file, json_string_value(cap), json_string_length(cap), where);
	}
	counter_free(&cnt);
	free(im);
}

static int split_wanted(const char *split)
{
	if (!g.o->split)
		return 1;
	size_t n = strlen(split);
	for (const char *p = g.o->split; *p;) {
		const char *c = strchr(p, ',');
		size_t l = c ? (size_t)(c - p) : strlen(p);
		if (l == n && memcmp(p, split, n) == 0)
			return 1;
		p += l + (c != NULL);
	}
	return 0;
}

static void do_karpathy(const char *name, json_t *j)
{
	json_t *images = json_object_get(j, "images");
	if (!json_is_array(images))
		cmr_die("%s: Karpathy JSON needs the array \"images\"", name);
	counter cnt = {0};
	char where[600];
	for (size_t i = 0; i < json_array_size(images); i++) {
		json_t *im = json_array_get(images, i);
		json_t *fn = json_object_get(im, "filename"), *sp = json_object_get(im, "split");
		json_t *sents = json_object_get(im, "sentences");
		if (!json_is_string(fn) || !json_is_string(sp) || !json_is_array(sents)) {
			snprintf(where, sizeof where, "%s: images[%zu]", name, i);
			bad(where, "needs \"filename\", \"split\" and \"sentences\"");
			continue;
		}
		if (!split_wanted(json_string_value(sp)))
			continue;
		/* the image's name with its directory (filepath), so that two images of one
		 * basename in two directories are told apart, and refused: one key each */
		const char *fp = json_string_value(json_object_get(im, "filepath"));
		char full[2048];
		snprintf(full, sizeof full, "%s%s%s", fp ? fp : "", fp && *fp ? "/" : "", json_string_value(fn));
		for (size_t s = 0; s < json_array_size(sents); s++) {
			snprintf(where, sizeof where, "%s: images[%zu].sentences[%zu]", name, i, s);
			json_t *raw = json_object_get(json_array_get(sents, s), "raw");
			if (!json_is_string(raw)) {
				bad(where, "\"raw\" is not a string");
				continue;
			}
			emit_numbered(&cnt, full, json_string_value(raw), json_string_length(raw), where);
		}
	}
	counter_free(&cnt);
}

/* ---- webdataset tars ---- */
/* libarchive reading an open input whose first bytes were read already to detect it */
struct peeked {
	FILE *f;
	const unsigned char *head;
	size_t nhead;
	int head_given;
	unsigned char buf[1 << 16];
};

static la_ssize_t peeked_read(struct archive *a, void *ctx, const void **out)
{
	struct peeked *p = ctx;
	if (!p->head_given) {
		p->head_given = 1;
		if (p->nhead) {
			*out = p->head;
			return (la_ssize_t)p->nhead;
		}
	}
	size_t got = fread(p->buf, 1, sizeof p->buf, p->f);
	if (!got && ferror(p->f)) {
		archive_set_error(a, errno, "read error: %s", strerror(errno));
		return -1;
	}
	*out = p->buf;
	return (la_ssize_t)got;
}

/* the members of a webdataset archive: the named file, or an open input f whose first
 * nhead bytes are head */
static void do_wds(const char *path, FILE *f, const unsigned char *head, size_t nhead)
{
	const char *name = cmr_input_name(path);
	struct archive *a = archive_read_new();
	archive_read_support_filter_all(a);
	archive_read_support_format_tar(a);
	archive_read_support_format_gnutar(a);
	archive_read_support_format_zip(a);
	archive_read_support_format_empty(a);
	struct peeked *pk = f ? calloc(1, sizeof *pk) : NULL;
	if (f && !pk)
		cmr_die("out of memory");
	if (pk)
		*pk = (struct peeked){.f = f, .head = head, .nhead = nhead};
	int rc = pk ? archive_read_open(a, pk, NULL, peeked_read, NULL)
		    : (!path || strcmp(path, "-") == 0) ? archive_read_open_fd(a, 0, 1 << 16)
							: archive_read_open_filename(a, path, 1 << 16);
	struct archive_entry *e;
	char where[1200];
	while (rc == ARCHIVE_OK && (rc = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
		const char *m = archive_entry_pathname(e);
		size_t ml = m ? strlen(m) : 0;
		/* captions: KEY.txt; descriptions (--desc): KEY.desc, a perspective per line */
		const char *ext = g.o->desc ? ".desc" : ".txt";
		size_t el = strlen(ext);
		int txt = ml > el && strcmp(m + ml - el, ext) == 0;
		int js = ml > 5 && strcmp(m + ml - 5, ".json") == 0;
		if (archive_entry_filetype(e) != AE_IFREG || (!txt && !js))
			continue;
		int64_t size = archive_entry_size(e);
		if (size > g.o->max_bytes * 64) {
			snprintf(where, sizeof where, "%s: %s", name, m);
			bad(where, "member of %" PRId64 " bytes is too large for captions", size);
			continue;
		}
		char *buf = malloc((size_t)size + 1);
		if (!buf)
			cmr_die("out of memory");
		la_ssize_t got = archive_read_data(a, buf, (size_t)size);
		if (got != size) {
			free(buf);
			rc = ARCHIVE_FATAL;
			break;
		}
		char ik[CMR_KEY_MAX + 1], key[CMR_KEY_MAX + 32];
		image_key(m, ml, ik, sizeof ik);
		if (txt) {
			lines l = {buf, buf + size, 0};
			char *s;
			size_t len;
			int k = 0;
			while (next_line(&l, &s, &len)) {
				if (len == 0)
					continue;
				snprintf(where, sizeof where, "%s: %s:%" PRIu64, name, m, l.line);
				snprintf(key, sizeof key, "%s#%d", ik, k++);
				emit(key, s, len, where);
			}
		} else {
			json_error_t jerr;
			json_t *j = json_loadb(buf, (size_t)size, 0, &jerr);
			json_t *t = j ? json_object_get(j, g.o->text_field) : NULL;
			snprintf(where, sizeof where, "%s: %s", name, m);
			if (!j)
				bad(where, "not valid JSON: %s", jerr.text);
			else if (json_is_string(t)) {
				snprintf(key, sizeof key, "%s#0", ik);
				emit(key, json_string_value(t), json_string_length(t), where);
			} else if (json_is_array(t)) {
				for (size_t i = 0; i < json_array_size(t); i++) {
					json_t *s = json_array_get(t, i);
					snprintf(where, sizeof where, "%s: %s: %s[%zu]", name, m, g.o->text_field, i);
					if (!json_is_string(s)) {
						bad(where, "not a string");
						continue;
					}
					snprintf(key, sizeof key, "%s#%zu", ik, i);
					emit(key, json_string_value(s), json_string_length(s), where);
				}
			} else {
				bad(where, "no string or array of strings \"%s\"", g.o->text_field);
			}
			json_decref(j);
		}
		free(buf);
	}
	if (rc != ARCHIVE_EOF) {
		g.errors++;
		if (g.o->strict)
			cmr_die("%s: %s", name, archive_error_string(a));
		cmr_error("%s: %s", name, archive_error_string(a));
	}
	archive_read_free(a);
	free(pk);
}

/* ---- input ---- */
/* the rest of the open input f after its first nhead bytes, head */
static char *slurp(const char *path, FILE *f, const unsigned char *head, size_t nhead, size_t *n)
{
	size_t cap = 1 << 16, len = nhead, got;
	char *buf = malloc(cap + 1);
	if (!buf)
		cmr_die("out of memory");
	memcpy(buf, head, nhead);
	while ((got = fread(buf + len, 1, cap - len, f)) > 0) {
		len += got;
		if (len == cap) {
			cap *= 2;
			if (!(buf = realloc(buf, cap + 1)))
				cmr_die("out of memory");
		}
	}
	if (ferror(f))
		cmr_die("%s: read error: %s", cmr_input_name(path), strerror(errno));
	cmr_close_input(f, path);
	buf[len] = 0;
	*n = len;
	return buf;
}

static int ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);
	return a >= b && strcmp(s + a - b, suffix) == 0;
}

static enum fmt detect(const char *path, const char *buf, size_t n)
{
	if (path && (ends_with(path, ".tar") || ends_with(path, ".tar.gz") || ends_with(path, ".tgz") ||
		     ends_with(path, ".tar.zst")))
		return F_WDS;
	if (path && ends_with(path, ".jsonl"))
		return F_JSONL;
	if (path && ends_with(path, ".tsv"))
		return F_TSV;
	size_t i = 0;
	while (i < n && (buf[i] == ' ' || buf[i] == '\n' || buf[i] == '\r' || buf[i] == '\t'))
		i++;
	if (i < n && buf[i] == '{')
		return F_COCO; /* coco or karpathy: told apart once parsed */
	/* IMAGE#N<TAB> on the first line */
	const char *nl = memchr(buf + i, '\n', n - i);
	size_t len = nl ? (size_t)(nl - buf - i) : n - i;
	const char *tab = memchr(buf + i, '\t', len), *hash = tab ? memchr(buf + i, '#', (size_t)(tab - buf - i)) : NULL;
	if (hash) {
		const char *q = hash + 1;
		while (q < tab && *q >= '0' && *q <= '9')
			q++;
		if (q == tab && q > hash + 1)
			return F_FLICKR;
	}
	return F_TEXT;
}

static void ingest(const char *path)
{
	const char *name = cmr_input_name(path);
	enum fmt f = g.o->fmt;
	if (f == F_WDS || (f == F_AUTO && detect(path, "", 0) == F_WDS)) {
		do_wds(path, NULL, NULL, 0);
		return;
	}
	FILE *in = cmr_open_input(path, 0);
	unsigned char head[512];
	size_t nh = fread(head, 1, sizeof head, in);
	if (cmr_is_archive(head, nh)) { /* whatever its name: stdin, shards.wds */
		if (f != F_AUTO)
			cmr_die("%s is an archive or a compressed file, not %s captions: give -f wds, or no -f", name,
				fmt_names[f]);
		cmr_info("%s: an archive: wds", name);
		do_wds(path, in, head, nh);
		cmr_close_input(in, path);
		return;
	}
	size_t n;
	char *buf = slurp(path, in, head, nh, &n);
	if (f == F_AUTO)
		f = detect(path, buf, n);
	if (f == F_COCO || f == F_KARPATHY) {
		json_t *j = load_json(name, buf, n);
		if (g.o->fmt == F_AUTO) {
			json_t *im0 = json_array_get(json_object_get(j, "images"), 0);
			if (json_object_get(j, "annotations"))
				f = F_COCO;
			else if (im0 && json_object_get(im0, "sentences"))
				f = F_KARPATHY;
			else
				cmr_die("%s: JSON that is neither COCO captions (\"annotations\") nor Karpathy "
					"splits (\"images\"[].\"sentences\"); say -f", name);
		}
		cmr_info("%s: %s", name, fmt_names[f]);
		if (f == F_COCO)
			do_coco(name, j);
		else
			do_karpathy(name, j);
		json_decref(j);
	} else {
		cmr_info("%s: %s", name, fmt_names[f]);
		if (f == F_FLICKR)
			do_flickr(name, buf, n);
		else if (f == F_TSV)
			do_tsv(name, buf, n);
		else if (f == F_JSONL)
			do_jsonl(name, buf, n);
		else if (f == F_CLASSES)
			do_classes(name, buf, n);
		else
			do_text(name, buf, n);
	}
	free(buf);
}

int main(int argc, char **argv)
{
	struct opts o;
	cmr_init(argc, argv, &tool);
	parse_cmdline(argc, argv, &o);
	g.o = &o;
	char err[512];
	if (o.hf) {
		char v[4096], m[4096];
		snprintf(v, sizeof v, "%s/vocab.json", o.hf);
		snprintf(m, sizeof m, "%s/merges.txt", o.hf);
		g.tok = cmr_clip_tok_from_hf(v, m, err, sizeof err);
	} else if (o.bpe) {
		g.tok = cmr_clip_tok_from_merges(o.bpe, err, sizeof err);
	} else {
		g.tok = cmr_clip_tok_new(err, sizeof err);
	}
	if (!g.tok)
		cmr_die("%s: %s", o.hf ? o.hf : o.bpe ? o.bpe : "built-in vocabulary", err);
	if (o.wordvec) {
		char werr[4400];
		if (cmr_wordvec_load(&g.wv, o.wordvec, werr, sizeof werr) < 0)
			cmr_die("%s", werr);
		cmr_info("%s: %zu words of %d dimensions%s", o.wordvec, g.wv.n, g.wv.dim,
			 g.wv.duplicates ? " (words given again ignored)" : "");
	}
	if (o.stopwords) {
		char werr[4400];
		size_t slen;
		char *st = cmr_read_file(o.stopwords, (size_t)16 << 20, &slen, werr, sizeof werr);
		if (!st || cmr_wordset_parse(&g.stop, st, slen, o.stopwords, werr, sizeof werr) < 0)
			cmr_die("%s", werr);
		free(st);
	}
	if (o.knowledge) {
		char werr[4400];
		if (cmr_knowledge_load(&g.kn, o.knowledge, werr, sizeof werr) < 0)
			cmr_die("%s", werr);
		if (o.wordvec && g.wv.dim != g.kn.dw)
			cmr_die("%s has vectors of %d dimensions, the concepts of %s %d: not the same word vectors",
				o.wordvec, g.wv.dim, o.knowledge, g.kn.dw);
	}
	g.ids = malloc((size_t)o.context * sizeof *g.ids);
	cmr_output out;
	cmr_output_open(&out, o.output, 1);
	g.w = cmr_writer_new(out.f, out.name, o.level);
	if (!g.ids || !g.w)
		cmr_die("out of memory");
	char *prov = cmr_provenance(argc, argv, (const char *const *)o.inputs, o.ninputs);
	cmr_writer_set_provenance(g.w, tool.name, prov);
	free(prov);
	if (o.only) {
		FILE *f = cmr_open_input(o.only, 0);
		char *line = NULL;
		size_t cap = 0, n = 0;
		ssize_t len;
		while ((len = getline(&line, &cap, f)) >= 0) {
			while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
				line[--len] = 0;
			if (!len)
				continue;
			g.only = realloc(g.only, (n + 1) * sizeof *g.only);
			char ik[CMR_KEY_MAX + 1];
			image_key(line, (size_t)len, ik, sizeof ik);
			if (!g.only || !(g.only[n++] = strdup(ik)))
				cmr_die("out of memory");
		}
		free(line);
		cmr_close_input(f, o.only);
		g.nonly = n;
		qsort(g.only, n, sizeof *g.only, cmp_str);
		if (!n)
			cmr_die("%s: no image names", o.only);
	}
	if (o.ninputs == 0)
		ingest("-");
	for (int i = 0; i < o.ninputs; i++)
		ingest(o.inputs[i]);
	if (!g.written && !g.errors) { /* nothing for the next stage */
		const char *in = o.ninputs ? cmr_input_name(o.inputs[0]) : "standard input";
		if (g.filtered)
			cmr_die("none of the %" PRIu64 " captions of %s is of an image listed in %s", g.filtered, in, o.only);
		cmr_error("no captions in %s%s", in, o.ninputs > 1 ? " and the other inputs" : "");
		cmr_hint("a webdataset tar needs KEY.%s or KEY.json members; Flickr8k's captions are in "
			 "captions.token.txt (-f flickr)", o.desc ? "desc" : "txt");
		cmr_die("nothing written");
	}
	if (cmr_writer_finish(g.w) < 0)
		cmr_die_writer(g.w);
	cmr_writer_free(g.w);
	cmr_output_commit(&out);
	if (g.truncated)
		cmr_info("%" PRIu64 " captions were cut to %d tokens", g.truncated, o.context);
	if (o.knowledge) {
		char eg[400];
		examples(eg, sizeof eg, g.noproto_eg, g.npeg);
		cmr_info("%" PRIu64 " words: %" PRIu64 " concepts, %" PRIu64 " bridged to concepts, %" PRIu64
			 " without a prototype (e.g. %s); %" PRIu64 " stop words", g.words, g.concept, g.bridged,
			 g.noproto, eg, g.stopped);
		if (g.novector)
			cmr_warn("%" PRIu64 " captions have no word with a prototype: written without rows (they score 0)",
				 g.novector);
		cmr_knowledge_free(&g.kn);
		cmr_wordvec_free(&g.wv);
		free(g.vrows);
	} else if (o.wordvec) {
		char eg[400];
		examples(eg, sizeof eg, g.unknown_eg, g.neg);
		if (g.unknown)
			cmr_warn("%" PRIu64 " of %" PRIu64 " words have no vector in %s, skipped (e.g. %s)", g.unknown,
				 g.words, o.wordvec, eg);
		if (g.novector)
			cmr_warn("%" PRIu64 " captions have no word with a vector: %s", g.novector,
				 o.mean ? "not written" : "written without rows (they score 0)");
		cmr_wordvec_free(&g.wv);
		free(g.vrows);
	}
	cmr_wordset_free(&g.stop);
	cmr_info("%" PRIu64 " captions", g.written);
	if (g.only)
		cmr_info("%" PRIu64 " captions of other images left out (--only)", g.filtered);
	cmr_clip_tok_free(g.tok);
	free(g.ids);
	cmr_skips_summary();
	if (g.errors) {
		cmr_error("%" PRIu64 " of %" PRIu64 " captions could not be read", g.errors,
			  g.errors + g.written);
		return cmr_exit(CMR_EXIT_FAILURE);
	}
	return cmr_exit(CMR_EXIT_OK);
}
