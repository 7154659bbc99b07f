/* cmr-index - embedding streams to index files (exact or IVF, f32, SQ8 or PQ), adding to them,
 * merging shards, and describing them. */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fe.h"
#include "index.h"
#include "format/stream.h"

static const cmr_tool tool = {
	"cmr-index",
	"[build] [--ivf NLIST] [--sq8 | --pq M [--keep-exact]] [--quantizer Q.idx] [--train-only] [--seed N]\n"
	"[--iter N] [--sample N] [--force] -o OUT.idx [STREAM...]\n"
	"add [--force] -o OUT.idx BASE.idx [STREAM...]\n"
	"merge [--force] -o OUT.idx SHARD.idx...\n"
	"info [--json] INDEX.idx",
	"Build an index file (cmr-index(5)) from embedding records: exact search over every vector\n"
	"(flat, the default) or an inverted file (--ivf) whose k-means lists cmr-query visits\n"
	"--nprobe at a time; vectors stored as f32, as 8-bit codes (--sq8), or as M-byte product-\n"
	"quantised codes (--pq M; with --ivf, of each vector's residual from its list's centroid).\n"
	"Vectors are made unit length: scores are cosines. Keys are kept, and the provenance of\n"
	"the streams: the model they come from, which add, merge and cmr-query check (one model\n"
	"per index). The file is written under a temporary name and renamed; it is read\n"
	"memory-mapped.\n"
	"\nCommands:\n"
	"  build    (the default) index the embeddings of the streams\n"
	"  add      a new index with BASE's vectors and the streams', placed by BASE's quantizer\n"
	"  merge    one index from shards built with the same quantizer (--quantizer); answers\n"
	"           equal those of one index built from all the shards' streams in that order\n"
	"  info     the header, list sizes, models and provenance of an index\n"
	"\nOptions:\n"
	"      --ivf NLIST       inverted file with NLIST k-means lists (about 4 sqrt(N) is usual)\n"
	"      --sq8             store 8-bit scalar-quantised codes (a quarter of the memory)\n"
	"      --pq M            store product-quantised codes: M sub-quantisers of 256 centroids\n"
	"                        each (M bytes a vector; M divides the dimension, e.g. 64 for 512)\n"
	"      --keep-exact      with --pq, keep the f32 vectors too, for cmr-query --rerank\n"
	"      --quantizer Q     take the lists' centroids, the SQ8 ranges and the PQ sub-quantisers\n"
	"                        from index Q\n"
	"                        instead of training: shards built so can be merged\n"
	"      --train-only      write the quantizer alone (no vectors), for --quantizer\n"
	"      --seed N          k-means seed (default 1)\n"
	"      --iter N          k-means iterations (default 20 for the lists, 25 for PQ's)\n"
	"      --sample N        k-means training vectors (default 256 per list; PQ 65536)\n"
	CMR_FORCE_HELP
	"  -o, --output FILE     the index to write (required)\n"
	"      --json            info: one JSON object (its provenance parsed) instead of lines\n",
};

enum cmd { C_BUILD, C_ADD, C_MERGE, C_INFO };

struct opts {
	enum cmd cmd;
	cmr_build_opts b;
	const char *quantizer;
	int train_only, json;
	const char *output;
	char **inputs;
	int ninputs;
};

enum { OPT_IVF = 256, OPT_SQ8, OPT_Q, OPT_TRAIN, OPT_SEED, OPT_ITER, OPT_SAMPLE, OPT_JSON, OPT_PQ, OPT_KEEP };

