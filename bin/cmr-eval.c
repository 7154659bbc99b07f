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

static const cmr_tool tool = {
	"cmr-eval",
	"[-k LIST] [--json] [--plot FILE.svg] [--bootstrap N] [--seed N] [--force] IMAGES.cmr TEXTS.cmr",
	"Evaluate retrieval in both directions from embeddings: IMAGES.cmr holds one embedding per\n"
	"image (key: the image key), TEXTS.cmr one per caption (key: <image key>#<n>). Similarity\n"
	"is the cosine. An image query is a hit at K when any of its captions is among the top K\n"
	"texts; a caption query when its image is among the top K images (the CLIP_benchmark and\n"
	"VSE++ protocol). Ranks are 1-based; a candidate scoring the same as the correct one\n"
	"counts above it when it comes earlier in the input. Both streams must come from one model\n"
	"(their provenance says which: cmr-stream(5)).\n"
	"\nOptions:\n"
	"  -k, --recall LIST     the K of Recall@K, comma-separated (default 1,5,10)\n"
	"      --json            one JSON object instead of the table\n"
	"      --plot FILE       draw Recall@K against K (1 to 50) for both directions as SVG\n"
	"      --bootstrap N     95% confidence intervals from N resamplings of the queries\n"
	"      --seed N          seed of the resampling (default 1)\n"
	"      --chunk N         rows of the similarity matrix computed at a time (default 1024)\n"
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
};

enum { OPT_JSON = 256, OPT_PLOT, OPT_BOOT, OPT_SEED, OPT_CHUNK };

static void parse_cmdline(int argc, char **argv, struct opts *o)
{
	static const struct option longopts[] = {
		{"recall", required_argument, NULL, 'k'},
		{"json", no_argument, NULL, OPT_JSON},
		{"plot", required_argument, NULL, OPT_PLOT},
		{"bootstrap", required_argument, NULL, OPT_BOOT},
		{"seed", required_argument, NULL, OPT_SEED},
		{"chunk", required_argument, NULL, OPT_CHUNK},
		CMR_FORCE_LONGOPT,
		CMR_COMMON_LONGOPTS,
		{NULL, 0, NULL, 0},
	};
	memset(o, 0, sizeof *o);
	o->ks[0] = 1, o->ks[1] = 5, o->ks[2] = 10, o->nk = 3;
	o->seed = 1;
	o->chunk = 1024;
	int c;
	while ((c = getopt_long(argc, argv, "k:" CMR_COMMON_SHORTOPTS, longopts, NULL)) != -1) {
		switch (c) {
		case 'k': {
			o->nk = 0;
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

/* ---- plot ---- */
static void plot(const char *path, const uint32_t *i2t, size_t ni, const uint32_t *t2i, size_t nt)
{
	cmr_output out;
	cmr_output_open(&out, path, 0);
	FILE *f = out.f;
	const int W = 640, H = 400, L = 60, R = 20, T = 30, B = 50, KMAX = 50;
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
	const uint32_t *ranks[2] = {i2t, t2i};
	size_t ns[2] = {ni, nt};
	for (int s = 0; s < 2; s++) {
		fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", colour[s]);
		for (int k = 1; k <= KMAX; k++)
			fprintf(f, "%.1f,%.1f ", L + pw * (k - 1) / (KMAX - 1), T + ph - ph * cmr_recall(ranks[s], ns[s], (uint32_t)k) / 100);
		fprintf(f, "\"/>\n");
		fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" fill=\"%s\">%s</text>\n", L + pw - 120.0, T + ph - 30.0 + 16 * s, colour[s], label[s]);
	}
	fprintf(f, "</svg>\n");
	cmr_output_commit(&out);
}

int main(int argc, char **argv)
{
	struct opts o;
	cmr_init(argc, argv, &tool);
	parse_cmdline(argc, argv, &o);
	cmr_vecs im = {0}, tx = {0};
	cmr_origins oi = {0}, ot = {0};
	read_embs(o.images, &im, &oi);
	read_embs(o.texts, &tx, &ot);
	check_order(&o, &im, &tx, &oi, &ot);
	cmr_origins_check(&oi, &ot);
	cmr_origins_free(&oi);
	cmr_origins_free(&ot);
	if (im.dim != tx.dim)
		cmr_die("images have dimension %d, texts %d: not from one model", im.dim, tx.dim);
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
	uint32_t *i2t = malloc(im.n * sizeof *i2t), *t2i = malloc(tx.n * sizeof *t2i);
	if (!i2t || !t2i || cmr_eval_ranks(&cmr_ops_blas, im.v, im.n, tx.v, tx.n, im.dim, owner, i2t, t2i, o.chunk) < 0)
		cmr_die("out of memory");
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
		plot(o.plot, i2t, im.n, t2i, tx.n);
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
