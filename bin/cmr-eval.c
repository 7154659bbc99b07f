/* cmr-eval - Recall@K, rsum, median and mean rank for image->text and text->image retrieval,
 * from an image-embedding stream and a text-embedding stream paired by key. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "eval.h"
#include "fe.h"
#include "format/stream.h"
#include "util.h"

static const cmr_tool tool = {
	"cmr-eval",
	"[-k LIST] [--json] [--plot FILE.svg] [--bootstrap N] [--seed N] [--force] IMAGES.cmr TEXTS.cmr\n"
	"--fuse-images IMAGES2.cmr --fuse-texts TEXTS2.cmr [--fuse-beta B] [--fuse-top K] IMAGES.cmr TEXTS.cmr\n"
	"--labels LABELS [-k LIST] [--json] [--force] IMAGES.cmr CLASSES.cmr",
	"Evaluate retrieval in both directions from embeddings: IMAGES.cmr holds one embedding per\n"
	"image (key: the image key), TEXTS.cmr one per caption (key: <image key>#<n>). Similarity\n"
	"is the cosine. An image query is a hit at K when any of its captions is among the top K\n"
	"texts; a caption query when its image is among the top K images (the CLIP_benchmark and\n"
	"VSE++ protocol). Ranks are 1-based; a candidate scoring the same as the correct one\n"
	"counts above it when it comes earlier in the input. Both streams must come from one model\n"
	"(their provenance says which: cmr-stream(5)).\n"
	"With --labels, zero-shot classification instead: CLASSES.cmr holds text embeddings of\n"
	"prompts keyed CLASS#T (cmr-caption-ingest -f classes) or of classes keyed CLASS\n"
	"(cmr-encode --mean-by-key); each class is the normalised mean of its prompts, each image\n"
	"is given the class it is most similar to, and top-K accuracy, each class's accuracy and\n"
	"the most frequent confusions are printed.\n"
	"\nOptions:\n"
	"      --labels FILE     KEY<TAB>CLASS lines: each image's class (classification mode)\n"
	"  -k, --recall LIST     the K of Recall@K, comma-separated (default 1,5,10)\n"
	"      --json            one JSON object instead of the table\n"
	"      --plot FILE       draw Recall@K against K (1 to 50) for both directions as SVG\n"
	"      --bootstrap N     95% confidence intervals from N resamplings of the queries\n"
	"      --seed N          seed of the resampling (default 1)\n"
	"      --chunk N         rows of the similarity matrix computed at a time (default 1024)\n"
	"      --score cosine|maxsim-mean\n"
	"                        cosine (default) of one embedding per item, or late interaction\n"
	"                        over multi-vector records (kind vectors [N, D]: an image's regions,\n"
	"                        a caption's word vectors; an embedding is one row): the mean over\n"
	"                        a text's rows of their best cosine among an\n"
	"                        image's rows. The streams may come from different models then:\n"
	"                        their provenance is not compared\n"
	"      --fuse-images FILE\n"
	"      --fuse-texts FILE  re-rank by a second, unpaired model (MACK's and MASK's fusion):\n"
	"                        each query's top K candidates by the cosine of IMAGES and TEXTS\n"
	"                        are put in the order of cosine + B x the late-interaction score\n"
	"                        (as maxsim-mean) of these streams' records of the same keys; the\n"
	"                        rest keep their ranks. A key missing from them scores 0 there\n"
	"      --fuse-beta B     the second score's weight (default 0.1)\n"
	"      --fuse-top K      candidates re-ranked per query (default 20)\n"
	CMR_FORCE_HELP,
};

struct opts {
	uint32_t ks[16];
	int nk;
	int json;
	const char *plot;
	int bootstrap;
	uint64_t seed;
	size_t chunk;
	const char *images, *texts;
	const char *labels;
	int k_given;
	int maxsim; /* --score maxsim-mean */
	const char *fuse_images, *fuse_texts;
	float beta;
	size_t fuse_top;
};

enum { OPT_JSON = 256, OPT_PLOT, OPT_BOOT, OPT_SEED, OPT_CHUNK, OPT_LABELS, OPT_SCORE, OPT_FIMG, OPT_FTXT, OPT_FBETA,
       OPT_FTOP };

