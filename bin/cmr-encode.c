/* cmr-encode - image and token records to embeddings: a CLIP checkpoint (Hugging Face, OpenCLIP) or a TFLite image model. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "backend/backend.h"
#include "eval.h"
#include "fe.h"
#include "util.h"
#include "format/half.h"
#include "model/clip.h"
#include "model/tuning.h"
#include "format/stream.h"
#include "tflite/tflite.h"

static const cmr_tool tool = {
	"cmr-encode",
	"-m MODEL_DIR [--tuning DIR] [-b N] [--backend NAME] [-t N] [--no-normalize]\n"
	"[--dtype f32|f16]\n"
	"[--mean-by-key] [-z N] [-o OUT.cmr] [INPUT...]\n"
	"-m MODEL.tflite [-F pooled|regions|classes] [--top N [--labels FILE]] [...]",
	"Encode image records (cmr-decode) and token records (cmr-caption-ingest) into embedding\n"
	"records with a CLIP checkpoint in Hugging Face's layout: MODEL_DIR/config.json and\n"
	"MODEL_DIR/model.safetensors (fp32, fp16 or bf16), and preprocessor_config.json for the\n"
	"image mean and std when present; or in OpenCLIP's: open_clip_config.json and\n"
	"open_clip_model.safetensors (CLIP ViTs). Each tower is loaded on first use, memory-mapped.\n"
	"Embeddings keep the input's keys and order; metadata records are passed along and the\n"
	"model's name and content hash are added to the provenance (with --tuning, the identity\n"
	"of base + tuning, and the base's).\n"
	"A TensorFlow Lite file (uint8 or int8 quantised image classifiers such as MobileNet v1/v2)\n"
	"encodes images with TFLite's integer arithmetic: -F says what is written.\n"
	"\nOptions:\n"
	"  -m, --model DIR       the checkpoint directory, or a .tflite file (required)\n"
	"  -F, --features KIND   TFLite models: pooled (default: the globally pooled feature\n"
	"                        vector, kind embedding), regions (the last feature map before\n"
	"                        that pooling, one vector per position: kind vectors [N, D]),\n"
	"                        classes (the output probabilities: kind scores)\n"
	"      --top N           with -F classes: write the N most probable classes of each\n"
	"                        image as text lines KEY<TAB>RANK<TAB>CLASS<TAB>PROB<TAB>LABEL\n"
	"      --labels FILE     class names for --top, one a line, line 1 for class 0\n"
	"      --tuning DIR      apply this tuning of MODEL_DIR (cmr-train's prompts,\n"
	"                        cmr-tuning(5)); refused when it was made for another base\n"
	"  -b, --batch N         samples per forward pass (default 32)\n"
	"      --backend NAME    blas (default: OpenBLAS sgemm), ref (plain loops, slow, the\n"
	"                        reference the fast ones are tested against) or cuda (an NVIDIA\n"
	"                        GPU, in builds with CUDA); list: this build's backends and\n"
	"                        whether each can start here\n"
	"      --device N        with --backend cuda: the GPU to run on (default 0)\n"
	"      --precision P     with --backend cuda: matrix products in fp32 (default), or on\n"
	"                        tensor cores with tf32 or bf16 roundings of their operands\n"
	"  -t, --threads N       BLAS threads (default: the number of cores)\n"
	"      --no-normalize    keep raw projections (default: unit L2 norm)\n"
	"      --dtype f32|f16   element type of the embeddings (default f32)\n"
	"      --mean-by-key     one embedding per KEY for the records keyed KEY#N: the mean of\n"
	"                        theirs, unit length (class embeddings from the prompts of\n"
	"                        cmr-caption-ingest -f classes, for cmr-index and cmr-query),\n"
	"                        in the order each KEY first comes\n"
	"  -z, --compress N      zstd level 1-19 for payloads (default 0, stored)\n"
	"  -o, --output FILE     write here instead of standard output\n",
};

struct opts {
	const char *model, *tuning;
	int batch;
	const cmr_ops *ops;
	int device, precision; /* --device, --precision */
	int threads;
	int normalize;
	int dtype;
	int mean_by_key;
	int level;
	const char *output;
	int tflite;      /* -m names a TFLite file */
	int features;    /* FEAT_* */
	int top;
	const char *labels;
	char **inputs;
	int ninputs;
	int argc;
	char **argv;
};

