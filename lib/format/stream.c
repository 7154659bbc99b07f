/* format/stream.c - reader and writer of the cmr tensor stream format, version 1 (formats/cmr-stream.md). */
#include "format/stream.h"
#include "util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>
#include <xxhash.h>
#include <zstd.h>

/* fields are little-endian on every host (util.h) */
#define ld16 cmr_ld16
#define ld32 cmr_ld32
#define ld64 cmr_ld64
#define st16 cmr_st16
#define st32 cmr_st32
#define st64 cmr_st64

static int host_is_le(void)
{
	const uint16_t one = 1;
	return *(const uint8_t *)&one == 1;
}

void cmr_swap_elems(void *data, uint64_t nbytes, size_t esize)
{
	uint8_t *p = data;
	if (esize < 2)
		return;
	for (uint64_t i = 0; i + esize <= nbytes; i += esize)
		for (size_t a = 0, b = esize - 1; a < b; a++, b--) {
			uint8_t t = p[i + a];
			p[i + a] = p[i + b];
			p[i + b] = t;
		}
}

/* ---- names ---- */
static const struct { int id; const char *name; size_t size; } dtypes[] = {
	{CMR_DTYPE_U8, "u8", 1},   {CMR_DTYPE_I8, "i8", 1},     {CMR_DTYPE_U16, "u16", 2},
	{CMR_DTYPE_I16, "i16", 2}, {CMR_DTYPE_U32, "u32", 4},   {CMR_DTYPE_I32, "i32", 4},
	{CMR_DTYPE_I64, "i64", 8}, {CMR_DTYPE_F16, "f16", 2},   {CMR_DTYPE_F32, "f32", 4},
	{CMR_DTYPE_F64, "f64", 8}, {CMR_DTYPE_BF16, "bf16", 2},
};
static const struct { int id; const char *name; } kinds[] = {
	{CMR_KIND_GENERIC, "generic"},         {CMR_KIND_IMAGE, "image"},
	{CMR_KIND_TOKENS, "tokens"},           {CMR_KIND_EMBEDDING, "embedding"},
	{CMR_KIND_DESC_TOKENS, "desc-tokens"}, {CMR_KIND_SCORES, "scores"},
	{CMR_KIND_HITS, "hits"},               {CMR_KIND_LABELS, "labels"},
	{CMR_KIND_VECTORS, "vectors"},
	{CMR_KIND_PROVENANCE, "provenance"},
};
#define READ_CHUNK (1u << 20)
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

size_t cmr_dtype_size(int dtype)
{
	for (size_t i = 0; i < COUNT(dtypes); i++)
		if (dtypes[i].id == dtype)
			return dtypes[i].size;
	return 0;
}

const char *cmr_dtype_name(int dtype)
{
	for (size_t i = 0; i < COUNT(dtypes); i++)
		if (dtypes[i].id == dtype)
			return dtypes[i].name;
	return NULL;
}

int cmr_dtype_from_name(const char *name)
{
	for (size_t i = 0; i < COUNT(dtypes); i++)
		if (strcmp(dtypes[i].name, name) == 0)
			return dtypes[i].id;
	return -1;
}

const char *cmr_kind_name(int kind)
{
	for (size_t i = 0; i < COUNT(kinds); i++)
		if (kinds[i].id == kind)
			return kinds[i].name;
	return NULL;
}

int cmr_kind_from_name(const char *name)
{
	for (size_t i = 0; i < COUNT(kinds); i++)
		if (strcmp(kinds[i].name, name) == 0)
			return kinds[i].id;
	return -1;
}

const char *cmr_type_name(int type)
{
	switch (type) {
	case CMR_TYPE_TENSOR: return "tensor";
	case CMR_TYPE_META: return "meta";
	default: return NULL;
	}
}

uint64_t cmr_record_nelem(const cmr_record *rec)
{
	uint64_t n = 1;
	for (int i = 0; i < rec->rank && i < CMR_RANK_MAX; i++)
		n *= rec->dims[i];
	return n;
}

