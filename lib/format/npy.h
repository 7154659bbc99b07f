/* format/npy.h - NumPy .npy headers (format versions 1.0, 2.0 and 3.0), read and written.
 * Like stream.h this layer never prints or exits. */
#ifndef CMR_NPY_H
#define CMR_NPY_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CMR_NPY_MAXDIM 8

typedef struct cmr_npy {
	int dtype;        /* enum cmr_dtype */
	int swap;         /* 1 if the data are big-endian and must be byte-swapped */
	int ndim;
	uint64_t shape[CMR_NPY_MAXDIM];
	uint64_t header_len; /* bytes before the data */
} cmr_npy;

/* Parses a .npy preamble from buf[0..len). Returns 1 when complete (fills h), 0 when more
 * bytes are needed (*need set to the total preamble length, if known, else 0), -1 on error
 * with a message in err. */
int cmr_npy_parse(const void *buf, size_t len, cmr_npy *h, size_t *need, char *err, size_t errlen);

/* Reads a preamble from f. Returns 0 or -1 with a message. */
int cmr_npy_read_header(FILE *f, cmr_npy *h, char *err, size_t errlen);

/* Writes a version 1.0 preamble, C order, little-endian, padded with spaces so that the
 * data start on a multiple of 64 and at min_len or later (to rewrite a header in place).
 * Returns the preamble length, or -1 with errno set (EINVAL for a dtype NumPy has no
 * name for). */
long cmr_npy_write_header(FILE *f, int dtype, int ndim, const uint64_t *shape, size_t min_len);

/* NumPy's descr for a cmr dtype ("<f4"), or NULL. */
const char *cmr_npy_descr(int dtype);

/* Number of elements (product of shape), or UINT64_MAX on overflow. */
uint64_t cmr_npy_nelem(const cmr_npy *h);

#endif