static void parse_cmdline(int argc, char **argv, struct opts *o)
{
	static const struct option longopts[] = {
		{"recall", required_argument, NULL, 'k'},
		{"json", no_argument, NULL, OPT_JSON},
		{"plot", required_argument, NULL, OPT_PLOT},
		{"bootstrap", required_argument, NULL, OPT_BOOT},
		{"seed", required_argument, NULL, OPT_SEED},
		{"chunk", required_argument, NULL, OPT_CHUNK},
		{"score", required_argument, NULL, OPT_SCORE},
		{"labels", required_argument, NULL, OPT_LABELS},
		{"fuse-images", required_argument, NULL, OPT_FIMG},
		{"fuse-texts", required_argument, NULL, OPT_FTXT},
		{"fuse-beta", required_argument, NULL, OPT_FBETA},
		{"fuse-top", required_argument, NULL, OPT_FTOP},
		CMR_FORCE_LONGOPT,
		CMR_COMMON_LONGOPTS,
		{NULL, 0, NULL, 0},
	};
	memset(o, 0, sizeof *o);
	o->ks[0] = 1, o->ks[1] = 5, o->ks[2] = 10, o->nk = 3;
	o->seed = 1;
	o->chunk = 1024;
	o->beta = 0.1f, o->fuse_top = 20;
	int beta_given = 0;
	int c;
	while ((c = getopt_long(argc, argv, "k:" CMR_COMMON_SHORTOPTS, longopts, NULL)) != -1) {
		switch (c) {
		case 'k': {
			o->nk = 0;
			o->k_given = 1;
			char *s = optarg, *end;
			while (*s) {
				long v = strtol(s, &end, 10);
				if (end == s || v < 1 || v > 1000000 || (*end && *end != ',') || o->nk == 16)
					cmr_usage_error("--recall: '%s' is not a list of up to 16 integers >= 1", optarg);
				o->ks[o->nk++] = (uint32_t)v;
				s = *end ? end + 1 : end;
			}
			break;
		}
		case OPT_JSON: o->json = 1; break;
		case OPT_PLOT: o->plot = optarg; break;
		case OPT_BOOT: o->bootstrap = (int)cmr_parse_int("--bootstrap", optarg, 1, 100000); break;
		case OPT_SEED: o->seed = (uint64_t)cmr_parse_int("--seed", optarg, 0, INT64_MAX); break;
		case OPT_CHUNK: o->chunk = (size_t)cmr_parse_int("--chunk", optarg, 1, 1 << 20); break;
		case OPT_SCORE: o->maxsim = cmr_parse_score(optarg); break;
		case OPT_LABELS: o->labels = optarg; break;
		case OPT_FIMG: o->fuse_images = optarg; break;
		case OPT_FTXT: o->fuse_texts = optarg; break;
		case OPT_FBETA: o->beta = (float)cmr_parse_double("--fuse-beta", optarg, -1e6, 1e6), beta_given = 1; break;
		case OPT_FTOP: o->fuse_top = (size_t)cmr_parse_int("--fuse-top", optarg, 1, 1 << 24), beta_given = 1; break;
		default:
			if (!cmr_common_option(c))
				cmr_usage_error("unhandled option");
		}
	}
	if (argc - optind != 2)
		cmr_usage_error("give an image-embedding stream and a text-embedding stream");
	o->images = argv[optind];
	o->texts = argv[optind + 1];
	if (strcmp(o->images, "-") == 0 && strcmp(o->texts, "-") == 0)
		cmr_usage_error("only one of the two streams can be standard input");
	if (o->labels && o->maxsim)
		cmr_usage_error("--score maxsim-mean is for retrieval, not --labels");
	if (o->labels && (o->plot || o->bootstrap))
		cmr_usage_error("--plot and --bootstrap are for retrieval, not --labels");
	if (!o->fuse_images != !o->fuse_texts)
		cmr_usage_error("fusion needs both --fuse-images and --fuse-texts");
	if (beta_given && !o->fuse_images)
		cmr_usage_error("--fuse-beta and --fuse-top are for fusion: give --fuse-images and --fuse-texts");
	if (o->fuse_images && (o->labels || o->maxsim))
		cmr_usage_error("fusion re-ranks cosine retrieval: not with --labels or --score maxsim-mean");
	if (o->fuse_images && (strcmp(o->fuse_images, "-") == 0 || strcmp(o->fuse_texts, "-") == 0))
		cmr_usage_error("the fused streams are files, not standard input");
	if (o->labels && !o->k_given) /* top-1 and top-5 accuracy */
		o->ks[0] = 1, o->ks[1] = 5, o->nk = 2;
}

