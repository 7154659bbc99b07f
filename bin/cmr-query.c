/* cmr-query - query embeddings against a memory-mapped index: ranked hits as TSV, JSON Lines
 * or hit records, and a contact sheet of the hits' images. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <cairo.h>
#include <cblas.h>
#include <jansson.h>

#include "eval.h"
#include "fe.h"
#include "image.h"
#include "index.h"
#include "format/stream.h"
#include "util.h"

static const cmr_tool tool = {
	"cmr-query",
	"[-k N] [--nprobe N] [--rerank N] [-f tsv|jsonl|stream] [-j N] [--sheet FILE.png --images ARCHIVE...]\n"
	"[--force] [-o OUT] INDEX [QUERIES...]\n"
	"cmr-query [options] (-i INDEX | --index-list FILE)... [QUERIES...]\n"
	"cmr-query --score maxsim-mean [-k N] [-f tsv|jsonl|stream] [--sheet ...] [-o OUT] ITEMS.cmr [QUERIES...]",
	"Search an index (cmr-index) with the embedding records of QUERIES (standard input when\n"
	"none): the k stored vectors of highest cosine for each query, best first; a stored vector\n"
	"scoring the same as another comes after it when it was indexed later. Text->image,\n"
	"image->image and image->text search are this same operation on different indexes. The\n"
	"queries must come from the model the index was built from (their provenance and the\n"
	"index's say which: cmr-stream(5), cmr-index(5)).\n"
	"With --score maxsim-mean, late interaction over multi-vector records instead, searched\n"
	"exhaustively: ITEMS.cmr is a stream of them (kind vectors [N, D], e.g. an image's regions;\n"
	"an embedding is one row), and a query's score with an item is the mean over the query's\n"
	"rows of their best cosine among the item's rows (cmr-eval --score maxsim-mean's score\n"
	"when texts query images); an item or query of no rows scores 0.\n"
	"With -i (repeated) or --index-list, several index files (shards, built independently)\n"
	"are searched as one: the hits are those of their merge (cmr-index merge) in that order,\n"
	"and every operand is a queries stream.\n"
	"\nOutput formats (-f):\n"
	"  tsv      query_key<TAB>rank<TAB>hit_key<TAB>score per line (the default)\n"
	"  jsonl    {\"query\": KEY, \"hits\": [{\"key\": KEY, \"score\": S}, ...]} per line\n"
	"  stream   hit records (kind hits, cmr-stream(5)), one per query\n"
	"\nOptions:\n"
	"  -k N                  hits per query (default 10)\n"
	"      --score cosine|maxsim-mean\n"
	"                        cosine against an index (default), or late interaction against\n"
	"                        a stream of multi-vector records (their models are not compared)\n"
	"      --nprobe N        IVF lists visited per query (default 8); more is slower and\n"
	"                        closer to exact\n"
	"      --rerank N        a PQ index built with --keep-exact: the N best by their codes\n"
	"                        are scored again with the exact vectors, and the k best kept\n"
	"  -i, --index FILE      search this index file as a shard of one index (repeat; in\n"
	"                        order); then INDEX is not given\n"
	"      --index-list FILE the shards' paths, one per line, after any -i\n"
	"  -j, --jobs N          search threads (default: the number of cores)\n"
	"      --sheet FILE      also draw a contact sheet, PNG (FILE.png, or - for standard\n"
	"                        output) or JPEG (FILE.jpg): a row per query (at most 32) under\n"
	"                        its key, its hits' images left to right, each labelled with its\n"
	"                        rank, score and key, read from the --images archives\n"
	"      --images A        archives or directories holding the indexed images (repeat)\n"
	"      --thumb N         thumbnail size in the sheet (default 96)\n"
	"      --query-text FILE what the sheet writes above each query instead of its key:\n"
	"                        KEY<TAB>TEXT lines, or plain lines, line N for key N (the\n"
	"                        keys cmr-caption-ingest -f text gives)\n"
	CMR_FORCE_HELP
	"  -o, --output FILE     write here instead of standard output\n",
};

enum fmt { F_TSV, F_JSONL, F_STREAM };

struct opts {
	int k, nprobe, rerank, jobs, thumb, maxsim;
	enum fmt fmt;
	const char *sheet, *query_text;
	const char **images;
	int nimages;
	const char *output;
	const char *index;
	char **shards; /* -i and --index-list, in order (copies, freed at the end) */
	int nshards, shards_cap;
	char **inputs;
	int ninputs;
};

