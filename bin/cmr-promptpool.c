/* cmr-promptpool - an instance-level prompt pool on a frozen CLIP (APSE-IPIK, issue 17): make
 * one (keys from k-means of the images' own query features, or random), see which prompts
 * images choose, and how the pool is used. A pool is a tuning directory (cmr-tuning(5),
 * method "pool"), applied by cmr-encode --tuning. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <xxhash.h>

#include "atomic.h"
#include "fe.h"
#include "index.h"
#include "model/clip.h"
#include "model/tuning.h"
#include "format/safetensors.h"
#include "format/stream.h"
#include "util.h"

static const cmr_tool tool = {
	"cmr-promptpool",
	"init -m BASE -o POOL [--size N] [--length L] [--top-k K] [--keys kmeans|random] [--seed N]\n"
	"     [-b N] [IMAGES.cmr...]\n"
	"select -m BASE [-f tsv|jsonl] [-b N] POOL [IMAGES.cmr...]\n"
	"stats -m BASE [--json] [-b N] POOL [IMAGES.cmr...]\n"
	"show POOL",
	"A prompt pool (an instance-level, query-based pool, APSE-IPIK): N vision prompts of L rows,\n"
	"each with a key; an image's query is the frozen vision tower's pooled state after the final\n"
	"layer norm, before the projection; it takes the K prompts whose keys are most similar\n"
	"(cosine), their rows after the class token, best first. A pool is a tuning directory\n"
	"(cmr-tuning(5), method pool): cmr-encode -m BASE --tuning POOL applies it.\n"
	"\nCommands:\n"
	"  init     make a pool: keys from spherical k-means of the images' queries (default), or\n"
	"           random; prompts N(0, 0.02)\n"
	"  select   each image's chosen prompts and their scores: KEY<TAB>RANK<TAB>PROMPT<TAB>SCORE\n"
	"           lines (tsv), or one JSON object per image (jsonl)\n"
	"  stats    how often each prompt is chosen, the prompts never chosen, the keys' mutual\n"
	"           similarity\n"
	"  show     the pool's configuration and tensors (shape, root mean square, XXH3-64)\n"
	"\nOptions:\n"
	"  -m, --model DIR       the frozen base (a CLIP checkpoint)\n"
	"  -o, --output DIR      init: the pool's directory\n"
	"      --size N          init: prompts in the pool (default 10)\n"
	"      --length L        init: rows per prompt (default 5)\n"
	"      --top-k K         init: prompts an image takes (default 5)\n"
	"      --keys HOW        init: kmeans (of IMAGES' queries; default) or random\n"
	"      --seed N          init: k-means and the random values (default 1)\n"
	"  -f, --format F        select: tsv (default) or jsonl\n"
	"      --json            stats: one JSON object\n"
	"  -b, --batch N         images per forward pass (default 32)\n",
};

enum cmd { CMD_INIT, CMD_SELECT, CMD_STATS, CMD_SHOW };

struct opts {
	enum cmd cmd;
	const char *model, *output, *pool;
	int size, length, topk, random_keys, jsonl, json, batch;
	uint64_t seed;
	char **inputs;
	int ninputs;
	int argc;
	char **argv;
};

enum { OPT_SIZE = 256, OPT_LENGTH, OPT_TOPK, OPT_KEYS, OPT_SEED, OPT_JSON };

static void parse_cmdline(int argc, char **argv, struct opts *o)
{
	static const struct { const char *name; enum cmd cmd; } cmds[] = {
		{"init", CMD_INIT}, {"select", CMD_SELECT}, {"stats", CMD_STATS}, {"show", CMD_SHOW}};
	static const struct option longopts[] = {
		{"model", required_argument, NULL, 'm'},  {"output", required_argument, NULL, 'o'},
		{"size", required_argument, NULL, OPT_SIZE}, {"length", required_argument, NULL, OPT_LENGTH},
		{"top-k", required_argument, NULL, OPT_TOPK}, {"keys", required_argument, NULL, OPT_KEYS},
		{"seed", required_argument, NULL, OPT_SEED}, {"format", required_argument, NULL, 'f'},
		{"json", no_argument, NULL, OPT_JSON},     {"batch", required_argument, NULL, 'b'},
		CMR_COMMON_LONGOPTS,                      {NULL, 0, NULL, 0},
	};
	memset(o, 0, sizeof *o);
	o->size = 10, o->length = 5, o->topk = 5, o->seed = 1, o->batch = 32;
	o->argc = argc, o->argv = argv;
	int found = -1;
	for (size_t i = 0; argc > 1 && i < sizeof cmds / sizeof cmds[0]; i++)
		if (strcmp(argv[1], cmds[i].name) == 0)
			found = (int)i;
	int opt_first = argc > 1 && argv[1][0] == '-' && argv[1][1]; /* -h, -V before any command */
	if (found < 0 && !opt_first)
		cmr_usage_error(argc > 1 ? "'%s' is not a command (init, select, stats, show)" : "give a command%s",
				argc > 1 ? argv[1] : " (init, select, stats, show)");
	o->cmd = found < 0 ? CMD_SHOW : cmds[found].cmd;
	optind = found < 0 ? 1 : 2;
	int c;
	while ((c = getopt_long(argc, argv, "m:o:f:b:" CMR_COMMON_SHORTOPTS, longopts, NULL)) != -1) {
		switch (c) {
		case 'm': o->model = cmr_parse_model(optarg); break;
		case 'o': o->output = optarg; break;
		case OPT_SIZE: o->size = (int)cmr_parse_int("--size", optarg, 1, CMR_TUNING_MAX_POOL); break;
		case OPT_LENGTH: o->length = (int)cmr_parse_int("--length", optarg, 1, CMR_TUNING_MAX_PROMPTS); break;
		case OPT_TOPK: o->topk = (int)cmr_parse_int("--top-k", optarg, 1, CMR_TUNING_MAX_POOL); break;
		case OPT_KEYS:
			if (strcmp(optarg, "kmeans") && strcmp(optarg, "random"))
				cmr_usage_error("--keys: '%s' is not kmeans or random", optarg);
			o->random_keys = strcmp(optarg, "random") == 0;
			break;
		case OPT_SEED: o->seed = (uint64_t)cmr_parse_int("--seed", optarg, 0, INT64_MAX); break;
		case 'f':
			if (strcmp(optarg, "tsv") && strcmp(optarg, "jsonl"))
				cmr_usage_error("--format: '%s' is not tsv or jsonl", optarg);
			o->jsonl = strcmp(optarg, "jsonl") == 0;
			break;
		case OPT_JSON: o->json = 1; break;
		case 'b': o->batch = (int)cmr_parse_int("--batch", optarg, 1, 4096); break;
		default:
			if (!cmr_common_option(c))
				cmr_usage_error("unhandled option");
		}
	}
	if (found < 0)
		cmr_usage_error("give a command (init, select, stats, show) first");
	o->inputs = argv + optind;
	o->ninputs = argc - optind;
	if (o->cmd == CMD_INIT) {
		if (!o->model || !o->output)
			cmr_usage_error("init needs the base and the pool's directory: -m BASE -o POOL");
		if (o->topk > o->size)
			cmr_usage_error("--top-k %d is more than the %d prompts of the pool", o->topk, o->size);
		if (o->topk * o->length > CMR_TUNING_MAX_PROMPTS)
			cmr_usage_error("--top-k %d of --length %d: %d rows per image, at most %d", o->topk, o->length,
					o->topk * o->length, CMR_TUNING_MAX_PROMPTS);
		if (!o->random_keys && o->ninputs == 0 && isatty(STDIN_FILENO))
			cmr_usage_error("--keys kmeans needs images (IMAGES.cmr, or a stream on standard input)");
		if (o->random_keys && o->ninputs)
			cmr_usage_error("--keys random takes no images");
	} else {
		if (o->ninputs < 1)
			cmr_usage_error("give the pool's directory");
		o->pool = o->inputs[0];
		o->inputs++, o->ninputs--;
		if (o->cmd != CMD_SHOW && !o->model)
			cmr_usage_error("give the base the pool was made for: -m BASE");
		if (o->cmd == CMD_SHOW && o->ninputs)
			cmr_usage_error("show takes the pool only");
	}
}

