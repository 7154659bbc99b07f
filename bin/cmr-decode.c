/* cmr-decode - image archives (tar, tar.gz, tar.zst, zip, ...), directories and JPEG, PNG
 * and WebP files to image records, preprocessed as CLIP does (shorter side resized with PIL's bicubic
 * filter, center crop), decoded in parallel, written in input order. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>

#include "fe.h"
#include "image.h"
#include "model/clip.h"
#include "util.h"
#include "format/stream.h"

static const cmr_tool tool = {
	"cmr-decode",
	"[-s SIZE | -m MODEL] [--resize MODE] [-j N] [--strict] [-o OUT.cmr] [INPUT...]",
	"Decode the JPEG, PNG and WebP images of archives (tar, tar.gz, tar.zst, zip, ... read as\n"
	"streams), directories (walked in sorted order) and image files into image records (u8\n"
	"[S,S,3] RGB as PIL's convert('RGB') gives it: alpha dropped, cmr-stream(5)). With no INPUT, or '-', an archive is read from standard input. A record's\n"
	"key is the member's file name without directories and extensions.\n"
	"\nOptions:\n"
	"  -s, --size S          output size in pixels (default 224)\n"
	"  -m, --model DIR       the size a CLIP checkpoint takes (its config.json's image_size)\n"
	"      --resize MODE     shorter-crop (default: shorter side to S with PIL's bicubic\n"
	"                        filter, then center crop, as CLIP), squash (S x S, aspect\n"
	"                        not kept), pad (longer side to S, centered on --pad-color),\n"
	"                        none (as decoded)\n"
	"      --pad-color R,G,B fill of --resize pad (default 0,0,0)\n"
	"      --no-exif         ignore EXIF orientation (the CLIP reference ignores it)\n"
	"      --dct-ratio R     decode images whose shorter side is at least R times S at\n"
	"                        a reduced size (libjpeg-turbo DCT scaling), no smaller than\n"
	"                        R times S, before resizing (default 4; 0 turns it off)\n"
	"      --exact           --dct-ratio 0: pixels equal to PIL's full decode and resize\n"
	"  -j, --jobs N          decoding threads (default: the number of cores)\n"
	"      --strict          stop at the first bad image (default: skip it, count it, exit 1\n"
	"                        at the end)\n"
	"      --max-pixels N    refuse images with more pixels (default 178956970)\n"
	"      --max-bytes N     refuse members larger than N bytes (default 268435456)\n"
	"  -z, --compress N      zstd level 1-19 for payloads (default 0, stored)\n"
	"  -o, --output FILE     write here instead of standard output\n",
};

struct opts {
	int size, size_given;
	const char *model;
	int mode;
	uint8_t pad[3];
	int exif;
	int exact;
	double dct_ratio;
	int jobs;
	int strict;
	uint64_t max_pixels;
	uint64_t max_bytes;
	int level;
	const char *output;
	char **inputs;
	int ninputs;
};

enum { OPT_DCT = 300, OPT_RESIZE = 256, OPT_PAD, OPT_NO_EXIF, OPT_EXACT, OPT_STRICT, OPT_MAXPX, OPT_MAXB };

static void parse_cmdline(int argc, char **argv, struct opts *o)
{
	static const struct option longopts[] = {
		{"size", required_argument, NULL, 's'},
		{"model", required_argument, NULL, 'm'},
		{"resize", required_argument, NULL, OPT_RESIZE},
		{"pad-color", required_argument, NULL, OPT_PAD},
		{"no-exif", no_argument, NULL, OPT_NO_EXIF},
		{"exact", no_argument, NULL, OPT_EXACT},
		{"dct-ratio", required_argument, NULL, OPT_DCT},
		{"jobs", required_argument, NULL, 'j'},
		{"strict", no_argument, NULL, OPT_STRICT},
		{"max-pixels", required_argument, NULL, OPT_MAXPX},
		{"max-bytes", required_argument, NULL, OPT_MAXB},
		{"compress", required_argument, NULL, 'z'},
		{"output", required_argument, NULL, 'o'},
		CMR_COMMON_LONGOPTS,
		{NULL, 0, NULL, 0},
	};
	memset(o, 0, sizeof *o);
	o->size = 224;
	o->mode = CMR_RESIZE_SHORTER_CROP;
	o->exif = 1;
	o->dct_ratio = 4;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	o->jobs = ncpu > 0 ? (int)(ncpu > 64 ? 64 : ncpu) : 1;
	o->max_pixels = 178956970;
	o->max_bytes = 256u << 20;
	int c;
	while ((c = getopt_long(argc, argv, "s:m:j:z:o:" CMR_COMMON_SHORTOPTS, longopts, NULL)) != -1) {
		switch (c) {
		case 's': o->size = (int)cmr_parse_int("--size", optarg, 1, 8192), o->size_given = 1; break;
		case 'm': o->model = cmr_parse_model(optarg); break;
		case OPT_RESIZE:
			if (strcmp(optarg, "shorter-crop") == 0)
				o->mode = CMR_RESIZE_SHORTER_CROP;
			else if (strcmp(optarg, "squash") == 0)
				o->mode = CMR_RESIZE_SQUASH;
			else if (strcmp(optarg, "pad") == 0)
				o->mode = CMR_RESIZE_PAD;
			else if (strcmp(optarg, "none") == 0)
				o->mode = CMR_RESIZE_NONE;
			else
				cmr_usage_error("--resize: '%s' is not shorter-crop, squash, pad or none", optarg);
			break;
		case OPT_PAD: {
			unsigned r, g, b;
			char extra;
			if (sscanf(optarg, "%u,%u,%u%c", &r, &g, &b, &extra) != 3 || r > 255 || g > 255 || b > 255)
				cmr_usage_error("--pad-color: '%s' is not R,G,B with values 0-255", optarg);
			o->pad[0] = (uint8_t)r;
			o->pad[1] = (uint8_t)g;
			o->pad[2] = (uint8_t)b;
			break;
		}
		case OPT_NO_EXIF: o->exif = 0; break;
		case OPT_EXACT: o->exact = 1; break;
		case OPT_DCT: o->dct_ratio = (double)cmr_parse_int("--dct-ratio", optarg, 0, 64); break;
		case 'j': o->jobs = (int)cmr_parse_int("--jobs", optarg, 1, 256); break;
		case OPT_STRICT: o->strict = 1; break;
		case OPT_MAXPX: o->max_pixels = (uint64_t)cmr_parse_int("--max-pixels", optarg, 1, INT64_MAX); break;
		case OPT_MAXB: o->max_bytes = (uint64_t)cmr_parse_int("--max-bytes", optarg, 1, 1LL << 32); break;
		case 'z': o->level = (int)cmr_parse_int("--compress", optarg, 0, 19); break;
		case 'o': o->output = optarg; break;
		default:
			if (!cmr_common_option(c))
				cmr_usage_error("unhandled option");
		}
	}
	if (o->model) { /* the model says its size: one statement of the geometry */
		cmr_clip_cfg cfg;
		char err[4400];
		if (cmr_clip_cfg_load(o->model, &cfg, err, sizeof err) < 0)
			cmr_die("%s", err);
		if (o->size_given && o->size != cfg.vision.image_size)
			cmr_usage_error("-s %d disagrees with %s, which takes images of %d: give one of them", o->size,
					o->model, cfg.vision.image_size);
		o->size = cfg.vision.image_size;
	}
	o->inputs = argv + optind;
	o->ninputs = argc - optind;
}