static void parse_cmdline(int argc, char **argv, struct opts *o)
{
	static const struct option longopts[] = {
		{"ivf", required_argument, NULL, OPT_IVF},
		{"sq8", no_argument, NULL, OPT_SQ8},
		{"pq", required_argument, NULL, OPT_PQ},
		{"keep-exact", no_argument, NULL, OPT_KEEP},
		{"quantizer", required_argument, NULL, OPT_Q},
		{"train-only", no_argument, NULL, OPT_TRAIN},
		{"seed", required_argument, NULL, OPT_SEED},
		{"iter", required_argument, NULL, OPT_ITER},
		{"sample", required_argument, NULL, OPT_SAMPLE},
		{"json", no_argument, NULL, OPT_JSON},
		CMR_FORCE_LONGOPT,
		{"output", required_argument, NULL, 'o'},
		CMR_COMMON_LONGOPTS,
		{NULL, 0, NULL, 0},
	};
	memset(o, 0, sizeof *o);
	o->b.kind = CMR_INDEX_FLAT;
	o->b.code = CMR_CODE_F32;
	o->b.seed = 1;
	int first = 1;
	if (argc > 1) {
		static const char *names[] = {"build", "add", "merge", "info"};
		for (int i = 0; i < 4; i++)
			if (strcmp(argv[1], names[i]) == 0) {
				o->cmd = (enum cmd)i;
				first = 2;
			}
	}
	optind = first;
	int c;
	while ((c = getopt_long(argc, argv, "+o:" CMR_COMMON_SHORTOPTS, longopts, NULL)) != -1) {
		switch (c) {
		case OPT_IVF:
			o->b.kind = CMR_INDEX_IVF;
			o->b.nlist = (uint32_t)cmr_parse_int("--ivf", optarg, 1, 1 << 22);
			break;
		case OPT_SQ8: o->b.code = CMR_CODE_SQ8; break;
		case OPT_PQ:
			o->b.code = CMR_CODE_PQ;
			o->b.pq_m = (uint32_t)cmr_parse_int("--pq", optarg, 1, 65536);
			break;
		case OPT_KEEP: o->b.keep_exact = 1; break;
		case OPT_Q: o->quantizer = optarg; break;
		case OPT_TRAIN: o->train_only = 1; break;
		case OPT_SEED: o->b.seed = (uint64_t)cmr_parse_int("--seed", optarg, 0, INT64_MAX); break;
		case OPT_ITER: o->b.iters = (int)cmr_parse_int("--iter", optarg, 1, 1000); break;
		case OPT_JSON: o->json = 1; break;
		case OPT_SAMPLE: o->b.sample = (uint64_t)cmr_parse_int("--sample", optarg, 1, INT64_MAX); break;
		case 'o': o->output = optarg; break;
		default:
			if (!cmr_common_option(c))
				cmr_usage_error("unhandled option");
		}
	}
	o->inputs = argv + optind;
	o->ninputs = argc - optind;
	if (o->cmd == C_INFO) {
		if (o->ninputs != 1)
			cmr_usage_error("info takes one index");
		return;
	}
	if (!o->output || strcmp(o->output, "-") == 0)
		cmr_usage_error("an index is a file: give -o FILE");
	if (o->cmd == C_MERGE && o->ninputs < 1)
		cmr_usage_error("merge needs at least one index");
	if (o->cmd == C_ADD && o->ninputs < 1)
		cmr_usage_error("add needs the base index");
	if (o->quantizer && (o->b.kind != CMR_INDEX_FLAT || o->b.code != CMR_CODE_F32))
		cmr_usage_error("--quantizer brings its own kind and code; leave out --ivf, --sq8 and --pq");
	if (o->b.keep_exact && o->b.code != CMR_CODE_PQ && !o->quantizer)
		cmr_usage_error("--keep-exact keeps f32 vectors beside PQ codes: give --pq M");
}

/* k-means iterations on a terminal */
static void kmeans_progress(void *ctx, uint64_t done, uint64_t total)
{
	cmr_progress *p = ctx;
	if (done == 0)
		cmr_progress_start(p, "k-means iterations", total);
	cmr_progress_update(p, done);
}

static cmr_index *open_or_die(const char *path)
{
	char err[1024];
	cmr_index *ix = cmr_index_open(path, err, sizeof err);
	if (!ix)
		cmr_die("%s", err);
	return ix;
}

/* the models and history an index keeps (none for an index older than them) */
static void index_origins(const cmr_index *ix, const char *path, cmr_origins *s)
{
	cmr_origins_from_json(s, ix->provenance, path);
}

static void write_or_die(cmr_index *ix, const char *path)
{
	char err[1024];
	if (cmr_index_write(ix, path, err, sizeof err) < 0)
		cmr_die("%s", err);
	cmr_info("%s: %" PRIu64 " vectors of dimension %u", path, ix->n, ix->dim);
}

