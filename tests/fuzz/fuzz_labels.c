/* fuzz_labels.c - libFuzzer target: cmr-train's readers of what it is given beside the
 * training pairs (lib/model/run.c): the classes file of --labels (cmr_pairs_load_labels) and
 * a teacher's embedding streams (cmr_pairs_load_teacher). The source of run.c is compiled in
 * (its public functions renamed), so what is fuzzed is what cmr-train runs; a fatal error
 * (cmr_die) returns here through the front end's exit hook, so run it with -detect_leaks=0.
 * The training data are three images img000..img002 with one caption each (KEY#0).
 * Input: the first byte's low bit chooses the reader (0: labels, 1: teacher), the rest is
 * the file (the teacher's: one cmr stream read as both the images' and the captions'). */
#define cmr_run_train fuzz_labels_run_train
#define cmr_pairs_load fuzz_labels_pairs_load
#define cmr_pairs_free fuzz_labels_pairs_free
#define cmr_pairs_load_desc fuzz_labels_pairs_load_desc
#define cmr_pairs_load_teacher fuzz_labels_pairs_load_teacher
#define cmr_pairs_load_labels fuzz_labels_pairs_load_labels
#include "../../lib/model/run.c"

#include <dirent.h>
#include <fcntl.h>
#include <setjmp.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static jmp_buf back;
static void on_exit_hook(int status)
{
	(void)status;
	longjmp(back, 1);
}

static cmr_pairs d;
static char path[300];

static void remove_file(void) { unlink(path); }

/* the open descriptors (below 1024), so that those a fatal error leaves open (the reader's
 * streams: cmr-train exits there) are closed after the run */
static void open_fds(unsigned char *set)
{
	memset(set, 0, 1024);
	DIR *dp = opendir("/proc/self/fd");
	struct dirent *e;
	while (dp && (e = readdir(dp)))
		if (e->d_name[0] >= '0' && e->d_name[0] <= '9' && atoi(e->d_name) < 1024)
			set[atoi(e->d_name)] = 1;
	if (dp)
		closedir(dp);
}

static void setup(void)
{
	static cmr_pair_image img[3];
	static char *tkey[3];
	static int cap[3];
	for (int i = 0; i < 3; i++) {
		char k[32];
		snprintf(k, sizeof k, "img%03d", i);
		img[i].key = strdup(k);
		snprintf(k, sizeof k, "img%03d#0", i);
		tkey[i] = strdup(k);
		cap[i] = i;
		img[i].cap = &cap[i];
		img[i].ncap = 1;
	}
	d = (cmr_pairs){.img = img, .nimg = 3, .tkey = tkey, .ntok = 3, .what = "training"};
	cmr_progname = "cmr-train";
	cmr_verbose = -1;
	const char *tmp = getenv("TMPDIR");
	snprintf(path, sizeof path, "%s/fuzz_labels.%ld", tmp && *tmp ? tmp : "/tmp", (long)getpid());
	atexit(remove_file);
	cmr_set_exit_hook(on_exit_hook);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!d.img)
		setup();
	if (size < 1)
		return 0;
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0666);
	if (fd < 0)
		return 0;
	ssize_t w = size > 1 ? write(fd, data + 1, size - 1) : 0;
	close(fd);
	if (w != (ssize_t)(size - 1))
		return 0;
	free(d.label), free(d.teacher_img), free(d.teacher_txt);
	d.label = NULL, d.teacher_img = d.teacher_txt = NULL, d.teacher_dim = 0, d.nclass = 0;
	static unsigned char before[1024], after[1024];
	open_fds(before);
	if (setjmp(back) == 0) {
		if (data[0] & 1) {
			cmr_pairs_load_teacher(&d, path, path);
			/* what an accepted teacher promises: a width, unit rows for every pair */
			if (d.teacher_dim < 1 || !d.teacher_img || !d.teacher_txt)
				abort();
			for (size_t i = 0; i < 3 * (size_t)d.teacher_dim; i++)
				if (!isfinite(d.teacher_img[i]) || !isfinite(d.teacher_txt[i]))
					abort();
		} else {
			cmr_pairs_load_labels(&d, path);
			for (int i = 0; i < 3; i++) /* every image a class of the file's */
				if (!d.label || d.label[i] < 0 || d.label[i] >= d.nclass)
					abort();
		}
	}
	open_fds(after);
	for (int i = 3; i < 1024; i++)
		if (after[i] && !before[i])
			close(i);
	return 0;
}