enum { OPT_NPROBE = 256, OPT_RERANK, OPT_SCORE, OPT_SHEET, OPT_IMAGES, OPT_THUMB, OPT_QTEXT, OPT_INDEX_LIST };

static void add_shard(struct opts *o, const char *path)
{
	if (o->nshards == o->shards_cap) {
		o->shards_cap = o->shards_cap ? 2 * o->shards_cap : 16;
		if (!(o->shards = realloc(o->shards, (size_t)o->shards_cap * sizeof *o->shards)))
			cmr_die("out of memory");
	}
	if (!(o->shards[o->nshards++] = strdup(path)))
		cmr_die("out of memory");
}

/* --index-list FILE: a path per line; blank lines are skipped */
static void read_index_list(struct opts *o, const char *list)
{
	FILE *f = fopen(list, "r");
	if (!f)
		cmr_die("%s: %s", list, strerror(errno));
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	unsigned long lineno = 0;
	while ((len = getline(&line, &cap, f)) >= 0) {
		lineno++;
		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			line[--len] = 0;
		if (!len)
			continue;
		if (memchr(line, 0, (size_t)len))
			cmr_die("%s:%lu: a NUL byte in a path", list, lineno);
		add_shard(o, line);
	}
	if (ferror(f))
		cmr_die("%s: %s", list, strerror(errno));
	fclose(f);
	free(line);
	if (!lineno)
		cmr_die("%s: no index files listed", list);
}

/* the contact sheet's format, by FILE's extension: 1 PNG, 0 JPEG, -1 neither */
static int sheet_format(const char *path)
{
	const char *dot = strrchr(path, '.');
	if (strcmp(path, "-") == 0 || (dot && strcasecmp(dot, ".png") == 0))
		return 1;
	if (dot && (strcasecmp(dot, ".jpg") == 0 || strcasecmp(dot, ".jpeg") == 0))
		return 0;
	return -1;
}

static void parse_cmdline(int argc, char **argv, struct opts *o)
{
	static const struct option longopts[] = {
		{"nprobe", required_argument, NULL, OPT_NPROBE},
		{"rerank", required_argument, NULL, OPT_RERANK},
		{"score", required_argument, NULL, OPT_SCORE},
		{"format", required_argument, NULL, 'f'},
		{"jobs", required_argument, NULL, 'j'},
		{"sheet", required_argument, NULL, OPT_SHEET},
		{"images", required_argument, NULL, OPT_IMAGES},
		{"thumb", required_argument, NULL, OPT_THUMB},
		{"query-text", required_argument, NULL, OPT_QTEXT},
		{"index", required_argument, NULL, 'i'},
		{"index-list", required_argument, NULL, OPT_INDEX_LIST},
		{"output", required_argument, NULL, 'o'},
		CMR_FORCE_LONGOPT,
		CMR_COMMON_LONGOPTS,
		{NULL, 0, NULL, 0},
	};
	memset(o, 0, sizeof *o);
	o->k = 10;
	o->nprobe = 8;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	o->jobs = ncpu > 0 ? (int)ncpu : 1;
	o->thumb = 96;
	o->images = calloc((size_t)argc, sizeof *o->images);
	int c, nprobe_given = 0;
	while ((c = getopt_long(argc, argv, "k:f:i:j:o:" CMR_COMMON_SHORTOPTS, longopts, NULL)) != -1) {
		switch (c) {
		case 'k': o->k = (int)cmr_parse_int("-k", optarg, 1, 100000); break;
		case OPT_NPROBE: o->nprobe = (int)cmr_parse_int("--nprobe", optarg, 1, 1 << 22), nprobe_given = 1; break;
		case OPT_RERANK: o->rerank = (int)cmr_parse_int("--rerank", optarg, 1, 1000000); break;
		case OPT_SCORE: o->maxsim = cmr_parse_score(optarg); break;
		case 'f':
			if (strcmp(optarg, "tsv") == 0)
				o->fmt = F_TSV;
			else if (strcmp(optarg, "jsonl") == 0)
				o->fmt = F_JSONL;
			else if (strcmp(optarg, "stream") == 0)
				o->fmt = F_STREAM;
			else
				cmr_usage_error("--format: '%s' is not tsv, jsonl or stream", optarg);
			break;
		case 'j': o->jobs = (int)cmr_parse_int("--jobs", optarg, 1, 256); break;
		case OPT_SHEET: o->sheet = optarg; break;
		case OPT_IMAGES: o->images[o->nimages++] = optarg; break;
		case OPT_THUMB: o->thumb = (int)cmr_parse_int("--thumb", optarg, 8, 1024); break;
		case OPT_QTEXT: o->query_text = optarg; break;
		case 'o': o->output = optarg; break;
		case 'i': add_shard(o, optarg); break;
		case OPT_INDEX_LIST: read_index_list(o, optarg); break;
		default:
			if (!cmr_common_option(c))
				cmr_usage_error("unhandled option");
		}
	}
	if (o->nshards && o->maxsim)
		cmr_usage_error("-i and --index-list name indexes; --score maxsim-mean searches a stream of items");
	if (optind >= argc && !o->nshards)
		cmr_usage_error(o->maxsim ? "give a stream of items (multi-vector records)" : "give an index");
	if (o->maxsim && o->rerank)
		cmr_usage_error("--rerank is for a PQ index, not --score maxsim-mean");
	if (o->maxsim && nprobe_given)
		cmr_usage_error("--nprobe is for an index, not --score maxsim-mean (an exhaustive search)");
	if (o->sheet && !o->nimages)
		cmr_usage_error("--sheet needs the images: --images ARCHIVE");
	if (o->query_text && !o->sheet)
		cmr_usage_error("--query-text labels the --sheet: give --sheet FILE.png");
	if (o->sheet && sheet_format(o->sheet) < 0)
		cmr_usage_error("--sheet %s: name a .png or .jpg file (or - for PNG on standard output)", o->sheet);
	if (!o->nshards)
		add_shard(o, argv[optind++]);
	o->index = o->shards[0];
	o->inputs = argv + optind;
	o->ninputs = argc - optind;
}