/* ---- the images' queries ---- */
static struct {
	const struct opts *o;
	cmr_clip *m;
	const cmr_tuning *t;
	cmr_clip_ws *ws;
	int S, D;
	const uint8_t **px;
	uint8_t **buf;
	char **keys;
	int n;
	float *q, *emb;
	void (*done)(int n); /* a batch's queries are in q, its keys in keys */
	cmr_progress progress;
	uint64_t seen;
} g;

static void flush(void)
{
	if (!g.n)
		return;
	cmr_batch b = {.B = g.n, .pixels = g.px, .no_prefix = 1, .state = g.q};
	if (cmr_clip_forward(g.m, CMR_TOWER_VISION, &cmr_ops_blas, g.ws, &b, g.emb) < 0)
		cmr_die("the batch of images ending with '%s' could not be encoded", g.keys[g.n - 1]);
	g.done(g.n);
	g.seen += (uint64_t)g.n;
	cmr_progress_update(&g.progress, g.seen);
	for (int i = 0; i < g.n; i++)
		free(g.keys[i]);
	g.n = 0;
}

static int take(const cmr_record *rec, const char *input, void *ctx)
{
	(void)ctx;
	if (rec->type == CMR_TYPE_META)
		return 0;
	if (rec->kind != CMR_KIND_IMAGE)
		cmr_die("%s: record %" PRIu64 " (key '%s') is not an image (the queries come from images: cmr-decode)",
			input, rec->index, rec->key);
	if (rec->dtype != CMR_DTYPE_U8 || rec->rank != 3 || rec->dims[0] != (uint32_t)g.S ||
	    rec->dims[1] != (uint32_t)g.S || rec->dims[2] != 3)
		cmr_die("%s: record %" PRIu64 " (key '%s'): the model takes u8 [%d,%d,3] images (cmr-decode -m BASE)",
			input, rec->index, rec->key, g.S, g.S);
	memcpy(g.buf[g.n], rec->data, (size_t)g.S * g.S * 3);
	if (!(g.keys[g.n] = strdup(rec->key)))
		cmr_die("out of memory");
	if (++g.n == g.o->batch)
		flush();
	return 0;
}

