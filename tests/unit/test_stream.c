/* test_stream.c - unit tests of the stream reader and writer (lib/format/stream.c). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../golden/examples.h"
#include "format/stream.h"
#include "unit.h"

/* A growing in-memory output. */
typedef struct { char *buf; size_t len; FILE *f; cmr_writer *w; } mem;

static void mem_open(mem *m, int level)
{
	m->buf = NULL;
	m->len = 0;
	m->f = open_memstream(&m->buf, &m->len);
	m->w = cmr_writer_new(m->f, "mem", level);
}

static void mem_close(mem *m)
{
	cmr_writer_finish(m->w);
	cmr_writer_free(m->w);
	fclose(m->f);
}

/* Reads all records of buf; returns the count of known records, or -1 on error (message
 * copied to err if given). */
static int read_all(const void *buf, size_t len, char *err, size_t errlen)
{
	FILE *f = fmemopen((void *)buf, len ? len : 1, "rb");
	if (!len) { /* fmemopen refuses size 0 on some libcs */
		fclose(f);
		return 0;
	}
	cmr_reader *r = cmr_reader_new(f, "buf");
	cmr_record rec;
	int n = 0, rc;
	while ((rc = cmr_reader_next(r, &rec)) == 1)
		n++;
	if (rc < 0 && err)
		snprintf(err, errlen, "%s", cmr_reader_error(r));
	cmr_reader_free(r);
	fclose(f);
	return rc < 0 ? -1 : n;
}

TEST(stream_roundtrip_every_dtype)
{
	static const int dts[] = {CMR_DTYPE_U8,  CMR_DTYPE_I8,  CMR_DTYPE_U16, CMR_DTYPE_I16,
				  CMR_DTYPE_U32, CMR_DTYPE_I32, CMR_DTYPE_I64, CMR_DTYPE_F16,
				  CMR_DTYPE_F32, CMR_DTYPE_F64, CMR_DTYPE_BF16};
	uint8_t data[2 * 3 * 8];
	for (size_t i = 0; i < sizeof data; i++)
		data[i] = (uint8_t)(i * 37 + 11);
	mem m;
	mem_open(&m, 0);
	for (size_t i = 0; i < sizeof dts / sizeof dts[0]; i++) {
		cmr_record rec;
		uint32_t dims[] = {2, 3};
		char key[16];
		snprintf(key, sizeof key, "k%zu", i);
		CHECK(cmr_record_tensor(&rec, CMR_KIND_GENERIC + (int)i, dts[i], 2, dims, key, data) == 0);
		CHECK(cmr_writer_put(m.w, &rec) == 0);
	}
	mem_close(&m);
	FILE *f = fmemopen(m.buf, m.len, "rb");
	cmr_reader *r = cmr_reader_new(f, "mem");
	cmr_record rec;
	for (size_t i = 0; i < sizeof dts / sizeof dts[0]; i++) {
		CHECK(cmr_reader_next(r, &rec) == 1);
		char key[16];
		snprintf(key, sizeof key, "k%zu", i);
		CHECK(strcmp(rec.key, key) == 0);
		CHECK(rec.type == CMR_TYPE_TENSOR);
		CHECK(rec.dtype == dts[i]);
		CHECK(rec.kind == (int)i);
		CHECK(rec.rank == 2 && rec.dims[0] == 2 && rec.dims[1] == 3 && rec.dims[2] == 0);
		CHECK(rec.nbytes == 6 * cmr_dtype_size(dts[i]));
		CHECK(memcmp(rec.data, data, rec.nbytes) == 0);
		CHECK(rec.index == i);
	}
	CHECK(cmr_reader_next(r, &rec) == 0);
	cmr_reader_free(r);
	fclose(f);
	free(m.buf);
}

