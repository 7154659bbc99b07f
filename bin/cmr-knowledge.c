/* cmr-knowledge - concept knowledge for unpaired image-text matching (MASK, issue 21): build it
 * from an unlabelled image pool and a classifier's confident predictions, look inside, put
 * visual features into its space, learn its mapping into the word space. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fe.h"
#include "knowledge.h"
#include "format/half.h"
#include "format/stream.h"
#include "util.h"

static const cmr_tool tool = {
	"cmr-knowledge",
	"build -o KNOWLEDGE -c CLASSES.cmr... --labels FILE --word-vectors FILE [--stopwords FILE]\n"
	"      [--min-prob P] [--min-count N] [--no-centre] FEATURES.cmr...\n"
	"info [--words] KNOWLEDGE\n"
	"apply [--mapped] [--force] [-o OUT.cmr] KNOWLEDGE [FEATURES.cmr...]\n"
	"map -o OUT [--steps N] [--lr X] [--tau X] [--w-sim X] [--w-con X] [--decay X] [--seed N] KNOWLEDGE",
	"Concept knowledge (cmr-knowledge(5)) links words to what images look like without any\n"
	"image-text pairs (MASK, ICLR 2026): a concept is a word of an image classifier's class\n"
	"names that has a word vector; its visual prototype is the mean feature of the images of an\n"
	"unlabelled pool that the classifier puts, confidently, in a class named by that word.\n"
	"cmr-caption-ingest --knowledge turns a caption's words into prototypes (a word that is not\n"
	"a concept through its word-vector neighbours); scored against an image's regions by\n"
	"late interaction (cmr-eval --score maxsim-mean), they match images and texts unpaired.\n"
	"\nCommands:\n"
	"  build    the knowledge of the pool: FEATURES.cmr are the pool's pooled features and\n"
	"           CLASSES.cmr its class probabilities (cmr-encode -m MODEL.tflite -F pooled and\n"
	"           -F classes), joined by key\n"
	"  info     the concepts, dimensions, the features' model, the mapping; with --words each\n"
	"           concept: WORD<TAB>IMAGES<TAB>NEAREST CONCEPT BY WORD VECTOR\n"
	"  apply    visual features (kind vectors [N, D], or embeddings) into the prototypes'\n"
	"           space, unit(x - centre), or with --mapped into the word space through the\n"
	"           learned mapping: records of the same kind and key, f32\n"
	"  map      learn the mapping of visual features into the word space on the concepts'\n"
	"           own pairs (prototype, word vector), never on image-text pairs: a linear map W,\n"
	"           b with u = unit(W p + b), loss mean(1 - u.w) + w-sim x mean over pairs of\n"
	"           concepts (u.u' - w.w')^2 + w-con x the contrastive -log softmax(u.w / tau);\n"
	"           writes the knowledge with the mapping to OUT\n"
	"\nOptions:\n"
	"  -o, --output FILE     build, map: the knowledge file; apply: the stream (default\n"
	"                        standard output)\n"
	"  -c, --classes FILE    build: a stream of class probabilities (repeat for shards)\n"
	"      --labels FILE     build: the class names, one a line, line 1 for class 0\n"
	"      --word-vectors FILE\n"
	"                        build: word vectors (GloVe or word2vec text, or JSON)\n"
	"      --stopwords FILE  build: words that are never concepts, one a line ('#' comments)\n"
	"      --min-prob P      build: an image counts for its most probable class when its\n"
	"                        probability is at least P (default 0.5)\n"
	"      --min-count N     build: concepts of fewer images are left out (default 3)\n"
	"      --no-centre       build: no centre (default: the mean feature of the pool, taken\n"
	"                        from prototypes and from every feature put into their space)\n"
	"      --words           info: one line per concept\n"
	"      --mapped          apply: into the word space (the knowledge must have a mapping)\n"
	"      --steps N         map: full-batch Adam steps (default 500)\n"
	"      --lr X            map: learning rate (default 0.001)\n"
	"      --tau X           map: temperature of the contrastive term (default 0.1)\n"
	"      --w-sim X         map: weight of the pairwise-similarity term (default 1)\n"
	"      --w-con X         map: weight of the contrastive term (default 1)\n"
	"      --decay X         map: decoupled weight decay of W (default 0.0001)\n"
	"      --seed N          map: W's initial values (default 1)\n"
	"      --force           apply: features of another model than the knowledge's (a\n"
	"                        warning, not an error)\n",
};

enum cmd { CMD_BUILD, CMD_INFO, CMD_APPLY, CMD_MAP };

struct opts {
	enum cmd cmd;
	const char *output, *labels, *wordvec, *stopwords, *knowledge;
	char **classes;
	int nclasses;
	float min_prob;
	int min_count, no_centre, words, mapped, force;
	cmr_map_hp hp;
	char **inputs;
	int ninputs;
	int argc;
	char **argv;
};

enum { OPT_LABELS = 256, OPT_WORDVEC, OPT_STOP, OPT_MINP, OPT_MINC, OPT_NOCENTRE, OPT_WORDS, OPT_MAPPED, OPT_STEPS,
       OPT_LR, OPT_TAU, OPT_WSIM, OPT_WCON, OPT_DECAY, OPT_SEED };

static void parse_cmdline(int argc, char **argv, struct opts *o)
{
	static const struct { const char *name; enum cmd cmd; } cmds[] = {
		{"build", CMD_BUILD}, {"info", CMD_INFO}, {"apply", CMD_APPLY}, {"map", CMD_MAP}};
	static const struct option longopts[] = {
		{"output", required_argument, NULL, 'o'},      {"classes", required_argument, NULL, 'c'},
		{"labels", required_argument, NULL, OPT_LABELS}, {"word-vectors", required_argument, NULL, OPT_WORDVEC},
		{"stopwords", required_argument, NULL, OPT_STOP}, {"min-prob", required_argument, NULL, OPT_MINP},
		{"min-count", required_argument, NULL, OPT_MINC}, {"no-centre", no_argument, NULL, OPT_NOCENTRE},
		{"words", no_argument, NULL, OPT_WORDS},       {"mapped", no_argument, NULL, OPT_MAPPED},
		{"steps", required_argument, NULL, OPT_STEPS}, {"lr", required_argument, NULL, OPT_LR},
		{"tau", required_argument, NULL, OPT_TAU},     {"w-sim", required_argument, NULL, OPT_WSIM},
		{"w-con", required_argument, NULL, OPT_WCON},  {"decay", required_argument, NULL, OPT_DECAY},
		{"seed", required_argument, NULL, OPT_SEED},   CMR_FORCE_LONGOPT,
		CMR_COMMON_LONGOPTS,                           {NULL, 0, NULL, 0},
	};
	memset(o, 0, sizeof *o);
	o->min_prob = 0.5f, o->min_count = 3;
	cmr_map_hp_default(&o->hp);
	o->argc = argc, o->argv = argv;
	int found = -1;
	for (size_t i = 0; argc > 1 && i < sizeof cmds / sizeof cmds[0]; i++)
		if (strcmp(argv[1], cmds[i].name) == 0)
			found = (int)i;
	int opt_first = argc > 1 && argv[1][0] == '-' && argv[1][1];
	if (found < 0 && !opt_first)
		cmr_usage_error(argc > 1 ? "'%s' is not a command (build, info, apply, map)" : "give a command%s",
				argc > 1 ? argv[1] : " (build, info, apply, map)");
	o->cmd = found < 0 ? CMD_INFO : cmds[found].cmd;
	optind = found < 0 ? 1 : 2;
	int c;
	while ((c = getopt_long(argc, argv, "o:c:" CMR_COMMON_SHORTOPTS, longopts, NULL)) != -1) {
		switch (c) {
		case 'o': o->output = optarg; break;
		case 'c':
			if (!(o->classes = realloc(o->classes, (size_t)(o->nclasses + 1) * sizeof *o->classes)))
				cmr_die("out of memory");
			o->classes[o->nclasses++] = optarg;
			break;
		case OPT_LABELS: o->labels = optarg; break;
		case OPT_WORDVEC: o->wordvec = optarg; break;
		case OPT_STOP: o->stopwords = optarg; break;
		case OPT_MINP: o->min_prob = (float)cmr_parse_double("--min-prob", optarg, 0, 1); break;
		case OPT_MINC: o->min_count = (int)cmr_parse_int("--min-count", optarg, 1, INT32_MAX); break;
		case OPT_NOCENTRE: o->no_centre = 1; break;
		case OPT_WORDS: o->words = 1; break;
		case OPT_MAPPED: o->mapped = 1; break;
		case OPT_STEPS: o->hp.steps = (int)cmr_parse_int("--steps", optarg, 1, 10000000); break;
		case OPT_LR: o->hp.lr = (float)cmr_parse_double("--lr", optarg, 1e-9, 10); break;
		case OPT_TAU: o->hp.tau = (float)cmr_parse_double("--tau", optarg, 1e-4, 100); break;
		case OPT_WSIM: o->hp.w_sim = (float)cmr_parse_double("--w-sim", optarg, 0, 1e6); break;
		case OPT_WCON: o->hp.w_con = (float)cmr_parse_double("--w-con", optarg, 0, 1e6); break;
		case OPT_DECAY: o->hp.decay = (float)cmr_parse_double("--decay", optarg, 0, 10); break;
		case OPT_SEED: o->hp.seed = (uint64_t)cmr_parse_int("--seed", optarg, 0, INT64_MAX); break;
		case CMR_OPT_FORCE: o->force = 1; cmr_common_option(c); break;
		default:
			if (!cmr_common_option(c))
				cmr_usage_error("unhandled option");
		}
	}
	if (found < 0)
		cmr_usage_error("give a command (build, info, apply, map) first");
	o->inputs = argv + optind;
	o->ninputs = argc - optind;
	if (o->cmd == CMD_BUILD) {
		if (!o->output || !o->nclasses || !o->labels || !o->wordvec)
			cmr_usage_error("build needs -o KNOWLEDGE, -c CLASSES.cmr, --labels FILE and --word-vectors FILE");
		if (!o->ninputs)
			cmr_usage_error("build needs the pool's features: FEATURES.cmr");
	} else {
		if (o->ninputs < 1)
			cmr_usage_error("give the knowledge file");
		o->knowledge = o->inputs[0];
		o->inputs++, o->ninputs--;
		if (o->cmd == CMD_MAP && !o->output)
			cmr_usage_error("map writes a knowledge file with the mapping: give -o OUT");
		if ((o->cmd == CMD_INFO || o->cmd == CMD_MAP) && o->ninputs)
			cmr_usage_error("%s takes the knowledge file only", o->cmd == CMD_INFO ? "info" : "map");
	}
}

/* ---- build ---- */
typedef struct {
	char *key;
	uint32_t cls;
	float prob;
} cls_rec;

