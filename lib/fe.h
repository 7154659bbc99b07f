/* fe.h - the front-end layer every cmr tool shares: program name, messages, exit codes,
 * standard options, input and output files, signals, provenance.
 *
 * Skeleton of every tool (see bin/cmr-dump.c):
 *
 *     int main(int argc, char **argv)
 *     {
 *             struct opts o;
 *             cmr_init(argc, argv, &tool);     // name, signals, --help, --version
 *             parse_cmdline(argc, argv, &o);   // usage errors exit 2
 *             run(&o);                         // runtime errors exit 1
 *             return cmr_exit(0);              // stdout flushed and checked
 *     }
 */
#ifndef CMR_FE_H
#define CMR_FE_H

#include <getopt.h>
#include <stdio.h>

#include "atomic.h"
#include "index.h"
#include "origin.h"
#include "format/stream.h"

#define CMR_VERSION_STRING "0.1.0"

enum { CMR_EXIT_OK = 0, CMR_EXIT_FAILURE = 1, CMR_EXIT_USAGE = 2 };

/* What a tool tells the skeleton about itself. */
typedef struct cmr_tool {
	const char *name;     /* "cmr-dump" */
	const char *synopsis; /* usage lines, without the program name prefix */
	const char *help;     /* option descriptions printed by --help */
} cmr_tool;

extern const char *cmr_progname;
extern int cmr_verbose; /* -v raises, -q lowers; 0 is the default */

/* Sets the program name, installs signal handling (SIGPIPE ignored so that a closed pipe
 * is seen as EPIPE and ends the tool quietly; SIGINT, SIGTERM and SIGHUP remove temporary
 * output files first) and answers --help and --version anywhere before "--". */
void cmr_init(int argc, char **argv, const cmr_tool *tool);
void cmr_print_usage(FILE *f);

/* Messages: "prog: message" on stderr. */
void cmr_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void cmr_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void cmr_info(const char *fmt, ...) __attribute__((format(printf, 1, 2))); /* only with -v */
void cmr_hint(const char *fmt, ...) __attribute__((format(printf, 1, 2)));  /* "hint: ..." */
/* A progress line on standard error for work that can take more than a few seconds: when
 * standard error is a terminal (and not -q), or CMR_PROGRESS=1 (into a log too; 0: never);
 * rewritten at most twice a second as
 * "prog: DONE[/TOTAL] WHAT, RATE WHAT/s[, ETA]"; ended with a newline by cmr_progress_end.
 * total 0: unknown. */
