/* cmr-dump - look inside cmr streams: list records, print tensors and provenance, verify,
 * and convert to and from NumPy .npy. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "fe.h"
#include "format/half.h"
#include "format/npy.h"
#include "format/stream.h"

static const cmr_tool tool = {
	"cmr-dump",
	"[list] [-H | --json] [FILE...]\n"
	"show [-k KEY]... [-n N | -a] [FILE...]\n"
	"meta [FILE...]\n"
	"verify [FILE...]\n"
	"diff [--max-abs X] [--mean-abs X] [--max-rel X] [--max-rel-norm X] A B\n"
	"to-npy [-k KEY] [-o OUT.npy] [--keys KEYS.txt] [--meta META.cmr] [FILE...]\n"
	"from-npy [--kind KIND] [--keys KEYS.txt | --key KEY] [--meta META.cmr] [-z LEVEL]\n"
	"         [--no-provenance] [-o OUT.cmr] IN.npy",
	"Look inside cmr streams (cmr-stream(5)); FILE '-' or none is standard input.\n"
	"\nCommands:\n"
	"  list       one line per record: index, offset, type, kind, dtype, shape, bytes, key\n"
	"  show       print tensors as text, one row of the last dimension per line\n"
	"  meta       print metadata (provenance) records as JSON, one per line\n"
	"  verify     read every record, checking checksums; print the record count\n"
	"  diff       compare the tensor records of two streams, paired in order (keys, kinds\n"
	"             and shapes must agree): max and mean absolute difference, max relative\n"
	"             difference and relative norm |a-b|/|a| per record and in all; exit 1 if a\n"
	"             tolerance is exceeded or the streams do not pair up\n"
	"  to-npy     stack the tensor records (same dtype and shape) into one .npy array\n"
	"             of shape (N, ...); with -k, write that one record's array\n"
	"  from-npy   split a .npy array along its first axis into tensor records\n"
	"\nOptions:\n"
	"  -H, --no-header     list: omit the column header\n"
	"      --json          list: one JSON object per record (JSON Lines) instead of columns\n"
	"  -k, --key KEY       show, to-npy: only the record(s) with this key\n"
	"  -n, --limit N       show: at most N values per record (default 64)\n"
	"  -a, --all           show: every value\n"
	"  -o, --output FILE   write here instead of standard output\n"
	"      --keys FILE     to-npy: write the keys, one per line; from-npy: read them\n"
	"      --key KEY       from-npy: the whole array is one record with this key\n"
	"      --meta FILE     to-npy: save metadata records as a stream; from-npy: copy\n"
	"                      them to the output first\n"
	"      --kind KIND     from-npy: record kind (generic, image, tokens, embedding,\n"
	"                      desc-tokens, scores, labels; default generic)\n"
	"  -z, --compress N    from-npy: zstd level 1-19 for payloads (default 0, stored)\n"
	"      --max-abs X     diff: tolerated largest absolute difference\n"
	"      --mean-abs X    diff: tolerated mean absolute difference (over all values)\n"
	"      --max-rel X     diff: tolerated largest |a-b| / max(|a|, |b|, 1e-30)\n"
	"      --max-rel-norm X  diff: tolerated largest ||a-b|| / ||a|| of a record\n"
	"      --no-provenance from-npy: do not append cmr-dump's own provenance record\n",
};

enum cmd { CMD_LIST, CMD_SHOW, CMD_META, CMD_VERIFY, CMD_DIFF, CMD_TO_NPY, CMD_FROM_NPY };

struct opts {
	enum cmd cmd;
	int no_header, json;
	const char **keys; /* -k */
	int nkeys;
	long long limit;
	const char *output;
	const char *keys_file;
	const char *single_key;
	const char *meta_file;
	int kind;
	int level;
	int no_provenance;
	double tol_max, tol_mean, tol_rel, tol_norm; /* negative: not checked */
	char **inputs;
	int ninputs;
};

enum { OPT_JSON = 300, OPT_KEYS = 256, OPT_META, OPT_KIND, OPT_NO_PROV, OPT_SINGLE_KEY, OPT_TMAX, OPT_TMEAN, OPT_TREL, OPT_TNORM };