int cmr_key_check(const char *key, size_t len, const char **why)
{
	const char *dummy;
	if (!why)
		why = &dummy;
	if (len > CMR_KEY_MAX) {
		*why = "longer than 1024 bytes";
		return -1;
	}
	size_t i = 0;
	while (i < len) {
		utf8proc_int32_t cp;
		utf8proc_ssize_t n = utf8proc_iterate((const utf8proc_uint8_t *)key + i,
						      (utf8proc_ssize_t)(len - i), &cp);
		if (n <= 0) {
			*why = "not valid UTF-8";
			return -1;
		}
		if (cp < 0x20 || cp == 0x7f) {
			*why = "contains a control character";
			return -1;
		}
		i += (size_t)n;
	}
	return 0;
}

/* Validates the tensor description of a record (shared by reader and writer). */
static const char *check_shape(const cmr_record *rec, uint64_t raw_len)
{
	static char buf[160];
	if (rec->type == CMR_TYPE_META) {
		if (rec->dtype != CMR_DTYPE_U8 || rec->rank != 1)
			return "metadata record must be u8 of rank 1";
	} else if (!cmr_dtype_size(rec->dtype)) {
		snprintf(buf, sizeof buf, "unknown dtype %d", rec->dtype);
		return buf;
	}
	if (rec->rank > CMR_RANK_MAX) {
		snprintf(buf, sizeof buf, "rank %d exceeds the limit of %d", rec->rank, CMR_RANK_MAX);
		return buf;
	}
	uint64_t n = cmr_dtype_size(rec->dtype);
	for (int i = 0; i < CMR_RANK_MAX; i++) {
		if (i >= rec->rank) {
			if (rec->dims[i] != 0)
				return "unused dimension is not zero";
			continue;
		}
		if (rec->dims[i] > CMR_DIM_MAX) {
			snprintf(buf, sizeof buf, "dimension %d is %u, over the limit of %u", i,
				 rec->dims[i], CMR_DIM_MAX);
			return buf;
		}
		n *= rec->dims[i];
		if (n > CMR_PAYLOAD_MAX) {
			char shape[64] = "";
			for (int j = 0; j < rec->rank; j++) {
				size_t l = strlen(shape);
				snprintf(shape + l, sizeof shape - l, "%s%u", j ? "x" : "", rec->dims[j]);
			}
			snprintf(buf, sizeof buf, "tensor of %s %s exceeds the payload limit of %llu bytes",
				 shape, cmr_dtype_name(rec->dtype), (unsigned long long)CMR_PAYLOAD_MAX);
			return buf;
		}
	}
	if (rec->type == CMR_TYPE_META && n > CMR_META_MAX)
		return "metadata payload exceeds the limit of 16 MiB";
	if (n != raw_len) {
		snprintf(buf, sizeof buf, "payload length %llu does not match dims (%llu bytes)",
			 (unsigned long long)raw_len, (unsigned long long)n);
		return buf;
	}
	return NULL;
}

/* ---- reader ---- */
struct cmr_reader {
	FILE *f;
	char *name;
	uint64_t off;      /* bytes consumed */
	uint64_t index;    /* records read, including skipped ones */
	uint64_t skipped;
	int verify;
	int failed;
	uint8_t *hdr;      /* CMR_HEADER_LEN_MAX */
	uint8_t *stored;   /* stored payload */
	size_t stored_cap;
	uint8_t *raw;      /* decompressed payload */
	size_t raw_cap;
	ZSTD_DCtx *dctx;
	XXH3_state_t *xxh;
	char err[CMR_KEY_MAX + 512];
};

cmr_reader *cmr_reader_new(FILE *f, const char *name)
{
	cmr_reader *r = calloc(1, sizeof *r);
	if (!r)
		return NULL;
	r->f = f;
	r->name = strdup(name ? name : "(stream)");
	r->hdr = malloc(CMR_HEADER_LEN_MAX);
	r->xxh = XXH3_createState();
	r->verify = 1;
	if (!r->name || !r->hdr || !r->xxh) {
		cmr_reader_free(r);
		return NULL;
	}
	return r;
}

