/* fe.c - shared front end of the cmr tools: messages, options, files, signals, provenance. */
#include "fe.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <time.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "backend/backend.h"
#include "model/clip.h"
#include "util.h"
#include "eval.h"
#include "format/half.h"

const char *cmr_progname = "cmr";
int cmr_verbose;
static const cmr_tool *the_tool;
static cmr_exit_hook exit_hook;

/* ---- temporary outputs, removed on failure and on signals (atomic.h) ---- */
static void tmp_remove_all(void) { cmr_atomic_remove_all(); }

static void on_signal(int sig)
{
	tmp_remove_all();
	signal(sig, SIG_DFL);
	raise(sig);
}

static _Noreturn void do_exit(int status)
{
	tmp_remove_all();
	if (exit_hook)
		exit_hook(status);
	exit(status);
}

void cmr_set_exit_hook(cmr_exit_hook hook) { exit_hook = hook; }

/* ---- messages ---- */
static int stdout_closed;

static cmr_progress *active_progress; /* a line to clear before a message */

static void vmsg(const char *prefix, const char *fmt, va_list ap)
{
	if (!stdout_closed)
		fflush(stdout);
	if (active_progress)
		cmr_progress_clear(active_progress);
	fprintf(stderr, "%s: %s", cmr_progname, prefix);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

void cmr_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vmsg("", fmt, ap);
	va_end(ap);
}

void cmr_warn(const char *fmt, ...)
{
	va_list ap;
	if (cmr_verbose < 0)
		return;
	va_start(ap, fmt);
	vmsg("warning: ", fmt, ap);
	va_end(ap);
}

void cmr_info(const char *fmt, ...)
{
	va_list ap;
	if (cmr_verbose < 1)
		return;
	va_start(ap, fmt);
	vmsg("", fmt, ap);
	va_end(ap);
}

void cmr_hint(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "hint: ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

void cmr_die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vmsg("", fmt, ap);
	va_end(ap);
	do_exit(CMR_EXIT_FAILURE);
}

void cmr_usage_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vmsg("", fmt, ap);
	va_end(ap);
	fprintf(stderr, "Try '%s --help' for more information.\n", cmr_progname);
	do_exit(CMR_EXIT_USAGE);
}

void cmr_die_write(const char *what, int err)
{
	if (err == EPIPE) {
		/* The reader went away (e.g. "| head"): end quietly, as if killed by SIGPIPE,
		 * so that shells see status 141 and pipelines stop. */
		tmp_remove_all();
		signal(SIGPIPE, SIG_DFL);
		raise(SIGPIPE);
	}
	cmr_die("write error on %s: %s", what, strerror(err));
}

/* ---- init and options ---- */
void cmr_print_usage(FILE *f)
{
	const char *s = the_tool->synopsis;
	int first = 1;
	while (*s) {
		const char *nl = strchr(s, '\n');
		size_t n = nl ? (size_t)(nl - s) : strlen(s);
		fprintf(f, "%s %s %.*s\n", first ? "Usage:" : "      ", the_tool->name, (int)n, s);
		first = 0;
		s += n + (nl != NULL);
	}
}

static void print_help(void)
{
	cmr_print_usage(stdout);
	fputs(the_tool->help, stdout);
	printf("\nCommon options:\n"
	       "  -h, --help      print this help and exit\n"
	       "  -V, --version   print the version and exit\n"
	       "  -v, --verbose   say more on standard error\n"
	       "  -q, --quiet     say only errors\n"
	       "\nExit status: 0 success, 1 failure, 2 usage error. See %s(1).\n",
	       the_tool->name);
}

static void print_version(void)
{
	printf("%s (cmr) %s\n", the_tool->name, CMR_VERSION_STRING);
	printf("stream format version %d (reads %d to %d)\n", CMR_VERSION, CMR_VERSION_MIN,
	       CMR_VERSION);
	char dev[160];
	if (cmr_cuda_built()) {
		int n = cmr_cuda_devices(dev, sizeof dev);
		printf("backends: cpu, cuda (%d device%s: %s)\n", n, n == 1 ? "" : "s", dev);
	} else {
		printf("backends: cpu (built without CUDA)\n");
	}
}

/* OpenMP's threads (libgomp) spin for a while before they sleep, unless OMP_WAIT_POLICY says
 * otherwise, and libgomp reads it only as the program starts: on a loaded machine (2 cores
 * shared with other work) spinning threads take the cores from the ones with work, a
 * training step under one competing process taking twice as long. So a tool started
 * without the variable sets it to PASSIVE and starts itself again, once (the same process:
 * pid, files and arguments are kept). Setting OMP_WAIT_POLICY, to anything, keeps the
 * choice with the user (and keeps tools under valgrind, which would not follow the exec). */