enum { OPT_BACKEND = 256, OPT_DEVICE, OPT_PRECISION, OPT_NONORM, OPT_DTYPE, OPT_TUNING, OPT_MEAN, OPT_TOP, OPT_LABELS };
enum { FEAT_DEFAULT, FEAT_POOLED, FEAT_REGIONS, FEAT_CLASSES };

/* 1 if path is a regular file that starts as a TFLite flatbuffer */
static int is_tflite(const char *path)
{
	FILE *f = fopen(path, "rb");
	unsigned char b[8];
	int yes = f && fread(b, 1, 8, f) == 8 && cmr_tfl_sniff(b, 8);
	if (f)
		fclose(f);
	return yes;
}

static void parse_cmdline(int argc, char **argv, struct opts *o)
{
	static const struct option longopts[] = {
		{"model", required_argument, NULL, 'm'},
		{"tuning", required_argument, NULL, OPT_TUNING},
		{"batch", required_argument, NULL, 'b'},
		{"backend", required_argument, NULL, OPT_BACKEND},
		{"device", required_argument, NULL, OPT_DEVICE},
		{"precision", required_argument, NULL, OPT_PRECISION},
		{"threads", required_argument, NULL, 't'},
		{"no-normalize", no_argument, NULL, OPT_NONORM},
		{"dtype", required_argument, NULL, OPT_DTYPE},
		{"mean-by-key", no_argument, NULL, OPT_MEAN},
		{"features", required_argument, NULL, 'F'},
		{"top", required_argument, NULL, OPT_TOP},
		{"labels", required_argument, NULL, OPT_LABELS},
		{"compress", required_argument, NULL, 'z'},
		{"output", required_argument, NULL, 'o'},
		CMR_COMMON_LONGOPTS,
		{NULL, 0, NULL, 0},
	};
	memset(o, 0, sizeof *o);
	o->batch = 32;
	o->ops = &cmr_ops_blas;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	o->threads = ncpu > 0 ? (int)ncpu : 1;
	o->normalize = 1;
	o->dtype = CMR_DTYPE_F32;
	int c;
	while ((c = getopt_long(argc, argv, "m:b:t:z:o:F:" CMR_COMMON_SHORTOPTS, longopts, NULL)) != -1) {
		switch (c) {
		case 'm':
			o->tflite = is_tflite(optarg);
			o->model = o->tflite ? optarg : cmr_parse_model(optarg);
			break;
		case 'F':
			if (strcmp(optarg, "pooled") == 0)
				o->features = FEAT_POOLED;
			else if (strcmp(optarg, "regions") == 0)
				o->features = FEAT_REGIONS;
			else if (strcmp(optarg, "classes") == 0)
				o->features = FEAT_CLASSES;
			else
				cmr_usage_error("--features: '%s' is not pooled, regions or classes", optarg);
			break;
		case OPT_TOP: o->top = (int)cmr_parse_int("--top", optarg, 1, 100000); break;
		case OPT_LABELS: o->labels = optarg; break;
		case OPT_TUNING: o->tuning = optarg; break;
		case 'b': o->batch = (int)cmr_parse_int("--batch", optarg, 1, 4096); break;
		case OPT_BACKEND:
			o->ops = cmr_parse_backend(optarg);
			break;
		case OPT_DEVICE: o->device = (int)cmr_parse_int("--device", optarg, 0, 1023); break;
		case OPT_PRECISION: o->precision = cmr_parse_precision(optarg); break;
		case 't': o->threads = (int)cmr_parse_int("--threads", optarg, 1, 256); break;
		case OPT_NONORM: o->normalize = 0; break;
		case OPT_DTYPE:
			if (strcmp(optarg, "f32") == 0)
				o->dtype = CMR_DTYPE_F32;
			else if (strcmp(optarg, "f16") == 0)
				o->dtype = CMR_DTYPE_F16;
			else
				cmr_usage_error("--dtype: '%s' is not f32 or f16", optarg);
			break;
		case OPT_MEAN: o->mean_by_key = 1; break;
		case 'z': o->level = (int)cmr_parse_int("--compress", optarg, 0, 19); break;
		case 'o': o->output = optarg; break;
		default:
			if (!cmr_common_option(c))
				cmr_usage_error("unhandled option");
		}
	}
	if (o->mean_by_key && !o->normalize)
		cmr_usage_error("--mean-by-key writes unit vectors: it excludes --no-normalize");
	if (!o->model)
		cmr_usage_error("a model is needed: -m MODEL_DIR");
	if (!o->tflite && (o->features || o->top || o->labels))
		cmr_usage_error("--features, --top and --labels are for TFLite models (-m MODEL.tflite)");
	if (o->tflite && (o->tuning || o->mean_by_key))
		cmr_usage_error("--tuning and --mean-by-key are for CLIP checkpoints, not TFLite models");
	if (o->top && o->features != FEAT_CLASSES && o->features != FEAT_DEFAULT)
		cmr_usage_error("--top lists classes: it goes with -F classes");
	if (o->top)
		o->features = FEAT_CLASSES;
	if (o->labels && !o->top)
		cmr_usage_error("--labels names the classes of --top");
	if (o->tflite && !o->features)
		o->features = FEAT_POOLED;
	o->inputs = argv + optind;
	o->ninputs = argc - optind;
	o->argc = argc;
	o->argv = argv;
}