static struct {
	/* features */
	float *x;
	char **keys;
	size_t n, cap;
	int dv;
	char model[256];
	uint64_t model_id;
	int has_model;
	/* classes */
	cls_rec *cr;
	size_t ncr, crcap;
	uint32_t nclass;
	char cmodel[256];
	uint64_t cmodel_id;
	int has_cmodel;
} b;

/* the model a cmr-encode provenance record names (a TFLite file's name and XXH3-64) */
static int provenance_model(const cmr_record *rec, char *name, size_t cap, uint64_t *id)
{
	if (rec->type != CMR_TYPE_META || rec->kind != CMR_KIND_PROVENANCE)
		return 0;
	json_t *j = json_loadb(rec->data, rec->nbytes, 0, NULL);
	json_t *m = j ? json_object_get(j, "model") : NULL;
	const char *nm = json_string_value(json_object_get(m, "name"));
	const char *h = json_string_value(json_object_get(m, "xxh3"));
	int ok = nm && h && cmr_parse_hex64(h, id) == 0;
	if (ok)
		snprintf(name, cap, "%s", nm);
	json_decref(j);
	return ok;
}

static int take_feature(const cmr_record *rec, const char *input, void *ctx)
{
	(void)ctx;
	if (rec->type == CMR_TYPE_META) {
		if (provenance_model(rec, b.model, sizeof b.model, &b.model_id))
			b.has_model = 1;
		return 0;
	}
	if (rec->kind != CMR_KIND_EMBEDDING || rec->rank != 1)
		cmr_die("%s: record %" PRIu64 " (key '%s') is not an embedding: the pool's features are its pooled "
			"features (cmr-encode -F pooled)", input, rec->index, rec->key);
	if (b.n && rec->dims[0] != (uint32_t)b.dv)
		cmr_die("%s: record %" PRIu64 " (key '%s'): dimension %u, the first feature's is %d", input, rec->index,
			rec->key, rec->dims[0], b.dv);
	b.dv = (int)rec->dims[0];
	if (b.n == b.cap) {
		b.cap = b.cap ? 2 * b.cap : 1024;
		b.x = realloc(b.x, b.cap * (size_t)b.dv * sizeof *b.x);
		b.keys = realloc(b.keys, b.cap * sizeof *b.keys);
		if (!b.x || !b.keys)
			cmr_die("out of memory");
	}
	const char *why;
	if (cmr_unit_embedding(rec, b.x + b.n * (size_t)b.dv, &why) < 0)
		cmr_die("%s: record %" PRIu64 " (key '%s'): %s", input, rec->index, rec->key, why);
	if (!(b.keys[b.n] = strdup(rec->key)))
		cmr_die("out of memory");
	b.n++;
	return 0;
}