static double parse_tol(const char *opt, const char *s)
{
	return cmr_parse_double(opt, s, 0, HUGE_VAL);
}

static void parse_cmdline(int argc, char **argv, struct opts *o)
{
	static const struct { const char *name; enum cmd cmd; } cmds[] = {
		{"list", CMD_LIST},     {"show", CMD_SHOW},     {"meta", CMD_META},
		{"verify", CMD_VERIFY}, {"to-npy", CMD_TO_NPY}, {"from-npy", CMD_FROM_NPY},
		{"diff", CMD_DIFF},
	};
	static const struct option longopts[] = {
		{"no-header", no_argument, NULL, 'H'},
		{"json", no_argument, NULL, OPT_JSON},
		{"key", required_argument, NULL, 'k'},
		{"limit", required_argument, NULL, 'n'},
		{"all", no_argument, NULL, 'a'},
		{"output", required_argument, NULL, 'o'},
		{"compress", required_argument, NULL, 'z'},
		{"keys", required_argument, NULL, OPT_KEYS},
		{"meta", required_argument, NULL, OPT_META},
		{"kind", required_argument, NULL, OPT_KIND},
		{"no-provenance", no_argument, NULL, OPT_NO_PROV},
		{"max-abs", required_argument, NULL, OPT_TMAX},
		{"mean-abs", required_argument, NULL, OPT_TMEAN},
		{"max-rel", required_argument, NULL, OPT_TREL},
		{"max-rel-norm", required_argument, NULL, OPT_TNORM},
		CMR_COMMON_LONGOPTS,
		{NULL, 0, NULL, 0},
	};
	memset(o, 0, sizeof *o);
	o->limit = 64;
	o->kind = CMR_KIND_GENERIC;
	o->tol_max = o->tol_mean = o->tol_rel = o->tol_norm = -1;
	o->keys = calloc((size_t)argc, sizeof *o->keys);
	int first = 1;
	if (argc > 1)
		for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
			if (strcmp(argv[1], cmds[i].name) == 0) {
				o->cmd = cmds[i].cmd;
				first = 2;
			}
	if (first == 1 && argc > 1 && access(argv[1], F_OK) != 0 && argv[1][0] >= 'a' && argv[1][0] <= 'z' &&
	    strspn(argv[1], "abcdefghijklmnopqrstuvwxyz-") == strlen(argv[1]))
		cmr_usage_error("'%s' is neither a command (list, show, meta, verify, diff, to-npy, from-npy) nor a file",
				argv[1]); /* a mistyped command, not a missing stream */
	optind = first;
	int c;
	while ((c = getopt_long(argc, argv, "+Hk:n:ao:z:" CMR_COMMON_SHORTOPTS, longopts, NULL)) != -1) {
		switch (c) {
		case 'H': o->no_header = 1; break;
		case OPT_JSON: o->json = 1; break;
		case 'k':
			/* --key means one whole-array key for from-npy, a filter elsewhere */
			if (o->cmd == CMD_FROM_NPY)
				o->single_key = optarg;
			else
				o->keys[o->nkeys++] = optarg;
			break;
		case 'n': o->limit = cmr_parse_int("--limit", optarg, 0, INT64_MAX); break;
		case 'a': o->limit = -1; break;
		case 'o': o->output = optarg; break;
		case 'z': o->level = (int)cmr_parse_int("--compress", optarg, 0, 19); break;
		case OPT_KEYS: o->keys_file = optarg; break;
		case OPT_META: o->meta_file = optarg; break;
		case OPT_KIND:
			o->kind = cmr_kind_from_name(optarg);
			if (o->kind < 0 || o->kind == CMR_KIND_PROVENANCE || o->kind == CMR_KIND_HITS)
				cmr_usage_error("--kind: '%s' is not a tensor kind", optarg);
			break;
		case OPT_NO_PROV: o->no_provenance = 1; break;
		case OPT_TMAX: o->tol_max = parse_tol("--max-abs", optarg); break;
		case OPT_TMEAN: o->tol_mean = parse_tol("--mean-abs", optarg); break;
		case OPT_TREL: o->tol_rel = parse_tol("--max-rel", optarg); break;
		case OPT_TNORM: o->tol_norm = parse_tol("--max-rel-norm", optarg); break;
		default:
			if (!cmr_common_option(c))
				cmr_usage_error("unhandled option");
		}
	}
	o->inputs = argv + optind;
	o->ninputs = argc - optind;
	if (o->cmd != CMD_FROM_NPY && (o->keys_file || o->meta_file) && o->cmd != CMD_TO_NPY)
		cmr_usage_error("--keys and --meta belong to to-npy and from-npy");
	if (o->cmd == CMD_DIFF && o->ninputs != 2)
		cmr_usage_error("diff compares exactly two streams");
	if (o->cmd == CMD_FROM_NPY) {
		if (o->ninputs != 1)
			cmr_usage_error("from-npy takes exactly one .npy file");
		if (o->single_key && o->keys_file)
			cmr_usage_error("--key and --keys exclude each other");
	} else if (o->cmd == CMD_TO_NPY && o->nkeys > 1) {
		cmr_usage_error("to-npy takes at most one -k KEY");
	} else if (o->cmd != CMD_SHOW && o->cmd != CMD_TO_NPY && o->nkeys) {
		cmr_usage_error("-k selects records for show and to-npy only");
	}
}