/* ---- contact sheet ---- */
typedef struct {
	char *key;
	uint8_t *px; /* thumb x thumb x 3, or NULL until found */
} thumb_t;

static thumb_t *thumbs;
static size_t nthumbs;

static int cmp_thumb(const void *a, const void *b)
{
	return strcmp(((const thumb_t *)a)->key, ((const thumb_t *)b)->key);
}

static thumb_t *find_thumb(const char *key)
{
	thumb_t t = {(char *)key, NULL};
	return bsearch(&t, thumbs, nthumbs, sizeof t, cmp_thumb);
}

static void take_member(const char *name, const uint8_t *data, size_t len, int size)
{
	const char *base = strrchr(name, '/');
	base = base ? base + 1 : name;
	char key[CMR_KEY_MAX + 1];
	snprintf(key, sizeof key, "%.*s", (int)strcspn(base, "."), base);
	thumb_t *t = find_thumb(key);
	if (!t || t->px || cmr_image_kind(data, len) == CMR_IMG_NONE)
		return;
	cmr_jpeg_opts jo = {1, 2 * size, 178956970};
	cmr_image im, out;
	int m, orient;
	char err[256];
	if (cmr_image_decode(data, len, &jo, &im, &m, &orient, err, sizeof err) < 0) {
		cmr_warn("%s: %s (left blank in the sheet)", name, err);
		return;
	}
	static const uint8_t pad[3] = {0, 0, 0};
	if (cmr_image_orient(&im, orient) == 0 && cmr_preprocess(&im, CMR_RESIZE_SHORTER_CROP, size, pad, &out) == 0)
		t->px = out.px;
	cmr_image_free(&im);
}

