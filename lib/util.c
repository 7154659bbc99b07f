/* util.c - helpers shared by the library layers (see util.h). */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "format/half.h"

int cmr_errf(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -1;
}

int cmr_unit_embedding(const cmr_record *rec, float *out, const char **why)
{
	if (rec->kind != CMR_KIND_EMBEDDING || rec->rank != 1 ||
	    (rec->dtype != CMR_DTYPE_F32 && rec->dtype != CMR_DTYPE_F16)) {
		*why = "not an f32 or f16 embedding [D]";
		return -1;
	}
	uint32_t d = rec->dims[0];
	double s = 0;
	for (uint32_t i = 0; i < d; i++) {
		out[i] = rec->dtype == CMR_DTYPE_F32 ? ((const float *)rec->data)[i]
						     : cmr_f16_to_f32(((const uint16_t *)rec->data)[i]);
		s += (double)out[i] * out[i];
	}
	if (!(s > 0) || !isfinite(s)) {
		*why = "the embedding is zero or not finite";
		return -1;
	}
	const double r = sqrt(s); /* the same quotients as dividing by sqrt(s) each time, vectorised */
#pragma omp simd
	for (uint32_t i = 0; i < d; i++)
		out[i] = (float)(out[i] / r);
	return (int)d;
}

void cmr_unit_rows(float *a, size_t n, int d)
{
	for (size_t r = 0; r < n; r++) {
		float *e = a + r * (size_t)d;
		double s = 0;
		for (int i = 0; i < d; i++)
			s += (double)e[i] * e[i];
		float inv = s > 0 ? (float)(1.0 / sqrt(s)) : 0.0f;
		for (int i = 0; i < d; i++)
			e[i] *= inv;
	}
}

int cmr_is_archive(const uint8_t *b, size_t n)
{
	return (n >= 262 && memcmp(b + 257, "ustar", 5) == 0) || (n >= 2 && b[0] == 0x1f && b[1] == 0x8b) ||
	       (n >= 4 && memcmp(b, "\x28\xb5\x2f\xfd", 4) == 0) || (n >= 3 && memcmp(b, "BZh", 3) == 0) ||
	       (n >= 6 && memcmp(b, "\xfd" "7zXZ\0", 6) == 0) || (n >= 4 && memcmp(b, "PK\x03\x04", 4) == 0);
}

void *cmr_big_realloc(void *p, size_t old_bytes, size_t new_bytes)
{
	void *q = p ? mremap(p, old_bytes, new_bytes, MREMAP_MAYMOVE)
		    : mmap(NULL, new_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (q == MAP_FAILED)
		return NULL;
#ifdef MADV_HUGEPAGE
	(void)madvise(q, new_bytes, MADV_HUGEPAGE); /* a hint: without it, plain pages */
#endif
	return q;
}

void cmr_big_free(void *p, size_t bytes)
{
	if (p)
		munmap(p, bytes);
}

int cmr_parse_hex64(const char *s, uint64_t *out)
{
	if (!s || strlen(s) != 16)
		return -1;
	uint64_t v = 0;
	for (int i = 0; i < 16; i++) {
		int c = s[i], d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
		if (d < 0)
			return -1;
		v = v << 4 | (uint64_t)d;
	}
	*out = v;
	return 0;
}

int cmr_kv_parse(const char *text, size_t len, int plain_ok, const char *name, const char *what, cmr_kv *kv,
		 char *err, size_t errlen)
{
	memset(kv, 0, sizeof *kv);
	size_t cap = 0;
	uint64_t line = 0;
	for (const char *p = text, *end = text + len; p < end;) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = (size_t)((nl ? nl : end) - p);
		line++;
		if (n && p[n - 1] == '\r')
			n--;
		const char *tab = memchr(p, '\t', n);
		if (n && (memchr(p, 0, n) || (!tab && !plain_ok) || tab == p || (tab && tab + 1 == p + n))) {
			cmr_kv_free(kv);
			return cmr_errf(err, errlen, "%s:%llu: not KEY<TAB>%s", name, (unsigned long long)line, what);
		}
		if (n) {
			if (kv->n == cap) {
				cap = cap ? 2 * cap : 64;
				char **k = realloc(kv->key, cap * sizeof *k), **v = k ? realloc(kv->val, cap * sizeof *v) : NULL;
				if (k)
					kv->key = k;
				if (!k || !v) {
					cmr_kv_free(kv);
					return cmr_errf(err, errlen, "out of memory");
				}
				kv->val = v;
			}
			char num[24];
			snprintf(num, sizeof num, "%llu", (unsigned long long)line);
			kv->key[kv->n] = tab ? strndup(p, (size_t)(tab - p)) : strdup(num);
			kv->val[kv->n] = tab ? strndup(tab + 1, n - (size_t)(tab + 1 - p)) : strndup(p, n);
			if (!kv->key[kv->n] || !kv->val[kv->n]) {
				kv->n++;
				cmr_kv_free(kv);
				return cmr_errf(err, errlen, "out of memory");
			}
			kv->n++;
		}
		p = nl ? nl + 1 : end;
	}
	return 0;
}

