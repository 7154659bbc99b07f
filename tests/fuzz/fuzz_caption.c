/* fuzz_caption.c - libFuzzer target: cmr-caption-ingest's readers of every caption format
 * (flickr, coco, karpathy, wds tars, tsv, jsonl, text, classes, and detection) on arbitrary bytes.
 * The tool's own source is compiled in (its main renamed), so that what is fuzzed is what
 * runs; the input is given as a file (a memfd), and a fatal error (cmr_die) returns here
 * through the front end's exit hook. The first byte chooses the format (-f, modulo 9), the rest is
 * the file. Memory a fatal error leaves behind is not freed: run with -detect_leaks=0 (the
 * replay in make check-asan sets it). */
int caption_ingest_main(int argc, char **argv);
#define main caption_ingest_main
#include "../../bin/cmr-caption-ingest.c"
#undef main

#include <setjmp.h>
#include <sys/mman.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static jmp_buf back;
static void on_exit_hook(int status)
{
	(void)status;
	longjmp(back, 1);
}

static struct opts fo;
static int fd = -1;
static char path[64];

static void setup(void)
{
	static char *argv[] = {"cmr-caption-ingest", "-q", NULL};
	cmr_progname = "cmr-caption-ingest";
	parse_cmdline(2, argv, &fo);
	add_template(&fo, "a photo of a {}.", 16, "fuzz"); /* for -f classes */
	add_template(&fo, "{}", 2, "fuzz");
	g.o = &fo;
	char err[512];
	g.tok = cmr_clip_tok_new(err, sizeof err);
	g.ids = malloc((size_t)fo.context * sizeof *g.ids);
	FILE *null = fopen("/dev/null", "wb");
	g.w = cmr_writer_new(null, "/dev/null", 0);
	fd = memfd_create("caption", 0);
	snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	cmr_set_exit_hook(on_exit_hook);
	if (!g.tok || !g.ids || !g.w || fd < 0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (fd < 0)
		setup();
	if (size < 1)
		return 0;
	static const enum fmt fmts[] = {F_AUTO, F_FLICKR, F_COCO, F_KARPATHY, F_WDS, F_TSV, F_JSONL, F_TEXT, F_CLASSES};
	fo.fmt = fmts[data[0] % 9];
	fo.strict = (data[0] >> 3) & 1;
	if (ftruncate(fd, 0) < 0 || pwrite(fd, data + 1, size - 1, 0) != (ssize_t)(size - 1))
		return 0;
	if (setjmp(back) == 0)
		ingest(path);
	return 0;
}