static void read_images(const char *path, int size)
{
	struct archive *a = archive_read_new();
	archive_read_support_filter_all(a);
	archive_read_support_format_tar(a);
	archive_read_support_format_gnutar(a);
	archive_read_support_format_zip(a);
	struct archive *disk = NULL;
	int rc = archive_read_open_filename(a, path, 1 << 16);
	if (rc != ARCHIVE_OK) { /* perhaps a directory */
		archive_read_free(a);
		disk = archive_read_disk_new();
		archive_read_disk_set_standard_lookup(disk);
		if (archive_read_disk_open(disk, path) != ARCHIVE_OK)
			cmr_die("%s: %s", path, archive_error_string(disk));
		a = disk;
	}
	struct archive_entry *e;
	while (archive_read_next_header(a, &e) == ARCHIVE_OK) {
		if (disk)
			archive_read_disk_descend(disk);
		if (archive_entry_filetype(e) != AE_IFREG)
			continue;
		int64_t size_b = archive_entry_size(e);
		if (size_b <= 0 || size_b > (256 << 20))
			continue;
		const char *name = archive_entry_pathname(e);
		const char *base = strrchr(name, '/');
		base = base ? base + 1 : name;
		char key[CMR_KEY_MAX + 1];
		snprintf(key, sizeof key, "%.*s", (int)strcspn(base, "."), base);
		thumb_t *t = find_thumb(key);
		if (!t || t->px)
			continue;
		uint8_t *buf = malloc((size_t)size_b);
		if (!buf)
			cmr_die("out of memory");
		la_ssize_t got = archive_read_data(a, buf, (size_t)size_b);
		if (got == size_b)
			take_member(name, buf, (size_t)got, size);
		free(buf);
	}
	archive_read_free(a);
}

/* --query-text: the text of query KEY, or NULL (the file read once: cmr_kv_parse's lines) */
static const char *query_text_of(const char *path, const char *key)
{
	static cmr_kv kv;
	static int read;
	if (!read) {
		char err[4200];
		size_t len;
		char *text = cmr_read_file(path, 1 << 26, &len, err, sizeof err);
		if (!text || cmr_kv_parse(text, len, 1, path, "TEXT", &kv, err, sizeof err) < 0)
			cmr_die("%s", err);
		free(text);
		read = 1;
	}
	return cmr_kv_get(&kv, key);
}

/* Text at (x, y) (its baseline), cut with an ellipsis to fit width w. */
static void draw_text(cairo_t *cr, const char *text, double x, double y, double w)
{
	char buf[CMR_KEY_MAX + 520];
	snprintf(buf, sizeof buf, "%s", text);
	cairo_text_extents_t e;
	cairo_text_extents(cr, buf, &e);
	size_t n = strlen(buf);
	while (n > 0 && e.x_advance > w) { /* drop whole UTF-8 characters, then add "..." */
		do
			n--;
		while (n > 0 && ((unsigned char)buf[n] & 0xc0) == 0x80);
		snprintf(buf + n, sizeof buf - n, "\xe2\x80\xa6");
		cairo_text_extents(cr, buf, &e);
	}
	cairo_move_to(cr, x, y);
	cairo_show_text(cr, buf);
}

static cairo_status_t write_png_chunk(void *closure, const unsigned char *data, unsigned int len)
{
	return fwrite(data, 1, len, closure) == len ? CAIRO_STATUS_SUCCESS : CAIRO_STATUS_WRITE_ERROR;
}

/* The contact sheet (cmr-query(1)): per query a line with its key, then its hits left to
 * right, each a T x T thumbnail with "RANK  SCORE" and the key under it. Text by cairo's
 * sans-serif face; PNG by cairo, JPEG by libjpeg-turbo. */