static int key_selected(const struct opts *o, const cmr_record *rec)
{
	if (!o->nkeys)
		return 1;
	for (int i = 0; i < o->nkeys; i++)
		if (strcmp(o->keys[i], rec->key) == 0)
			return 1;
	return 0;
}

static void shape_text(const cmr_record *rec, char *buf, size_t cap)
{
	size_t n = (size_t)snprintf(buf, cap, "[");
	for (int i = 0; i < rec->rank; i++)
		n += (size_t)snprintf(buf + n, cap - n, "%s%" PRIu32, i ? "," : "", rec->dims[i]);
	snprintf(buf + n, cap - n, "]");
}

static void check_stdout(void)
{
	if (ferror(stdout))
		cmr_die_write("standard output", errno);
}

/* ---- list ---- */
static int list_one(const cmr_record *rec, const char *input, void *ctx)
{
	const struct opts *o = ctx;
	char shape[80], kind[16], dt[8];
	shape_text(rec, shape, sizeof shape);
	const char *kn = cmr_kind_name(rec->kind);
	if (!kn)
		snprintf(kind, sizeof kind, "kind-%u", rec->kind);
	const char *dn = cmr_dtype_name(rec->dtype);
	if (!dn)
		snprintf(dt, sizeof dt, "%u", rec->dtype);
	if (o->json) {
		json_t *dims = json_array();
		for (int d = 0; d < rec->rank; d++)
			json_array_append_new(dims, json_integer(rec->dims[d]));
		json_t *j = json_pack("{s:s, s:I, s:I, s:s, s:s, s:s, s:o, s:I, s:I, s:s}", "input", cmr_input_name(input),
				      "index", (json_int_t)rec->index, "offset", (json_int_t)rec->offset, "type",
				      cmr_type_name(rec->type), "kind", kn ? kn : kind, "dtype", dn ? dn : dt, "shape", dims,
				      "bytes", (json_int_t)rec->nbytes, "stored", (json_int_t)rec->stored_len, "key", rec->key);
		char *s = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
		if (!s)
			cmr_die("out of memory (or a key that is not UTF-8)");
		printf("%s\n", s);
		free(s);
		json_decref(j);
	} else
		printf("%6" PRIu64 " %10" PRIu64 " %-6s %-11s %-5s %-18s %10" PRIu64 " %10" PRIu64 " %s\n",
		       rec->index, rec->offset, cmr_type_name(rec->type), kn ? kn : kind, dn ? dn : dt, shape,
		       rec->nbytes, rec->stored_len, rec->key);
	check_stdout();
	return 0;
}