/* ---- reading embeddings ---- */
static void read_embs(const char *path, cmr_vecs *e, cmr_origins *org)
{
	char *in[1] = {(char *)path};
	cmr_read_embeddings(in, 1, 0, "the first record", e, org);
	if (e->n == 0)
		cmr_die("%s: no embeddings", cmr_input_name(path));
}

/* every origin of s computed by tower */
static int all_of(const cmr_origins *s, int tower)
{
	for (int i = 0; i < s->n; i++)
		if (s->o[i].tower != tower)
			return 0;
	return s->n > 0;
}

/* the two streams the wrong way round: say so before anything else fails */
static void check_order(const struct opts *o, const cmr_vecs *im, const cmr_vecs *tx, const cmr_origins *oi,
			const cmr_origins *ot)
{
	int swapped = all_of(oi, 1) && all_of(ot, 0);
	if (!swapped && !oi->n && !ot->n) { /* no provenance: the keys tell */
		size_t hi = 0, ht = 0;
		for (size_t i = 0; i < im->n; i++)
			hi += strchr(im->keys[i], '#') != NULL;
		for (size_t i = 0; i < tx->n; i++)
			ht += strchr(tx->keys[i], '#') != NULL;
		swapped = hi == im->n && ht == 0;
	}
	if (swapped) {
		cmr_error("%s holds text embeddings and %s image embeddings", cmr_input_name(o->images),
			  cmr_input_name(o->texts));
		cmr_hint("give the images first: cmr-eval %s %s", cmr_input_name(o->texts), cmr_input_name(o->images));
		cmr_die("nothing evaluated");
	}
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* index of key in the sorted keys, or -1 */
static long find(char **sorted, size_t n, const char *key)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int c = strcmp(sorted[mid], key);
		if (!c)
			return (long)mid;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

/* ---- bootstrap ---- */
static uint64_t rs;
static uint32_t rnd(void)
{
	rs ^= rs << 13;
	rs ^= rs >> 7;
	rs ^= rs << 17;
	return (uint32_t)(rs >> 32);
}

static int cmp_dbl(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* 95% percentile interval of Recall@k over resampled queries */
static void interval(const uint32_t *rank, size_t n, uint32_t k, int reps, double *lo, double *hi)
{
	double *v = malloc((size_t)reps * sizeof *v);
	if (!v)
		cmr_die("out of memory");
	for (int r = 0; r < reps; r++) {
		size_t hits = 0;
		for (size_t i = 0; i < n; i++)
			hits += rank[rnd() % n] <= k;
		v[r] = 100.0 * (double)hits / (double)n;
	}
	qsort(v, (size_t)reps, sizeof *v, cmp_dbl);
	*lo = v[(size_t)(0.025 * (reps - 1) + 0.5)];
	*hi = v[(size_t)(0.975 * (reps - 1) + 0.5)];
	free(v);
}

/* 95% percentile band of Recall@1..kmax over resampled queries: one resampling gives every
 * K at once (a histogram of the ranks up to kmax) */
static void band(const uint32_t *rank, size_t n, uint32_t kmax, int reps, double *lo, double *hi)
{
	double *v = malloc((size_t)reps * kmax * sizeof *v);
	size_t *hist = malloc((kmax + 1) * sizeof *hist);
	if (!v || !hist)
		cmr_die("out of memory");
	for (int r = 0; r < reps; r++) {
		memset(hist, 0, (kmax + 1) * sizeof *hist);
		for (size_t i = 0; i < n; i++) {
			uint32_t x = rank[rnd() % n];
			if (x >= 1 && x <= kmax)
				hist[x]++;
		}
		size_t c = 0;
		for (uint32_t k = 1; k <= kmax; k++) {
			c += hist[k];
			v[(size_t)(k - 1) * reps + r] = 100.0 * (double)c / (double)n;
		}
	}
	for (uint32_t k = 0; k < kmax; k++) {
		double *vk = v + (size_t)k * reps;
		qsort(vk, (size_t)reps, sizeof *vk, cmp_dbl);
		lo[k] = vk[(size_t)(0.025 * (reps - 1) + 0.5)];
		hi[k] = vk[(size_t)(0.975 * (reps - 1) + 0.5)];
	}
	free(v);
	free(hist);
}

/* ---- plot ---- */
/* Recall@K for K = 1..50, both directions. The legend sits above the plot, never over a
 * curve; text->image is dashed, so that coinciding curves both show; with reps > 0 each
 * curve has its 95% bootstrap band. */
static void plot(const char *path, const uint32_t *i2t, size_t ni, const uint32_t *t2i, size_t nt, int reps)
{
	cmr_output out;
	cmr_output_open(&out, path, 0);
	FILE *f = out.f;
	enum { KMAX = 50 };
	const int W = 640, H = 420, L = 60, R = 20, T = 50, B = 50;
	double pw = W - L - R, ph = H - T - B;
	fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" font-size=\"12\">\n", W, H);
	fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
	fprintf(f, "<text x=\"%d\" y=\"18\" font-size=\"14\">Recall@K (%zu images, %zu texts)</text>\n", L, ni, nt);
	for (int y = 0; y <= 100; y += 20) {
		double py = T + ph - ph * y / 100.0;
		fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", L, py, W - R, py);
		fprintf(f, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%d%%</text>\n", L - 6, py + 4, y);
	}
	for (int k = 1; k <= KMAX; k += k == 1 ? 4 : 5) {
		double px = L + pw * (k - 1) / (KMAX - 1);
		fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%d</text>\n", px, H - B + 18, k);
	}
	fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">K</text>\n", L + pw / 2, H - 12);
	const char *colour[2] = {"#1f77b4", "#d62728"}, *label[2] = {"image \xe2\x86\x92 text", "text \xe2\x86\x92 image"};
	const char *dash[2] = {"", " stroke-dasharray=\"7 4\""};
	const uint32_t *ranks[2] = {i2t, t2i};
	size_t ns[2] = {ni, nt};
#define PX(k) (L + pw * ((k) - 1) / (KMAX - 1))
#define PY(r) (T + ph - ph * (r) / 100)
	for (int s = 0; s < 2 && reps > 0; s++) { /* bands first, under both curves */
		double lo[KMAX], hi[KMAX];
		band(ranks[s], ns[s], KMAX, reps, lo, hi);
		fprintf(f, "<polygon class=\"band\" fill=\"%s\" fill-opacity=\"0.18\" stroke=\"none\" points=\"", colour[s]);
		for (int k = 1; k <= KMAX; k++)
			fprintf(f, "%.1f,%.1f ", PX(k), PY(hi[k - 1]));
		for (int k = KMAX; k >= 1; k--)
			fprintf(f, "%.1f,%.1f ", PX(k), PY(lo[k - 1]));
		fprintf(f, "\"/>\n");
	}
	for (int s = 0; s < 2; s++) {
		fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"", colour[s], dash[s]);
		for (int k = 1; k <= KMAX; k++)
			fprintf(f, "%.1f,%.1f ", PX(k), PY(cmr_recall(ranks[s], ns[s], (uint32_t)k)));
		fprintf(f, "\"/>\n");
		/* the legend, above the plot area at its right */
		double lx = W - R - 300 + 150.0 * s, ly = 38;
		fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\"%s/>\n", lx,
			ly - 4, lx + 24, ly - 4, colour[s], dash[s]);
		fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" fill=\"%s\">%s%s</text>\n", lx + 30, ly, colour[s], label[s],
			reps > 0 ? " (95% band)" : "");
	}