/* ---- state ---- */
typedef struct {
	char key[CMR_KEY_MAX + 1];
	void *data; /* copy of the record's payload (a buffer kept from batch to batch) */
	size_t cap;
	int len;    /* tokens: count */
	char where[CMR_KEY_MAX + 600];
} sample;

static struct {
	struct opts *o;
	int features;           /* a features vision tower's input width (LiT): it encodes embedding records */
	cmr_clip *m;            /* the towers are loaded as their first record comes */
	unsigned loaded;        /* the towers whose weights are loaded */
	cmr_tuning tun;         /* with --tuning */
	uint64_t truncated;     /* captions cut to make room for text prompts */
	const cmr_clip_tower *tower[2];
	cmr_clip_ws *ws[2];
	int prov_done;
	cmr_writer *w;
	sample *pending;
	int npending, pending_kind; /* CMR_TOWER_* of the pending samples */
	float *emb;
	uint16_t *emb16;
	uint64_t written;
	cmr_progress progress; /* on a terminal */
	/* --mean-by-key: every embedding, averaged at the end */
	float *acc;
	char **acc_keys;
	size_t nacc, acc_cap;
	int acc_dim, acc_kind;
} g;

/* Writes one embedding record (f32, or f16 by --dtype). */
static void put_embedding(const float *e, int dim, const char *key)
{
	cmr_record rec;
	uint32_t dims[1] = {(uint32_t)dim};
	const void *data = e;
	if (g.o->dtype == CMR_DTYPE_F16) {
		for (int d = 0; d < dim; d++)
			g.emb16[d] = cmr_f32_to_f16(e[d]);
		data = g.emb16;
	}
	cmr_record_tensor(&rec, CMR_KIND_EMBEDDING, g.o->dtype, 1, dims, key, data);
	if (cmr_writer_put(g.w, &rec) < 0)
		cmr_die_writer(g.w);
	g.written++;
}

static void keep_for_mean(const float *e, int dim, int kind, const char *key, const char *where)
{
	if (g.nacc && kind != g.acc_kind)
		cmr_die("%s: --mean-by-key averages the embeddings of one tower, and the input holds both images and "
			"tokens", where);
	g.acc_kind = kind, g.acc_dim = dim;
	if (g.nacc == g.acc_cap) {
		g.acc_cap = g.acc_cap ? 2 * g.acc_cap : 1024;
		g.acc = realloc(g.acc, g.acc_cap * (size_t)dim * sizeof *g.acc);
		g.acc_keys = realloc(g.acc_keys, g.acc_cap * sizeof *g.acc_keys);
		if (!g.acc || !g.acc_keys)
			cmr_die("out of memory");
	}
	memcpy(g.acc + g.nacc * (size_t)dim, e, (size_t)dim * sizeof *e);
	if (!(g.acc_keys[g.nacc++] = strdup(key)))
		cmr_die("out of memory");
}

static void write_means(void)
{
	cmr_classes c;
	if (cmr_class_means(g.acc, g.acc_keys, g.nacc, g.acc_dim, &c) < 0)
		cmr_die("out of memory");
	for (size_t k = 0; k < c.n; k++)
		put_embedding(c.emb + k * (size_t)g.acc_dim, g.acc_dim, c.name[k]);
	cmr_info("%zu embeddings averaged into %zu", g.nacc, c.n);
	cmr_classes_free(&c);
	for (size_t i = 0; i < g.nacc; i++)
		free(g.acc_keys[i]);
	free(g.acc_keys), free(g.acc);
}