void cmr_kv_free(cmr_kv *kv)
{
	for (size_t i = 0; i < kv->n; i++)
		free(kv->key[i]), free(kv->val[i]);
	free(kv->key), free(kv->val);
	memset(kv, 0, sizeof *kv);
}

const char *cmr_kv_get(const cmr_kv *kv, const char *key)
{
	for (size_t i = 0; i < kv->n; i++)
		if (strcmp(kv->key[i], key) == 0)
			return kv->val[i];
	return NULL;
}

char *cmr_read_file(const char *path, size_t max, size_t *len, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return cmr_errf(err, errlen, "%s: %s", path, strerror(errno)), NULL;
	char *buf = NULL;
	size_t n = 0, cap = 0;
	int bad = 0, big = 0;
	for (;;) {
		if (n + 1 >= cap) {
			size_t want = cap ? 2 * cap : 65536;
			if (want > max + 2)
				want = max + 2;
			char *p = want > cap ? realloc(buf, want) : NULL;
			if (!p) {
				bad = want > cap;
				big = !bad;
				break;
			}
			buf = p, cap = want;
		}
		size_t r = fread(buf + n, 1, cap - n - 1, f);
		n += r;
		if (n > max) {
			big = 1;
			break;
		}
		if (r == 0)
			break;
	}
	int e = ferror(f) ? errno : 0;
	fclose(f);
	if (bad || big || e) {
		free(buf);
		if (big)
			return cmr_errf(err, errlen, "%s: larger than %zu bytes", path, max), NULL;
		return cmr_errf(err, errlen, "%s: %s", path, bad ? "out of memory" : strerror(e ? e : EIO)), NULL;
	}
	buf[n] = 0;
	*len = n;
	return buf;
}

void *cmr_map_file(const char *path, size_t min, const char *what, size_t *size, char *err, size_t errlen)
{
	int fd = open(path, O_RDONLY);
	struct stat sb;
	if (fd < 0 || fstat(fd, &sb) < 0) {
		cmr_errf(err, errlen, "%s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	void *map = NULL;
	if (!S_ISREG(sb.st_mode))
		cmr_errf(err, errlen, "%s: not a regular file (%s is mapped)", path, what);
	else if ((size_t)sb.st_size < min || sb.st_size == 0)
		cmr_errf(err, errlen, "%s: %lld bytes: too short for %s", path, (long long)sb.st_size, what);
	else if ((map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0)) == MAP_FAILED) {
		cmr_errf(err, errlen, "%s: cannot map: %s", path, strerror(errno));
		map = NULL;
	}
	close(fd);
	*size = (size_t)sb.st_size;
	return map;
}