/* ---- show ---- */
static void print_elem(const cmr_record *rec, uint64_t i)
{
	const uint8_t *p = rec->data;
	switch (rec->dtype) {
	case CMR_DTYPE_U8: printf("%u", p[i]); break;
	case CMR_DTYPE_I8: printf("%d", ((const int8_t *)p)[i]); break;
	case CMR_DTYPE_U16: printf("%u", ((const uint16_t *)p)[i]); break;
	case CMR_DTYPE_I16: printf("%d", ((const int16_t *)p)[i]); break;
	case CMR_DTYPE_U32: printf("%" PRIu32, ((const uint32_t *)p)[i]); break;
	case CMR_DTYPE_I32: printf("%" PRId32, ((const int32_t *)p)[i]); break;
	case CMR_DTYPE_I64: printf("%" PRId64, ((const int64_t *)p)[i]); break;
	case CMR_DTYPE_F16: printf("%.9g", (double)cmr_f16_to_f32(((const uint16_t *)p)[i])); break;
	case CMR_DTYPE_BF16: printf("%.9g", (double)cmr_bf16_to_f32(((const uint16_t *)p)[i])); break;
	case CMR_DTYPE_F32: printf("%.9g", (double)((const float *)p)[i]); break;
	case CMR_DTYPE_F64: printf("%.17g", ((const double *)p)[i]); break;
	}
}

static int show_one(const cmr_record *rec, const char *input, void *ctx)
{
	struct opts *o = ctx;
	if (rec->type != CMR_TYPE_TENSOR || !key_selected(o, rec))
		return 0;
	char shape[80];
	shape_text(rec, shape, sizeof shape);
	const char *kn = cmr_kind_name(rec->kind);
	printf("%s\t%s\t%s\t%s\n", rec->key, kn ? kn : "unknown", cmr_dtype_name(rec->dtype), shape);
	if (rec->kind == CMR_KIND_HITS) { /* rank, key, score per hit, not the payload's bytes */
		const char *why;
		int64_t nh = cmr_hits_decode(rec, NULL, 0, &why);
		cmr_hit *h = nh > 0 ? malloc((size_t)nh * sizeof *h) : NULL;
		if (nh < 0 || (nh > 0 && !h) || (nh > 0 && cmr_hits_decode(rec, h, (size_t)nh, &why) < 0))
			cmr_die("%s: record %" PRIu64 " (key '%s'): %s", input, rec->index, rec->key, nh < 0 ? why : "out of memory");
		int64_t shown = (o->limit < 0 || o->limit > nh) ? nh : o->limit;
		for (int64_t i = 0; i < shown; i++)
			printf("%" PRId64 "\t%.*s\t%.6g\n", i + 1, (int)h[i].len, h[i].key, (double)h[i].score);
		if (shown < nh)
			printf("... (%" PRId64 " more hits; -a shows all)\n", nh - shown);
		free(h);
		check_stdout();
		return 0;
	}
	uint64_t n = cmr_record_nelem(rec);
	uint64_t row = rec->rank ? rec->dims[rec->rank - 1] : 1;
	uint64_t shown = (o->limit < 0 || (uint64_t)o->limit > n) ? n : (uint64_t)o->limit;
	for (uint64_t i = 0; i < shown; i++) {
		print_elem(rec, i);
		putchar((i + 1) % row == 0 || i + 1 == shown ? '\n' : ' ');
	}
	if (shown < n)
		printf("... (%" PRIu64 " more values; -a shows all)\n", n - shown);
	check_stdout();
	return 0;
}

/* ---- meta ---- */
static int meta_one(const cmr_record *rec, const char *input, void *ctx)
{
	(void)ctx;
	if (rec->type != CMR_TYPE_META)
		return 0;
	json_error_t jerr;
	json_t *j = json_loadb(rec->data, rec->nbytes, 0, &jerr);
	if (!j)
		cmr_die("%s: record %" PRIu64 ", byte %" PRIu64 ": metadata is not valid JSON: %s "
			"(at character %d)",
			input, rec->index, rec->offset, jerr.text, jerr.position);
	char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
	json_decref(j);
	if (!s)
		cmr_die("out of memory");
	printf("%s\n", s);
	free(s);
	check_stdout();
	return 0;
}

/* ---- verify ---- */
static int count_one(const cmr_record *rec, const char *input, void *ctx)
{
	(void)rec;
	(void)input;
	(*(uint64_t *)ctx)++;
	return 0;
}

/* ---- to-npy ---- */
struct to_npy {
	struct opts *o;
	cmr_output out, keys, meta;
	cmr_writer *meta_w;
	uint64_t n;
	cmr_record first; /* shape of the first tensor record (data not kept) */
	long header_len;
};