static char *provenance(int kind)
{
	char *base = cmr_provenance(g.o->argc, g.o->argv, (const char *const *)g.o->inputs, g.o->ninputs);
	json_t *j = json_loads(base, 0, NULL);
	free(base);
	const cmr_clip_tower *t = g.tower[kind];
	char hash[17];
	snprintf(hash, sizeof hash, "%016" PRIx64, t->hash);
	json_t *model = json_pack("{s:s, s:s, s:s, s:s, s:i}", "name", t->name, "path", g.o->model, "tower",
				  kind == CMR_TOWER_VISION ? "vision" : "text", "xxh3", hash, "dim", t->proj);
	if (g.o->tuning) {
		char bh[17];
		snprintf(bh, sizeof bh, "%016" PRIx64, t->base_hash);
		json_object_set_new(model, "tuning", json_pack("{s:s, s:s}", "path", g.o->tuning, "method", g.tun.method));
		json_object_set_new(model, "base_xxh3", json_string(bh));
	}
	uint64_t id = cmr_clip_id(g.m);
	if (id) { /* the model's identity over both towers: what cmr-eval, cmr-index, cmr-query compare */
		char hv[17], ht[17], hid[17];
		snprintf(hid, sizeof hid, "%016" PRIx64, id);
		snprintf(hv, sizeof hv, "%016" PRIx64, g.m->tower[CMR_TOWER_VISION].hash);
		snprintf(ht, sizeof ht, "%016" PRIx64, g.m->tower[CMR_TOWER_TEXT].hash);
		json_object_set_new(model, "id", json_string(hid));
		json_object_set_new(model, "towers", json_pack("{s:s, s:s}", "vision", hv, "text", ht));
	}
	json_object_set_new(j, "model", model);
	json_object_set_new(j, "normalized", json_boolean(g.o->normalize));
	json_object_set_new(j, "backend", json_string(g.o->ops->name));
	char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(j);
	return s;
}

/* the weights of the towers in mask: the base's, and the tuning's */
static void load_weights(unsigned mask)
{
	char err[1024], path[4096];
	mask &= ~g.loaded;
	if (!mask)
		return;
	if (!g.m) {
		g.m = g.o->tuning ? cmr_tuning_open(g.o->model, g.o->tuning, mask, &g.tun, err, sizeof err)
				  : cmr_clip_open(g.o->model, mask, err, sizeof err);
		if (!g.m)
			cmr_die("%s", err);
	} else {
		snprintf(path, sizeof path, "%s/%s", g.o->model, cmr_clip_weights_name(&g.m->cfg));
		if (cmr_clip_load(g.m, path, mask, 0, err, sizeof err) < 0 ||
		    (g.o->tuning && cmr_tuning_load(g.m, &g.tun, g.o->tuning, mask, err, sizeof err) < 0))
			cmr_die("%s", err);
	}
	if (cmr_clip_place(g.m, g.o->ops, err, sizeof err) < 0) /* a device backend's copies */
		cmr_die("%s", err);
	g.loaded |= mask;
}

static void load(int kind)
{
	if (g.tower[kind])
		return;
	load_weights(1u << kind);
	g.tower[kind] = &g.m->tower[kind];
	const cmr_tower_cfg *c = &g.tower[kind]->cfg;
	g.ws[kind] = cmr_clip_ws_new(g.m, g.o->ops, kind, g.o->batch, g.o->batch * c->context, 0);
	if (!g.ws[kind])
		cmr_die_batch(g.o->ops, g.o->batch, cmr_clip_ws_fit(g.m, g.o->ops, kind, g.o->batch, c->context, 0));
	cmr_info("%s: %s tower: width %d, %d layers, %d heads; projection %d", g.o->model,
		 kind == CMR_TOWER_VISION ? "vision" : "text", c->width, c->layers, c->heads, g.tower[kind]->proj);
	char *p = provenance(kind);
	if (!g.prov_done) {
		cmr_writer_set_provenance(g.w, tool.name, p);
		g.prov_done = 1;
	} else if (cmr_writer_put_provenance(g.w, tool.name, p) < 0) {
		/* the second tower of a mixed stream: its own provenance record, here */
		cmr_die_writer(g.w);
	}
	free(p);
}