static int take_classes(const cmr_record *rec, const char *input, void *ctx)
{
	(void)ctx;
	if (rec->type == CMR_TYPE_META) {
		if (provenance_model(rec, b.cmodel, sizeof b.cmodel, &b.cmodel_id))
			b.has_cmodel = 1;
		return 0;
	}
	if (rec->kind != CMR_KIND_SCORES || rec->rank != 1 || rec->dtype != CMR_DTYPE_F32 || !rec->dims[0])
		cmr_die("%s: record %" PRIu64 " (key '%s') is not f32 class probabilities [N] (cmr-encode -F classes)",
			input, rec->index, rec->key);
	if (b.ncr && rec->dims[0] != b.nclass)
		cmr_die("%s: record %" PRIu64 " (key '%s'): %u classes, the first record's %u", input, rec->index,
			rec->key, rec->dims[0], b.nclass);
	b.nclass = rec->dims[0];
	const float *p = rec->data;
	uint32_t best = 0;
	for (uint32_t c = 0; c < b.nclass; c++) {
		if (!isfinite(p[c]))
			cmr_die("%s: record %" PRIu64 " (key '%s'): a probability is not finite", input, rec->index,
				rec->key);
		if (p[c] > p[best])
			best = c;
	}
	if (b.ncr == b.crcap) {
		b.crcap = b.crcap ? 2 * b.crcap : 1024;
		if (!(b.cr = realloc(b.cr, b.crcap * sizeof *b.cr)))
			cmr_die("out of memory");
	}
	if (!(b.cr[b.ncr].key = strdup(rec->key)))
		cmr_die("out of memory");
	b.cr[b.ncr].cls = best, b.cr[b.ncr].prob = p[best];
	b.ncr++;
	return 0;
}