#undef PX
#undef PY
	fprintf(f, "</svg>\n");
	cmr_output_commit(&out);
}

/* ---- zero-shot classification (--labels) ---- */
typedef struct {
	uint32_t truth, pred;
	size_t n;
} confusion;

static int cmp_conf(const void *a, const void *b)
{
	const confusion *x = a, *y = b;
	if (x->n != y->n)
		return x->n > y->n ? -1 : 1;
	return x->truth != y->truth ? (x->truth < y->truth ? -1 : 1) : (x->pred < y->pred ? -1 : x->pred > y->pred);
}

static void classify(const struct opts *o, const cmr_vecs *im, const cmr_vecs *tx)
{
	cmr_classes c;
	if (cmr_class_means(tx->v, tx->keys, tx->n, tx->dim, &c) < 0)
		cmr_die("out of memory");
	char err[4200];
	size_t len;
	char *text = cmr_read_file(o->labels, (size_t)1 << 30, &len, err, sizeof err);
	if (!text)
		cmr_die("%s", err);
	/* the labels, sorted by key */
	cmr_kv kv;
	if (cmr_kv_parse(text, len, 0, o->labels, "CLASS", &kv, err, sizeof err) < 0)
		cmr_die("%s", err);
	size_t nl = kv.n;
	char **lk = kv.key, **lc = kv.val;
	size_t *perm = malloc((nl + 1) * sizeof *perm);
	char **sk = malloc((nl + 1) * sizeof *sk);
	if (!perm || !sk)
		cmr_die("out of memory");
	memcpy(sk, lk, nl * sizeof *sk);
	qsort(sk, nl, sizeof *sk, cmp_str);
	for (size_t i = 1; i < nl; i++)
		if (strcmp(sk[i - 1], sk[i]) == 0)
			cmr_die("%s: the image '%s' is labelled twice", o->labels, sk[i]);
	for (size_t i = 0; i < nl; i++)
		perm[find(sk, nl, lk[i])] = i;
	/* the class names, sorted, for the labels' lookup */
	char **sc = malloc((c.n + 1) * sizeof *sc);
	uint32_t *cpos = malloc((c.n + 1) * sizeof *cpos);
	if (!sc || !cpos)
		cmr_die("out of memory");
	memcpy(sc, c.name, c.n * sizeof *sc);
	qsort(sc, c.n, sizeof *sc, cmp_str);
	for (size_t g = 0; g < c.n; g++)
		cpos[find(sc, c.n, c.name[g])] = (uint32_t)g;
	uint32_t *truth = malloc(im->n * sizeof *truth), *rank = malloc(im->n * sizeof *rank);
	uint32_t *best = malloc(im->n * sizeof *best);
	size_t *per_n = calloc(c.n + 1, sizeof *per_n), *per_hit = calloc(c.n + 1, sizeof *per_hit);
	if (!truth || !rank || !best || !per_n || !per_hit)
		cmr_die("out of memory");
	for (size_t i = 0; i < im->n; i++) {
		long l = find(sk, nl, im->keys[i]);
		if (l < 0)
			cmr_die("%s: the image '%s' has no label in %s", cmr_input_name(o->images), im->keys[i], o->labels);
		const char *cls = lc[perm[l]];
		long g = find(sc, c.n, cls);
		if (g < 0) {
			cmr_error("%s: the image '%s' is labelled '%s', which is not a class of %s", o->labels, im->keys[i],
				  cls, cmr_input_name(o->texts));
			cmr_hint("the classes are the keys of %s before their '#' (%s%s%s)", cmr_input_name(o->texts),
				 c.name[0], c.n > 1 ? ", " : "", c.n > 1 ? c.name[1] : "");
			cmr_die("nothing evaluated");
		}
		truth[i] = cpos[g];
	}
	if (cmr_classify(&cmr_ops_blas, im->v, im->n, &c, im->dim, truth, rank, best, o->chunk) < 0)
		cmr_die("out of memory");
	confusion *cf = calloc(im->n + 1, sizeof *cf);
	size_t ncf = 0;
	if (!cf)
		cmr_die("out of memory");
	for (size_t i = 0; i < im->n; i++) {
		per_n[truth[i]]++;
		per_hit[truth[i]] += rank[i] == 1;
		if (rank[i] == 1)
			continue;
		size_t j = 0;
		while (j < ncf && (cf[j].truth != truth[i] || cf[j].pred != best[i]))
			j++;
		if (j == ncf)
			cf[ncf++] = (confusion){truth[i], best[i], 0};
		cf[j].n++;
	}
	qsort(cf, ncf, sizeof *cf, cmp_conf);
	size_t show = ncf < 10 ? ncf : 10;
	if (o->json) {
		json_t *j = json_pack("{s:I, s:I, s:I, s:i, s:s}", "images", (json_int_t)im->n, "classes",
				      (json_int_t)c.n, "texts", (json_int_t)tx->n, "dim", im->dim, "accuracy_unit",
				      "percent");
		for (int k = 0; k < o->nk; k++) {
			char name[32];
			snprintf(name, sizeof name, "top%u", o->ks[k]);
			json_object_set_new(j, name, json_real(cmr_recall(rank, im->n, o->ks[k])));
		}
		json_t *pc = json_object();
		for (size_t g = 0; g < c.n; g++)
			json_object_set_new(pc, c.name[g],
					    json_pack("{s:I, s:I, s:f}", "images", (json_int_t)per_n[g], "prompts",
						      (json_int_t)c.texts[g], "top1",
						      per_n[g] ? 100.0 * (double)per_hit[g] / (double)per_n[g] : 0.0));
		json_object_set_new(j, "per_class", pc);
		json_t *ca = json_array();
		for (size_t i = 0; i < show; i++)
			json_array_append_new(ca, json_pack("{s:s, s:s, s:I}", "true", c.name[cf[i].truth], "predicted",
							    c.name[cf[i].pred], "images", (json_int_t)cf[i].n));
		json_object_set_new(j, "confusions", ca);
		char *txt = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
		printf("%s\n", txt);
		free(txt);
		json_decref(j);
	} else {
		printf("zero-shot classification: %zu images, %zu classes (from %zu texts), dimension %d\n", im->n, c.n,
		       tx->n, im->dim);
		for (int k = 0; k < o->nk; k++) {
			char h[24];
			snprintf(h, sizeof h, "top-%u", o->ks[k]);
			printf("%-8s accuracy %7.2f\n", h, cmr_recall(rank, im->n, o->ks[k]));
		}
		printf("%-24s %7s %7s %7s\n", "class", "prompts", "images", "top-1");
		for (size_t g = 0; g < c.n; g++) {
			char acc[16] = "-";
			if (per_n[g])
				snprintf(acc, sizeof acc, "%.2f", 100.0 * (double)per_hit[g] / (double)per_n[g]);
			printf("%-24s %7zu %7zu %7s\n", c.name[g], c.texts[g], per_n[g], acc);
		}
		if (show) {
			printf("most confused (true -> predicted: images)\n");
			for (size_t i = 0; i < show; i++)
				printf("  %s -> %s: %zu\n", c.name[cf[i].truth], c.name[cf[i].pred], cf[i].n);
		}
	}
	if (ferror(stdout))
		cmr_die_write("standard output", errno);
	free(cf), free(truth), free(rank), free(best), free(per_n), free(per_hit), free(sc), free(cpos);
	free(perm), free(sk), free(text);
	cmr_kv_free(&kv);
	cmr_classes_free(&c);
}