static const char *code_name(const cmr_index *ix)
{
	return ix->code == CMR_CODE_SQ8 ? "sq8" : ix->code == CMR_CODE_PQ ? "pq" : "f32";
}

/* the memory a vector takes in a search: its code, its ordinal (8 bytes) and any exact copy */
static double bytes_per_vector(const cmr_index *ix)
{
	double code = ix->code == CMR_CODE_F32 ? 4.0 * ix->dim : ix->code == CMR_CODE_SQ8 ? ix->dim : ix->pq_m;
	return code + 8 + (ix->exact ? 4.0 * ix->dim : 0);
}

static void info_json(const cmr_index *ix, const char *path, const cmr_origins *org)
{
	json_t *j = json_pack("{s:s, s:s, s:s, s:i, s:I}", "index", path, "kind", ix->kind == CMR_INDEX_IVF ? "ivf" : "flat",
			      "code", code_name(ix), "dim", (int)ix->dim, "vectors", (json_int_t)ix->n);
	json_object_set_new(j, "bytes_per_vector", json_real(bytes_per_vector(ix)));
	if (ix->code == CMR_CODE_PQ) {
		json_object_set_new(j, "pq_m", json_integer(ix->pq_m));
		json_object_set_new(j, "exact", json_boolean(ix->exact != NULL));
	}
	if (ix->kind == CMR_INDEX_IVF) {
		json_t *sizes = json_array();
		for (uint32_t l = 0; l < ix->nlist; l++)
			json_array_append_new(sizes, json_integer((json_int_t)(ix->list_off[l + 1] - ix->list_off[l])));
		json_object_set_new(j, "list_sizes", sizes);
	}
	if (ix->quantizer_hash) {
		char h[17];
		snprintf(h, sizeof h, "%016" PRIx64, ix->quantizer_hash);
		json_object_set_new(j, "quantizer", json_string(h));
	}
	json_t *models = json_array();
	char d[1300];
	for (int i = 0; i < org->n; i++)
		json_array_append_new(models, json_string(cmr_origin_describe(&org->o[i], d, sizeof d)));
	json_object_set_new(j, "models", models);
	json_t *prov = ix->provenance ? json_loads(ix->provenance, 0, NULL) : NULL;
	json_object_set_new(j, "provenance", prov ? prov : json_null());
	char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	if (!s)
		cmr_die("out of memory");
	printf("%s\n", s);
	free(s);
	json_decref(j);
}

static void info(const char *path, int json)
{
	cmr_index *ix = open_or_die(path);
	if (json) {
		cmr_origins org;
		index_origins(ix, path, &org);
		info_json(ix, path, &org);
		cmr_origins_free(&org);
		cmr_index_free(ix);
		return;
	}
	printf("index    %s\n", path);
	printf("kind     %s\n", ix->kind == CMR_INDEX_IVF ? "ivf" : "flat");
	printf("code     %s", code_name(ix));
	if (ix->code == CMR_CODE_PQ)
		printf(" (%u sub-quantisers of 256 centroids%s)", ix->pq_m, ix->exact ? ", exact vectors kept" : "");
	printf("\n");
	printf("dim      %u\n", ix->dim);
	printf("vectors  %" PRIu64 "\n", ix->n);
	printf("bytes/vector %.1f (codes, ordinal%s; the key and the shared tables besides)\n", bytes_per_vector(ix),
	       ix->exact ? ", exact vector" : "");
	if (ix->kind == CMR_INDEX_IVF) {
		uint64_t mn = UINT64_MAX, mx = 0, empty = 0;
		for (uint32_t l = 0; l < ix->nlist; l++) {
			uint64_t s = ix->list_off[l + 1] - ix->list_off[l];
			mn = s < mn ? s : mn;
			mx = s > mx ? s : mx;
			empty += s == 0;
		}
		printf("lists    %u (sizes %" PRIu64 " to %" PRIu64 ", %" PRIu64 " empty)\n", ix->nlist, mn, mx, empty);
	}
	if (ix->quantizer_hash)
		printf("quantizer %016" PRIx64 "\n", ix->quantizer_hash);
	cmr_origins org;
	index_origins(ix, path, &org);
	char d[1300];
	for (int i = 0; i < org.n; i++)
		printf("model    %s\n", cmr_origin_describe(&org.o[i], d, sizeof d));
	cmr_origins_free(&org);
	if (ix->provenance)
		printf("provenance %s\n", ix->provenance);
	cmr_index_free(ix);
}