static void passive_threads(char **argv)
{
	if (getenv("OMP_WAIT_POLICY"))
		return;
	if (setenv("OMP_WAIT_POLICY", "PASSIVE", 1) == 0)
		execv("/proc/self/exe", argv);
	/* no /proc, or exec failed: go on as we are */
}

void cmr_init(int argc, char **argv, const cmr_tool *tool)
{
	passive_threads(argv);
	the_tool = tool;
	cmr_progname = tool->name;
	signal(SIGPIPE, SIG_IGN);
	int sigs[] = {SIGINT, SIGTERM, SIGHUP};
	for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_handler = on_signal;
		sigemptyset(&sa.sa_mask);
		sigaction(sigs[i], &sa, NULL);
	}
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			break;
		if (strcmp(argv[i], "--help") == 0) {
			print_help();
			exit(cmr_exit(CMR_EXIT_OK));
		}
		if (strcmp(argv[i], "--version") == 0) {
			print_version();
			exit(cmr_exit(CMR_EXIT_OK));
		}
	}
}

int cmr_common_option(int c)
{
	switch (c) {
	case 'h':
		print_help();
		exit(cmr_exit(CMR_EXIT_OK));
	case 'V':
		print_version();
		exit(cmr_exit(CMR_EXIT_OK));
	case 'v':
		cmr_verbose++;
		return 1;
	case 'q':
		cmr_verbose = -1;
		return 1;
	case CMR_OPT_FORCE:
		cmr_force_mix = 1;
		return 1;
	case '?':
	case ':':
		/* getopt has printed "prog: unrecognized option" already */
		fprintf(stderr, "Try '%s --help' for more information.\n", cmr_progname);
		do_exit(CMR_EXIT_USAGE);
	default:
		return 0;
	}
}

/* ---- progress ---- */
static double mono_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void cmr_progress_start(cmr_progress *p, const char *what, uint64_t total)
{
	memset(p, 0, sizeof *p);
	const char *env = getenv("CMR_PROGRESS"); /* 1: also into a log (batch jobs), 0: never */
	p->forced = env && strcmp(env, "1") == 0;
	p->on = cmr_verbose >= 0 && (p->forced || (isatty(STDERR_FILENO) && !(env && strcmp(env, "0") == 0)));
	p->t0 = p->last = mono_now();
	p->total = total;
	p->what = what;
	if (p->on)
		active_progress = p;
}

static void progress_draw(cmr_progress *p, uint64_t done, double t, const char *end)
{
	uint64_t ran = done > p->base ? done - p->base : 0;
	double el = t - p->t0, rate = el > 0 ? (double)ran / el : 0;
	char tot[32] = "", eta[48] = "";
	if (p->total)
		snprintf(tot, sizeof tot, "/%" PRIu64, p->total);
	if (p->total && rate > 0 && done < p->total) {
		double left = (double)(p->total - done) / rate;
		snprintf(eta, sizeof eta, ", %.0f:%02.0f left", floor(left / 60), fmod(left, 60));
	}
	fprintf(stderr, "\r%s: %" PRIu64 "%s %s, %.1f/s%s%s%s\033[K%s", cmr_progname, done, tot, p->what, rate, eta,
		p->detail[0] ? ", " : "", p->detail, end);
	p->shown = 1;
}

void cmr_progress_detail(cmr_progress *p, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(p->detail, sizeof p->detail, fmt, ap);
	va_end(ap);
}

void cmr_progress_update(cmr_progress *p, uint64_t done)
{
	if (!p->on)
		return;
	double t = mono_now();
	if (t - p->last < 0.5)
		return;
	p->last = t;
	progress_draw(p, done, t, "");
}

void cmr_progress_clear(cmr_progress *p)
{
	if (!p)
		p = active_progress;
	if (p && p->on && p->shown) {
		fputs("\r\033[K", stderr);
		p->shown = 0;
	}
}

void cmr_progress_end(cmr_progress *p, uint64_t done)
{
	if (p->on && (p->shown || p->forced || mono_now() - p->t0 > 1.0))
		progress_draw(p, done, mono_now(), "\n");
	p->on = 0;
	if (active_progress == p)
		active_progress = NULL;
}

void cmr_progress_stop(cmr_progress *p)
{
	cmr_progress_clear(p);
	p->on = 0;
	if (active_progress == p)
		active_progress = NULL;
}

static uint64_t nskips;