typedef struct cmr_progress {
	int on, shown, forced;
	double t0, last;
	uint64_t total;
	uint64_t base; /* the count it started at (a resumed run): the rate and ETA are of what follows */
	const char *what;
	char detail[200]; /* appended to the line ("loss 0.1234 ..."), or empty */
} cmr_progress;
void cmr_progress_start(cmr_progress *p, const char *what, uint64_t total);
void cmr_progress_update(cmr_progress *p, uint64_t done);
/* Text the next drawing appends (printf format). */
void cmr_progress_detail(cmr_progress *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Before another message on stderr: clears the line (it is drawn again by the next update).
 * NULL: the line being drawn, if any. */
void cmr_progress_clear(cmr_progress *p);
void cmr_progress_end(cmr_progress *p, uint64_t done);
/* Ends it without a last line (the caller says how it ended). */
void cmr_progress_stop(cmr_progress *p);

/* A record or file skipped for an error: "WHERE: MESSAGE (skipped)" for the first
 * CMR_SKIPS_SHOWN, counted after that; cmr_skips_summary() says how many were not shown. */
#define CMR_SKIPS_SHOWN 10
void cmr_skip(const char *where, const char *msg);
uint64_t cmr_skips(void);
void cmr_skips_summary(void);
/* Runtime failure: message, remove temporary outputs, exit 1. */
_Noreturn void cmr_die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Usage error: message, a pointer to --help, exit 2. */
_Noreturn void cmr_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A failed write: quiet exit as if killed by SIGPIPE when errno is EPIPE, else cmr_die. */
_Noreturn void cmr_die_write(const char *what, int err);

/* Library code may route fatal errors through a hook (tests catch them); default exits. */
typedef void (*cmr_exit_hook)(int status);
void cmr_set_exit_hook(cmr_exit_hook hook);

/* Options every tool accepts; add CMR_COMMON_LONGOPTS to the long option table and call
 * cmr_common_option() from the getopt loop's default branch. */
#define CMR_COMMON_LONGOPTS \
	{"help", no_argument, NULL, 'h'}, {"version", no_argument, NULL, 'V'}, \
	{"verbose", no_argument, NULL, 'v'}, {"quiet", no_argument, NULL, 'q'}
#define CMR_COMMON_SHORTOPTS "hVvq"
/* --force, for the tools that refuse to mix models (origin.h): add to their option table. */
#define CMR_OPT_FORCE 0x1f0
#define CMR_FORCE_LONGOPT {"force", no_argument, NULL, CMR_OPT_FORCE}
#define CMR_FORCE_HELP "      --force           use embeddings of different models together (a warning, not an error)\n"
/* Handles h, V, v, q, --force and getopt's '?' / ':' (usage error); returns 0 if c was not
 * common. */
int cmr_common_option(int c);

/* Parses a whole decimal integer in [min, max] or fails with a usage error naming opt. */
long long cmr_parse_int(const char *opt, const char *s, long long min, long long max);
/* The same for a decimal number (strtod's syntax) in [min, max]. */
double cmr_parse_double(const char *opt, const char *s, double min, double max);
/* --score: 0 for cosine, 1 for maxsim-mean (late interaction, cmr-eval and cmr-query), or a
 * usage error. */
int cmr_parse_score(const char *s);
/* -m MODEL: the checkpoint directory it names (a path, a config.json, or a Hugging Face hub
 * id in the local cache: cmr_model_resolve), or death with a message that says what was
 * found there and what to do. */
const char *cmr_parse_model(const char *arg);
/* --backend NAME: the registered backend (backend.h); "list" prints each one's name and
 * description on standard output and exits 0; another name is a usage error listing them. */
const struct cmr_ops *cmr_parse_backend(const char *s);
/* --precision fp32|tf32|bf16: CMR_PREC_*, or a usage error. */
int cmr_parse_precision(const char *s);
/* Starts the backend on --device and --precision: a CPU backend given another device or
 * precision is a usage error; a device backend that cannot start (no device, no driver)
 * dies with the reason. */
void cmr_start_backend(const struct cmr_ops *ops, int device, int precision);
/* Dies for a work space of a batch that did not fit in ops's memory, saying how much of a
 * device's memory is free and the batch that fits (0: none). */
_Noreturn void cmr_die_batch(const struct cmr_ops *ops, int batch, int fits);

/* ---- files ---- */
/* Opens an input: NULL or "-" is standard input. A binary input on a terminal is refused. */
FILE *cmr_open_input(const char *path, int binary);
void cmr_close_input(FILE *f, const char *path);
/* Display name of an input path. */
const char *cmr_input_name(const char *path);

typedef struct cmr_output {
	FILE *f;
	int file;         /* 0 for standard output */
	cmr_atomic at;    /* a file: its temporary name (atomic.h) */
	const char *name; /* for messages */
} cmr_output;

/* Opens an output: NULL or "-" is standard output, refused for binary data on a terminal.
 * A file is written under a temporary name in the same directory and renamed by
 * cmr_output_commit; it is removed on failure, on cmr_die and on SIGINT/SIGTERM/SIGHUP. */
void cmr_output_open(cmr_output *out, const char *path, int binary);
/* Flushes and checks; for a file, closes it and renames it into place. Dies on error. */
void cmr_output_commit(cmr_output *out);
/* Abandons an output: removes the temporary file. */
void cmr_output_abort(cmr_output *out);

/* Flushes and checks standard output; returns status, or exits 1 on a write error. */
int cmr_exit(int status);

/* ---- streams on top of files ---- */
/* Called for each record; returns nonzero to stop reading this input. */
typedef int (*cmr_record_fn)(const cmr_record *rec, const char *input, void *ctx);
/* Reads every record of every input in turn (standard input when n is 0), checking each,
 * and calls fn; dies naming the stream, record and offset on a bad one. Records of unknown
 * types are skipped (and counted with -v). */
void cmr_each_record(char *const *inputs, int n, cmr_record_fn fn, void *ctx);

/* Dies with the reader's message. */
_Noreturn void cmr_die_reader(cmr_reader *r);
/* Dies with the writer's message (quietly on EPIPE). */
_Noreturn void cmr_die_writer(cmr_writer *w);

/* Reads the embedding records of the inputs (standard input when n is 0) into vs as unit
 * vectors, skipping metadata. Every embedding must have dimension want (or, when want is 0,
 * that of the first); owner says whose dimension it is in the message ("the index"). Dies
 * naming the stream, record and key on anything else. With org, the provenance records are
 * kept there and the embeddings' models gathered, a mix of models refused (origin.h). */
void cmr_read_embeddings(char *const *inputs, int n, uint32_t want, const char *owner, cmr_vecs *vs,
			 cmr_origins *org);

/* Reads multi-vector items (kind vectors f32/f16 [N, D], N >= 0; an embedding [D] is one
 * row) into m, each row scaled to unit length; an item of no rows scores 0 with any other.
 * Dies naming the stream, record and key on anything else (another kind, another D, a zero
 * or non-finite row). */
struct cmr_multi;
void cmr_read_multi(char *const *inputs, int n, struct cmr_multi *m);

/* ---- provenance (JSON, built with jansson) ---- */
/* Builds this tool's provenance record: {"tool","version","args","inputs"}. Returns a
 * malloc'ed compact JSON text. inputs may be NULL. */
char *cmr_provenance(int argc, char **argv, const char *const *inputs, int ninputs);

#endif