static void each_query(const struct opts *o, cmr_clip *m, const cmr_tuning *t, void (*done)(int n))
{
	g.o = o, g.m = m, g.t = t, g.done = done;
	g.S = m->cfg.vision.image_size, g.D = m->cfg.vision.width;
	g.ws = cmr_clip_ws_new(m, &cmr_ops_blas, CMR_TOWER_VISION, o->batch, 0, 0);
	g.px = calloc((size_t)o->batch, sizeof *g.px);
	g.buf = calloc((size_t)o->batch, sizeof *g.buf);
	g.keys = calloc((size_t)o->batch, sizeof *g.keys);
	g.q = malloc((size_t)o->batch * g.D * sizeof *g.q);
	g.emb = malloc((size_t)o->batch * m->cfg.proj * sizeof *g.emb);
	if (!g.ws || !g.px || !g.buf || !g.keys || !g.q || !g.emb)
		cmr_die("out of memory");
	for (int i = 0; i < o->batch; i++)
		if (!(g.px[i] = g.buf[i] = malloc((size_t)g.S * g.S * 3)))
			cmr_die("out of memory");
	cmr_progress_start(&g.progress, "images", 0);
	cmr_each_record(o->inputs, o->ninputs, take, NULL);
	flush();
	cmr_progress_end(&g.progress, g.seen);
	for (int i = 0; i < o->batch; i++)
		free(g.buf[i]);
	free(g.px), free(g.buf), free(g.keys), free(g.q), free(g.emb);
	cmr_clip_ws_free(g.ws);
	if (!g.seen)
		cmr_die("no images in the input");
}