void cmr_skip(const char *where, const char *msg)
{
	if (nskips++ < CMR_SKIPS_SHOWN)
		cmr_error("%s: %s (skipped)", where, msg);
}

uint64_t cmr_skips(void) { return nskips; }

void cmr_skips_summary(void)
{
	if (nskips > CMR_SKIPS_SHOWN)
		cmr_error("%" PRIu64 " more skipped, not shown (the first %d are above)", nskips - CMR_SKIPS_SHOWN,
			  CMR_SKIPS_SHOWN);
}

const char *cmr_parse_model(const char *arg)
{
	static char out[4][8192]; /* for the tool's life: a few -m options at most */
	static int n;
	char err[16384];
	if (n == 4)
		cmr_usage_error("-m given more than 4 times");
	if (cmr_model_resolve(arg, out[n], sizeof out[n], err, sizeof err) < 0)
		cmr_die("%s", err);
	if (strcmp(out[n], arg) != 0)
		cmr_info("%s: %s", arg, out[n]);
	return out[n++];
}

int cmr_parse_score(const char *s)
{
	if (strcmp(s, "maxsim-mean") == 0)
		return 1;
	if (strcmp(s, "cosine") != 0)
		cmr_usage_error("--score: '%s' is not cosine or maxsim-mean", s);
	return 0;
}

long long cmr_parse_int(const char *opt, const char *s, long long min, long long max)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno || end == s || *end)
		cmr_usage_error("%s: '%s' is not an integer", opt, s);
	if (v < min || v > max)
		cmr_usage_error("%s: %lld is outside %lld..%lld", opt, v, min, max);
	return v;
}

double cmr_parse_double(const char *opt, const char *s, double min, double max)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || v != v)
		cmr_usage_error("%s: '%s' is not a number", opt, s);
	if (v < min || v > max)
		cmr_usage_error("%s: %g is outside %g..%g", opt, v, min, max);
	return v;
}

const cmr_ops *cmr_parse_backend(const char *s)
{
	if (strcmp(s, "list") == 0) { /* name, what, and whether it can start here */
		for (int i = 0; cmr_backends[i]; i++) {
			const cmr_ops *o = cmr_backends[i];
			char why[256] = "";
			int ok = !o->open || o->open(0, CMR_PREC_FP32, why, sizeof why) == 0;
			printf("%s\t%s\t%s%s\n", o->name, o->what, ok ? "ok" : "unavailable: ", ok ? "" : why);
		}
		exit(cmr_exit(CMR_EXIT_OK));
	}
	const cmr_ops *o = cmr_ops_find(s);
	if (!o)
		cmr_usage_error("--backend: '%s' is not one of this build's backends (%s; --backend list)", s,
				cmr_ops_names());
	return o;
}

int cmr_parse_precision(const char *s)
{
	static const char *const names[] = {"fp32", "tf32", "bf16"};
	for (int i = 0; i < 3; i++)
		if (strcmp(s, names[i]) == 0)
			return i; /* CMR_PREC_FP32, _TF32, _BF16 */
	cmr_usage_error("--precision: '%s' is not fp32, tf32 or bf16", s);
}

void cmr_start_backend(const cmr_ops *ops, int device, int precision)
{
	char err[512];
	if (cmr_ops_open(ops, device, precision, err, sizeof err) < 0) {
		if (!ops->open)
			cmr_usage_error("%s", err);
		cmr_die("%s", err);
	}
}

void cmr_die_batch(const cmr_ops *ops, int batch, int fits)
{
	char dev[128] = "", fit[96];
	if (ops->meminfo) {
		size_t f = 0, t = 0;
		ops->meminfo(&f, &t);
		snprintf(dev, sizeof dev, " (%.1f of %.1f GiB of the device free)", f / 1073741824.0, t / 1073741824.0);
	}
	if (fits > 0)
		snprintf(fit, sizeof fit, "; a batch of %d fits: give -b %d", fits, fits);
	else
		snprintf(fit, sizeof fit, "; not even a batch of 1 fits");
	cmr_die("out of %s memory for a batch of %d%s%s", ops->meminfo ? ops->name : "host", batch, dev, fit);
}

/* ---- files ---- */
const char *cmr_input_name(const char *path)
{
	return (!path || strcmp(path, "-") == 0) ? "(stdin)" : path;
}

