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
#include <cblas.h>
#include <jansson.h>

#include "fe.h"
#include "image.h"
#include "index.h"
#include "format/stream.h"

static const cmr_tool tool = {
	"cmr-query",
	"[-k N] [--nprobe N] [-f tsv|jsonl|stream] [-j N] [--sheet FILE.jpg --images ARCHIVE...]\n"
	"[--force] [-o OUT] INDEX [QUERIES...]",
	"Search an index (cmr-index) with the embedding records of QUERIES (standard input when\n"
	"none): the k stored vectors of highest cosine for each query, best first; a stored vector\n"
	"scoring the same as another comes after it when it was indexed later. Text->image,\n"
	"image->image and image->text search are this same operation on different indexes. The\n"
	"queries must come from the model the index was built from (their provenance and the\n"
	"index's say which: cmr-stream(5), cmr-index(5)).\n"
	"\nOutput formats (-f):\n"
	"  tsv      query_key<TAB>rank<TAB>hit_key<TAB>score per line (the default)\n"
	"  jsonl    {\"query\": KEY, \"hits\": [{\"key\": KEY, \"score\": S}, ...]} per line\n"
	"  stream   hit records (kind hits, cmr-stream(5)), one per query\n"
	"\nOptions:\n"
	"  -k N                  hits per query (default 10)\n"
	"      --nprobe N        IVF lists visited per query (default 8); more is slower and\n"
	"                        closer to exact\n"
	"  -j, --jobs N          search threads (default: the number of cores)\n"
	"      --sheet FILE.jpg  also draw a contact sheet: a row per query (at most 32), its hits'\n"
	"                        images left to right, read from the --images archives\n"
	"      --images A        archives or directories holding the indexed images (repeat)\n"
	"      --thumb N         thumbnail size in the sheet (default 96)\n"
	CMR_FORCE_HELP
	"  -o, --output FILE     write here instead of standard output\n",
};

enum fmt { F_TSV, F_JSONL, F_STREAM };

struct opts {
	int k, nprobe, jobs, thumb;
	enum fmt fmt;
	const char *sheet;
	const char **images;
	int nimages;
	const char *output;
	const char *index;
	char **inputs;
	int ninputs;
};

enum { OPT_NPROBE = 256, OPT_SHEET, OPT_IMAGES, OPT_THUMB };