/* ---- jobs: members read in order, decoded by workers, written in order ---- */
typedef struct job {
	uint64_t seq;
	char *where;     /* "archive: member" for messages */
	char *key;
	uint8_t *data;   /* the member's bytes */
	size_t len;
	const char *read_err; /* set by the reader: member too large, empty, not an image we decode */
	int state;       /* 0 queued, 1 taken, 2 done */
	cmr_image img;
	char err[256];
} job;

static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv_work, cv_done;
	job **ring;    /* capacity cap, indexed by seq % cap */
	int cap;
	uint64_t head; /* next to write */
	uint64_t tail; /* next to fill */
	uint64_t next; /* next to decode */
	int quit;
	const struct opts *o;
} q;

static void decode_job(job *j, const struct opts *o)
{
	if (j->read_err) {
		snprintf(j->err, sizeof j->err, "%s", j->read_err);
		return;
	}
	cmr_jpeg_opts jo = {o->exif, 0, o->max_pixels};
	/* DCT-domain scaling (libjpeg's M/8 IDCT) only for images at least R times the target,
	 * reduced no further than R times the target: faster for large photos, close to (not
	 * equal to) a full decode; --exact turns it off */
	if (!o->exact && o->dct_ratio > 0 && o->mode != CMR_RESIZE_NONE)
		jo.min_short = (int)(o->dct_ratio * o->size);
	cmr_image full;
	int m, orient;
	if (cmr_image_decode(j->data, j->len, &jo, &full, &m, &orient, j->err, sizeof j->err) < 0)
		return;
	if (orient != 1 && cmr_image_orient(&full, orient) < 0) {
		snprintf(j->err, sizeof j->err, "out of memory");
		cmr_image_free(&full);
		return;
	}
	if (cmr_preprocess(&full, o->mode, o->size, o->pad, &j->img) < 0)
		snprintf(j->err, sizeof j->err, "out of memory resizing %dx%d", full.w, full.h);
	cmr_image_free(&full);
}

