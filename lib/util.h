/* util.h - small helpers shared by the library layers: little-endian fields, error buffers,
 * embedding records as unit vectors. */
#ifndef CMR_UTIL_H
#define CMR_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "format/stream.h"

static inline uint16_t cmr_ld16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t cmr_ld32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t cmr_ld64(const uint8_t *p) { return (uint64_t)cmr_ld32(p) | (uint64_t)cmr_ld32(p + 4) << 32; }
static inline void cmr_st16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}
static inline void cmr_st32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline void cmr_st64(uint8_t *p, uint64_t v)
{
	cmr_st32(p, (uint32_t)v);
	cmr_st32(p + 4, (uint32_t)(v >> 32));
}

/* Do these first bytes (up to 512 of a file) start an archive (tar, zip) or a compressed
 * file (gzip, zstd, bzip2, xz)? What a caption or sidecar file never does, whatever its name. */
int cmr_is_archive(const uint8_t *b, size_t n);

/* Maps a regular file of at least min bytes read-only (what names its kind in the message
 * when it is shorter: "a safetensors file"). Returns the mapping (munmap it with *size), or
 * NULL with a message naming the file. */
/* KEY<TAB>VALUE lines (cmr-eval --labels, cmr-query --query-text): CR before LF and blank
 * lines ignored; with plain_ok a line without a tab is the VALUE of key N, its line number
 * (the keys cmr-caption-ingest -f text gives). Returns 0 with malloc'd copies in kv, or -1
 * with "NAME:LINE: not KEY<TAB>WHAT" (an empty key or value, a line without a tab when not
 * plain_ok, a NUL) in err. */
typedef struct cmr_kv {
	char **key, **val;
	size_t n;
} cmr_kv;
int cmr_kv_parse(const char *text, size_t len, int plain_ok, const char *name, const char *what, cmr_kv *kv,
		 char *err, size_t errlen);
void cmr_kv_free(cmr_kv *kv);
/* The value of key in kv (the first), or NULL. */
const char *cmr_kv_get(const cmr_kv *kv, const char *key);

/* The whole of the file at path, NUL-terminated, malloc'd, its length in *len; NULL with
 * "PATH: reason" in err when it cannot be read or holds more than max bytes. */
char *cmr_read_file(const char *path, size_t max, size_t *len, char *err, size_t errlen);
void *cmr_map_file(const char *path, size_t min, const char *what, size_t *size, char *err, size_t errlen);

/* Large growable arrays (gigabytes of vectors): anonymous mappings that ask for transparent
 * huge pages, so that filling 2 GB takes a thousand page faults instead of half a million,
 * grown in place or moved by mremap (no copy). cmr_big_realloc(NULL, 0, n) is a new array;
 * NULL when out of memory (p is kept). Sizes are the caller's to remember. */
void *cmr_big_realloc(void *p, size_t old_bytes, size_t new_bytes);
void cmr_big_free(void *p, size_t bytes);

/* 16 lowercase hex digits (an XXH3-64 identity as written in JSON) into *out: 0, or -1. */
int cmr_parse_hex64(const char *s, uint64_t *out);

/* Formats a message into err (the library layers' way to fail); returns -1. */
int cmr_errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The embedding of rec (kind embedding, f32 or f16 [D]) as a unit-length f32 vector in out
 * (D floats). Returns D, or -1 with the reason in *why. */
int cmr_unit_embedding(const cmr_record *rec, float *out, const char **why);
/* Scales each of the n rows of a [n, d] to unit L2 norm (a zero row becomes zero). */
void cmr_unit_rows(float *a, size_t n, int d);

#endif