TEST(stream_zstd_compresses_and_roundtrips)
{
	static float v[4096];
	for (int i = 0; i < 4096; i++)
		v[i] = (float)(i % 7);
	mem m;
	mem_open(&m, 3);
	cmr_record rec;
	uint32_t dims[] = {4096};
	cmr_record_tensor(&rec, CMR_KIND_EMBEDDING, CMR_DTYPE_F32, 1, dims, "z", v);
	CHECK(cmr_writer_put(m.w, &rec) == 0);
	mem_close(&m);
	CHECK(m.len < 1000); /* 16 KiB of a repeating pattern */
	FILE *f = fmemopen(m.buf, m.len, "rb");
	cmr_reader *r = cmr_reader_new(f, "mem");
	CHECK(cmr_reader_next(r, &rec) == 1);
	CHECK(rec.flags & CMR_FLAG_ZSTD);
	CHECK(rec.stored_len < rec.nbytes);
	CHECK(rec.nbytes == sizeof v && memcmp(rec.data, v, sizeof v) == 0);
	cmr_reader_free(r);
	fclose(f);
	free(m.buf);
}

TEST(stream_incompressible_payload_is_stored)
{
	uint8_t v[64];
	uint32_t x = 12345;
	for (int i = 0; i < 64; i++) {
		x = x * 1103515245u + 12345u;
		v[i] = (uint8_t)(x >> 24);
	}
	mem m;
	mem_open(&m, 19);
	cmr_record rec;
	uint32_t dims[] = {64};
	cmr_record_tensor(&rec, CMR_KIND_GENERIC, CMR_DTYPE_U8, 1, dims, "noise", v);
	CHECK(cmr_writer_put(m.w, &rec) == 0);
	mem_close(&m);
	CHECK(m.len == 48 + 5 + 64 + 8);
	CHECK((m.buf[8] & 1) == 0);
	free(m.buf);
}

TEST(stream_concatenation_is_a_stream)
{
	uint8_t *a, *b;
	size_t na = cmr_example_record(1, &a), nb = cmr_example_record(2, &b);
	CHECK(na && nb);
	uint8_t *cat = malloc(na + nb + na);
	memcpy(cat, a, na);
	memcpy(cat + na, b, nb);
	memcpy(cat + na + nb, a, na);
	CHECK(read_all(cat, na + nb + na, NULL, 0) == 3);
	CHECK(read_all(cat, 0, NULL, 0) == 0); /* empty stream */
	free(a);
	free(b);
	free(cat);
}

TEST(stream_provenance_precedes_first_tensor)
{
	mem m;
	mem_open(&m, 0);
	int32_t t[2] = {1, 2};
	uint32_t dims[] = {2};
	cmr_record rec, up;
	/* upstream metadata passes through first, then own provenance, then data */
	memset(&up, 0, sizeof up);
	up.type = CMR_TYPE_META;
	up.kind = CMR_KIND_PROVENANCE;
	up.dtype = CMR_DTYPE_U8;
	up.rank = 1;
	up.dims[0] = 2;
	up.nbytes = 2;
	up.data = "{}";
	strcpy(up.key, "up");
	up.key_len = 2;
	CHECK(cmr_writer_set_provenance(m.w, "me", "{\"tool\":\"me\"}") == 0);
	CHECK(cmr_writer_put(m.w, &up) == 0);
	cmr_record_tensor(&rec, CMR_KIND_TOKENS, CMR_DTYPE_I32, 1, dims, "a#0", t);
	CHECK(cmr_writer_put(m.w, &rec) == 0);
	CHECK(cmr_writer_put(m.w, &rec) == 0);
	mem_close(&m);
	FILE *f = fmemopen(m.buf, m.len, "rb");
	cmr_reader *r = cmr_reader_new(f, "mem");
	const char *want[] = {"up", "me", "a#0", "a#0"};
	int types[] = {CMR_TYPE_META, CMR_TYPE_META, CMR_TYPE_TENSOR, CMR_TYPE_TENSOR};
	for (int i = 0; i < 4; i++) {
		CHECK(cmr_reader_next(r, &rec) == 1);
		CHECK(strcmp(rec.key, want[i]) == 0);
		CHECK(rec.type == types[i]);
	}
	CHECK(cmr_reader_next(r, &rec) == 0);
	cmr_reader_free(r);
	fclose(f);
	free(m.buf);

	/* with no tensor at all, finish writes it */
	mem_open(&m, 0);
	CHECK(cmr_writer_set_provenance(m.w, "me", "{}") == 0);
	mem_close(&m);
	CHECK(read_all(m.buf, m.len, NULL, 0) == 1);
	free(m.buf);
}