static int cmp_cr(const void *x, const void *y)
{
	return strcmp(((const cls_rec *)x)->key, ((const cls_rec *)y)->key);
}

static int cmp_cr_key(const void *k, const void *e)
{
	return strcmp(k, ((const cls_rec *)e)->key);
}

static char *read_text(const char *path, size_t max, size_t *len)
{
	char err[4200];
	char *t = cmr_read_file(path, max, len, err, sizeof err);
	if (!t)
		cmr_die("%s", err);
	return t;
}

static void build(const struct opts *o)
{
	cmr_each_record(o->inputs, o->ninputs, take_feature, NULL);
	if (!b.n)
		cmr_die("%s: no features", cmr_input_name(o->inputs[0]));
	cmr_each_record(o->classes, o->nclasses, take_classes, NULL);
	if (!b.ncr)
		cmr_die("%s: no class probabilities", cmr_input_name(o->classes[0]));
	if (!b.has_model)
		cmr_die("%s: its provenance names no model (the features come from cmr-encode -m MODEL.tflite)",
			cmr_input_name(o->inputs[0]));
	if (b.has_cmodel && b.cmodel_id != b.model_id && !o->force)
		cmr_warn("the classes come from %s, the features from %s", b.cmodel, b.model);
	/* labels */
	size_t len;
	char *text = read_text(o->labels, (size_t)64 << 20, &len);
	char **labels = NULL;
	size_t nl = 0;
	for (char *p = text, *end = text + len; p < end;) {
		char *nl_ = memchr(p, '\n', (size_t)(end - p));
		char *e = nl_ ? nl_ : end;
		if (e > p && e[-1] == '\r')
			e[-1] = 0;
		*e = 0;
		if (!(labels = realloc(labels, (nl + 1) * sizeof *labels)))
			cmr_die("out of memory");
		labels[nl++] = p;
		p = nl_ ? nl_ + 1 : end;
	}
	if (nl != b.nclass)
		cmr_die("%s: %zu labels for the %u classes of %s", o->labels, nl, b.nclass, cmr_input_name(o->classes[0]));
	/* join by key */
	qsort(b.cr, b.ncr, sizeof *b.cr, cmp_cr);
	for (size_t i = 1; i < b.ncr; i++)
		if (strcmp(b.cr[i - 1].key, b.cr[i].key) == 0)
			cmr_die("the classes of '%s' are given twice", b.cr[i].key);
	uint32_t *cls = malloc(b.n * sizeof *cls + 1);
	float *prob = malloc(b.n * sizeof *prob + 1);
	if (!cls || !prob)
		cmr_die("out of memory");
	size_t missing = 0;
	for (size_t i = 0; i < b.n; i++) {
		const cls_rec *r = bsearch(b.keys[i], b.cr, b.ncr, sizeof *b.cr, cmp_cr_key);
		cls[i] = r ? r->cls : UINT32_MAX;
		prob[i] = r ? r->prob : 0;
		if (!r && missing++ == 0)
			cmr_warn("the image '%s' has features but no class probabilities: not in any prototype",
				 b.keys[i]);
	}
	if (missing > 1)
		cmr_warn("%zu images have features but no class probabilities", missing);
	char err[4400];
	cmr_wordvec wv;
	if (cmr_wordvec_load(&wv, o->wordvec, err, sizeof err) < 0)
		cmr_die("%s", err);
	cmr_wordset stop = {0};
	if (o->stopwords) {
		char *st = read_text(o->stopwords, (size_t)16 << 20, &len);
		if (cmr_wordset_parse(&stop, st, len, o->stopwords, err, sizeof err) < 0)
			cmr_die("%s", err);
		free(st);
	}
	cmr_knowledge_pool pool = {b.x, b.n, b.dv, cls, prob, labels, nl};
	cmr_knowledge kn;
	if (cmr_knowledge_build(&kn, &pool, &wv, &stop, o->min_prob, o->min_count, !o->no_centre, err, sizeof err) < 0)
		cmr_die("%s", err);
	snprintf(kn.features, sizeof kn.features, "%s", b.model);
	kn.features_id = b.model_id;
	char **ins = malloc((size_t)(o->ninputs + o->nclasses) * sizeof *ins);
	if (!ins)
		cmr_die("out of memory");
	memcpy(ins, o->inputs, (size_t)o->ninputs * sizeof *ins);
	memcpy(ins + o->ninputs, o->classes, (size_t)o->nclasses * sizeof *ins);
	kn.provenance = cmr_provenance(o->argc, o->argv, (const char *const *)ins, o->ninputs + o->nclasses);
	free(ins);
	if (cmr_knowledge_save(&kn, o->output, err, sizeof err) < 0)
		cmr_die("%s", err);
	size_t used = 0;
	for (size_t c = 0; c < kn.k; c++)
		used += (size_t)kn.count[c];
	cmr_info("%zu concepts from %zu images (%zu image-concept assignments), visual %d, words %d", kn.k, b.n, used,
		 kn.dv, kn.dw);
	cmr_knowledge_free(&kn);
	cmr_wordset_free(&stop);
	cmr_wordvec_free(&wv);
	for (size_t i = 0; i < b.n; i++)
		free(b.keys[i]);
	for (size_t i = 0; i < b.ncr; i++)
		free(b.cr[i].key);
	free(b.keys), free(b.x), free(b.cr), free(cls), free(prob), free(labels), free(text);
}

