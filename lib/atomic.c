/* atomic.c - files written under a temporary name and renamed (see atomic.h). */
#include "atomic.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

#define fail cmr_errf

/* the temporary files of this process, for the signal handler: a fixed table of pointers
 * written before the file exists and cleared after it is renamed */
#define MAX_TMP 64
static char *volatile tmp_paths[MAX_TMP];

static int tmp_register(char *path)
{
	for (int i = 0; i < MAX_TMP; i++)
		if (!tmp_paths[i]) {
			tmp_paths[i] = path;
			return 0;
		}
	return -1;
}

static void tmp_unregister(const char *path)
{
	for (int i = 0; i < MAX_TMP; i++)
		if (tmp_paths[i] == path)
			tmp_paths[i] = NULL;
}

void cmr_atomic_remove_all(void)
{
	for (int i = 0; i < MAX_TMP; i++) {
		char *p = tmp_paths[i];
		if (p) {
			unlink(p); /* async-signal-safe */
			tmp_paths[i] = NULL;
		}
	}
}

int cmr_atomic_open(cmr_atomic *a, const char *path, char *err, size_t errlen)
{
	memset(a, 0, sizeof *a);
	struct stat sb;
	if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode) && !S_ISDIR(sb.st_mode)) {
		if (!(a->path = strdup(path)))
			return fail(err, errlen, "out of memory");
		if (!(a->f = fopen(path, "wb"))) {
			int e = errno;
			cmr_atomic_abort(a);
			return fail(err, errlen, "%s: %s", path, strerror(e));
		}
		a->direct = 1;
		return 0;
	}
	size_t n = strlen(path);
	a->path = strdup(path);
	a->tmp = malloc(n + 16);
	if (!a->path || !a->tmp) {
		cmr_atomic_abort(a);
		return fail(err, errlen, "out of memory");
	}
	snprintf(a->tmp, n + 16, "%s.tmp.XXXXXX", path);
	/* registered before it exists: a signal between mkstemp and the table cannot leave it */
	if (tmp_register(a->tmp) < 0) {
		free(a->tmp);
		a->tmp = NULL;
		cmr_atomic_abort(a);
		return fail(err, errlen, "%s: too many files open for writing", path);
	}
	int fd = mkstemp(a->tmp);
	if (fd < 0) {
		int e = errno;
		cmr_atomic_abort(a);
		return fail(err, errlen, "%s: cannot create a temporary file beside it: %s", path, strerror(e));
	}
	mode_t um = umask(0);
	umask(um);
	if (fchmod(fd, 0666 & ~um) < 0 || !(a->f = fdopen(fd, "wb"))) {
		int e = errno;
		close(fd);
		cmr_atomic_abort(a);
		return fail(err, errlen, "%s: %s", path, strerror(e));
	}
	return 0;
}

int cmr_atomic_finish(cmr_atomic *a, char *err, size_t errlen)
{
	if (!a->f)
		return a->tmp || a->direct ? 0 : fail(err, errlen, "internal error: no file open for writing");
	int bad = fflush(a->f) != 0 || ferror(a->f), e = errno;
	if (fclose(a->f) != 0 && !bad)
		bad = 1, e = errno;
	a->f = NULL;
	if (bad) {
		int rc = fail(err, errlen, "write error on %s: %s", a->path ? a->path : "?", strerror(e ? e : EIO));
		cmr_atomic_abort(a);
		return rc;
	}
	return 0;
}

int cmr_atomic_rename(cmr_atomic *a, char *err, size_t errlen)
{
	if (a->direct) { /* written in place: nothing to rename */
		free(a->path);
		memset(a, 0, sizeof *a);
		return 0;
	}
	if (rename(a->tmp, a->path) < 0) {
		int e = errno;
		int rc = fail(err, errlen, "cannot rename %s to %s: %s", a->tmp, a->path, strerror(e));
		cmr_atomic_abort(a);
		return rc;
	}
	tmp_unregister(a->tmp);
	free(a->tmp);
	free(a->path);
	a->tmp = a->path = NULL;
	return 0;
}

int cmr_atomic_commit(cmr_atomic *a, char *err, size_t errlen)
{
	if (cmr_atomic_finish(a, err, errlen) < 0)
		return -1;
	return cmr_atomic_rename(a, err, errlen);
}

void cmr_atomic_abort(cmr_atomic *a)
{
	if (a->f)
		fclose(a->f);
	a->f = NULL;
	if (a->tmp) {
		unlink(a->tmp);
		tmp_unregister(a->tmp);
	}
	free(a->tmp);
	free(a->path);
	a->tmp = a->path = NULL;
	a->direct = 0;
}