TEST(stream_writer_refuses_invalid_records)
{
	mem m;
	mem_open(&m, 0);
	uint8_t d[8] = {0};
	uint32_t dims[] = {8};
	cmr_record rec;
	cmr_record_tensor(&rec, 0, CMR_DTYPE_U8, 1, dims, "", d);
	CHECK(cmr_writer_put(m.w, &rec) < 0); /* empty key */
	CHECK(strstr(cmr_writer_error(m.w), "empty key"));
	cmr_record_tensor(&rec, 0, CMR_DTYPE_U8, 1, dims, "bad\xff", d);
	CHECK(cmr_writer_put(m.w, &rec) < 0);
	CHECK(strstr(cmr_writer_error(m.w), "UTF-8"));
	cmr_record_tensor(&rec, 0, CMR_DTYPE_U8, 1, dims, "tab\there", d);
	CHECK(cmr_writer_put(m.w, &rec) < 0);
	CHECK(strstr(cmr_writer_error(m.w), "control"));
	uint32_t big[] = {60000, 60000, 3};
	cmr_record_tensor(&rec, 0, CMR_DTYPE_U8, 3, big, "big", d);
	CHECK(cmr_writer_put(m.w, &rec) < 0);
	CHECK(strstr(cmr_writer_error(m.w), "60000x60000x3"));
	cmr_record_tensor(&rec, 0, CMR_DTYPE_U8, 1, dims, "ok", d);
	rec.flags = CMR_FLAG_ZSTD; /* critical flags belong to the writer */
	CHECK(cmr_writer_put(m.w, &rec) < 0);
	CHECK(cmr_record_tensor(&rec, 0, 99, 1, dims, "x", d) < 0);
	CHECK(cmr_record_tensor(&rec, 0, CMR_DTYPE_U8, 5, dims, "x", d) < 0);
	mem_close(&m);
	CHECK(m.len == 0); /* nothing half-written */
	free(m.buf);
}

/* Every proper prefix of a valid record must be an error, never a record. */
TEST(stream_every_truncation_is_an_error)
{
	uint8_t *a;
	size_t n = cmr_example_record(1, &a);
	CHECK(n == 95);
	for (size_t cut = 1; cut < n; cut++) {
		char err[512] = "";
		CHECK(read_all(a, cut, err, sizeof err) == -1);
		CHECK(strstr(err, "truncated"));
	}
	CHECK(read_all(a, n, NULL, 0) == 1);
	free(a);
}

/* Every single-bit change of a valid record must be detected. */
TEST(stream_every_bit_flip_is_detected)
{
	uint8_t *a;
	size_t n = cmr_example_record(2, &a);
	CHECK(n > 0);
	int detected = 0, total = 0;
	for (size_t i = 0; i < n; i++)
		for (int bit = 0; bit < 8; bit++) {
			a[i] ^= (uint8_t)(1u << bit);
			char err[512];
			int rc = read_all(a, n, err, sizeof err);
			a[i] ^= (uint8_t)(1u << bit);
			total++;
			/* even a flip that makes the type unknown is caught: skipped records
			 * are checksummed too */
			if (rc == -1)
				detected++;
			else
				fprintf(stderr, "  undetected flip at byte %zu bit %d\n", i, bit);
		}
	CHECK(detected == total);
	free(a);
}

TEST(stream_unknown_type_is_skipped_and_counted)
{
	uint8_t *a, *b;
	size_t na = cmr_example_record(1, &a), nb = cmr_example_record(2, &b);
	char path[4096];
	snprintf(path, sizeof path, "%s/tests/golden/streams/good-unknown-type.cmr", unit_srcdir());
	FILE *f = fopen(path, "rb");
	CHECK(f);
	cmr_reader *r = cmr_reader_new(f, "u");
	cmr_record rec;
	CHECK(cmr_reader_next(r, &rec) == 1 && rec.index == 0);
	CHECK(cmr_reader_next(r, &rec) == 1 && rec.index == 2);
	CHECK(rec.offset == na + na);
	CHECK(cmr_reader_next(r, &rec) == 0);
	CHECK(cmr_reader_skipped(r) == 1);
	CHECK(cmr_reader_offset(r) == na + na + nb);
	cmr_reader_free(r);
	fclose(f);
	free(a);
	free(b);
}