/* ---- info ---- */
static void load(const char *path, cmr_knowledge *kn)
{
	char err[4400];
	if (cmr_knowledge_load(kn, path, err, sizeof err) < 0)
		cmr_die("%s", err);
}

static void info(const struct opts *o)
{
	cmr_knowledge kn;
	load(o->knowledge, &kn);
	size_t total = 0;
	int32_t lo = INT32_MAX, hi = 0;
	for (size_t c = 0; c < kn.k; c++) {
		total += (size_t)kn.count[c];
		lo = kn.count[c] < lo ? kn.count[c] : lo;
		hi = kn.count[c] > hi ? kn.count[c] : hi;
	}
	double cn = 0;
	for (int d = 0; d < kn.dv; d++)
		cn += (double)kn.centre[d] * kn.centre[d];
	printf("format          %s\n", CMR_KNOWLEDGE_FORMAT);
	printf("concepts        %zu\n", kn.k);
	printf("images          %zu assignments, %d to %d per concept\n", total, lo, hi);
	printf("visual          %d (features: %s, xxh3 %016" PRIx64 ")\n", kn.dv, kn.features, kn.features_id);
	printf("centre          %s (norm %.4f)\n", cn > 0 ? "yes" : "none", sqrt(cn));
	printf("word vectors    %d\n", kn.dw);
	printf("mapping         %s\n", kn.map_w ? "yes (visual -> words)" : "none");
	if (o->words) {
		for (size_t c = 0; c < kn.k; c++) {
			const float *w = kn.words.vec + c * (size_t)kn.dw;
			double best = -2;
			size_t bi = c;
			for (size_t e = 0; e < kn.k; e++) {
				if (e == c)
					continue;
				double s = 0;
				for (int d = 0; d < kn.dw; d++)
					s += (double)w[d] * kn.words.vec[e * (size_t)kn.dw + d];
				if (s > best)
					best = s, bi = e;
			}
			printf("%s\t%" PRId32 "\t%s\n", kn.words.word[c], kn.count[c], kn.k > 1 ? kn.words.word[bi] : "-");
		}
	}
	if (ferror(stdout))
		cmr_die_write("standard output", errno);
	cmr_knowledge_free(&kn);
}

