/* format/npy.c - NumPy .npy preamble parser and writer (the format of numpy.lib.format). */
#include "util.h"
#include "format/npy.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "format/stream.h"

static const struct { int dtype; const char *descr; } descrs[] = {
	{CMR_DTYPE_U8, "|u1"},  {CMR_DTYPE_I8, "|i1"},  {CMR_DTYPE_U16, "<u2"},
	{CMR_DTYPE_I16, "<i2"}, {CMR_DTYPE_U32, "<u4"}, {CMR_DTYPE_I32, "<i4"},
	{CMR_DTYPE_I64, "<i8"}, {CMR_DTYPE_F16, "<f2"}, {CMR_DTYPE_F32, "<f4"},
	{CMR_DTYPE_F64, "<f8"},
};

const char *cmr_npy_descr(int dtype)
{
	for (size_t i = 0; i < sizeof descrs / sizeof descrs[0]; i++)
		if (descrs[i].dtype == dtype)
			return descrs[i].descr;
	return NULL;
}

#define fail cmr_errf

/* descr -> dtype; byte order '<', '|', '=' (this host is little-endian) or '>' (swap). */
static int parse_descr(const char *s, int *dtype, int *swap)
{
	char order = s[0];
	if (order != '<' && order != '>' && order != '|' && order != '=')
		return -1;
	for (size_t i = 0; i < sizeof descrs / sizeof descrs[0]; i++)
		if (strcmp(descrs[i].descr + 1, s + 1) == 0) {
			*dtype = descrs[i].dtype;
			*swap = order == '>' && cmr_dtype_size(*dtype) > 1;
			return 0;
		}
	return -1;
}

/* A cursor over the header dictionary text. */
typedef struct { const char *p, *end; } cur;

static void ws(cur *c)
{
	while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
		c->p++;
}

static int lit(cur *c, const char *s)
{
	size_t n = strlen(s);
	ws(c);
	if ((size_t)(c->end - c->p) >= n && memcmp(c->p, s, n) == 0) {
		c->p += n;
		return 1;
	}
	return 0;
}

static int str(cur *c, char *out, size_t cap)
{
	ws(c);
	if (c->p >= c->end || (*c->p != '\'' && *c->p != '"'))
		return -1;
	char q = *c->p++;
	size_t n = 0;
	while (c->p < c->end && *c->p != q) {
		if (n + 1 >= cap || *c->p == '\\')
			return -1;
		out[n++] = *c->p++;
	}
	if (c->p >= c->end)
		return -1;
	c->p++;
	out[n] = 0;
	return 0;
}

static int parse_dict(const char *text, size_t len, cmr_npy *h, char *err, size_t errlen)
{
	cur c = {text, text + len};
	int have_descr = 0, have_order = 0, have_shape = 0;
	if (!lit(&c, "{"))
		return fail(err, errlen, "header is not a dictionary");
	while (!lit(&c, "}")) {
		char key[32], val[32];
		if (str(&c, key, sizeof key) < 0 || !lit(&c, ":"))
			return fail(err, errlen, "header dictionary is malformed");
		if (strcmp(key, "descr") == 0) {
			if (str(&c, val, sizeof val) < 0)
				return fail(err, errlen, "descr is not a simple dtype (structured arrays are not supported)");
			if (parse_descr(val, &h->dtype, &h->swap) < 0)
				return fail(err, errlen, "dtype '%s' is not supported (use u1 i1 u2 i2 u4 i4 i8 f2 f4 f8)", val);
			have_descr = 1;
		} else if (strcmp(key, "fortran_order") == 0) {
			if (lit(&c, "False"))
				;
			else if (lit(&c, "True"))
				return fail(err, errlen, "Fortran-ordered arrays are not supported (save with np.ascontiguousarray)");
			else
				return fail(err, errlen, "fortran_order is not True or False");
			have_order = 1;
		} else if (strcmp(key, "shape") == 0) {
			if (!lit(&c, "("))
				return fail(err, errlen, "shape is not a tuple");
			h->ndim = 0;
			while (!lit(&c, ")")) {
				ws(&c);
				uint64_t v = 0;
				const char *start = c.p;
				while (c.p < c.end && *c.p >= '0' && *c.p <= '9') {
					if (v > (UINT64_MAX - 9) / 10)
						return fail(err, errlen, "shape dimension is too large");
					v = v * 10 + (uint64_t)(*c.p++ - '0');
				}
				if (c.p < c.end && *c.p == 'L') /* Python 2 long */
					c.p++;
				if (c.p == start)
					return fail(err, errlen, "shape is not a tuple of integers");
				if (h->ndim == CMR_NPY_MAXDIM)
					return fail(err, errlen, "more than %d dimensions", CMR_NPY_MAXDIM);
				h->shape[h->ndim++] = v;
				if (!lit(&c, ",")) {
					if (!lit(&c, ")"))
						return fail(err, errlen, "shape is not a tuple of integers");
					break;
				}
			}
			have_shape = 1;
		} else {
			return fail(err, errlen, "unknown header key '%s'", key);
		}
		if (!lit(&c, ",")) {
			if (!lit(&c, "}"))
				return fail(err, errlen, "header dictionary is malformed");
			break;
		}
	}
	if (!have_descr || !have_order || !have_shape)
		return fail(err, errlen, "header lacks %s", !have_descr ? "descr" : !have_order ? "fortran_order" : "shape");
	return 0;
}