static void parse_cmdline(int argc, char **argv, struct opts *o)
{
	static const struct option longopts[] = {
		{"nprobe", required_argument, NULL, OPT_NPROBE},
		{"format", required_argument, NULL, 'f'},
		{"jobs", required_argument, NULL, 'j'},
		{"sheet", required_argument, NULL, OPT_SHEET},
		{"images", required_argument, NULL, OPT_IMAGES},
		{"thumb", required_argument, NULL, OPT_THUMB},
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
	int c;
	while ((c = getopt_long(argc, argv, "k:f:j:o:" CMR_COMMON_SHORTOPTS, longopts, NULL)) != -1) {
		switch (c) {
		case 'k': o->k = (int)cmr_parse_int("-k", optarg, 1, 100000); break;
		case OPT_NPROBE: o->nprobe = (int)cmr_parse_int("--nprobe", optarg, 1, 1 << 22); break;
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
		case 'o': o->output = optarg; break;
		default:
			if (!cmr_common_option(c))
				cmr_usage_error("unhandled option");
		}
	}
	if (optind >= argc)
		cmr_usage_error("give an index");
	if (o->sheet && !o->nimages)
		cmr_usage_error("--sheet needs the images: --images ARCHIVE");
	o->index = argv[optind];
	o->inputs = argv + optind + 1;
	o->ninputs = argc - optind - 1;
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
	if (!t || t->px || !cmr_is_jpeg(data, len))
		return;
	cmr_jpeg_opts jo = {1, 2 * size, 178956970};
	cmr_image im, out;
	int m, orient;
	char err[256];
	if (cmr_jpeg_decode(data, len, &jo, &im, &m, &orient, err, sizeof err) < 0) {
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

static void sheet(const struct opts *o, char **qkeys, const uint64_t *ord, const cmr_index *ix, uint64_t nq)
{
	uint64_t rows = nq < 32 ? nq : 32;
	int k = o->k, T = o->thumb, gap = 4;
	/* the images needed */
	thumbs = calloc(rows * (uint64_t)k + 1, sizeof *thumbs);
	for (uint64_t q = 0; q < rows; q++)
		for (int r = 0; r < k; r++)
			if (ord[q * k + r] != UINT64_MAX)
				thumbs[nthumbs++].key = ix->keys[ord[q * k + r]];
	qsort(thumbs, nthumbs, sizeof *thumbs, cmp_thumb);
	size_t u = 0;
	for (size_t i = 0; i < nthumbs; i++)
		if (!u || strcmp(thumbs[u - 1].key, thumbs[i].key) != 0)
			thumbs[u++] = thumbs[i];
	nthumbs = u;
	for (int i = 0; i < o->nimages; i++)
		read_images(o->images[i], T);
	int W = k * (T + gap) + gap, H = (int)rows * (T + gap) + gap;
	uint8_t *canvas = malloc((size_t)W * H * 3);
	if (!canvas)
		cmr_die("out of memory");
	memset(canvas, 40, (size_t)W * H * 3);
	size_t missing = 0;
	for (uint64_t q = 0; q < rows; q++)
		for (int r = 0; r < k; r++) {
			uint64_t oi = ord[q * k + r];
			thumb_t *t = oi == UINT64_MAX ? NULL : find_thumb(ix->keys[oi]);
			if (!t || !t->px) {
				missing += oi != UINT64_MAX;
				continue;
			}
			int x0 = gap + r * (T + gap), y0 = gap + (int)q * (T + gap);
			for (int y = 0; y < T; y++)
				memcpy(canvas + ((size_t)(y0 + y) * W + x0) * 3, t->px + (size_t)y * T * 3, (size_t)T * 3);
		}
	if (missing)
		cmr_warn("%zu hits have no image in the --images given (left blank)", missing);
	cmr_info("%s: %zu of %zu images found", o->sheet, nthumbs - missing, nthumbs);
	(void)qkeys;
	char err[1024];
	size_t len;
	unsigned char *jpg = cmr_jpeg_encode(canvas, W, H, 90, &len, err, sizeof err);
	if (!jpg)
		cmr_die("%s: %s", o->sheet, err);
	cmr_output out;
	cmr_output_open(&out, o->sheet, 1);
	if (fwrite(jpg, 1, len, out.f) != len)
		cmr_die_write(o->sheet, errno);
	free(jpg);
	cmr_output_commit(&out);
	free(canvas);
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
	cmr_index *ix = cmr_index_open(o.index, err, sizeof err);
	if (!ix)
		cmr_die("%s", err);
	/* the queries */
	cmr_vecs qv = {0};
	char owner[4200];
	snprintf(owner, sizeof owner, "the index %s", o.index);
	cmr_origins qorg = {0}, iorg;
	cmr_read_embeddings(o.inputs, o.ninputs, ix->dim, owner, &qv, &qorg);
	cmr_origins_from_json(&iorg, ix->provenance, o.index);
	cmr_origins_check(&iorg, &qorg);
	cmr_origins_free(&iorg);
	const float *q = qv.v;
	char **qkeys = qv.keys;
	uint64_t nq = qv.n;
	int k = o.k;
	uint64_t *ord = malloc((nq * (uint64_t)k + 1) * sizeof *ord);
	float *score = malloc((nq * (uint64_t)k + 1) * sizeof *score);
	if (!ord || !score)
		cmr_die("out of memory");
	openblas_set_num_threads(1); /* -j threads in all: ours, each with its own sgemm */
	if (!nq)
		cmr_warn("no query embeddings in the input: no hits written");
	if (nq && cmr_index_search(ix, q, nq, k, o.nprobe, o.jobs, ord, score) < 0)
		cmr_die("out of memory searching");
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
				fprintf(out.f, "%s\t%d\t%s\t%.6f\n", qkeys[i], r + 1, ix->keys[oi[r]], (double)si[r]);
		} else if (o.fmt == F_JSONL) {
			json_t *hits = json_array();
			for (int r = 0; r < k && oi[r] != UINT64_MAX; r++)
				json_array_append_new(hits, json_pack("{s:s, s:f}", "key", ix->keys[oi[r]], "score", (double)si[r]));
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
				need += 6 + strlen(ix->keys[oi[r]]);
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
				size_t kl = strlen(ix->keys[oi[r]]);
				payload[at++] = (uint8_t)kl;
				payload[at++] = (uint8_t)(kl >> 8);
				memcpy(payload + at, ix->keys[oi[r]], kl);
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
		sheet(&o, qkeys, ord, ix, nq);
	cmr_vecs_free(&qv);
	cmr_origins_free(&qorg);
	free(ord);
	free(score);
	free(payload);
	free(o.images);
	cmr_index_free(ix);
	return cmr_exit(CMR_EXIT_OK);
}