TEST(stream_header_extension_is_skipped)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/tests/golden/streams/good-header-ext.cmr", unit_srcdir());
	FILE *f = fopen(path, "rb");
	CHECK(f);
	cmr_reader *r = cmr_reader_new(f, "x");
	cmr_record rec;
	CHECK(cmr_reader_next(r, &rec) == 1);
	CHECK(strcmp(rec.key, "1000268201_693b08cb0e") == 0);
	CHECK(rec.nbytes == 16 && ((const float *)rec.data)[3] == -0.75f);
	CHECK(cmr_reader_next(r, &rec) == 0);
	cmr_reader_free(r);
	fclose(f);
}

TEST(stream_error_names_stream_record_key_offset)
{
	uint8_t *a, *b;
	size_t na = cmr_example_record(1, &a), nb = cmr_example_record(2, &b);
	uint8_t *cat = malloc(na + nb);
	memcpy(cat, a, na);
	memcpy(cat + na, b, nb);
	cat[na + nb - 9] ^= 0x80; /* last payload byte of the second record */
	char err[512];
	CHECK(read_all(cat, na + nb, err, sizeof err) == -1);
	char want[200];
	snprintf(want, sizeof want, "buf: record 1 (key '1000268201_693b08cb0e'), byte %zu: checksum mismatch", na);
	CHECK(strncmp(err, want, strlen(want)) == 0);
	free(a);
	free(b);
	free(cat);
}

TEST(stream_verify_off_ignores_checksum)
{
	uint8_t *a;
	size_t n = cmr_example_record(1, &a);
	a[n - 1] ^= 1;
	FILE *f = fmemopen(a, n, "rb");
	cmr_reader *r = cmr_reader_new(f, "x");
	cmr_reader_set_verify(r, 0);
	cmr_record rec;
	CHECK(cmr_reader_next(r, &rec) == 1);
	cmr_reader_free(r);
	fclose(f);
	free(a);
}

TEST(stream_key_check)
{
	const char *why;
	CHECK(cmr_key_check("1000268201_693b08cb0e#0", 23, &why) == 0);
	CHECK(cmr_key_check("caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac", 12, &why) == 0); /* café 日本 */
	CHECK(cmr_key_check("\xc3", 1, &why) < 0);         /* cut sequence */
	CHECK(cmr_key_check("\xc0\xaf", 2, &why) < 0);     /* overlong */
	CHECK(cmr_key_check("\xed\xa0\x80", 3, &why) < 0); /* surrogate */
	CHECK(cmr_key_check("a\nb", 3, &why) < 0);
	CHECK(cmr_key_check("a\x7f", 2, &why) < 0);
	char big[CMR_KEY_MAX + 2];
	memset(big, 'k', sizeof big);
	CHECK(cmr_key_check(big, CMR_KEY_MAX, &why) == 0);
	CHECK(cmr_key_check(big, CMR_KEY_MAX + 1, &why) < 0);
}

TEST(stream_names_roundtrip)
{
	for (int d = 1; d <= CMR_DTYPE_BF16; d++) {
		CHECK(cmr_dtype_name(d));
		CHECK(cmr_dtype_from_name(cmr_dtype_name(d)) == d);
		CHECK(cmr_dtype_size(d) >= 1);
	}
	CHECK(cmr_dtype_size(0) == 0 && cmr_dtype_size(12) == 0);
	CHECK(cmr_kind_from_name("embedding") == CMR_KIND_EMBEDDING);
	CHECK(cmr_kind_from_name("desc-tokens") == CMR_KIND_DESC_TOKENS);
	CHECK(cmr_kind_from_name("nonsense") == -1);
	CHECK(strcmp(cmr_kind_name(CMR_KIND_PROVENANCE), "provenance") == 0);
	CHECK(cmr_kind_name(1000) == NULL);
}

TEST(stream_nelem)
{
	cmr_record rec;
	memset(&rec, 0, sizeof rec);
	CHECK(cmr_record_nelem(&rec) == 1); /* a scalar */
	rec.rank = 3;
	rec.dims[0] = 224;
	rec.dims[1] = 224;
	rec.dims[2] = 3;
	CHECK(cmr_record_nelem(&rec) == 150528);
	rec.dims[1] = 0;
	CHECK(cmr_record_nelem(&rec) == 0);
}