static void *worker(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&q.mu);
	for (;;) {
		while (!q.quit && q.next == q.tail)
			pthread_cond_wait(&q.cv_work, &q.mu);
		if (q.next == q.tail && q.quit)
			break;
		job *j = q.ring[q.next % (uint64_t)q.cap];
		q.next++;
		j->state = 1;
		pthread_mutex_unlock(&q.mu);
		decode_job(j, q.o);
		free(j->data);
		j->data = NULL;
		pthread_mutex_lock(&q.mu);
		j->state = 2;
		pthread_cond_broadcast(&q.cv_done);
	}
	pthread_mutex_unlock(&q.mu);
	return NULL;
}

/* ---- output ---- */
static struct {
	cmr_writer *w;
	uint64_t written, errors, seen;
	uint64_t others; /* members and files skipped as not images */
	uint64_t bad_inputs; /* archives, directories or files that could not be read */
	cmr_progress progress;
	const struct opts *o;
} out;

static void emit(job *j)
{
	if (j->err[0]) {
		out.errors++;
		if (out.o->strict)
			cmr_die("%s: %s", j->where, j->err);
		cmr_skip(j->where, j->err);
	} else {
		cmr_record rec;
		uint32_t dims[3] = {(uint32_t)j->img.h, (uint32_t)j->img.w, (uint32_t)j->img.c};
		if (cmr_record_tensor(&rec, CMR_KIND_IMAGE, CMR_DTYPE_U8, 3, dims, j->key, j->img.px) < 0)
			cmr_die("%s: key is too long", j->where);
		if (cmr_writer_put(out.w, &rec) < 0)
			cmr_die_writer(out.w);
		out.written++;
	}
	cmr_progress_update(&out.progress, out.written);
}

/* Writes every finished job at the head of the ring; with wait, blocks for the head. */
static void drain(int wait)
{
	pthread_mutex_lock(&q.mu);
	for (;;) {
		if (q.head == q.tail)
			break;
		job *j = q.ring[q.head % (uint64_t)q.cap];
		if (j->state != 2) {
			if (!wait)
				break;
			pthread_cond_wait(&q.cv_done, &q.mu);
			continue;
		}
		q.head++;
		pthread_mutex_unlock(&q.mu);
		emit(j);
		cmr_image_free(&j->img);
		free(j->where);
		free(j->key);
		free(j);
		pthread_mutex_lock(&q.mu);
		wait = wait == 2 ? 2 : 0; /* after one, only what is ready, unless draining all */
	}
	pthread_mutex_unlock(&q.mu);
}

/* Queues a member (takes ownership of data). */
static void submit(const char *container, const char *name, uint8_t *data, size_t len,
		   const char *read_err)
{
	out.seen++;
	for (;;) {
		pthread_mutex_lock(&q.mu);
		int full = q.tail - q.head >= (uint64_t)q.cap;
		pthread_mutex_unlock(&q.mu);
		if (!full)
			break;
		drain(1);
	}
	job *j = calloc(1, sizeof *j);
	if (!j)
		cmr_die("out of memory");
	size_t n = strlen(container) + strlen(name) + 3;
	j->where = malloc(n);
	if (!j->where)
		cmr_die("out of memory");
	if (*container)
		snprintf(j->where, n, "%s: %s", container, name);
	else
		snprintf(j->where, n, "%s", name);
	/* key: file name without directories, up to its first '.' (webdataset) */
	const char *base = strrchr(name, '/');
	base = base ? base + 1 : name;
	j->key = strndup(base, strcspn(base, "."));
	if (!j->key)
		cmr_die("out of memory");
	j->data = data;
	j->len = len;
	j->read_err = read_err;
	if (!read_err && !*j->key)
		j->read_err = "file name gives an empty key";
	pthread_mutex_lock(&q.mu);
	j->seq = q.tail;
	q.ring[q.tail % (uint64_t)q.cap] = j;
	q.tail++;
	pthread_cond_signal(&q.cv_work);
	pthread_mutex_unlock(&q.mu);
	drain(0);
}