/* ---- fusion: the second model's items in the first's order ---- */
static size_t align(const char *path, char **keys, size_t n, cmr_multi *out)
{
	cmr_multi m = {0};
	char *in[1] = {(char *)path};
	cmr_read_multi(in, 1, &m);
	if (!m.n)
		cmr_die("%s: no items", path);
	size_t *ord = malloc((m.n + 1) * sizeof *ord);
	char **sk = malloc((m.n + 1) * sizeof *sk);
	if (!ord || !sk)
		cmr_die("out of memory");
	memcpy(sk, m.keys, m.n * sizeof *sk);
	qsort(sk, m.n, sizeof *sk, cmp_str);
	for (size_t i = 1; i < m.n; i++)
		if (strcmp(sk[i - 1], sk[i]) == 0)
			cmr_die("%s: key '%s' occurs more than once", path, sk[i]);
	for (size_t i = 0; i < m.n; i++)
		ord[find(sk, m.n, m.keys[i])] = i;
	size_t missing = 0;
	for (size_t i = 0; i < n; i++) {
		long f = find(sk, m.n, keys[i]);
		size_t j = f < 0 ? 0 : ord[f];
		if (f < 0)
			missing++;
		if (cmr_multi_push(out, f < 0 ? m.v : m.v + m.off[j] * (size_t)m.d, f < 0 ? 0 : m.off[j + 1] - m.off[j],
				   m.d, keys[i]) < 0)
			cmr_die("out of memory");
	}
	free(ord), free(sk);
	cmr_multi_free(&m);
	return missing;
}