static void flush(void)
{
	if (!g.npending)
		return;
	int kind = g.pending_kind, B = g.npending;
	const cmr_clip_tower *t = g.tower[kind];
	int dim = t->proj;
	int rc;
	if (kind == CMR_TOWER_VISION) {
		const uint8_t *px[4096];
		for (int b = 0; b < B; b++)
			px[b] = g.pending[b].data;
		rc = cmr_tuning_encode_images(g.m, g.o->tuning ? &g.tun : NULL, g.o->ops, g.ws[kind], px, B, g.emb, NULL);
	} else {
		const int32_t *ids[4096];
		int lens[4096];
		for (int b = 0; b < B; b++) {
			ids[b] = g.pending[b].data;
			lens[b] = g.pending[b].len;
		}
		rc = cmr_clip_encode_texts(g.m, g.o->ops, g.ws[kind], ids, lens, B, g.emb);
		if (rc == 0)
			g.truncated += (uint64_t)cmr_clip_ws_layout(g.ws[kind])->truncated;
	}
	if (rc < 0)
		cmr_die("%s: the batch could not be encoded", g.pending[0].where);
	for (int b = 0; b < B; b++) {
		float *e = g.emb + (size_t)b * dim;
		if (g.o->normalize)
			cmr_unit_rows(e, 1, dim);
		if (g.o->mean_by_key)
			keep_for_mean(e, dim, kind, g.pending[b].key, g.pending[b].where);
		else
			put_embedding(e, dim, g.pending[b].key);
	}
	g.npending = 0;
	cmr_progress_update(&g.progress, g.o->mean_by_key ? g.nacc : g.written);
}

/* Passes metadata along; queues an image or token record for its tower's next batch. */
static int take(const cmr_record *rec, const char *input, void *ctx)
{
	(void)ctx;
	if (rec->type == CMR_TYPE_META) {
		if (cmr_writer_put(g.w, rec) < 0)
			cmr_die_writer(g.w);
		return 0;
	}
	char where[CMR_KEY_MAX + 600];
	snprintf(where, sizeof where, "%s: record %" PRIu64 " (key '%s')", input, rec->index, rec->key);
	int kind;
	if (g.features ? rec->kind == CMR_KIND_EMBEDDING : rec->kind == CMR_KIND_IMAGE)
		kind = CMR_TOWER_VISION;
	else if (rec->kind == CMR_KIND_IMAGE)
		cmr_die("%s: the model's vision tower takes feature vectors f32 [%d], not images (encode the images with the "
			"frozen image model first: cmr-encode -m MODEL.tflite)", where, g.features);
	else if (rec->kind == CMR_KIND_TOKENS || rec->kind == CMR_KIND_DESC_TOKENS)
		kind = CMR_TOWER_TEXT;
	else {
		const char *kn = cmr_kind_name(rec->kind);
		cmr_die("%s: a record of kind %s cannot be encoded (images and tokens can)", where, kn ? kn : "unknown");
	}
	if (g.npending && kind != g.pending_kind)
		flush();
	load(kind);
	const cmr_clip_tower *t = g.tower[kind];
	int len = 0;
	if (kind == CMR_TOWER_VISION && g.features) {
		if (rec->dtype != CMR_DTYPE_F32 || rec->rank != 1 || rec->dims[0] != (uint32_t)g.features)
			cmr_die("%s: features %s [%u], the model's features tower takes f32 [%d]", where,
				cmr_dtype_name(rec->dtype), rec->dims[0], g.features);
	} else if (kind == CMR_TOWER_VISION) {
		int S = t->cfg.image_size;
		if (rec->dtype != CMR_DTYPE_U8 || rec->rank != 3 || rec->dims[0] != (uint32_t)S ||
		    rec->dims[1] != (uint32_t)S || rec->dims[2] != 3) {
			cmr_error("%s: image is %s [%u,%u,%u], the model takes u8 [%d,%d,3]", where,
				  cmr_dtype_name(rec->dtype), rec->dims[0], rec->dims[1], rec->dims[2], S, S);
			cmr_hint("decode at the model's size: cmr-decode -s %d", S);
			cmr_die("nothing more is written");
		}
	} else {
		if (rec->dtype != CMR_DTYPE_I32 || rec->rank != 1 || rec->dims[0] < 1)
			cmr_die("%s: tokens must be i32 [T]", where);
		len = (int)rec->dims[0];
		if (len > t->cfg.context)
			cmr_die("%s: %d tokens, the model's context is %d (cmr-caption-ingest -c %d)", where, len,
				t->cfg.context, t->cfg.context);
		const int32_t *ids = rec->data;
		for (int i = 0; i < len; i++)
			if (ids[i] < 0 || ids[i] >= t->cfg.vocab)
				cmr_die("%s: token %d is id %d, outside the vocabulary of %d", where, i, ids[i], t->cfg.vocab);
	}
	sample *s = &g.pending[g.npending++];
	snprintf(s->key, sizeof s->key, "%s", rec->key);
	snprintf(s->where, sizeof s->where, "%s", where);
	s->len = len;
	if (s->cap < rec->nbytes) { /* grows to the largest sample once, then is reused */
		free(s->data);
		s->cap = rec->nbytes;
		if (!(s->data = malloc(s->cap)))
			cmr_die("out of memory");
	}
	memcpy(s->data, rec->data, rec->nbytes);
	g.pending_kind = kind;
	if (g.npending == g.o->batch)
		flush();
	return 0;
}