static int to_npy_one(const cmr_record *rec, const char *input, void *ctx)
{
	struct to_npy *t = ctx;
	if (rec->type == CMR_TYPE_META) {
		if (t->meta_w && cmr_writer_put(t->meta_w, rec) < 0)
			cmr_die_writer(t->meta_w);
		return 0;
	}
	if (!key_selected(t->o, rec))
		return 0;
	if (t->n == 0) {
		t->first = *rec;
		if (!cmr_npy_descr(rec->dtype)) {
			cmr_error("%s: record %" PRIu64 " (key '%s'): dtype %s has no NumPy equivalent",
				  input, rec->index, rec->key, cmr_dtype_name(rec->dtype));
			cmr_hint("convert it to f32 first");
			cmr_die("nothing written");
		}
		/* The header needs N: write one sized for the largest N, rewritten at the end. */
		uint64_t shape[CMR_NPY_MAXDIM];
		int nd = 0;
		if (!t->o->nkeys)
			shape[nd++] = UINT64_MAX;
		for (int i = 0; i < rec->rank; i++)
			shape[nd++] = rec->dims[i];
		t->header_len = cmr_npy_write_header(t->out.f, rec->dtype, nd, shape, 0);
		if (t->header_len < 0)
			cmr_die_write(t->out.name, errno);
	} else {
		if (t->o->nkeys)
			cmr_die("%s: record %" PRIu64 ": key '%s' occurs more than once", input,
				rec->index, rec->key);
		int same = rec->dtype == t->first.dtype && rec->rank == t->first.rank &&
			   memcmp(rec->dims, t->first.dims, sizeof rec->dims) == 0;
		if (!same) {
			char a[80], b[80];
			shape_text(rec, a, sizeof a);
			shape_text(&t->first, b, sizeof b);
			cmr_error("%s: record %" PRIu64 " (key '%s'): %s %s differs from the first "
				  "record's %s %s", input, rec->index, rec->key,
				  cmr_dtype_name(rec->dtype), a, cmr_dtype_name(t->first.dtype), b);
			cmr_hint("to-npy stacks records of one shape; pick one with -k KEY");
			cmr_die("nothing written");
		}
	}
	if (rec->nbytes && fwrite(rec->data, 1, rec->nbytes, t->out.f) != rec->nbytes)
		cmr_die_write(t->out.name, errno);
	if (t->keys.f && fprintf(t->keys.f, "%s\n", rec->key) < 0)
		cmr_die_write(t->keys.name, errno);
	t->n++;
	return 0;
}

static void to_npy(struct opts *o)
{
	struct to_npy t;
	memset(&t, 0, sizeof t);
	t.o = o;
	if (!o->nkeys && (!o->output || strcmp(o->output, "-") == 0))
		cmr_usage_error("to-npy needs -o FILE to write a stacked array (the header holds N)");
	cmr_output_open(&t.out, o->output, 1);
	if (o->keys_file)
		cmr_output_open(&t.keys, o->keys_file, 0);
	if (o->meta_file) {
		cmr_output_open(&t.meta, o->meta_file, 1);
		t.meta_w = cmr_writer_new(t.meta.f, t.meta.name, 0);
	}
	cmr_each_record(o->inputs, o->ninputs, to_npy_one, &t);
	if (t.n == 0)
		cmr_die("no tensor records%s%s%s", o->nkeys ? " with key '" : "",
			o->nkeys ? o->keys[0] : "", o->nkeys ? "'" : "");
	if (!o->nkeys) {
		/* rewrite the header with the real N, padded to the placeholder's length */
		uint64_t shape[CMR_NPY_MAXDIM];
		int nd = 0;
		shape[nd++] = t.n;
		for (int i = 0; i < t.first.rank; i++)
			shape[nd++] = t.first.dims[i];
		if (fflush(t.out.f) != 0 || fseek(t.out.f, 0, SEEK_SET) != 0 ||
		    cmr_npy_write_header(t.out.f, t.first.dtype, nd, shape, (size_t)t.header_len) !=
			    t.header_len)
			cmr_die_write(t.out.name, errno);
	}
	if (t.meta_w) {
		if (cmr_writer_finish(t.meta_w) < 0)
			cmr_die_writer(t.meta_w);
		cmr_writer_free(t.meta_w);
		cmr_output_commit(&t.meta);
	}
	if (t.keys.f)
		cmr_output_commit(&t.keys);
	cmr_output_commit(&t.out);
	cmr_info("wrote %" PRIu64 " records to %s", t.n, t.out.name);
}