/* Is a member with this name and these first bytes an image we should decode? JPEG, PNG and
 * WebP by their bytes; other image extensions are counted as errors (not decodable); the rest
 * (captions, metadata) is skipped silently. */
#define NOT_DECODED "not a JPEG, PNG or WebP file (GIF, BMP and TIFF are not decoded)"
static const char *image_ext[] = {"jpg", "jpeg", "jpe", "jfif", "png", "gif", "webp", "bmp", "tif", "tiff", NULL};

static int has_image_ext(const char *name)
{
	const char *dot = strrchr(name, '.');
	const char *slash = strrchr(name, '/');
	if (!dot || (slash && dot < slash))
		return 0;
	for (int i = 0; image_ext[i]; i++)
		if (strcasecmp(dot + 1, image_ext[i]) == 0)
			return 1;
	return 0;
}

static void consider(const char *container, const char *name, uint8_t *data, size_t len)
{
	if (len == 0) {
		if (has_image_ext(name))
			submit(container, name, data, 0, "empty file");
		else
			free(data);
		return;
	}
	if (cmr_image_kind(data, len) != CMR_IMG_NONE) {
		submit(container, name, data, len, NULL);
		return;
	}
	if (has_image_ext(name)) {
		submit(container, name, data, len, NOT_DECODED);
		return;
	}
	cmr_info("%s%s%s: not an image, skipped", container, *container ? ": " : "", name);
	out.others++;
	free(data);
}