int cmr_npy_parse(const void *buf, size_t len, cmr_npy *h, size_t *need, char *err, size_t errlen)
{
	const uint8_t *b = buf;
	*need = 0;
	memset(h, 0, sizeof *h);
	if (len >= 6 && memcmp(b, "\x93NUMPY", 6) != 0)
		return fail(err, errlen, "not a .npy file (bad magic)");
	if (len < 10)
		return 0;
	int major = b[6];
	uint64_t hlen, pre;
	if (major == 1) {
		hlen = (uint64_t)b[8] | (uint64_t)b[9] << 8;
		pre = 10;
	} else if (major == 2 || major == 3) {
		if (len < 12)
			return 0;
		hlen = (uint64_t)b[8] | (uint64_t)b[9] << 8 | (uint64_t)b[10] << 16 | (uint64_t)b[11] << 24;
		pre = 12;
	} else {
		return fail(err, errlen, ".npy format version %d.%d is not supported", major, b[7]);
	}
	if (hlen > (1u << 20))
		return fail(err, errlen, ".npy header of %llu bytes is too long", (unsigned long long)hlen);
	*need = pre + hlen;
	if (len < pre + hlen)
		return 0;
	if (parse_dict((const char *)b + pre, hlen, h, err, errlen) < 0)
		return -1;
	h->header_len = pre + hlen;
	return 1;
}

int cmr_npy_read_header(FILE *f, cmr_npy *h, char *err, size_t errlen)
{
	size_t have = 0, cap = 0, need = 0;
	uint8_t *buf = NULL;
	int rc;
	while ((rc = cmr_npy_parse(buf, have, h, &need, err, errlen)) == 0) {
		size_t want = need > have ? need : have + 12;
		if (want > cap) {
			uint8_t *p = realloc(buf, want);
			if (!p) {
				rc = fail(err, errlen, "out of memory");
				break;
			}
			buf = p;
			cap = want;
		}
		size_t n = fread(buf + have, 1, want - have, f);
		if (n == 0) {
			rc = ferror(f) ? fail(err, errlen, "read error: %s", strerror(errno))
				       : fail(err, errlen, "truncated .npy header");
			break;
		}
		have += n;
	}
	free(buf);
	return rc < 0 ? -1 : 0;
}

long cmr_npy_write_header(FILE *f, int dtype, int ndim, const uint64_t *shape, size_t min_len)
{
	const char *descr = cmr_npy_descr(dtype);
	if (!descr || ndim < 0 || ndim > CMR_NPY_MAXDIM || min_len > 65535) {
		errno = EINVAL;
		return -1;
	}
	char dict[512];
	int n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
	for (int i = 0; i < ndim; i++)
		n += snprintf(dict + n, sizeof dict - (size_t)n, i ? ", %llu" : "%llu",
			      (unsigned long long)shape[i]);
	n += snprintf(dict + n, sizeof dict - (size_t)n, ndim == 1 ? ",), }" : "), }");
	/* pad with spaces before the final newline so that the data start on a multiple of 64
	 * (as numpy does) and the preamble is at least min_len bytes long */
	size_t total = 10 + (size_t)n + 1;
	total += (64 - total % 64) % 64;
	while (total < min_len)
		total += 64;
	size_t hlen = total - 10;
	uint8_t pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (uint8_t)hlen, (uint8_t)(hlen >> 8)};
	if (fwrite(pre, 1, 10, f) != 10 || fwrite(dict, 1, (size_t)n, f) != (size_t)n)
		return -1;
	for (size_t i = 10 + (size_t)n; i + 1 < total; i++)
		if (fputc(' ', f) == EOF)
			return -1;
	if (fputc('\n', f) == EOF)
		return -1;
	return (long)total;
}

uint64_t cmr_npy_nelem(const cmr_npy *h)
{
	uint64_t n = 1;
	for (int i = 0; i < h->ndim; i++) {
		if (h->shape[i] && n > UINT64_MAX / h->shape[i])
			return UINT64_MAX;
		n *= h->shape[i];
	}
	return n;
}
