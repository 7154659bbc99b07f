/* wds.h - one member of a webdataset tar, for the example generators (mkshapes, mkworld):
 * a regular file with mode 0644 and mtime 0, so that the same data give the same bytes. */
#ifndef CMR_EXAMPLES_WDS_H
#define CMR_EXAMPLES_WDS_H

#include <archive.h>
#include <archive_entry.h>
#include <stdio.h>
#include <stdlib.h>

static void wds_put(struct archive *a, const char *prog, const char *name, const void *data, size_t len)
{
	struct archive_entry *e = archive_entry_new();
	archive_entry_set_pathname(e, name);
	archive_entry_set_size(e, (la_int64_t)len);
	archive_entry_set_filetype(e, AE_IFREG);
	archive_entry_set_perm(e, 0644);
	archive_entry_set_mtime(e, 0, 0);
	if (archive_write_header(a, e) != ARCHIVE_OK || archive_write_data(a, data, len) != (la_ssize_t)len) {
		fprintf(stderr, "%s: %s\n", prog, archive_error_string(a));
		exit(1);
	}
	archive_entry_free(e);
}

#endif