/* ---- TFLite image models ---- */
static struct {
	cmr_tfl_model m;
	cmr_tfl_run *run;
	int h, w;
	int tensor;       /* the tensor -F writes */
	int kind;         /* the records' kind */
	int rows, dim;    /* regions: rows x dim; pooled, classes: 1 x dim */
	float *v;
	uint16_t *v16;
	char **label;
	int nlabels;
	FILE *text;       /* --top */
} tf;

static void read_labels(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		cmr_die("%s: %s", path, strerror(errno));
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	while ((n = getline(&line, &cap, f)) >= 0) {
		while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			line[--n] = 0;
		for (ssize_t k = 0; k < n; k++)
			if ((unsigned char)line[k] < 0x20)
				line[k] = ' ';
		if (!(tf.label = realloc(tf.label, (size_t)(tf.nlabels + 1) * sizeof *tf.label)) ||
		    !(tf.label[tf.nlabels++] = strdup(line)))
			cmr_die("out of memory");
	}
	int bad = ferror(f);
	free(line);
	fclose(f);
	if (bad)
		cmr_die("%s: read error", path);
}

static void tfl_open(const struct opts *o)
{
	char err[2048];
	if (cmr_tfl_open(&tf.m, o->model, err, sizeof err) < 0)
		cmr_die("%s", err);
	if (!(tf.run = cmr_tfl_run_new(&tf.m, o->ops != &cmr_ops_ref, err, sizeof err)))
		cmr_die("%s: %s", o->model, err);
	cmr_tfl_input_size(&tf.m, &tf.h, &tf.w);
	const cmr_tfl_tensor *t;
	if (o->features == FEAT_CLASSES) {
		tf.tensor = tf.m.output, tf.kind = CMR_KIND_SCORES;
	} else {
		if (tf.m.pool_op < 0)
			cmr_die("%s: the graph has no global pooling (AVERAGE_POOL_2D or MEAN): use -F classes", o->model);
		const cmr_tfl_op *p = &tf.m.op[tf.m.pool_op];
		tf.tensor = o->features == FEAT_REGIONS ? p->in[0] : p->out;
		tf.kind = o->features == FEAT_REGIONS ? CMR_KIND_VECTORS : CMR_KIND_EMBEDDING;
	}
	t = &tf.m.t[tf.tensor];
	tf.dim = t->shape[t->rank - 1];
	tf.rows = (int)(t->nelem / (size_t)tf.dim);
	if (o->features != FEAT_REGIONS && tf.rows != 1)
		cmr_die("%s: tensor %d (%s) holds %d rows, not one vector", o->model, tf.tensor, t->name, tf.rows);
	if (!(tf.v = malloc(t->nelem * sizeof *tf.v)) || !(tf.v16 = malloc(t->nelem * sizeof *tf.v16)))
		cmr_die("out of memory");
	if (o->labels) {
		read_labels(o->labels);
		if (tf.nlabels != tf.dim)
			cmr_die("%s: %d labels for the model's %d classes", o->labels, tf.nlabels, tf.dim);
	}
	char shape[64];
	if (tf.rows > 1)
		snprintf(shape, sizeof shape, "[%d, %d]", tf.rows, tf.dim);
	else
		snprintf(shape, sizeof shape, "[%d]", tf.dim);
	cmr_info("%s: %s input %dx%d, %d operators, %.0fM multiply-adds; writes %s %s (tensor %d, %s)", o->model,
		 cmr_tfl_type_name(tf.m.t[tf.m.input].type), tf.h, tf.w, tf.m.nops, cmr_tfl_macs(&tf.m) / 1e6,
		 cmr_kind_name(tf.kind), shape, tf.tensor, o->features == FEAT_CLASSES ? "output" : "pooling");
}