int main(int argc, char **argv)
{
	struct opts o;
	cmr_init(argc, argv, &tool);
	parse_cmdline(argc, argv, &o);
	if (o.cmd == C_INFO) {
		info(o.inputs[0], o.json);
		return cmr_exit(CMR_EXIT_OK);
	}
	char *own = cmr_provenance(argc, argv, (const char *const *)o.inputs, o.ninputs), *prov = NULL;
	char err[1024];
	cmr_origins org = {0}; /* what the new index holds */
	cmr_index *out = NULL;
	if (o.cmd == C_MERGE) {
		cmr_index **ix = calloc((size_t)o.ninputs, sizeof *ix);
		for (int i = 0; i < o.ninputs; i++) {
			ix[i] = open_or_die(o.inputs[i]);
			cmr_origins one;
			index_origins(ix[i], o.inputs[i], &one);
			cmr_origins_merge(&org, &one);
			cmr_origins_free(&one);
		}
		prov = cmr_origins_json(own, &org);
		out = cmr_index_merge((const cmr_index *const *)ix, o.ninputs, prov, err, sizeof err);
		if (!out)
			cmr_die("%s", err);
		for (int i = 0; i < o.ninputs; i++)
			cmr_index_free(ix[i]);
		free(ix);
	} else {
		cmr_index *base = o.cmd == C_ADD ? open_or_die(o.inputs[0]) : NULL;
		cmr_index *q = o.quantizer ? open_or_die(o.quantizer) : base;
		if (base) /* the new vectors as the base's: one merge */
			o.b.keep_exact = base->exact != NULL;
		cmr_vecs vs = {0};
		cmr_origins read = {0};
		if (!o.train_only || !q)
			cmr_read_embeddings(o.cmd == C_ADD ? o.inputs + 1 : o.inputs, o.cmd == C_ADD ? o.ninputs - 1 : o.ninputs,
					    q ? q->dim : 0, "the index", &vs, &read);
		if (!vs.n && !q)
			cmr_die("no embeddings to index");
		if (base) /* the base's models first, then the new streams' */
			index_origins(base, o.inputs[0], &org);
		cmr_origins_merge(&org, &read);
		if (q && q != base) { /* its centroids are in its model's space */
			cmr_origins qo;
			index_origins(q, o.quantizer, &qo);
			cmr_origins_check(&org, &qo);
			cmr_origins_free(&qo);
		}
		cmr_origins_free(&read);
		prov = cmr_origins_json(own, &org);
		o.b.quantizer = q;
		cmr_progress km = {0};
		o.b.progress = kmeans_progress;
		o.b.progress_ctx = &km;
		cmr_index *built = cmr_index_build_take(&vs, &o.b, prov, err, sizeof err); /* no second copy */
		cmr_progress_end(&km, km.total);
		if (!built)
			cmr_die("%s", err);
		if (o.train_only) { /* the quantizer alone */
			cmr_vecs none = {0};
			none.dim = built->dim;
			o.b.quantizer = built;
			out = cmr_index_build(&none, &o.b, prov, err, sizeof err);
			if (!out)
				cmr_die("%s", err);
			cmr_index_free(built);
		} else if (base) {
			const cmr_index *parts[2] = {base, built};
			out = cmr_index_merge(parts, 2, prov, err, sizeof err);
			if (!out)
				cmr_die("%s", err);
			cmr_index_free(built);
		} else {
			out = built;
		}
		cmr_vecs_free(&vs);
		if (q && q != base)
			cmr_index_free(q);
		cmr_index_free(base);
	}
	cmr_origins_free(&org);
	free(own);
	write_or_die(out, o.output);
	cmr_index_free(out);
	free(prov);
	return cmr_exit(CMR_EXIT_OK);
}
