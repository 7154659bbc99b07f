/* format/safetensors.c - memory-mapped reader and writer of Hugging Face .safetensors files. */
#include "util.h"
#include "format/safetensors.h"
#include "atomic.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "format/stream.h"

struct cmr_st {
	char *path;
	void *map;
	size_t size;
	cmr_st_tensor *t;
	size_t n;
	json_t *header; /* owns the name strings */
};

#define fail cmr_errf

static const struct { const char *name; int dtype; } st_dtypes[] = {
	{"F32", CMR_DTYPE_F32}, {"F16", CMR_DTYPE_F16}, {"BF16", CMR_DTYPE_BF16},
	{"F64", CMR_DTYPE_F64}, {"I64", CMR_DTYPE_I64}, {"I32", CMR_DTYPE_I32},
	{"I16", CMR_DTYPE_I16}, {"I8", CMR_DTYPE_I8},   {"U8", CMR_DTYPE_U8},
	{"U16", CMR_DTYPE_U16}, {"U32", CMR_DTYPE_U32},
};

static const char *st_dtype_name(int dtype)
{
	for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
		if (st_dtypes[i].dtype == dtype)
			return st_dtypes[i].name;
	return NULL;
}

void cmr_st_close(cmr_st *st)
{
	if (!st)
		return;
	if (st->map && st->map != MAP_FAILED)
		munmap(st->map, st->size);
	json_decref(st->header);
	free(st->t);
	free(st->path);
	free(st);
}

/* the header and tensor table of the bytes at p: every tensor inside the data, its size
 * that of its dtype and shape */
static int parse(cmr_st *st, const uint8_t *p, const char *path, char *err, size_t errlen)
{
	uint64_t hlen = 0;
	for (int i = 7; i >= 0; i--)
		hlen = hlen << 8 | p[i];
	if (hlen > st->size - 8 || hlen > (100u << 20)) {
		fail(err, errlen, "%s: header length %llu does not fit the file of %zu bytes", path,
		     (unsigned long long)hlen, st->size);
		return -1;
	}
	json_error_t jerr;
	st->header = json_loadb((const char *)p + 8, hlen, 0, &jerr);
	if (!json_is_object(st->header)) {
		fail(err, errlen, "%s: header is not a JSON object: %s", path, jerr.text);
		return -1;
	}
	const uint8_t *data = p + 8 + hlen;
	size_t dsize = st->size - 8 - hlen;
	st->t = calloc(json_object_size(st->header) + 1, sizeof *st->t);
	if (!st->t) {
		fail(err, errlen, "out of memory");
		return -1;
	}
	const char *name;
	json_t *v;
	json_object_foreach(st->header, name, v) {
		if (strcmp(name, "__metadata__") == 0)
			continue;
		cmr_st_tensor *t = &st->t[st->n];
		t->name = name;
		json_t *dt = json_object_get(v, "dtype"), *sh = json_object_get(v, "shape");
		json_t *off = json_object_get(v, "data_offsets");
		if (!json_is_string(dt) || !json_is_array(sh) || !json_is_array(off) || json_array_size(off) != 2) {
			fail(err, errlen, "%s: tensor '%s': needs dtype, shape and data_offsets", path, name);
			return -1;
		}
		t->dtype = 0;
		for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
			if (strcmp(json_string_value(dt), st_dtypes[i].name) == 0)
				t->dtype = st_dtypes[i].dtype;
		if (!t->dtype) {
			fail(err, errlen, "%s: tensor '%s': unknown dtype %s", path, name, json_string_value(dt));
			return -1;
		}
		if (json_array_size(sh) > CMR_ST_MAXDIM) {
			fail(err, errlen, "%s: tensor '%s': more than %d dimensions", path, name, CMR_ST_MAXDIM);
			return -1;
		}
		t->ndim = (int)json_array_size(sh);
		uint64_t n = cmr_dtype_size(t->dtype);
		for (int i = 0; i < t->ndim; i++) {
			json_t *d = json_array_get(sh, (size_t)i);
			if (!json_is_integer(d) || json_integer_value(d) < 0 || json_integer_value(d) > (1LL << 40)) {
				fail(err, errlen, "%s: tensor '%s': bad shape", path, name);
				return -1;
			}
			t->shape[i] = json_integer_value(d);
			if (__builtin_mul_overflow(n, (uint64_t)t->shape[i], &n)) {
				fail(err, errlen, "%s: tensor '%s': its shape's size overflows", path, name);
				return -1;
			}
		}
		json_int_t b = json_integer_value(json_array_get(off, 0)), e = json_integer_value(json_array_get(off, 1));
		if (b < 0 || e < b || (uint64_t)e > dsize || (uint64_t)(e - b) != n) {
			fail(err, errlen, "%s: tensor '%s': data_offsets [%lld, %lld) do not hold its %llu bytes "
			     "inside the %zu bytes of data", path, name, (long long)b, (long long)e,
			     (unsigned long long)n, dsize);
			return -1;
		}
		t->data = data + b;
		t->nbytes = (size_t)n;
		st->n++;
	}
	return 0;
}