/* ---- from-npy ---- */
static char **read_keys(const char *path, uint64_t *n)
{
	FILE *f = cmr_open_input(path, 0);
	char **keys = NULL;
	size_t cap = 0;
	*n = 0;
	char *line = NULL;
	size_t lcap = 0;
	ssize_t len;
	while ((len = getline(&line, &lcap, f)) >= 0) {
		if (len > 0 && line[len - 1] == '\n')
			line[--len] = 0;
		const char *why;
		if (len == 0)
			why = "empty";
		else if (cmr_key_check(line, (size_t)len, &why) == 0)
			why = NULL;
		if (why)
			cmr_die("%s: line %" PRIu64 ": bad key: %s", cmr_input_name(path), *n + 1, why);
		if (*n == cap) {
			cap = cap ? 2 * cap : 1024;
			keys = realloc(keys, cap * sizeof *keys);
			if (!keys)
				cmr_die("out of memory");
		}
		if (!(keys[(*n)++] = strdup(line)))
			cmr_die("out of memory");
	}
	if (ferror(f))
		cmr_die("%s: read error: %s", cmr_input_name(path), strerror(errno));
	free(line);
	cmr_close_input(f, path);
	return keys;
}

static void from_npy(struct opts *o, int argc, char **argv)
{
	const char *path = o->inputs[0];
	const char *name = cmr_input_name(path);
	FILE *f = cmr_open_input(path, 1);
	cmr_npy h;
	char err[256];
	if (cmr_npy_read_header(f, &h, err, sizeof err) < 0)
		cmr_die("%s: %s", name, err);
	int split = o->single_key == NULL;
	if (split && h.ndim == 0)
		cmr_die("%s: a 0-d array has no first axis to split; use --key KEY", name);
	int rank = split ? h.ndim - 1 : h.ndim;
	if (rank > CMR_RANK_MAX)
		cmr_die("%s: shape has %d dimensions; records have at most %d%s", name, h.ndim,
			CMR_RANK_MAX, split ? " below the first axis" : "");
	uint32_t dims[CMR_RANK_MAX] = {0};
	uint64_t nrec = split ? h.shape[0] : 1;
	uint64_t esize = cmr_dtype_size(h.dtype), per = esize;
	for (int i = 0; i < rank; i++) {
		uint64_t d = h.shape[i + split];
		if (d > CMR_DIM_MAX)
			cmr_die("%s: dimension %" PRIu64 " is over the limit of %u", name, d, CMR_DIM_MAX);
		dims[i] = (uint32_t)d;
		per *= d;
		if (per > CMR_PAYLOAD_MAX)
			cmr_die("%s: one record would exceed the payload limit of %llu bytes", name,
				(unsigned long long)CMR_PAYLOAD_MAX);
	}
	char **keys = NULL;
	uint64_t nkeys = 0;
	if (o->keys_file) {
		keys = read_keys(o->keys_file, &nkeys);
		if (nkeys != nrec)
			cmr_die("%s has %" PRIu64 " keys but %s has %" PRIu64 " rows",
				cmr_input_name(o->keys_file), nkeys, name, nrec);
	}
	cmr_output out;
	cmr_output_open(&out, o->output, 1);
	cmr_writer *w = cmr_writer_new(out.f, out.name, o->level);
	if (!w)
		cmr_die("out of memory");
	if (o->meta_file) {
		FILE *mf = cmr_open_input(o->meta_file, 1);
		cmr_reader *mr = cmr_reader_new(mf, cmr_input_name(o->meta_file));
		cmr_record m;
		int rc;
		while ((rc = cmr_reader_next(mr, &m)) == 1) {
			if (m.type != CMR_TYPE_META)
				cmr_die("%s: record %" PRIu64 " is not a metadata record",
					cmr_input_name(o->meta_file), m.index);
			if (cmr_writer_put(w, &m) < 0)
				cmr_die_writer(w);
		}
		if (rc < 0)
			cmr_die_reader(mr);
		cmr_reader_free(mr);
		cmr_close_input(mf, o->meta_file);
	}
	if (!o->no_provenance) {
		const char *ins[3] = {path};
		int nin = 1;
		if (o->keys_file)
			ins[nin++] = o->keys_file;
		if (o->meta_file)
			ins[nin++] = o->meta_file;
		char *prov = cmr_provenance(argc, argv, ins, nin);
		cmr_writer_set_provenance(w, tool.name, prov);
		free(prov);
	}
	void *buf = malloc(per ? per : 1);
	if (!buf)
		cmr_die("out of memory");
	for (uint64_t i = 0; i < nrec; i++) {
		if (per && fread(buf, 1, per, f) != per)
			cmr_die("%s: truncated data: row %" PRIu64 " of %" PRIu64 " is incomplete", name,
				i, nrec);
		if (h.swap)
			cmr_swap_elems(buf, per, esize);
		char keybuf[32];
		const char *key = o->single_key;
		if (!key) {
			snprintf(keybuf, sizeof keybuf, "%" PRIu64, i);
			key = keys ? keys[i] : keybuf;
		}
		cmr_record rec;
		if (cmr_record_tensor(&rec, o->kind, h.dtype, rank, dims, key, buf) < 0)
			cmr_die("--key: key is longer than %d bytes", CMR_KEY_MAX);
		if (cmr_writer_put(w, &rec) < 0)
			cmr_die_writer(w);
	}
	if (fgetc(f) != EOF)
		cmr_warn("%s: bytes after the array's data are ignored", name);
	if (cmr_writer_finish(w) < 0)
		cmr_die_writer(w);
	cmr_writer_free(w);
	cmr_output_commit(&out);
	free(buf);
	for (uint64_t i = 0; i < nkeys; i++)
		free(keys[i]);
	free(keys);
	cmr_close_input(f, path);
}

