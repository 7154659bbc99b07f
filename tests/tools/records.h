/* records.h - for the numerics checkers (traincheck, promptcheck): every tensor record of a
 * stream, as copies of the payloads and their element counts; exits naming the stream on a
 * read error. Header-only: each checker is one file. */
#ifndef CMR_TESTS_RECORDS_H
#define CMR_TESTS_RECORDS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format/stream.h"

static int read_all(const char *path, void ***data, int **lens)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		perror(path);
		exit(1);
	}
	cmr_reader *r = cmr_reader_new(f, path);
	cmr_record rec;
	int n = 0, rc;
	*data = NULL;
	*lens = NULL;
	while ((rc = cmr_reader_next(r, &rec)) == 1) {
		if (rec.type != CMR_TYPE_TENSOR)
			continue;
		*data = realloc(*data, (size_t)(n + 1) * sizeof **data);
		*lens = realloc(*lens, (size_t)(n + 1) * sizeof **lens);
		(*data)[n] = malloc(rec.nbytes);
		memcpy((*data)[n], rec.data, rec.nbytes);
		(*lens)[n] = (int)cmr_record_nelem(&rec);
		n++;
	}
	if (rc < 0) {
		fprintf(stderr, "%s\n", cmr_reader_error(r));
		exit(1);
	}
	cmr_reader_free(r);
	fclose(f);
	return n;
}

#endif