static char *tfl_provenance(const struct opts *o)
{
	char *base = cmr_provenance(o->argc, o->argv, (const char *const *)o->inputs, o->ninputs);
	json_t *j = json_loads(base, 0, NULL);
	free(base);
	char hash[17];
	snprintf(hash, sizeof hash, "%016" PRIx64, tf.m.hash);
	const char *slash = strrchr(o->model, '/');
	static const char *feat[] = {"", "pooled", "regions", "classes"};
	json_object_set_new(j, "model", json_pack("{s:s, s:s, s:s, s:s, s:s, s:i}", "name", slash ? slash + 1 : o->model,
						  "path", o->model, "format", "tflite", "tower", "vision", "xxh3", hash,
						  "dim", tf.dim));
	json_object_set_new(j, "features", json_string(feat[o->features]));
	json_object_set_new(j, "normalized", json_boolean(o->normalize && o->features != FEAT_CLASSES));
	json_object_set_new(j, "backend", json_string(o->ops->name));
	char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(j);
	return s;
}

static void put_top(const char *key, const float *p)
{
	int n = g.o->top < tf.dim ? g.o->top : tf.dim;
	static unsigned char *used;
	if (!used && !(used = calloc((size_t)tf.dim, 1)))
		cmr_die("out of memory");
	memset(used, 0, (size_t)tf.dim);
	for (int r = 0; r < n; r++) { /* n passes: --top is small */
		int best = -1;
		for (int c = 0; c < tf.dim; c++)
			if (!used[c] && (best < 0 || p[c] > p[best]))
				best = c;
		used[best] = 1;
		fprintf(tf.text, "%s\t%d\t%d\t%.6f\t%s\n", key, r + 1, best, p[best], tf.label ? tf.label[best] : "");
	}
	g.written++;
}

static int take_tflite(const cmr_record *rec, const char *input, void *ctx)
{
	(void)ctx;
	if (rec->type == CMR_TYPE_META) {
		if (!tf.text && cmr_writer_put(g.w, rec) < 0)
			cmr_die_writer(g.w);
		return 0;
	}
	char where[CMR_KEY_MAX + 600];
	snprintf(where, sizeof where, "%s: record %" PRIu64 " (key '%s')", input, rec->index, rec->key);
	if (rec->kind != CMR_KIND_IMAGE) {
		const char *kn = cmr_kind_name(rec->kind);
		cmr_die("%s: a record of kind %s cannot be encoded by a TFLite image model (images can)", where,
			kn ? kn : "unknown");
	}
	if (rec->dtype != CMR_DTYPE_U8 || rec->rank != 3 || rec->dims[0] != (uint32_t)tf.h ||
	    rec->dims[1] != (uint32_t)tf.w || rec->dims[2] != 3) {
		cmr_error("%s: image is %s [%u,%u,%u], the model takes u8 [%d,%d,3]", where, cmr_dtype_name(rec->dtype),
			  rec->dims[0], rec->dims[1], rec->dims[2], tf.h, tf.w);
		if (tf.h == tf.w)
			cmr_hint("decode at the model's size: cmr-decode -s %d", tf.h);
		cmr_die("nothing more is written");
	}
	char err[1024];
	if (cmr_tfl_invoke(tf.run, rec->data, err, sizeof err) < 0 || cmr_tfl_read(tf.run, tf.tensor, tf.v) < 0)
		cmr_die("%s: %s", where, err);
	if (tf.text) {
		put_top(rec->key, tf.v);
	} else {
		if (g.o->normalize && tf.kind != CMR_KIND_SCORES)
			cmr_unit_rows(tf.v, tf.rows, tf.dim);
		uint32_t dims[2] = {(uint32_t)tf.rows, (uint32_t)tf.dim};
		int rank = tf.kind == CMR_KIND_VECTORS ? 2 : 1;
		if (rank == 1)
			dims[0] = (uint32_t)tf.dim;
		const void *data = tf.v;
		if (g.o->dtype == CMR_DTYPE_F16) {
			for (size_t k = 0; k < (size_t)tf.rows * tf.dim; k++)
				tf.v16[k] = cmr_f32_to_f16(tf.v[k]);
			data = tf.v16;
		}
		cmr_record out;
		cmr_record_tensor(&out, tf.kind, g.o->dtype, rank, dims, rec->key, data);
		if (cmr_writer_put(g.w, &out) < 0)
			cmr_die_writer(g.w);
		g.written++;
	}
	cmr_progress_update(&g.progress, g.written);
	return 0;
}