/* ---- diff ---- */
static double elem(const cmr_record *rec, uint64_t i)
{
	const uint8_t *p = rec->data;
	switch (rec->dtype) {
	case CMR_DTYPE_U8: return p[i];
	case CMR_DTYPE_I8: return ((const int8_t *)p)[i];
	case CMR_DTYPE_U16: return ((const uint16_t *)p)[i];
	case CMR_DTYPE_I16: return ((const int16_t *)p)[i];
	case CMR_DTYPE_U32: return ((const uint32_t *)p)[i];
	case CMR_DTYPE_I32: return ((const int32_t *)p)[i];
	case CMR_DTYPE_I64: return (double)((const int64_t *)p)[i];
	case CMR_DTYPE_F16: return cmr_f16_to_f32(((const uint16_t *)p)[i]);
	case CMR_DTYPE_BF16: return cmr_bf16_to_f32(((const uint16_t *)p)[i]);
	case CMR_DTYPE_F32: return ((const float *)p)[i];
	default: return ((const double *)p)[i];
	}
}

/* Next tensor record of r, or 0 at the end. */
static int next_tensor(cmr_reader *r, cmr_record *rec)
{
	int rc;
	while ((rc = cmr_reader_next(r, rec)) == 1 && rec->type != CMR_TYPE_TENSOR)
		;
	if (rc < 0)
		cmr_die_reader(r);
	return rc;
}