/* ---- apply ---- */
static struct {
	const struct opts *o;
	cmr_knowledge kn;
	cmr_writer *w;
	float *buf, *out;
	size_t cap, ocap;
	uint64_t written;
	int warned;
} a;

static int take_apply(const cmr_record *rec, const char *input, void *ctx)
{
	(void)ctx;
	char name[256];
	uint64_t id;
	if (rec->type == CMR_TYPE_META) {
		if (provenance_model(rec, name, sizeof name, &id) && id != a.kn.features_id) {
			if (!a.o->force)
				cmr_die("%s: the features come from %s (xxh3 %016" PRIx64 "), the knowledge's from %s "
					"(%016" PRIx64 "); --force uses them anyway", input, name, id, a.kn.features,
					a.kn.features_id);
			if (!a.warned++)
				cmr_warn("%s: features of %s, the knowledge's of %s (--force)", input, name, a.kn.features);
		}
		if (cmr_writer_put(a.w, rec) < 0)
			cmr_die_writer(a.w);
		return 0;
	}
	int vec = rec->kind == CMR_KIND_VECTORS && rec->rank == 2, emb = rec->kind == CMR_KIND_EMBEDDING && rec->rank == 1;
	if ((!vec && !emb) || (rec->dtype != CMR_DTYPE_F32 && rec->dtype != CMR_DTYPE_F16))
		cmr_die("%s: record %" PRIu64 " (key '%s'): not f32 or f16 vectors [N, D] or an embedding [D]", input,
			rec->index, rec->key);
	uint64_t rows = vec ? rec->dims[0] : 1;
	uint32_t d = vec ? rec->dims[1] : rec->dims[0];
	if (d != (uint32_t)a.kn.dv)
		cmr_die("%s: record %" PRIu64 " (key '%s'): dimension %u, the knowledge's features have %d", input,
			rec->index, rec->key, d, a.kn.dv);
	int dout = a.o->mapped ? a.kn.dw : a.kn.dv;
	if (rows * d > a.cap) {
		a.cap = rows * d;
		if (!(a.buf = realloc(a.buf, a.cap * sizeof *a.buf)))
			cmr_die("out of memory");
	}
	if (rows * (size_t)dout > a.ocap) {
		a.ocap = rows * (size_t)dout;
		if (!(a.out = realloc(a.out, a.ocap * sizeof *a.out)))
			cmr_die("out of memory");
	}
	for (uint64_t i = 0; i < rows * d; i++)
		a.buf[i] = rec->dtype == CMR_DTYPE_F32 ? ((const float *)rec->data)[i]
						       : cmr_f16_to_f32(((const uint16_t *)rec->data)[i]);
	for (uint64_t r = 0; r < rows; r++) {
		float *x = a.buf + r * d, *y = a.out + r * (size_t)dout;
		for (uint32_t j = 0; j < d; j++)
			if (!isfinite(x[j]))
				cmr_die("%s: record %" PRIu64 " (key '%s'): row %" PRIu64 " is not finite", input,
					rec->index, rec->key, r);
		cmr_unit_rows(x, 1, (int)d);
		int rc = a.o->mapped ? cmr_knowledge_mapped(&a.kn, x, y) : cmr_knowledge_visual(&a.kn, x);
		if (rc < 0)
			cmr_die("%s: record %" PRIu64 " (key '%s'): row %" PRIu64 " is zero in the knowledge's space",
				input, rec->index, rec->key, r);
		if (!a.o->mapped)
			memcpy(y, x, d * sizeof *y);
	}
	cmr_record out;
	uint32_t dims[2] = {(uint32_t)rows, (uint32_t)dout};
	if (vec)
		cmr_record_tensor(&out, CMR_KIND_VECTORS, CMR_DTYPE_F32, 2, dims, rec->key, a.out);
	else
		cmr_record_tensor(&out, CMR_KIND_EMBEDDING, CMR_DTYPE_F32, 1, dims + 1, rec->key, a.out);
	if (cmr_writer_put(a.w, &out) < 0)
		cmr_die_writer(a.w);
	a.written++;
	return 0;
}