void cmr_reader_free(cmr_reader *r)
{
	if (!r)
		return;
	free(r->name);
	free(r->hdr);
	free(r->stored);
	free(r->raw);
	ZSTD_freeDCtx(r->dctx);
	XXH3_freeState(r->xxh);
	free(r);
}

const char *cmr_reader_error(const cmr_reader *r) { return r->err; }
uint64_t cmr_reader_skipped(const cmr_reader *r) { return r->skipped; }
uint64_t cmr_reader_offset(const cmr_reader *r) { return r->off; }
void cmr_reader_set_verify(cmr_reader *r, int verify) { r->verify = verify; }

/* Formats "NAME: record I (key 'K'), byte OFF: MESSAGE" into r->err; returns -1. */
static int rfail(cmr_reader *r, uint64_t rec_off, const char *key, const char *fmt, ...)
{
	char msg[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (key)
		snprintf(r->err, sizeof r->err, "%s: record %llu (key '%s'), byte %llu: %s", r->name,
			 (unsigned long long)r->index, key, (unsigned long long)rec_off, msg);
	else
		snprintf(r->err, sizeof r->err, "%s: record %llu, byte %llu: %s", r->name,
			 (unsigned long long)r->index, (unsigned long long)rec_off, msg);
	r->failed = 1;
	return -1;
}

/* Reads exactly n bytes; returns the number read (short only at end of input or error). */
static size_t rread(cmr_reader *r, void *buf, size_t n)
{
	size_t got = n ? fread(buf, 1, n, r->f) : 0;
	r->off += got;
	return got;
}

static int grow(uint8_t **buf, size_t *cap, uint64_t need)
{
	if (need <= *cap)
		return 0;
	size_t n = *cap ? *cap : 4096;
	while (n < need)
		n *= 2;
	uint8_t *p = realloc(*buf, n);
	if (!p)
		return -1;
	*buf = p;
	*cap = n;
	return 0;
}

static const char *what_truncated(int part)
{
	static const char *parts[] = {"header", "key", "payload", "checksum"};
	return parts[part];
}

int cmr_reader_next(cmr_reader *r, cmr_record *rec)
{
	if (r->failed)
		return -1;
again:;
	uint64_t start = r->off;
	uint8_t *h = r->hdr;
	size_t got = rread(r, h, CMR_HEADER_LEN_V1);
	if (got == 0) {
		if (ferror(r->f))
			return rfail(r, start, NULL, "read error: %s", strerror(errno));
		return 0;
	}
	if (got >= 4 && !(h[0] == CMR_MAGIC0 && h[1] == CMR_MAGIC1 && h[2] == CMR_MAGIC2 &&
			  h[3] == CMR_MAGIC3))
		return rfail(r, start, NULL,
			     "bad magic %02x %02x %02x %02x (expected 89 43 4d 52, \"\\x89CMR\"): "
			     "not a cmr stream%s",
			     h[0], h[1], h[2], h[3],
			     start == 0 ? " (streams are made by cmr-decode from images, cmr-caption-ingest from "
					  "captions, cmr-dump from-npy from arrays)" : "");
	if (got < CMR_HEADER_LEN_V1) {
		if (ferror(r->f))
			return rfail(r, start, NULL, "read error: %s", strerror(errno));
		if (got < 4)
			return rfail(r, start, NULL, "truncated record: %zu stray bytes at end of stream", got);
		return rfail(r, start, NULL, "truncated header: stream ends at byte %llu",
			     (unsigned long long)r->off);
	}
	memset(rec, 0, sizeof *rec);
	rec->version = h[4];
	rec->type = h[5];
	uint16_t hlen = ld16(h + 6);
	rec->flags = ld16(h + 8);
	rec->kind = ld16(h + 10);
	rec->dtype = h[12];
	rec->rank = h[13];
	rec->key_len = ld16(h + 14);
	for (int i = 0; i < CMR_RANK_MAX; i++)
		rec->dims[i] = ld32(h + 16 + 4 * i);
	uint64_t raw_len = ld64(h + 32);
	uint64_t stored_len = ld64(h + 40);
	rec->offset = start;
	rec->index = r->index;
	rec->stored_len = stored_len;

	if (rec->version < CMR_VERSION_MIN || rec->version > CMR_VERSION)
		return rfail(r, start, NULL,
			     "unsupported format version %d (this reader knows versions %d to %d)",
			     rec->version, CMR_VERSION_MIN, CMR_VERSION);
	if (hlen < CMR_HEADER_LEN_V1 || hlen > CMR_HEADER_LEN_MAX)
		return rfail(r, start, NULL, "header length %u is outside %d..%d", hlen,
			     CMR_HEADER_LEN_V1, CMR_HEADER_LEN_MAX);
	if (rec->type == 0)
		return rfail(r, start, NULL, "record type 0 is invalid");
	if (rec->key_len > CMR_KEY_MAX)
		return rfail(r, start, NULL, "key length %u exceeds the limit of %d", rec->key_len,
			     CMR_KEY_MAX);
	int known_type = cmr_type_name(rec->type) != NULL;
	if (known_type && (rec->flags & CMR_FLAGS_CRITICAL & ~CMR_FLAGS_KNOWN))
		return rfail(r, start, NULL, "unknown critical flags 0x%04x",
			     rec->flags & CMR_FLAGS_CRITICAL & ~CMR_FLAGS_KNOWN);
	if (raw_len > CMR_PAYLOAD_MAX)
		return rfail(r, start, NULL, "payload of %llu bytes exceeds the limit of %llu bytes",
			     (unsigned long long)raw_len, (unsigned long long)CMR_PAYLOAD_MAX);
	uint64_t stored_max = (rec->flags & CMR_FLAG_ZSTD) ? ZSTD_compressBound(raw_len) : raw_len;
	if (stored_len > stored_max)
		return rfail(r, start, NULL, "stored payload of %llu bytes is larger than possible (%llu)",
			     (unsigned long long)stored_len, (unsigned long long)stored_max);

	/* header extension of later minor revisions: read, checksummed, ignored */
	if (hlen > CMR_HEADER_LEN_V1) {
		size_t ext = hlen - CMR_HEADER_LEN_V1;
		if (rread(r, h + CMR_HEADER_LEN_V1, ext) != ext)
			return rfail(r, start, NULL, "truncated header: stream ends at byte %llu",
				     (unsigned long long)r->off);
	}
	if (rread(r, rec->key, rec->key_len) != rec->key_len)
		return rfail(r, start, NULL, "truncated %s: stream ends at byte %llu", what_truncated(1),
			     (unsigned long long)r->off);
	rec->key[rec->key_len] = 0;
	const char *why;
	if (cmr_key_check(rec->key, rec->key_len, &why) < 0)
		return rfail(r, start, NULL, "bad key: %s", why);
	const char *key = rec->key;
	if (known_type) {
		const char *bad = check_shape(rec, raw_len);
		if (bad)
			return rfail(r, start, key, "%s", bad);
		if (rec->type == CMR_TYPE_TENSOR && rec->key_len == 0)
			return rfail(r, start, NULL, "tensor record has an empty key");
	}

	/* Read in chunks so that a declared length larger than the data actually present
	 * costs no more memory than the data. */
	for (uint64_t have = 0; have < stored_len;) {
		uint64_t chunk = stored_len - have < READ_CHUNK ? stored_len - have : READ_CHUNK;
		if (grow(&r->stored, &r->stored_cap, have + chunk) < 0)
			return rfail(r, start, key, "out of memory for %llu bytes",
				     (unsigned long long)stored_len);
		size_t n = rread(r, r->stored + have, chunk);
		have += n;
		if (n != chunk)
			return rfail(r, start, key,
				     "truncated payload: %llu bytes declared, stream ends at byte %llu",
				     (unsigned long long)stored_len, (unsigned long long)r->off);
	}
	uint8_t ck[CMR_CHECKSUM_LEN];
	if (rread(r, ck, sizeof ck) != sizeof ck)
		return rfail(r, start, key, "truncated checksum: stream ends at byte %llu",
			     (unsigned long long)r->off);
	rec->checksum = ld64(ck);
	if (r->verify) {
		XXH3_64bits_reset(r->xxh);
		XXH3_64bits_update(r->xxh, h, hlen);
		XXH3_64bits_update(r->xxh, rec->key, rec->key_len);
		XXH3_64bits_update(r->xxh, r->stored, stored_len);
		uint64_t sum = XXH3_64bits_digest(r->xxh);
		if (sum != rec->checksum)
			return rfail(r, start, key, "checksum mismatch (stored %016llx, computed %016llx)",
				     (unsigned long long)rec->checksum, (unsigned long long)sum);
	}
	r->index++;
	if (!known_type) {
		r->skipped++;
		goto again;
	}

	if (rec->flags & CMR_FLAG_ZSTD) {
		if (grow(&r->raw, &r->raw_cap, raw_len ? raw_len : 1) < 0)
			return rfail(r, start, key, "out of memory for %llu bytes", (unsigned long long)raw_len);
		if (!r->dctx && !(r->dctx = ZSTD_createDCtx()))
			return rfail(r, start, key, "out of memory");
		unsigned long long fcs = ZSTD_getFrameContentSize(r->stored, stored_len);
		if (fcs != raw_len) {
			r->index--;
			return rfail(r, start, key, "zstd frame does not declare the payload length %llu",
				     (unsigned long long)raw_len);
		}
		size_t n = ZSTD_decompressDCtx(r->dctx, r->raw, raw_len, r->stored, stored_len);
		if (ZSTD_isError(n) || n != raw_len) {
			r->index--;
			return rfail(r, start, key, "zstd payload is corrupt: %s",
				     ZSTD_isError(n) ? ZSTD_getErrorName(n) : "wrong length");
		}
		rec->data = r->raw;
	} else {
		rec->data = r->stored;
	}
	rec->nbytes = raw_len;
	if (!host_is_le())
		cmr_swap_elems((void *)rec->data, raw_len, cmr_dtype_size(rec->dtype));
	return 1;
}

/* ---- writer ---- */
struct cmr_writer {
	FILE *f;
	char *name;
	int level;
	uint64_t count;
	char *prov;       /* pending own provenance, NULL once written */
	char prov_key[CMR_KEY_MAX + 1];
	uint8_t *buf;     /* compression or byte-swap buffer */
	size_t cap;
	ZSTD_CCtx *cctx;
	XXH3_state_t *xxh;
	char err[CMR_KEY_MAX + 512];
};

cmr_writer *cmr_writer_new(FILE *f, const char *name, int level)
{
	cmr_writer *w = calloc(1, sizeof *w);
	if (!w)
		return NULL;
	w->f = f;
	w->name = strdup(name ? name : "(stream)");
	w->level = level;
	w->xxh = XXH3_createState();
	if (!w->name || !w->xxh) {
		cmr_writer_free(w);
		return NULL;
	}
	return w;
}

void cmr_writer_free(cmr_writer *w)
{
	if (!w)
		return;
	free(w->name);
	free(w->prov);
	free(w->buf);
	ZSTD_freeCCtx(w->cctx);
	XXH3_freeState(w->xxh);
	free(w);
}

const char *cmr_writer_error(const cmr_writer *w) { return w->err; }
uint64_t cmr_writer_count(const cmr_writer *w) { return w->count; }

static int wfail(cmr_writer *w, const char *key, const char *fmt, ...)
{
	char msg[400];
	int e = errno;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (key)
		snprintf(w->err, sizeof w->err, "%s: record %llu (key '%s'): %s", w->name,
			 (unsigned long long)w->count, key, msg);
	else
		snprintf(w->err, sizeof w->err, "%s: record %llu: %s", w->name,
			 (unsigned long long)w->count, msg);
	errno = e;
	return -1;
}

static int wwrite(cmr_writer *w, const void *p, size_t n)
{
	if (n && fwrite(p, 1, n, w->f) != n)
		return wfail(w, NULL, "write error: %s", strerror(errno));
	return 0;
}

static int put_record(cmr_writer *w, const cmr_record *rec)
{
	const char *why;
	if (rec->type != CMR_TYPE_TENSOR && rec->type != CMR_TYPE_META)
		return wfail(w, NULL, "cannot write record type %d", rec->type);
	if (rec->flags & CMR_FLAGS_CRITICAL)
		return wfail(w, NULL, "critical flags are set by the writer, not the caller");
	if (cmr_key_check(rec->key, rec->key_len, &why) < 0 || strlen(rec->key) != rec->key_len)
		return wfail(w, NULL, "bad key: %s", strlen(rec->key) != rec->key_len ? "length does not match" : why);
	if (rec->type == CMR_TYPE_TENSOR && rec->key_len == 0)
		return wfail(w, NULL, "tensor record has an empty key");
	const char *bad = check_shape(rec, rec->nbytes);
	if (bad)
		return wfail(w, rec->key, "%s", bad);

	const uint8_t *payload = rec->data;
	uint64_t stored = rec->nbytes;
	uint16_t flags = rec->flags;
	size_t esize = cmr_dtype_size(rec->dtype);
	if (!host_is_le() && esize > 1) {
		if (grow(&w->buf, &w->cap, rec->nbytes) < 0)
			return wfail(w, rec->key, "out of memory");
		memcpy(w->buf, rec->data, rec->nbytes);
		cmr_swap_elems(w->buf, rec->nbytes, esize);
		payload = w->buf;
	}
	uint8_t *zbuf = NULL;
	if (w->level > 0 && rec->nbytes > 0) {
		size_t bound = ZSTD_compressBound(rec->nbytes);
		zbuf = malloc(bound);
		if (!zbuf || (!w->cctx && !(w->cctx = ZSTD_createCCtx()))) {
			free(zbuf);
			return wfail(w, rec->key, "out of memory");
		}
		size_t n = ZSTD_compressCCtx(w->cctx, zbuf, bound, payload, rec->nbytes, w->level);
		if (ZSTD_isError(n)) {
			free(zbuf);
			return wfail(w, rec->key, "zstd: %s", ZSTD_getErrorName(n));
		}
		if (n < rec->nbytes) { /* keep the stored form unless compression pays */
			payload = zbuf;
			stored = n;
			flags |= CMR_FLAG_ZSTD;
		}
	}

	uint8_t h[CMR_HEADER_LEN_V1];
	h[0] = CMR_MAGIC0;
	h[1] = CMR_MAGIC1;
	h[2] = CMR_MAGIC2;
	h[3] = CMR_MAGIC3;
	h[4] = CMR_VERSION;
	h[5] = rec->type;
	st16(h + 6, CMR_HEADER_LEN_V1);
	st16(h + 8, flags);
	st16(h + 10, rec->kind);
	h[12] = rec->dtype;
	h[13] = rec->rank;
	st16(h + 14, rec->key_len);
	for (int i = 0; i < CMR_RANK_MAX; i++)
		st32(h + 16 + 4 * i, i < rec->rank ? rec->dims[i] : 0);
	st64(h + 32, rec->nbytes);
	st64(h + 40, stored);
	XXH3_64bits_reset(w->xxh);
	XXH3_64bits_update(w->xxh, h, sizeof h);
	XXH3_64bits_update(w->xxh, rec->key, rec->key_len);
	XXH3_64bits_update(w->xxh, payload, stored);
	uint8_t ck[CMR_CHECKSUM_LEN];
	st64(ck, XXH3_64bits_digest(w->xxh));
	int rc = 0;
	if (wwrite(w, h, sizeof h) < 0 || wwrite(w, rec->key, rec->key_len) < 0 ||
	    wwrite(w, payload, stored) < 0 || wwrite(w, ck, sizeof ck) < 0)
		rc = -1;
	free(zbuf);
	if (rc == 0)
		w->count++;
	return rc;
}

/* A provenance metadata record: key, JSON text. */
static int put_meta(cmr_writer *w, const char *key, const char *json)
{
	cmr_record m;
	memset(&m, 0, sizeof m);
	m.type = CMR_TYPE_META;
	m.kind = CMR_KIND_PROVENANCE;
	m.dtype = CMR_DTYPE_U8;
	m.rank = 1;
	size_t n = strlen(json), kl = strlen(key);
	if (n > CMR_META_MAX)
		return wfail(w, NULL, "provenance is larger than 16 MiB");
	if (kl > CMR_KEY_MAX)
		return wfail(w, NULL, "provenance key is too long");
	m.dims[0] = (uint32_t)n;
	m.nbytes = n;
	m.data = json;
	m.key_len = (uint16_t)kl;
	memcpy(m.key, key, kl + 1);
	return put_record(w, &m);
}

static int put_provenance(cmr_writer *w)
{
	if (!w->prov)
		return 0;
	int rc = put_meta(w, w->prov_key, w->prov);
	free(w->prov);
	w->prov = NULL;
	return rc;
}

int cmr_writer_put_provenance(cmr_writer *w, const char *key, const char *json)
{
	return put_meta(w, key, json);
}

int cmr_writer_put(cmr_writer *w, const cmr_record *rec)
{
	if (rec->type == CMR_TYPE_TENSOR && put_provenance(w) < 0)
		return -1;
	return put_record(w, rec);
}

int cmr_writer_set_provenance(cmr_writer *w, const char *key, const char *json)
{
	if (strlen(key) > CMR_KEY_MAX)
		return wfail(w, NULL, "provenance key is too long");
	strcpy(w->prov_key, key);
	free(w->prov);
	w->prov = json ? strdup(json) : NULL;
	if (json && !w->prov)
		return wfail(w, NULL, "out of memory");
	return 0;
}

int cmr_writer_finish(cmr_writer *w)
{
	if (put_provenance(w) < 0)
		return -1;
	if (fflush(w->f) != 0)
		return wfail(w, NULL, "write error: %s", strerror(errno));
	return 0;
}

int cmr_record_tensor(cmr_record *rec, int kind, int dtype, int rank, const uint32_t *dims,
		      const char *key, const void *data)
{
	memset(rec, 0, sizeof *rec);
	size_t klen = strlen(key);
	if (klen > CMR_KEY_MAX || rank < 0 || rank > CMR_RANK_MAX || !cmr_dtype_size(dtype))
		return -1;
	rec->type = CMR_TYPE_TENSOR;
	rec->kind = (uint16_t)kind;
	rec->dtype = (uint8_t)dtype;
	rec->rank = (uint8_t)rank;
	uint64_t n = cmr_dtype_size(dtype);
	for (int i = 0; i < rank; i++) {
		rec->dims[i] = dims[i];
		n *= dims[i];
	}
	memcpy(rec->key, key, klen + 1);
	rec->key_len = (uint16_t)klen;
	rec->data = data;
	rec->nbytes = n;
	return 0;
}

int64_t cmr_hits_decode(const cmr_record *rec, cmr_hit *out, size_t cap, const char **why)
{
	const uint8_t *p = rec->data;
	uint64_t n = rec->nbytes;
	if (rec->kind != CMR_KIND_HITS || rec->dtype != CMR_DTYPE_U8 || rec->rank != 1 || n < 4) {
		*why = "not a hits record (u8 [n], at least 4 bytes)";
		return -1;
	}
	uint32_t count = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
	uint64_t at = 4;
	for (uint32_t i = 0; i < count; i++) {
		if (n - at < 6) {
			*why = "hits payload ends inside an entry";
			return -1;
		}
		uint32_t bits = (uint32_t)p[at] | (uint32_t)p[at + 1] << 8 | (uint32_t)p[at + 2] << 16 | (uint32_t)p[at + 3] << 24;
		uint16_t len = (uint16_t)(p[at + 4] | p[at + 5] << 8);
		if (n - at - 6 < len) {
			*why = "hits payload ends inside a key";
			return -1;
		}
		if (out && i < cap) {
			memcpy(&out[i].score, &bits, 4);
			out[i].key = (const char *)p + at + 6;
			out[i].len = len;
		}
		at += 6 + (uint64_t)len;
	}
	if (at != n) {
		*why = "hits payload has bytes after its last entry";
		return -1;
	}
	return count;
}