static int diff(struct opts *o)
{
	FILE *fa = cmr_open_input(o->inputs[0], 1), *fb = cmr_open_input(o->inputs[1], 1);
	const char *na = cmr_input_name(o->inputs[0]), *nb = cmr_input_name(o->inputs[1]);
	if (fa == stdin && fb == stdin)
		cmr_usage_error("diff: only one of the two streams can be standard input");
	cmr_reader *ra = cmr_reader_new(fa, na), *rb = cmr_reader_new(fb, nb);
	cmr_record a, b;
	double all_max = 0, all_sum = 0, all_rel = 0, all_norm = 0;
	uint64_t all_n = 0, records = 0;
	printf("%-40s %12s %12s %12s %12s\n", "key", "max_abs", "mean_abs", "max_rel", "rel_norm");
	for (;;) {
		int ha = next_tensor(ra, &a);
		/* a's data stay valid while b is read: they are different readers */
		int hb = next_tensor(rb, &b);
		if (!ha && !hb)
			break;
		if (ha != hb)
			cmr_die("%s has more tensor records than %s (%" PRIu64 " paired)", ha ? na : nb,
				ha ? nb : na, records);
		char sa[80], sb[80];
		shape_text(&a, sa, sizeof sa);
		shape_text(&b, sb, sizeof sb);
		if (strcmp(a.key, b.key) != 0 || a.kind != b.kind || strcmp(sa, sb) != 0)
			cmr_die("record %" PRIu64 " differs in key, kind or shape: %s: '%s' %s, %s: '%s' %s",
				records, na, a.key, sa, nb, b.key, sb);
		double mx = 0, sum = 0, rel = 0, dd = 0, aa = 0;
		uint64_t n = cmr_record_nelem(&a);
		for (uint64_t i = 0; i < n; i++) {
			double x = elem(&a, i), y = elem(&b, i), d = fabs(x - y);
			double m = fmax(fmax(fabs(x), fabs(y)), 1e-30);
			if (isnan(x) != isnan(y))
				d = INFINITY;
			else if (isnan(x))
				d = 0;
			mx = fmax(mx, d);
			rel = fmax(rel, d / m);
			sum += d;
			dd += d * d;
			aa += x * x;
		}
		double nrm = dd == 0 ? 0 : aa > 0 ? sqrt(dd / aa) : INFINITY;
		printf("%-40s %12.6g %12.6g %12.6g %12.6g\n", a.key, mx, n ? sum / (double)n : 0.0, rel, nrm);
		check_stdout();
		all_max = fmax(all_max, mx);
		all_rel = fmax(all_rel, rel);
		all_norm = fmax(all_norm, nrm);
		all_sum += sum;
		all_n += n;
		records++;
	}
	double mean = all_n ? all_sum / (double)all_n : 0.0;
	printf("%-40s %12.6g %12.6g %12.6g %12.6g\n", "(all)", all_max, mean, all_rel, all_norm);
	cmr_reader_free(ra);
	cmr_reader_free(rb);
	cmr_close_input(fa, o->inputs[0]);
	cmr_close_input(fb, o->inputs[1]);
	int bad = 0;
	if (o->tol_max >= 0 && all_max > o->tol_max) {
		cmr_error("max absolute difference %g exceeds %g", all_max, o->tol_max);
		bad = 1;
	}
	if (o->tol_mean >= 0 && mean > o->tol_mean) {
		cmr_error("mean absolute difference %g exceeds %g", mean, o->tol_mean);
		bad = 1;
	}
	if (o->tol_norm >= 0 && all_norm > o->tol_norm) {
		cmr_error("relative norm of a difference %g exceeds %g", all_norm, o->tol_norm);
		bad = 1;
	}
	if (o->tol_rel >= 0 && all_rel > o->tol_rel) {
		cmr_error("max relative difference %g exceeds %g", all_rel, o->tol_rel);
		bad = 1;
	}
	return bad ? CMR_EXIT_FAILURE : CMR_EXIT_OK;
}

int main(int argc, char **argv)
{
	struct opts o;
	cmr_init(argc, argv, &tool);
	parse_cmdline(argc, argv, &o);
	uint64_t count = 0;
	int status = CMR_EXIT_OK;
	switch (o.cmd) {
	case CMD_LIST:
		if (!o.no_header && !o.json)
			printf("%6s %10s %-6s %-11s %-5s %-18s %10s %10s %s\n", "#", "offset", "type",
			       "kind", "dtype", "shape", "bytes", "stored", "key");
		cmr_each_record(o.inputs, o.ninputs, list_one, &o);
		break;
	case CMD_SHOW: cmr_each_record(o.inputs, o.ninputs, show_one, &o); break;
	case CMD_META: cmr_each_record(o.inputs, o.ninputs, meta_one, &o); break;
	case CMD_VERIFY:
		cmr_each_record(o.inputs, o.ninputs, count_one, &count);
		printf("%" PRIu64 " records ok\n", count);
		break;
	case CMD_DIFF: status = diff(&o); break;
	case CMD_TO_NPY: to_npy(&o); break;
	case CMD_FROM_NPY: from_npy(&o, argc, argv); break;
	}
	free(o.keys);
	return cmr_exit(status);
}