static void read_archive(const char *path)
{
	const char *name = cmr_input_name(path);
	struct archive *a = archive_read_new();
	archive_read_support_filter_all(a);
	/* archive formats that hold files; not mtree or raw, which would take any text */
	archive_read_support_format_tar(a);
	archive_read_support_format_gnutar(a);
	archive_read_support_format_zip(a);
	archive_read_support_format_7zip(a);
	archive_read_support_format_cpio(a);
	archive_read_support_format_iso9660(a);
	archive_read_support_format_rar(a);
	archive_read_support_format_rar5(a);
	archive_read_support_format_empty(a);
	int rc;
	if (!path || strcmp(path, "-") == 0) {
		if (isatty(0))
			cmr_usage_error("refusing to read an archive from a terminal");
		rc = archive_read_open_fd(a, 0, 1 << 16);
	} else {
		rc = archive_read_open_filename(a, path, 1 << 16);
	}
	if (rc != ARCHIVE_OK) {
		out.bad_inputs++;
		if (out.o->strict)
			cmr_die("%s: %s", name, archive_error_string(a));
		cmr_error("%s: %s", name, archive_error_string(a));
		archive_read_free(a);
		return;
	}
	struct archive_entry *e;
	uint64_t members = 0;
	const char *last = NULL;
	char lastbuf[1024] = "";
	while ((rc = archive_read_next_header(a, &e)) == ARCHIVE_OK || rc == ARCHIVE_WARN) {
		if (archive_entry_filetype(e) != AE_IFREG)
			continue;
		const char *mname = archive_entry_pathname(e);
		if (!mname)
			mname = "(unnamed)";
		snprintf(lastbuf, sizeof lastbuf, "%s", mname);
		last = lastbuf;
		members++;
		int64_t size = archive_entry_size_is_set(e) ? archive_entry_size(e) : -1;
		if (size > (int64_t)out.o->max_bytes) {
			archive_read_data_skip(a);
			if (has_image_ext(mname))
				submit(name, mname, NULL, 0, "member larger than --max-bytes");
			continue;
		}
		size_t cap = size >= 0 ? (size_t)size + 1 : 1 << 16, len = 0;
		uint8_t *buf = malloc(cap);
		if (!buf)
			cmr_die("out of memory");
		la_ssize_t n;
		int toolarge = 0;
		while ((n = archive_read_data(a, buf + len, cap - len)) > 0) {
			len += (size_t)n;
			if (len > out.o->max_bytes) {
				toolarge = 1;
				break;
			}
			if (len == cap) {
				cap *= 2;
				uint8_t *p = realloc(buf, cap);
				if (!p)
					cmr_die("out of memory");
				buf = p;
			}
		}
		if (n < 0) {
			free(buf);
			rc = ARCHIVE_FATAL;
			break;
		}
		if (toolarge) {
			free(buf);
			archive_read_data_skip(a);
			submit(name, mname, NULL, 0, "member larger than --max-bytes");
			continue;
		}
		consider(name, mname, buf, len);
	}
	if (rc != ARCHIVE_EOF) {
		out.bad_inputs++;
		char msg[1200];
		snprintf(msg, sizeof msg, "%s: %s%s%s", name, archive_error_string(a) ? archive_error_string(a) : "read error",
			 last ? " (after member " : "", last ? last : "");
		if (last)
			strcat(msg, ")");
		drain(2);
		if (out.o->strict)
			cmr_die("%s", msg);
		cmr_error("%s; the rest of this archive is skipped", msg);
	} else if (members == 0) {
		cmr_warn("%s: archive has no files", name);
	}
	archive_read_free(a);
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void read_path(const char *path);
static void read_file(const char *path, int in_dir);

/* the directories being walked, outermost first (device, inode): a symbolic link back to
 * one of them is a loop, not followed */
static struct {
	dev_t dev;
	ino_t ino;
} *walking;
static size_t nwalking, walking_cap;

static int is_loop(const struct stat *st)
{
	for (size_t i = 0; i < nwalking; i++)
		if (walking[i].dev == st->st_dev && walking[i].ino == st->st_ino)
			return 1;
	return 0;
}

static void read_dir(const char *path)
{
	struct stat dst;
	if (stat(path, &dst) < 0) {
		out.bad_inputs++;
		cmr_error("%s: %s", path, strerror(errno));
		return;
	}
	if (is_loop(&dst)) {
		cmr_warn("%s: a symbolic link to a directory it is in: not followed", path);
		return;
	}
	DIR *d = opendir(path);
	if (!d) {
		out.bad_inputs++;
		cmr_error("%s: %s", path, strerror(errno));
		return;
	}
	if (nwalking == walking_cap) {
		walking_cap = walking_cap ? 2 * walking_cap : 16;
		if (!(walking = realloc(walking, walking_cap * sizeof *walking)))
			cmr_die("out of memory");
	}
	walking[nwalking].dev = dst.st_dev;
	walking[nwalking++].ino = dst.st_ino;
	char **names = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue; /* ".", "..", hidden files */
		if (n == cap) {
			cap = cap ? 2 * cap : 256;
			names = realloc(names, cap * sizeof *names);
			if (!names)
				cmr_die("out of memory");
		}
		if (!(names[n++] = strdup(de->d_name)))
			cmr_die("out of memory");
	}
	closedir(d);
	if (n) /* byte order: the same on every machine (qsort of NULL is undefined) */
		qsort(names, n, sizeof *names, cmp_names);
	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(path) + strlen(names[i]) + 2;
		char *p = malloc(l);
		if (!p)
			cmr_die("out of memory");
		snprintf(p, l, "%s%s%s", path, path[strlen(path) - 1] == '/' ? "" : "/", names[i]);
		struct stat st;
		if (stat(p, &st) == 0 && S_ISDIR(st.st_mode))
			read_dir(p);
		else if (stat(p, &st) == 0 && S_ISREG(st.st_mode))
			read_file(p, 1);
		free(p);
		free(names[i]);
	}
	free(names);
	nwalking--;
}

/* A file: an image (JPEG, PNG, WebP) is one image; anything else is read as an archive.
 * Found in a directory (in_dir), a file follows the rules of an archive's members: images
 * and archives (known by their bytes) are read, other image types are errors, the rest is
 * skipped. */