static void apply(const struct opts *o)
{
	a.o = o;
	load(o->knowledge, &a.kn);
	if (o->mapped && !a.kn.map_w)
		cmr_die("%s: no mapping (cmr-knowledge map learns one)", o->knowledge);
	cmr_output out;
	cmr_output_open(&out, o->output, 1);
	if (!(a.w = cmr_writer_new(out.f, out.name, 0)))
		cmr_die("out of memory");
	char *prov = cmr_provenance(o->argc, o->argv, (const char *const *)o->inputs, o->ninputs);
	cmr_writer_set_provenance(a.w, tool.name, prov);
	free(prov);
	cmr_each_record(o->inputs, o->ninputs, take_apply, NULL);
	if (!a.written)
		cmr_die("%s: no features", o->ninputs ? cmr_input_name(o->inputs[0]) : "standard input");
	if (cmr_writer_finish(a.w) < 0)
		cmr_die_writer(a.w);
	cmr_writer_free(a.w);
	cmr_output_commit(&out);
	free(a.buf), free(a.out);
	cmr_knowledge_free(&a.kn);
}

/* ---- map ---- */
static void map_progress(void *ctx, int step, double loss, const double parts[3])
{
	cmr_progress *p = ctx;
	cmr_progress_detail(p, "loss %.4f (consistency %.4f, similarity %.4f, contrastive %.4f)", loss, parts[0],
			    parts[1], parts[2]);
	cmr_progress_update(p, (uint64_t)step);
	if (step == 1 || step % 100 == 0)
		cmr_info("step %d: loss %.5f (consistency %.5f, similarity %.5f, contrastive %.5f)", step, loss, parts[0],
			 parts[1], parts[2]);
}