FILE *cmr_open_input(const char *path, int binary)
{
	if (!path || strcmp(path, "-") == 0) {
		if (binary && isatty(STDIN_FILENO)) {
			cmr_error("refusing to read binary data from a terminal");
			cmr_hint("give a file name, or pipe a stream in: cmr-decode ... | %s", cmr_progname);
			do_exit(CMR_EXIT_USAGE);
		}
		return stdin;
	}
	FILE *f = fopen(path, binary ? "rb" : "r");
	if (!f)
		cmr_die("%s: %s", path, strerror(errno));
	struct stat st;
	if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode))
		cmr_die("%s: is a directory", path);
	return f;
}

void cmr_close_input(FILE *f, const char *path)
{
	if (f != stdin)
		fclose(f);
	(void)path;
}

void cmr_output_open(cmr_output *out, const char *path, int binary)
{
	memset(out, 0, sizeof *out);
	if (!path || strcmp(path, "-") == 0) {
		if (binary && isatty(STDOUT_FILENO)) {
			cmr_error("refusing to write binary data to a terminal");
			cmr_hint("redirect it (> file.cmr), pipe it (| cmr-dump), or use -o FILE");
			do_exit(CMR_EXIT_USAGE);
		}
		out->f = stdout;
		out->name = "(stdout)";
		return;
	}
	char err[4300];
	if (cmr_atomic_open(&out->at, path, err, sizeof err) < 0)
		cmr_die("%s", err);
	out->file = 1;
	out->f = out->at.f;
	out->name = out->at.path;
}

void cmr_output_commit(cmr_output *out)
{
	if (!out->file) {
		if (fflush(out->f) != 0 || ferror(out->f))
			cmr_die_write("standard output", errno ? errno : EIO);
		return;
	}
	char err[9000];
	out->f = NULL;
	out->name = "(committed)";
	if (cmr_atomic_commit(&out->at, err, sizeof err) < 0)
		cmr_die("%s", err);
	out->file = 0;
}

void cmr_output_abort(cmr_output *out)
{
	if (out->file)
		cmr_atomic_abort(&out->at);
	memset(out, 0, sizeof *out);
}

int cmr_exit(int status)
{
	errno = 0;
	if (fflush(stdout) != 0 || ferror(stdout))
		cmr_die_write("standard output", errno ? errno : EIO);
	/* close so that a failing close (e.g. NFS, full disk) is seen too */
	stdout_closed = 1;
	if (fclose(stdout) != 0 && errno != EBADF)
		cmr_die_write("standard output", errno);
	return status;
}

void cmr_die_reader(cmr_reader *r) { cmr_die("%s", cmr_reader_error(r)); }

void cmr_each_record(char *const *inputs, int n, cmr_record_fn fn, void *ctx)
{
	for (int i = 0; i < (n ? n : 1); i++) {
		const char *path = n ? inputs[i] : "-";
		FILE *f = cmr_open_input(path, 1);
		cmr_reader *r = cmr_reader_new(f, cmr_input_name(path));
		if (!r)
			cmr_die("out of memory");
		cmr_record rec;
		int rc, stop = 0;
		while (!stop && (rc = cmr_reader_next(r, &rec)) == 1)
			stop = fn(&rec, cmr_input_name(path), ctx);
		if (!stop && rc < 0)
			cmr_die_reader(r);
		if (cmr_reader_skipped(r))
			cmr_info("%s: skipped %llu records of unknown types", cmr_input_name(path),
				 (unsigned long long)cmr_reader_skipped(r));
		cmr_reader_free(r);
		cmr_close_input(f, path);
	}
}

void cmr_die_writer(cmr_writer *w)
{
	int err = errno;
	if (err == EPIPE)
		cmr_die_write("standard output", err);
	cmr_die("%s", cmr_writer_error(w));
}

struct read_emb {
	uint32_t want;
	const char *owner;
	cmr_vecs *vs;
	cmr_origins *org;
	const char *input;
	float *buf;
};

static int take_embedding(const cmr_record *rec, const char *input, void *ctx)
{
	struct read_emb *e = ctx;
	if (e->org && input != e->input) {
		cmr_origins_input(e->org);
		e->input = input;
	}
	if (rec->type == CMR_TYPE_META && rec->kind == CMR_KIND_PROVENANCE && e->org)
		cmr_origins_provenance(e->org, rec->key, rec->data, (size_t)rec->nbytes, input);
	if (rec->type != CMR_TYPE_TENSOR)
		return 0;
	const char *why = "not an f32 or f16 embedding [D]";
	if (rec->kind != CMR_KIND_EMBEDDING || rec->rank != 1)
		cmr_die("%s: record %llu (key '%s'): %s", input, (unsigned long long)rec->index, rec->key, why);
	uint32_t d = rec->dims[0];
	uint32_t want = e->want ? e->want : e->vs->n ? e->vs->dim : d;
	if (d != want)
		cmr_die("%s: record %llu (key '%s'): dimension %u, %s has %u: not the same model?", input,
			(unsigned long long)rec->index, rec->key, d, e->owner, want);
	if (!e->buf && !(e->buf = malloc(d * sizeof *e->buf)))
		cmr_die("out of memory");
	if (cmr_unit_embedding(rec, e->buf, &why) < 0)
		cmr_die("%s: record %llu (key '%s'): %s", input, (unsigned long long)rec->index, rec->key, why);
	if (e->org)
		cmr_origins_embedding(e->org, input);
	if (cmr_vecs_push(e->vs, e->buf, d, rec->key) < 0)
		cmr_die("out of memory");
	return 0;
}