static void read_file(const char *path, int in_dir)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		out.bad_inputs++;
		if (out.o->strict)
			cmr_die("%s: %s", path, strerror(errno));
		cmr_error("%s: %s", path, strerror(errno));
		return;
	}
	uint8_t head[512];
	size_t got = fread(head, 1, sizeof head, f);
	if (cmr_image_kind(head, got) == CMR_IMG_NONE && !(got == 0 && has_image_ext(path))) {
		fclose(f);
		if (!in_dir || cmr_is_archive(head, got))
			read_archive(path);
		else if (has_image_ext(path))
			submit("", path, NULL, 0, NOT_DECODED);
		else {
			cmr_info("%s: not an image, skipped", path);
			out.others++;
		}
		return;
	}
	struct stat st;
	if (fstat(fileno(f), &st) < 0 || (uint64_t)st.st_size > out.o->max_bytes) {
		fclose(f);
		submit("", path, NULL, 0, "file larger than --max-bytes");
		return;
	}
	size_t len = (size_t)st.st_size;
	uint8_t *buf = malloc(len + 1);
	if (!buf)
		cmr_die("out of memory");
	rewind(f);
	size_t n = fread(buf, 1, len, f);
	int bad = ferror(f);
	fclose(f);
	if (bad) {
		free(buf);
		submit("", path, NULL, 0, "read error");
		return;
	}
	consider("", path, buf, n);
}

static void read_path(const char *path)
{
	struct stat st;
	if (path && strcmp(path, "-") != 0 && stat(path, &st) == 0 && S_ISDIR(st.st_mode))
		read_dir(path);
	else if (!path || strcmp(path, "-") == 0)
		read_archive(path);
	else
		read_file(path, 0);
}

int main(int argc, char **argv)
{
	struct opts o;
	cmr_init(argc, argv, &tool);
	parse_cmdline(argc, argv, &o);

	cmr_output output;
	cmr_output_open(&output, o.output, 1);
	out.w = cmr_writer_new(output.f, output.name, o.level);
	out.o = &o;
	cmr_progress_start(&out.progress, "images", 0);
	char *prov = cmr_provenance(argc, argv, (const char *const *)o.inputs, o.ninputs);
	cmr_writer_set_provenance(out.w, tool.name, prov);
	free(prov);

	pthread_mutex_init(&q.mu, NULL);
	pthread_cond_init(&q.cv_work, NULL);
	pthread_cond_init(&q.cv_done, NULL);
	q.cap = 2 * o.jobs + 2; /* bounded memory: at most this many members in flight */
	q.ring = calloc((size_t)q.cap, sizeof *q.ring);
	q.o = &o;
	pthread_t *th = calloc((size_t)o.jobs, sizeof *th);
	if (!q.ring || !th)
		cmr_die("out of memory");
	for (int i = 0; i < o.jobs; i++)
		if (pthread_create(&th[i], NULL, worker, NULL) != 0)
			cmr_die("cannot start a thread");

	if (o.ninputs == 0)
		read_path("-");
	for (int i = 0; i < o.ninputs; i++)
		read_path(o.inputs[i]);
	drain(2);

	pthread_mutex_lock(&q.mu);
	q.quit = 1;
	pthread_cond_broadcast(&q.cv_work);
	pthread_mutex_unlock(&q.mu);
	for (int i = 0; i < o.jobs; i++)
		pthread_join(th[i], NULL);
	free(th);
	free(q.ring);

	if (cmr_writer_finish(out.w) < 0)
		cmr_die_writer(out.w);
	cmr_writer_free(out.w);
	cmr_progress_end(&out.progress, out.written);
	cmr_skips_summary();
	if (!out.written && !out.errors && !out.bad_inputs) {
		const char *in = o.ninputs ? cmr_input_name(o.inputs[0]) : "standard input", *more = o.ninputs > 1 ? " and the other inputs" : "";
		if (out.others) { /* files, but none an image: nothing for the next stage */
			cmr_error("no images among the %" PRIu64 " file%s of %s%s", out.others, out.others == 1 ? "" : "s", in,
				  more);
			cmr_hint("cmr-decode reads JPEG, PNG and WebP members of tar and zip archives, directories and image files "
				 "(-v names what it skipped)");
			cmr_die("nothing written");
		}
		cmr_warn("no images: %s%s hold%s no files", in, more, o.ninputs > 1 ? "" : "s");
	}
	/* keep what was decoded: the output is complete for the good images */
	cmr_output_commit(&output);
	if (out.errors || out.bad_inputs) {
		if (out.errors)
			cmr_error("%" PRIu64 " of %" PRIu64 " images could not be decoded", out.errors,
				  out.seen);
		if (out.bad_inputs)
			cmr_error("%" PRIu64 " input%s could not be read to the end", out.bad_inputs,
				  out.bad_inputs == 1 ? "" : "s");
		return cmr_exit(CMR_EXIT_FAILURE);
	}
	cmr_info("%" PRIu64 " images", out.written);
	return cmr_exit(CMR_EXIT_OK);
}