static void sheet(const struct opts *o, char **qkeys, const uint64_t *ord, const float *score, char *const *keys,
		  uint64_t nq)
{
	uint64_t rows = nq < 32 ? nq : 32;
	int k = o->k, T = o->thumb, gap = 6, head = 18, label = 28;
	/* the images needed */
	thumbs = calloc(rows * (uint64_t)k + 1, sizeof *thumbs);
	for (uint64_t q = 0; q < rows; q++)
		for (int r = 0; r < k; r++)
			if (ord[q * k + r] != UINT64_MAX)
				thumbs[nthumbs++].key = keys[ord[q * k + r]];
	qsort(thumbs, nthumbs, sizeof *thumbs, cmp_thumb);
	size_t u = 0;
	for (size_t i = 0; i < nthumbs; i++)
		if (!u || strcmp(thumbs[u - 1].key, thumbs[i].key) != 0)
			thumbs[u++] = thumbs[i];
	nthumbs = u;
	for (int i = 0; i < o->nimages; i++)
		read_images(o->images[i], T);
	int rowh = head + T + label, W = k * (T + gap) + gap, H = (int)rows * (rowh + gap) + gap;
	if (W < 160)
		W = 160;
	cairo_surface_t *surf = cairo_image_surface_create(CAIRO_FORMAT_RGB24, W, H);
	cairo_t *cr = cairo_create(surf);
	if (cairo_status(cr) != CAIRO_STATUS_SUCCESS)
		cmr_die("%s: cannot draw a %dx%d sheet: %s", o->sheet, W, H, cairo_status_to_string(cairo_status(cr)));
	cairo_set_source_rgb(cr, 0.16, 0.16, 0.16);
	cairo_paint(cr);
	cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
	uint32_t *argb = malloc((size_t)T * T * sizeof *argb);
	if (!argb)
		cmr_die("out of memory");
	size_t missing = 0;
	for (uint64_t q = 0; q < rows; q++) {
		int y0 = gap + (int)q * (rowh + gap);
		cairo_set_source_rgb(cr, 1, 1, 1);
		cairo_set_font_size(cr, 13);
		const char *qt = o->query_text ? query_text_of(o->query_text, qkeys[q]) : NULL;
		char qlabel[CMR_KEY_MAX + 512];
		snprintf(qlabel, sizeof qlabel, qt ? "%s: %s" : "query %s", qkeys[q], qt);
		draw_text(cr, qlabel, gap, y0 + 13, W - 2 * gap);
		for (int r = 0; r < k; r++) {
			uint64_t oi = ord[q * k + r];
			if (oi == UINT64_MAX)
				break;
			int x0 = gap + r * (T + gap), ty = y0 + head;
			thumb_t *t = find_thumb(keys[oi]);
			if (t && t->px) {
				for (int i = 0; i < T * T; i++)
					argb[i] = 0xff000000u | (uint32_t)t->px[3 * i] << 16 | (uint32_t)t->px[3 * i + 1] << 8 |
						  t->px[3 * i + 2];
				cairo_surface_t *ts = cairo_image_surface_create_for_data(
					(unsigned char *)argb, CAIRO_FORMAT_RGB24, T, T, T * 4);
				cairo_set_source_surface(cr, ts, x0, ty);
				cairo_rectangle(cr, x0, ty, T, T);
				cairo_fill(cr);
				cairo_surface_destroy(ts);
			} else {
				missing++;
				cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
				cairo_rectangle(cr, x0, ty, T, T);
				cairo_fill(cr);
				cairo_set_source_rgb(cr, 0.8, 0.8, 0.8);
				cairo_set_font_size(cr, 10);
				draw_text(cr, "no image", x0 + 4, ty + T / 2 + 4, T - 8);
			}
			char line[64];
			snprintf(line, sizeof line, "%d   %.4f", r + 1, (double)score[q * k + r]);
			cairo_set_font_size(cr, 10);
			cairo_set_source_rgb(cr, 1, 0.85, 0.3);
			draw_text(cr, line, x0, ty + T + 11, T);
			cairo_set_source_rgb(cr, 0.85, 0.85, 0.85);
			draw_text(cr, keys[oi], x0, ty + T + 24, T);
		}
	}
	free(argb);
	cairo_surface_flush(surf);
	if (missing)
		cmr_warn("%zu hits have no image in the --images given (left blank)", missing);
	cmr_info("%s: %zu of %zu images found", o->sheet, nthumbs - missing, nthumbs);
	cmr_output out;
	cmr_output_open(&out, o->sheet, 1);
	if (sheet_format(o->sheet) == 1) {
		cairo_status_t st = cairo_surface_write_to_png_stream(surf, write_png_chunk, out.f);
		if (st != CAIRO_STATUS_SUCCESS)
			cmr_die("%s: %s", o->sheet, st == CAIRO_STATUS_WRITE_ERROR ? strerror(errno) : cairo_status_to_string(st));
	} else {
		const unsigned char *d = cairo_image_surface_get_data(surf);
		int stride = cairo_image_surface_get_stride(surf);
		uint8_t *rgb = malloc((size_t)W * H * 3);
		if (!rgb)
			cmr_die("out of memory");
		for (int y = 0; y < H; y++)
			for (int x = 0; x < W; x++) {
				uint32_t v;
				memcpy(&v, d + (size_t)y * stride + 4 * (size_t)x, 4);
				uint8_t *p = rgb + ((size_t)y * W + x) * 3;
				p[0] = (uint8_t)(v >> 16), p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)v;
			}
		char err[1024];
		size_t len;
		unsigned char *jpg = cmr_jpeg_encode(rgb, W, H, 90, &len, err, sizeof err);
		if (!jpg)
			cmr_die("%s: %s", o->sheet, err);
		if (fwrite(jpg, 1, len, out.f) != len)
			cmr_die_write(o->sheet, errno);
		free(jpg);
		free(rgb);
	}
	cmr_output_commit(&out);
	cairo_destroy(cr);
	cairo_surface_destroy(surf);
	for (size_t i = 0; i < nthumbs; i++)
		free(thumbs[i].px);
	free(thumbs);
}