/* ---- init ---- */
static cmr_vecs queries;

static void keep_queries(int n)
{
	for (int i = 0; i < n; i++) {
		float *q = g.q + (size_t)i * g.D;
		cmr_unit_rows(q, 1, g.D);
		if (cmr_vecs_push(&queries, q, (uint32_t)g.D, g.keys[i]) < 0)
			cmr_die("out of memory");
	}
}

static void init(const struct opts *o)
{
	char err[4200];
	cmr_clip_cfg cfg;
	if (cmr_clip_cfg_load(o->model, &cfg, err, sizeof err) < 0)
		cmr_die("%s", err);
	cmr_tuning t = {.pool_size = o->size, .pool_length = o->length, .pool_topk = o->topk};
	snprintf(t.method, sizeof t.method, "pool");
	snprintf(t.base, sizeof t.base, "%s", o->model);
	cmr_clip *m = cmr_clip_new(&cfg);
	if (!m || cmr_tuning_add(m, &t, 0, err, sizeof err) < 0)
		cmr_die("%s", m ? err : "out of memory");
	char path[4096];
	snprintf(path, sizeof path, "%s/%s", o->model, cmr_clip_weights_name(&cfg));
	/* the pool's own tensors are not in the base: initialised from the seed */
	if (cmr_clip_load(m, path, 1u << CMR_TOWER_VISION, o->seed, err, sizeof err) < 0)
		cmr_die("%s", err);
	cmr_param *keys = cmr_clip_param(m, "prompt.vision.keys");
	if (!o->random_keys) {
		each_query(o, m, &t, keep_queries);
		if (queries.n < (uint64_t)o->size)
			cmr_die("%" PRIu64 " images cannot give %d keys by k-means: give more images, a smaller --size, or "
				"--keys random", queries.n, o->size);
		cmr_build_opts bo = {.nlist = (uint32_t)o->size, .seed = o->seed};
		float *C = cmr_kmeans(&queries, &bo, err, sizeof err);
		if (!C)
			cmr_die("%s", err);
		memcpy(keys->w, C, keys->n * sizeof(float));
		free(C);
		cmr_info("%d keys from k-means of %" PRIu64 " images' queries", o->size, queries.n);
		cmr_vecs_free(&queries);
	}
	/* both files complete under temporary names before either is put in place; a failure
	 * leaves nothing (the directory too, when this made it) */
	int made = mkdir(o->output, 0777) == 0;
	if (!made && errno != EEXIST)
		cmr_die("%s: %s", o->output, strerror(errno));
	char *prov = cmr_provenance(o->argc, o->argv, (const char *const *)o->inputs, o->ninputs);
	char *cj = cmr_tuning_config_json(m, &t, prov);
	json_t *meta = json_pack("{s:s, s:s}", "format", "pt", "cmr-promptpool", prov);
	char *mj = json_dumps(meta, JSON_COMPACT);
	cmr_atomic cf, tf;
	int ncf = 0, ntf = 0, ok = cj && mj;
	if (!ok)
		snprintf(err, sizeof err, "out of memory");
	snprintf(path, sizeof path, "%s/" CMR_TUNING_CONFIG, o->output);
	if (ok && (ok = cmr_atomic_open(&cf, path, err, sizeof err) == 0)) {
		ncf = 1;
		if (fputs(cj, cf.f) == EOF) {
			snprintf(err, sizeof err, "write error on %s: %s", path, strerror(errno));
			ok = 0;
		} else {
			ok = cmr_atomic_finish(&cf, err, sizeof err) == 0;
		}
	}
	snprintf(path, sizeof path, "%s/" CMR_TUNING_TENSORS, o->output);
	if (ok && (ok = cmr_tuning_save_tensors(m, &t, path, mj, &tf, err, sizeof err) == 0))
		ntf = 1;
	if (ok)
		ok = cmr_atomic_rename(&tf, err, sizeof err) == 0 && (ntf = 0, cmr_atomic_rename(&cf, err, sizeof err) == 0);
	if (!ok) {
		if (ncf)
			cmr_atomic_abort(&cf);
		if (ntf)
			cmr_atomic_abort(&tf);
		if (made) {
			snprintf(path, sizeof path, "%s/" CMR_TUNING_TENSORS, o->output);
			unlink(path);
			rmdir(o->output);
		}
		cmr_die("%s%s", err, made ? " (nothing was written)" : "");
	}
	free(mj), free(cj), free(prov);
	json_decref(meta);
	cmr_clip_free(m);
}