static int main_tflite(struct opts *o)
{
	tfl_open(o);
	cmr_output out;
	cmr_output_open(&out, o->output, !o->top);
	if (o->top) {
		tf.text = out.f;
	} else {
		g.w = cmr_writer_new(out.f, out.name, o->level);
		char *p = tfl_provenance(o);
		cmr_writer_set_provenance(g.w, tool.name, p);
		free(p);
	}
	cmr_progress_start(&g.progress, o->top ? "images" : cmr_kind_name(tf.kind), 0);
	cmr_each_record(o->inputs, o->ninputs, take_tflite, NULL);
	cmr_progress_end(&g.progress, g.written);
	if (g.w) {
		if (cmr_writer_finish(g.w) < 0)
			cmr_die_writer(g.w);
		cmr_writer_free(g.w);
	}
	cmr_output_commit(&out);
	cmr_info("%" PRIu64 " images encoded", g.written);
	if (!g.written)
		cmr_warn("no image records in the input: nothing written");
	for (int k = 0; k < tf.nlabels; k++)
		free(tf.label[k]);
	free(tf.label), free(tf.v), free(tf.v16);
	cmr_tfl_run_free(tf.run);
	cmr_tfl_free(&tf.m);
	return cmr_exit(CMR_EXIT_OK);
}

int main(int argc, char **argv)
{
	struct opts o;
	cmr_init(argc, argv, &tool);
	parse_cmdline(argc, argv, &o);
	g.o = &o;
	cmr_ops_set_threads(o.threads);
	if (o.tflite && !(o.ops->caps & CMR_OPS_HOST))
		cmr_usage_error("--backend %s: TFLite models run on the CPU (blas or ref)", o.ops->name);
	cmr_start_backend(o.ops, o.device, o.precision);
	if (o.tflite)
		return main_tflite(&o);
	/* fail early on a model that cannot be read */
	cmr_clip_cfg cfg;
	char err[1024];
	if (cmr_clip_cfg_load(o.model, &cfg, err, sizeof err) < 0)
		cmr_die("%s", err);
	int maxdim = cfg.proj;
	g.features = cfg.vision.features;
	if (o.tuning) { /* a tuning is checked whole before anything is written */
		cmr_tuning t;
		if (cmr_tuning_read(o.tuning, &t, err, sizeof err) < 0)
			cmr_die("%s", err);
		if (cmr_tuning_check(&t, &cfg, err, sizeof err) < 0)
			cmr_die("%s: %s", o.tuning, err);
		load_weights((t.vision_prompts || t.pool_size ? 1u << CMR_TOWER_VISION : 0) |
			     (t.text_prompts ? 1u << CMR_TOWER_TEXT : 0));
	}
	g.pending = calloc((size_t)o.batch, sizeof *g.pending);
	g.emb = malloc((size_t)o.batch * maxdim * sizeof *g.emb);
	g.emb16 = malloc((size_t)maxdim * sizeof *g.emb16);
	if (!g.pending || !g.emb || !g.emb16)
		cmr_die("out of memory");
	cmr_output out;
	cmr_output_open(&out, o.output, 1);
	g.w = cmr_writer_new(out.f, out.name, o.level);
	cmr_progress_start(&g.progress, "embeddings", 0);
	cmr_each_record(o.inputs, o.ninputs, take, NULL);
	flush();
	cmr_progress_end(&g.progress, o.mean_by_key ? g.nacc : g.written);
	if (o.mean_by_key && g.nacc)
		write_means();
	if (!g.prov_done) { /* no tensor at all: say who we are anyway */
		char *p = cmr_provenance(argc, argv, (const char *const *)o.inputs, o.ninputs);
		cmr_writer_set_provenance(g.w, tool.name, p);
		free(p);
	}
	if (cmr_writer_finish(g.w) < 0)
		cmr_die_writer(g.w);
	cmr_writer_free(g.w);
	cmr_output_commit(&out);
	cmr_info("%" PRIu64 " embeddings", g.written);
	if (!g.written) /* an empty stream in, an empty stream out: say so */
		cmr_warn("no image or token records in the input: no embeddings written");
	if (g.truncated)
		cmr_warn("%" PRIu64 " captions were cut to %d tokens to make room for %d text prompts", g.truncated,
			 cfg.text.context - g.tun.text_prompts, g.tun.text_prompts);
	for (int k = 0; k < 2; k++)
		cmr_clip_ws_free(g.ws[k]);
	cmr_clip_free(g.m);
	for (int b = 0; b < o.batch; b++)
		free(g.pending[b].data);
	free(g.pending);
	free(g.emb);
	free(g.emb16);
	return cmr_exit(CMR_EXIT_OK);
}