static void map(const struct opts *o)
{
	cmr_knowledge kn;
	load(o->knowledge, &kn);
	if (kn.k < 2)
		cmr_die("%s: %zu concept: the mapping needs two or more", o->knowledge, kn.k);
	cmr_progress p;
	cmr_progress_start(&p, "steps", (uint64_t)o->hp.steps);
	char err[512];
	if (cmr_knowledge_train_map(&kn, &o->hp, map_progress, &p, err, sizeof err) < 0)
		cmr_die("%s: %s", o->knowledge, err);
	cmr_progress_end(&p, (uint64_t)o->hp.steps);
	free(kn.map_provenance);
	const char *in[1] = {o->knowledge};
	char *base = cmr_provenance(o->argc, o->argv, in, 1);
	json_t *j = json_loads(base, 0, NULL);
	free(base);
	if (!j)
		cmr_die("out of memory");
	json_object_set_new(j, "hyperparameters",
			    json_pack("{s:f, s:f, s:f, s:f, s:f, s:i, s:I}", "tau", (double)o->hp.tau, "w_sim",
				      (double)o->hp.w_sim, "w_con", (double)o->hp.w_con, "decay", (double)o->hp.decay,
				      "lr", (double)o->hp.lr, "steps", o->hp.steps, "seed", (json_int_t)o->hp.seed));
	kn.map_provenance = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(j);
	char serr[4400];
	if (!kn.map_provenance || cmr_knowledge_save(&kn, o->output, serr, sizeof serr) < 0)
		cmr_die("%s", kn.map_provenance ? serr : "out of memory");
	cmr_knowledge_free(&kn);
}

int main(int argc, char **argv)
{
	struct opts o;
	cmr_init(argc, argv, &tool);
	parse_cmdline(argc, argv, &o);
	switch (o.cmd) {
	case CMD_BUILD: build(&o); break;
	case CMD_INFO: info(&o); break;
	case CMD_APPLY: apply(&o); break;
	case CMD_MAP: map(&o); break;
	}
	free(o.classes);
	return cmr_exit(CMR_EXIT_OK);
}