/* ---- select, stats ---- */
static int32_t *sel;
static float *score;
static uint64_t *chosen;  /* per prompt: images that took it */
static double *chosen_score;

static void select_batch(int n)
{
	const cmr_tuning *t = g.t;
	int K = t->pool_topk;
	if (cmr_tuning_select(g.m, t, g.q, n, sel, score) < 0)
		cmr_die("the pool has no keys");
	for (int i = 0; i < n; i++) {
		const int32_t *s = sel + (size_t)i * K;
		const float *sc = score + (size_t)i * K;
		if (g.o->cmd == CMD_STATS) {
			for (int j = 0; j < K; j++)
				chosen[s[j]]++, chosen_score[s[j]] += sc[j];
		} else if (g.o->jsonl) {
			json_t *ids = json_array(), *scs = json_array();
			for (int j = 0; j < K; j++)
				json_array_append_new(ids, json_integer(s[j])), json_array_append_new(scs, json_real(sc[j]));
			json_t *o = json_pack("{s:s, s:o, s:o}", "key", g.keys[i], "prompts", ids, "scores", scs);
			char *txt = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(7));
			printf("%s\n", txt);
			free(txt);
			json_decref(o);
		} else {
			for (int j = 0; j < K; j++)
				printf("%s\t%d\t%d\t%.6f\n", g.keys[i], j + 1, (int)s[j], (double)sc[j]);
		}
	}
	if (ferror(stdout))
		cmr_die_write("standard output", errno);
}

static cmr_clip *open_pool(const struct opts *o, cmr_tuning *t)
{
	char err[4400];
	cmr_clip *m = cmr_tuning_open(o->model, o->pool, 1u << CMR_TOWER_VISION, t, err, sizeof err);
	if (!m)
		cmr_die("%s", err);
	if (strcmp(t->method, "pool") != 0)
		cmr_die("%s: a tuning of method '%s', not a prompt pool", o->pool, t->method);
	return m;
}