int main(int argc, char **argv)
{
	struct opts o;
	cmr_init(argc, argv, &tool);
	parse_cmdline(argc, argv, &o);
	char err[1024];
	cmr_index **ix = NULL;
	char **shard_keys = NULL; /* the shards' keys by running ordinal, when more than one */
	cmr_multi items = {0}, qm = {0};
	cmr_vecs qv = {0};
	cmr_origins qorg = {0};
	char **qkeys, *const *keys;
	uint64_t nq;
	int k = o.k;
	uint64_t *ord;
	float *score;
	if (o.maxsim) {
		/* late interaction: every item's rows in memory, an exhaustive search */
		char *items_in[1] = {(char *)o.index};
		cmr_read_multi(items_in, 1, &items);
		cmr_read_multi(o.inputs, o.ninputs, &qm);
		if (items.n && qm.n && items.d != qm.d)
			cmr_die("the queries have dimension %d, the items of %s %d", qm.d, o.index, items.d);
		qkeys = qm.keys, keys = items.keys, nq = qm.n;
		if (!items.n)
			cmr_warn("%s holds no items: no hits", o.index);
	} else {
		if (!(ix = calloc((size_t)o.nshards, sizeof *ix)))
			cmr_die("out of memory");
		uint64_t total = 0;
		for (int s = 0; s < o.nshards; s++) {
			if (!(ix[s] = cmr_index_open(o.shards[s], err, sizeof err)))
				cmr_die("%s", err);
			if (ix[s]->dim != ix[0]->dim)
				cmr_die("%s holds vectors of dimension %u, %s of %u: shards of one index have one dimension",
					o.shards[s], ix[s]->dim, o.shards[0], ix[0]->dim);
			if (ix[s]->n > UINT64_MAX / 2 - total)
				cmr_die("%s: too many vectors in the shards together", o.shards[s]);
			total += ix[s]->n;
			if (o.rerank > k && (ix[s]->code != CMR_CODE_PQ || !ix[s]->exact))
				cmr_die("%s: --rerank needs a PQ index that keeps its exact vectors (cmr-index --pq M --keep-exact)",
					o.shards[s]);
		}
		char owner[4200];
		if (o.nshards == 1)
			snprintf(owner, sizeof owner, "the index %s", o.index);
		else
			snprintf(owner, sizeof owner, "the index shards %s and %d more", o.index, o.nshards - 1);
		cmr_read_embeddings(o.inputs, o.ninputs, ix[0]->dim, owner, &qv, &qorg);
		for (int s = 0; s < o.nshards; s++) {
			cmr_origins iorg;
			cmr_origins_from_json(&iorg, ix[s]->provenance, o.shards[s]);
			cmr_origins_check(&iorg, &qorg);
			cmr_origins_free(&iorg);
		}
		keys = ix[0]->keys;
		if (o.nshards > 1) {
			if (total > SIZE_MAX / sizeof *shard_keys - 1 || !(shard_keys = malloc((size_t)(total + 1) * sizeof *shard_keys)))
				cmr_die("out of memory");
			uint64_t at = 0;
			for (int s = 0; s < o.nshards; s++)
				for (uint64_t r = 0; r < ix[s]->n; r++)
					shard_keys[at++] = ix[s]->keys[r];
			keys = shard_keys;
		}
		qkeys = qv.keys, nq = qv.n;
	}
	ord = malloc((nq * (uint64_t)k + 1) * sizeof *ord);
	score = malloc((nq * (uint64_t)k + 1) * sizeof *score);
	if (!ord || !score)
		cmr_die("out of memory");
	if (!nq)
		cmr_warn("no query embeddings in the input: no hits written");
	if (o.maxsim) {
		cmr_ops_set_threads(o.jobs); /* -j: the products' threads */
		if (nq && cmr_maxsim_search(&cmr_ops_blas, &items, &qm, k, ord, score) < 0)
			cmr_die("out of memory searching");
	} else {
		openblas_set_num_threads(1); /* -j threads in all: ours, each with its own sgemm */
		cmr_search_params sp = {.nprobe = o.nprobe, .rerank = o.rerank};
		if (nq && cmr_index_search_shards((const cmr_index *const *)ix, o.nshards, qv.v, nq, k, &sp, o.jobs, ord,
						  score) < 0)
			cmr_die("out of memory searching");
	}
	cmr_output out;
	cmr_output_open(&out, o.output, o.fmt == F_STREAM);
	cmr_writer *w = NULL;
	if (o.fmt == F_STREAM) {
		w = cmr_writer_new(out.f, out.name, 0);
		/* the queries' history, then this tool's provenance (cmr-stream(5)) */
		for (int i = 0; i < qorg.nhist; i++)
			if (cmr_writer_put_provenance(w, qorg.hist_key[i], qorg.hist_json[i]) < 0)
				cmr_die_writer(w);
		char *prov = cmr_provenance(argc, argv, (const char *const *)o.inputs, o.ninputs);
		cmr_writer_set_provenance(w, tool.name, prov);
		free(prov);
	}
	uint8_t *payload = NULL;
	size_t pcap = 0;
	for (uint64_t i = 0; i < nq; i++) {
		const uint64_t *oi = ord + i * k;
		const float *si = score + i * k;
		if (o.fmt == F_TSV) {
			for (int r = 0; r < k && oi[r] != UINT64_MAX; r++)
				fprintf(out.f, "%s\t%d\t%s\t%.6f\n", qkeys[i], r + 1, keys[oi[r]], (double)si[r]);
		} else if (o.fmt == F_JSONL) {
			json_t *hits = json_array();
			for (int r = 0; r < k && oi[r] != UINT64_MAX; r++)
				json_array_append_new(hits, json_pack("{s:s, s:f}", "key", keys[oi[r]], "score", (double)si[r]));
			json_t *j = json_pack("{s:s, s:o}", "query", qkeys[i], "hits", hits);
			char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(7));
			fprintf(out.f, "%s\n", s);
			free(s);
			json_decref(j);
		} else {
			/* hits payload: u32le count, then per hit f32le score, u16le key length, key */
			size_t need = 4;
			int cnt = 0;
			for (int r = 0; r < k && oi[r] != UINT64_MAX; r++, cnt++)
				need += 6 + strlen(keys[oi[r]]);
			if (need > pcap && !(payload = realloc(payload, pcap = need)))
				cmr_die("out of memory");
			size_t at = 0;
			for (int b = 0; b < 4; b++)
				payload[at++] = (uint8_t)((uint32_t)cnt >> (8 * b));
			for (int r = 0; r < cnt; r++) {
				uint32_t bits;
				memcpy(&bits, &si[r], 4);
				for (int b = 0; b < 4; b++)
					payload[at++] = (uint8_t)(bits >> (8 * b));
				size_t kl = strlen(keys[oi[r]]);
				payload[at++] = (uint8_t)kl;
				payload[at++] = (uint8_t)(kl >> 8);
				memcpy(payload + at, keys[oi[r]], kl);
				at += kl;
			}
			cmr_record rec;
			uint32_t dims[1] = {(uint32_t)at};
			cmr_record_tensor(&rec, CMR_KIND_HITS, CMR_DTYPE_U8, 1, dims, qkeys[i], payload);
			if (cmr_writer_put(w, &rec) < 0)
				cmr_die_writer(w);
		}
		if (ferror(out.f))
			cmr_die_write(out.name, errno);
	}
	if (w) {
		if (cmr_writer_finish(w) < 0)
			cmr_die_writer(w);
		cmr_writer_free(w);
	}
	cmr_output_commit(&out);
	if (o.sheet)
		sheet(&o, qkeys, ord, score, keys, nq);
	cmr_vecs_free(&qv);
	cmr_multi_free(&items);
	cmr_multi_free(&qm);
	cmr_origins_free(&qorg);
	free(ord);
	free(score);
	free(payload);
	free(o.images);
	for (int s = 0; ix && s < o.nshards; s++)
		cmr_index_free(ix[s]);
	free(ix);
	free(shard_keys);
	for (int i = 0; i < o.nshards; i++)
		free(o.shards[i]);
	free(o.shards);
	return cmr_exit(CMR_EXIT_OK);
}