int main(int argc, char **argv)
{
	struct opts o;
	cmr_init(argc, argv, &tool);
	parse_cmdline(argc, argv, &o);
	cmr_vecs im = {0}, tx = {0};
	cmr_origins oi = {0}, ot = {0};
	cmr_multi mi = {0}, mt = {0};
	if (o.maxsim) { /* multi-vector items: their keys serve as the embeddings' below */
		char *in[2] = {(char *)o.images, (char *)o.texts};
		cmr_read_multi(in, 1, &mi);
		cmr_read_multi(in + 1, 1, &mt);
		if (!mi.n || !mt.n)
			cmr_die("%s: no items", cmr_input_name(!mi.n ? o.images : o.texts));
		im.keys = mi.keys, im.n = mi.n, im.dim = (uint32_t)mi.d;
		tx.keys = mt.keys, tx.n = mt.n, tx.dim = (uint32_t)mt.d;
		check_order(&o, &im, &tx, &oi, &ot);
	} else {
		read_embs(o.images, &im, &oi);
		read_embs(o.texts, &tx, &ot);
		check_order(&o, &im, &tx, &oi, &ot);
		cmr_origins_check(&oi, &ot);
	}
	cmr_origins_free(&oi);
	cmr_origins_free(&ot);
	if (im.dim != tx.dim)
		cmr_die("images have dimension %d, texts %d: not from one model", im.dim, tx.dim);
	if (o.labels) {
		classify(&o, &im, &tx);
		cmr_vecs_free(&im);
		cmr_vecs_free(&tx);
		return cmr_exit(CMR_EXIT_OK);
	}
	/* image keys: unique, sorted for lookup (index into im via a permutation) */
	char **sorted = malloc(im.n * sizeof *sorted);
	if (!sorted)
		cmr_die("out of memory");
	memcpy(sorted, im.keys, im.n * sizeof *sorted);
	qsort(sorted, im.n, sizeof *sorted, cmp_str);
	for (size_t i = 1; i < im.n; i++)
		if (strcmp(sorted[i - 1], sorted[i]) == 0)
			cmr_die("%s: image key '%s' occurs more than once", cmr_input_name(o.images), sorted[i]);
	/* position of each sorted key in input order */
	uint32_t *pos = malloc(im.n * sizeof *pos);
	for (size_t i = 0; i < im.n; i++)
		pos[find(sorted, im.n, im.keys[i])] = (uint32_t)i;
	char **tsorted = malloc(tx.n * sizeof *tsorted);
	memcpy(tsorted, tx.keys, tx.n * sizeof *tsorted);
	qsort(tsorted, tx.n, sizeof *tsorted, cmp_str);
	for (size_t i = 1; i < tx.n; i++)
		if (strcmp(tsorted[i - 1], tsorted[i]) == 0)
			cmr_die("%s: text key '%s' occurs more than once", cmr_input_name(o.texts), tsorted[i]);
	free(tsorted);
	uint32_t *owner = malloc(tx.n * sizeof *owner), *ncap = calloc(im.n, sizeof *ncap);
	if (!pos || !owner || !ncap)
		cmr_die("out of memory");
	for (size_t t = 0; t < tx.n; t++) {
		char *hash = strrchr(tx.keys[t], '#');
		if (!hash)
			cmr_die("%s: text key '%s' is not <image key>#<n>", cmr_input_name(o.texts), tx.keys[t]);
		*hash = 0;
		long i = find(sorted, im.n, tx.keys[t]);
		if (i < 0) {
			cmr_error("%s: the image of caption '%s#%s' is not in %s", cmr_input_name(o.texts), tx.keys[t],
				  hash + 1, cmr_input_name(o.images));
			cmr_hint("evaluate the captions of these images only (cmr-caption-ingest --only LIST)");
			cmr_die("nothing evaluated");
		}
		*hash = '#';
		owner[t] = pos[i];
		ncap[pos[i]]++;
	}
	for (size_t i = 0; i < im.n; i++)
		if (!ncap[i])
			cmr_die("%s: image '%s' has no caption in %s; its image->text rank is undefined",
				cmr_input_name(o.images), im.keys[i], cmr_input_name(o.texts));
	cmr_multi fi = {0}, ft = {0};
	if (o.fuse_images) {
		size_t mi2 = align(o.fuse_images, im.keys, im.n, &fi), mt2 = align(o.fuse_texts, tx.keys, tx.n, &ft);
		if (fi.d != ft.d)
			cmr_die("%s has dimension %d, %s %d: not one space", o.fuse_images, fi.d, o.fuse_texts, ft.d);
		if (mi2)
			cmr_warn("%zu of %zu images are not in %s: their second score is 0", mi2, im.n, o.fuse_images);
		if (mt2)
			cmr_info("%zu of %zu texts are not in %s: their second score is 0", mt2, tx.n, o.fuse_texts);
	}
	uint32_t *i2t = malloc(im.n * sizeof *i2t), *t2i = malloc(tx.n * sizeof *t2i);
	if (!i2t || !t2i ||
	    (o.maxsim	     ? cmr_eval_ranks_maxsim(&cmr_ops_blas, &mi, &mt, owner, i2t, t2i, o.chunk)
	     : o.fuse_images ? cmr_eval_ranks_fused(&cmr_ops_blas, im.v, im.n, tx.v, tx.n, im.dim, &fi, &ft, o.beta,
						    o.fuse_top, owner, i2t, t2i, o.chunk)
			     : cmr_eval_ranks(&cmr_ops_blas, im.v, im.n, tx.v, tx.n, im.dim, owner, i2t, t2i, o.chunk)) < 0)
		cmr_die("out of memory");
	cmr_multi_free(&fi);
	cmr_multi_free(&ft);
	uint32_t cmin = UINT32_MAX, cmax = 0;
	for (size_t i = 0; i < im.n; i++) {
		cmin = ncap[i] < cmin ? ncap[i] : cmin;
		cmax = ncap[i] > cmax ? ncap[i] : cmax;
	}
	const uint32_t *ranks[2] = {i2t, t2i};
	size_t ns[2] = {im.n, tx.n};
	const char *dir[2] = {"image->text", "text->image"};
	double lo[2][16], hi[2][16];
	rs = o.seed * 0x9e3779b97f4a7c15ULL + 1;
	for (int s = 0; s < 2 && o.bootstrap; s++)
		for (int k = 0; k < o.nk; k++)
			interval(ranks[s], ns[s], o.ks[k], o.bootstrap, &lo[s][k], &hi[s][k]);
	double rsum = 0;
	for (int s = 0; s < 2; s++)
		for (int k = 0; k < o.nk; k++)
			rsum += cmr_recall(ranks[s], ns[s], o.ks[k]);
	if (o.json) {
		json_t *j = json_pack("{s:I, s:I, s:I, s:I, s:f, s:i}", "images", (json_int_t)im.n, "texts",
				      (json_int_t)tx.n, "captions_per_image_min", (json_int_t)cmin,
				      "captions_per_image_max", (json_int_t)cmax, "captions_per_image_mean",
				      (double)tx.n / (double)im.n, "dim", im.dim);
		json_object_set_new(j, "recall_unit", json_string("percent")); /* R@K and rsum: 0 to 100 */
		for (int s = 0; s < 2; s++) {
			json_t *d = json_object();
			for (int k = 0; k < o.nk; k++) {
				char name[32];
				snprintf(name, sizeof name, "R@%u", o.ks[k]);
				json_object_set_new(d, name, json_real(cmr_recall(ranks[s], ns[s], o.ks[k])));
				if (o.bootstrap) {
					snprintf(name, sizeof name, "R@%u_ci95", o.ks[k]);
					json_object_set_new(d, name, json_pack("[f, f]", lo[s][k], hi[s][k]));
				}
			}
			json_object_set_new(d, "median_rank", json_real(cmr_rank_median(ranks[s], ns[s])));
			json_object_set_new(d, "mean_rank", json_real(cmr_rank_mean(ranks[s], ns[s])));
			json_object_set_new(d, "queries", json_integer((json_int_t)ns[s]));
			json_object_set_new(j, s ? "text_to_image" : "image_to_text", d);
		}
		json_object_set_new(j, "rsum", json_real(rsum));
		char *txt = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
		printf("%s\n", txt);
		free(txt);
		json_decref(j);
	} else {
		printf("%zu images, %zu texts (%u to %u captions per image, %.2f on average), dimension %d\n",
		       im.n, tx.n, cmin, cmax, (double)tx.n / (double)im.n, im.dim);
		printf("%-12s", "direction");
		for (int k = 0; k < o.nk; k++) {
			char h[16];
			snprintf(h, sizeof h, "R@%u", o.ks[k]);
			printf(o.bootstrap ? " %20s" : " %7s", h);
		}
		printf(" %8s %8s\n", "medr", "meanr");
		for (int s = 0; s < 2; s++) {
			printf("%-12s", dir[s]);
			for (int k = 0; k < o.nk; k++) {
				if (o.bootstrap) {
					char cell[40];
					snprintf(cell, sizeof cell, "%.2f [%.2f, %.2f]", cmr_recall(ranks[s], ns[s], o.ks[k]), lo[s][k], hi[s][k]);
					printf(" %20s", cell);
				} else {
					printf(" %7.2f", cmr_recall(ranks[s], ns[s], o.ks[k]));
				}
			}
			printf(" %8.1f %8.2f\n", cmr_rank_median(ranks[s], ns[s]), cmr_rank_mean(ranks[s], ns[s]));
		}
		printf("rsum %.2f\n", rsum);
		if (o.bootstrap)
			printf("[95%% intervals from %d resamplings of the queries, seed %" PRIu64 "]\n", o.bootstrap, o.seed);
	}
	if (ferror(stdout))
		cmr_die_write("standard output", errno);
	if (o.plot)
		plot(o.plot, i2t, im.n, t2i, tx.n, o.bootstrap);
	if (o.maxsim) { /* the keys are the items' */
		im.keys = tx.keys = NULL, im.n = tx.n = 0;
		cmr_multi_free(&mi);
		cmr_multi_free(&mt);
	}
	cmr_vecs_free(&im);
	cmr_vecs_free(&tx);
	free(sorted);
	free(pos);
	free(owner);
	free(ncap);
	free(i2t);
	free(t2i);
	return cmr_exit(CMR_EXIT_OK);
}
