/* atomic.h - the one way a file is written: under a temporary name beside it, renamed into
 * place when complete, and removed on failure, on exit and on SIGINT/SIGTERM/SIGHUP (the
 * front end's signal handler calls cmr_atomic_remove_all). Every writer (tools' outputs,
 * index files, safetensors, checkpoints) goes through it, so an interrupted run leaves no
 * *.tmp.* file behind and never a half-written file under the real name. Library code:
 * never prints or exits. */
#ifndef CMR_ATOMIC_H
#define CMR_ATOMIC_H

#include <stddef.h>
#include <stdio.h>

typedef struct cmr_atomic {
	char *path, *tmp;
	FILE *f;
	int direct; /* PATH is a device, FIFO or socket (-o /dev/null, a named pipe): written in place */
} cmr_atomic;

/* Creates PATH.tmp.XXXXXX (mode 0666 less the umask) and opens it for writing; when PATH
 * exists and is not a regular file (a device such as /dev/null, a FIFO, a socket) it is
 * opened in place instead: renaming over it would replace it. Returns 0, or -1 with a message
 * in err. */
int cmr_atomic_open(cmr_atomic *a, const char *path, char *err, size_t errlen);
/* Flushes, closes and renames the file into place. Returns 0, or -1 with a message (the
 * temporary file is removed). The same as cmr_atomic_finish then cmr_atomic_rename. */
int cmr_atomic_commit(cmr_atomic *a, char *err, size_t errlen);
/* The two halves of a commit, for a set of files that must all be complete before any is
 * put in place (a checkpoint): finish flushes and closes, and reports any write error (then
 * the temporary file is removed); the file stays under its temporary name, still removed on
 * a signal or by cmr_atomic_abort, until cmr_atomic_rename puts it in place. */
int cmr_atomic_finish(cmr_atomic *a, char *err, size_t errlen);
int cmr_atomic_rename(cmr_atomic *a, char *err, size_t errlen);
/* Closes and removes the temporary file (safe on a closed or never opened one). */
void cmr_atomic_abort(cmr_atomic *a);
/* Removes every temporary file not yet committed: async-signal-safe (unlink only). */
void cmr_atomic_remove_all(void);

#endif
