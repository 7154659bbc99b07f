/* format/safetensors.h - Hugging Face .safetensors files: memory-mapped reading, and writing.
 * Format: u64le header length N, N bytes of JSON {"name": {"dtype", "shape", "data_offsets"
 * [begin, end)}, "__metadata__": {...}}, then the data (offsets relative to its start).
 * Never prints or exits. */
#ifndef CMR_SAFETENSORS_H
#define CMR_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define CMR_ST_MAXDIM 8

typedef struct cmr_st_tensor {
	const char *name;
	int dtype; /* enum cmr_dtype (F32, F16, BF16, I64, I32, U8 ...) */
	int ndim;
	int64_t shape[CMR_ST_MAXDIM];
	const void *data; /* in the mapping */
	size_t nbytes;
} cmr_st_tensor;

typedef struct cmr_st cmr_st;

/* Maps and parses a file; checks that every tensor lies inside the data and matches its
 * dtype and shape. Returns NULL with a message naming the file (and tensor) in err. */
cmr_st *cmr_st_open(const char *path, char *err, size_t errlen);
/* The same checks on a file's bytes in memory, kept by the caller while st lives. */
cmr_st *cmr_st_from_memory(const void *buf, size_t size, const char *name, char *err, size_t errlen);
void cmr_st_close(cmr_st *st);
const cmr_st_tensor *cmr_st_get(const cmr_st *st, const char *name); /* NULL if absent */
size_t cmr_st_count(const cmr_st *st);
const cmr_st_tensor *cmr_st_at(const cmr_st *st, size_t i);
const char *cmr_st_path(const cmr_st *st);
/* The string value of key in the header's __metadata__, or NULL. */
const char *cmr_st_metadata(const cmr_st *st, const char *key);

/* Writing: tensors are given all at once (name, dtype, shape, data), written in order. */
typedef struct cmr_st_out {
	const char *name;
	int dtype;
	int ndim;
	int64_t shape[CMR_ST_MAXDIM];
	const void *data;
} cmr_st_out;

/* Writes to path (via a temporary file renamed into place). metadata_json may be NULL.
 * Returns 0 or -1 with a message. */
struct cmr_atomic;
int cmr_st_write(const char *path, const cmr_st_out *t, size_t n, const char *metadata_json,
		 char *err, size_t errlen);
/* The same, but the complete file is left under its temporary name in *held (atomic.h) for
 * the caller to cmr_atomic_rename, with others, or to cmr_atomic_abort. */
int cmr_st_write_held(struct cmr_atomic *held, const char *path, const cmr_st_out *t, size_t n,
		      const char *metadata_json, char *err, size_t errlen);

#endif