static void select_or_stats(const struct opts *o)
{
	cmr_tuning t;
	cmr_clip *m = open_pool(o, &t);
	int P = t.pool_size, K = t.pool_topk;
	sel = malloc((size_t)o->batch * K * sizeof *sel);
	score = malloc((size_t)o->batch * K * sizeof *score);
	chosen = calloc((size_t)P, sizeof *chosen);
	chosen_score = calloc((size_t)P, sizeof *chosen_score);
	if (!sel || !score || !chosen || !chosen_score)
		cmr_die("out of memory");
	each_query(o, m, &t, select_batch);
	if (o->cmd == CMD_STATS) {
		const cmr_param *kp = cmr_clip_param(m, "prompt.vision.keys");
		int D = (int)kp->shape[1], dead = 0;
		double worst = -1;
		int wa = 0, wb = 0;
		for (int a = 0; a < P; a++)
			for (int b = a + 1; b < P; b++) {
				double ab = 0, aa = 0, bb = 0;
				for (int d = 0; d < D; d++) {
					double x = kp->w[(size_t)a * D + d], y = kp->w[(size_t)b * D + d];
					ab += x * y, aa += x * x, bb += y * y;
				}
				double c = aa > 0 && bb > 0 ? ab / sqrt(aa * bb) : 0;
				if (c > worst)
					worst = c, wa = a, wb = b;
			}
		for (int p = 0; p < P; p++)
			dead += chosen[p] == 0;
		if (o->json) {
			json_t *pr = json_array();
			for (int p = 0; p < P; p++)
				json_array_append_new(pr, json_pack("{s:i, s:I, s:f, s:f}", "prompt", p, "images",
								    (json_int_t)chosen[p], "share",
								    100.0 * (double)chosen[p] / (double)g.seen, "mean_score",
								    chosen[p] ? chosen_score[p] / (double)chosen[p] : 0.0));
			json_t *j = json_pack("{s:I, s:i, s:i, s:i, s:i, s:o, s:f, s:[i, i]}", "images", (json_int_t)g.seen,
					      "size", P, "length", t.pool_length, "top_k", K, "dead", dead, "prompts", pr,
					      "max_key_similarity", P > 1 ? worst : 0.0, "most_similar_keys", wa, wb);
			char *txt = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
			printf("%s\n", txt);
			free(txt);
			json_decref(j);
		} else {
			printf("%" PRIu64 " images, a pool of %d prompts of %d rows, top %d\n", g.seen, P, t.pool_length, K);
			printf("%6s %8s %7s %10s\n", "prompt", "images", "share", "mean_score");
			for (int p = 0; p < P; p++)
				printf("%6d %8" PRIu64 " %6.2f%% %10.4f\n", p, chosen[p], 100.0 * (double)chosen[p] / (double)g.seen,
				       chosen[p] ? chosen_score[p] / (double)chosen[p] : 0.0);
			printf("%d prompt%s never chosen\n", dead, dead == 1 ? "" : "s");
			if (P > 1)
				printf("most similar keys: %d and %d, cosine %.4f\n", wa, wb, worst);
		}
		if (ferror(stdout))
			cmr_die_write("standard output", errno);
	}
	free(sel), free(score), free(chosen), free(chosen_score);
	cmr_clip_free(m);
}

/* ---- show ---- */
static void show(const struct opts *o)
{
	char err[4400], path[4096];
	cmr_tuning t;
	if (cmr_tuning_read(o->pool, &t, err, sizeof err) < 0)
		cmr_die("%s", err);
	if (strcmp(t.method, "pool") != 0)
		cmr_die("%s: a tuning of method '%s', not a prompt pool", o->pool, t.method);
	printf("pool of %d prompts of %d rows, top %d; base %s (vision %016" PRIx64 ")\n", t.pool_size, t.pool_length,
	       t.pool_topk, t.base, t.base_hash[CMR_TOWER_VISION]);
	snprintf(path, sizeof path, "%s/" CMR_TUNING_TENSORS, o->pool);
	cmr_st *st = cmr_st_open(path, err, sizeof err);
	if (!st)
		cmr_die("%s", err);
	for (size_t i = 0; i < cmr_st_count(st); i++) {
		const cmr_st_tensor *x = cmr_st_at(st, i);
		char shape[64] = "";
		for (int d = 0; d < x->ndim; d++)
			snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%s%lld", d ? "," : "",
				 (long long)x->shape[d]);
		double ss = 0;
		if (x->dtype == CMR_DTYPE_F32)
			for (size_t j = 0; j < x->nbytes / 4; j++) {
				float v;
				memcpy(&v, (const char *)x->data + 4 * j, 4);
				ss += (double)v * v;
			}
		printf("%-24s %-5s [%s] rms %.4g xxh3 %016" PRIx64 "\n", x->name, cmr_dtype_name(x->dtype), shape,
		       x->nbytes ? sqrt(ss / (double)(x->nbytes / 4)) : 0.0, (uint64_t)XXH3_64bits(x->data, x->nbytes));
	}
	cmr_st_close(st);
}

int main(int argc, char **argv)
{
	struct opts o;
	cmr_init(argc, argv, &tool);
	parse_cmdline(argc, argv, &o);
	switch (o.cmd) {
	case CMD_INIT: init(&o); break;
	case CMD_SELECT:
	case CMD_STATS: select_or_stats(&o); break;
	case CMD_SHOW: show(&o); break;
	}
	return cmr_exit(CMR_EXIT_OK);
}