cmr_st *cmr_st_open(const char *path, char *err, size_t errlen)
{
	cmr_st *st = calloc(1, sizeof *st);
	if (!st || !(st->path = strdup(path))) {
		free(st);
		fail(err, errlen, "out of memory");
		return NULL;
	}
	if (!(st->map = cmr_map_file(path, 8, "a safetensors file", &st->size, err, errlen))) {
		cmr_st_close(st);
		return NULL;
	}
	if (parse(st, st->map, path, err, errlen) < 0) {
		cmr_st_close(st);
		return NULL;
	}
	return st;
}

cmr_st *cmr_st_from_memory(const void *buf, size_t size, const char *name, char *err, size_t errlen)
{
	cmr_st *st = calloc(1, sizeof *st);
	if (!st || !(st->path = strdup(name))) {
		free(st);
		fail(err, errlen, "out of memory");
		return NULL;
	}
	st->size = size;
	if (size < 8 || parse(st, buf, name, err, errlen) < 0) {
		if (size < 8)
			fail(err, errlen, "%s: %zu bytes: too short for a safetensors file", name, size);
		cmr_st_close(st);
		return NULL;
	}
	return st;
}

const cmr_st_tensor *cmr_st_get(const cmr_st *st, const char *name)
{
	for (size_t i = 0; i < st->n; i++)
		if (strcmp(st->t[i].name, name) == 0)
			return &st->t[i];
	return NULL;
}

size_t cmr_st_count(const cmr_st *st) { return st->n; }
const cmr_st_tensor *cmr_st_at(const cmr_st *st, size_t i) { return i < st->n ? &st->t[i] : NULL; }
const char *cmr_st_metadata(const cmr_st *st, const char *key)
{
	json_t *v = json_object_get(json_object_get(st->header, "__metadata__"), key);
	return json_is_string(v) ? json_string_value(v) : NULL;
}

const char *cmr_st_path(const cmr_st *st) { return st->path; }

int cmr_st_write(const char *path, const cmr_st_out *t, size_t n, const char *metadata_json, char *err,
		 size_t errlen)
{
	cmr_atomic at;
	if (cmr_st_write_held(&at, path, t, n, metadata_json, err, errlen) < 0)
		return -1;
	return cmr_atomic_rename(&at, err, errlen);
}

int cmr_st_write_held(cmr_atomic *held, const char *path, const cmr_st_out *t, size_t n, const char *metadata_json,
		      char *err, size_t errlen)
{
	json_t *h = json_object();
	uint64_t off = 0;
	if (metadata_json) {
		json_error_t jerr;
		json_t *m = json_loads(metadata_json, 0, &jerr);
		if (!m) {
			json_decref(h);
			return fail(err, errlen, "metadata is not JSON: %s", jerr.text);
		}
		json_object_set_new(h, "__metadata__", m);
	}
	for (size_t i = 0; i < n; i++) {
		const char *dn = st_dtype_name(t[i].dtype);
		if (!dn) {
			json_decref(h);
			return fail(err, errlen, "tensor '%s': dtype has no safetensors name", t[i].name);
		}
		uint64_t bytes = cmr_dtype_size(t[i].dtype);
		json_t *sh = json_array();
		for (int d = 0; d < t[i].ndim; d++) {
			bytes *= (uint64_t)t[i].shape[d];
			json_array_append_new(sh, json_integer(t[i].shape[d]));
		}
		json_t *o = json_pack("{s:s, s:o, s:[I, I]}", "dtype", dn, "shape", sh, "data_offsets",
				      (json_int_t)off, (json_int_t)(off + bytes));
		json_object_set_new(h, t[i].name, o);
		off += bytes;
	}
	char *text = json_dumps(h, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(h);
	if (!text)
		return fail(err, errlen, "out of memory");
	size_t hl = strlen(text), pad = (8 - hl % 8) % 8; /* align the data to 8 bytes */
	cmr_atomic *at = held;
	if (cmr_atomic_open(at, path, err, errlen) < 0) {
		free(text);
		return -1;
	}
	FILE *f = at->f;
	int bad = 0;
	{
		uint8_t len8[8];
		uint64_t total = hl + pad;
		for (int i = 0; i < 8; i++)
			len8[i] = (uint8_t)(total >> (8 * i));
		bad |= fwrite(len8, 1, 8, f) != 8 || fwrite(text, 1, hl, f) != hl;
		for (size_t i = 0; i < pad; i++)
			bad |= fputc(' ', f) == EOF;
		for (size_t i = 0; i < n && !bad; i++) {
			size_t bytes = cmr_dtype_size(t[i].dtype);
			for (int d = 0; d < t[i].ndim; d++)
				bytes *= (size_t)t[i].shape[d];
			bad |= bytes && fwrite(t[i].data, 1, bytes, f) != bytes;
		}
	}
	free(text);
	if (bad) {
		int e = errno;
		cmr_atomic_abort(at);
		return fail(err, errlen, "%s: %s", path, strerror(e ? e : EIO));
	}
	return cmr_atomic_finish(at, err, errlen);
}