void cmr_read_embeddings(char *const *inputs, int n, uint32_t want, const char *owner, cmr_vecs *vs,
			 cmr_origins *org)
{
	struct read_emb e = {want, owner, vs, org, NULL, NULL};
	cmr_each_record(inputs, n, take_embedding, &e);
	free(e.buf);
}

static int take_multi(const cmr_record *rec, const char *input, void *ctx)
{
	cmr_multi *m = ctx;
	if (rec->type != CMR_TYPE_TENSOR)
		return 0;
	int vec = rec->kind == CMR_KIND_VECTORS && rec->rank == 2, emb = rec->kind == CMR_KIND_EMBEDDING && rec->rank == 1;
	if ((!vec && !emb) || (rec->dtype != CMR_DTYPE_F32 && rec->dtype != CMR_DTYPE_F16) || (emb && !rec->dims[0]) ||
	    (vec && !rec->dims[1]))
		cmr_die("%s: record %llu (key '%s'): not f32 or f16 vectors [N, D] or an embedding [D]", input,
			(unsigned long long)rec->index, rec->key);
	uint64_t rows = vec ? rec->dims[0] : 1;
	uint32_t d = vec ? rec->dims[1] : rec->dims[0];
	if (m->n && d != (uint32_t)m->d)
		cmr_die("%s: record %llu (key '%s'): dimension %u, the first record's is %d", input,
			(unsigned long long)rec->index, rec->key, d, m->d);
	float *buf = malloc(rows * d * sizeof *buf + 1); /* rows may be 0: an item without rows */
	if (!buf)
		cmr_die("out of memory");
	for (uint64_t i = 0; i < rows * d; i++)
		buf[i] = rec->dtype == CMR_DTYPE_F32 ? ((const float *)rec->data)[i]
						     : cmr_f16_to_f32(((const uint16_t *)rec->data)[i]);
	for (uint64_t r = 0; r < rows; r++) {
		double s = 0;
		for (uint32_t j = 0; j < d; j++)
			s += (double)buf[r * d + j] * buf[r * d + j];
		if (!(s > 0) || !isfinite(s))
			cmr_die("%s: record %llu (key '%s'): row %llu is zero or not finite", input,
				(unsigned long long)rec->index, rec->key, (unsigned long long)r);
		for (uint32_t j = 0; j < d; j++)
			buf[r * d + j] = (float)(buf[r * d + j] / sqrt(s));
	}
	if (cmr_multi_push(m, buf, rows, (int)d, rec->key) < 0)
		cmr_die("out of memory");
	free(buf);
	return 0;
}

void cmr_read_multi(char *const *inputs, int n, cmr_multi *m)
{
	cmr_each_record(inputs, n, take_multi, m);
}

/* ---- provenance ---- */
char *cmr_provenance(int argc, char **argv, const char *const *inputs, int ninputs)
{
	json_t *o = json_object();
	json_t *args = json_array();
	json_t *ins = json_array();
	if (!o || !args || !ins)
		cmr_die("out of memory");
	json_object_set_new(o, "tool", json_string(the_tool ? the_tool->name : cmr_progname));
	json_object_set_new(o, "version", json_string(CMR_VERSION_STRING));
	for (int i = 1; i < argc; i++) {
		/* arguments need not be UTF-8; keep them readable rather than fail */
		json_t *s = json_string(argv[i]);
		json_array_append_new(args, s ? s : json_string("(not UTF-8)"));
	}
	json_object_set_new(o, "args", args);
	for (int i = 0; i < ninputs; i++) {
		json_t *s = json_string(cmr_input_name(inputs[i]));
		json_array_append_new(ins, s ? s : json_string("(not UTF-8)"));
	}
	json_object_set_new(o, "inputs", ins);
	char *text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(o);
	if (!text)
		cmr_die("out of memory");
	return text;
}
