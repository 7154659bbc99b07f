/* mkgolden.c - writes the golden streams of tests/golden/streams/, good and deliberately
 * broken, from the spec's example records. Usage: mkgolden DIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "examples.h"
#include "format/stream.h"
#include "util.h"

static const char *dir;

static void put(const char *name, const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(a, 1, alen, f) != alen || (blen && fwrite(b, 1, blen, f) != blen) ||
	    fclose(f) != 0) {
		perror(path);
		exit(1);
	}
}

/* Recomputes the checksum of a single record occupying buf[0..len). */
static void fix(uint8_t *buf, size_t len)
{
	uint64_t h = XXH3_64bits(buf, len - 8);
	for (int i = 0; i < 8; i++)
		buf[len - 8 + i] = (uint8_t)(h >> (8 * i));
}

static uint8_t *copy(const uint8_t *p, size_t n)
{
	uint8_t *q = malloc(n + 64);
	memcpy(q, p, n);
	return q;
}

#define st32 cmr_st32
#define st64 cmr_st64

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: mkgolden DIR\n");
		return 2;
	}
	dir = argv[1];
	uint8_t *ex[CMR_EXAMPLES + 1];
	size_t n[CMR_EXAMPLES + 1];
	for (int i = 1; i <= CMR_EXAMPLES; i++)
		if (!(n[i] = cmr_example_record(i, &ex[i])))
			return 1;
	uint8_t *e1 = ex[1], *e2 = ex[2], *e3 = ex[3];
	size_t n1 = n[1], n2 = n[2], n3 = n[3];
	uint8_t *t;

	/* ---- good ---- */
	t = malloc(n1 + n2 + n3);
	memcpy(t, e3, n3);
	memcpy(t + n3, e1, n1);
	memcpy(t + n3 + n1, e2, n2);
	put("good-examples.cmr", t, n1 + n2 + n3, NULL, 0);
	free(t);
	put("good-empty.cmr", e1, 0, NULL, 0);

	/* a record of a type this version does not know, between two known ones */
	t = malloc(n1 + n1 + n2);
	memcpy(t, e1, n1);
	memcpy(t + n1, e1, n1);
	t[n1 + 5] = 9;
	fix(t + n1, n1);
	memcpy(t + 2 * n1, e2, n2);
	put("good-unknown-type.cmr", t, 2 * n1 + n2, NULL, 0);
	free(t);

	/* a header 8 bytes longer than version 1's, as a later revision may write */
	t = malloc(n2 + 8);
	memcpy(t, e2, 48);
	memcpy(t + 48, "EXTENDED", 8);
	memcpy(t + 56, e2 + 48, n2 - 48);
	t[6] = 56;
	fix(t, n2 + 8);
	put("good-header-ext.cmr", t, n2 + 8, NULL, 0);
	free(t);

	/* a zstd-compressed image: 16x16 RGB gradient */
	{
		uint8_t img[16 * 16 * 3];
		for (int i = 0; i < 16 * 16 * 3; i++)
			img[i] = (uint8_t)((i / 3 % 16) * 16 + (i % 3) * 4);
		char *buf = NULL;
		size_t len = 0;
		FILE *f = open_memstream(&buf, &len);
		cmr_writer *w = cmr_writer_new(f, "zstd", 3);
		cmr_record rec;
		uint32_t dims[] = {16, 16, 3};
		cmr_record_tensor(&rec, CMR_KIND_IMAGE, CMR_DTYPE_U8, 3, dims, "gradient", img);
		if (cmr_writer_put(w, &rec) < 0 || cmr_writer_finish(w) < 0)
			return 1;
		cmr_writer_free(w);
		fclose(f);
		put("good-zstd.cmr", (uint8_t *)buf, len, NULL, 0);
		/* ---- bad: corrupt compressed data under a valid checksum ---- */
		buf[len - 12] ^= 0x55;
		fix((uint8_t *)buf, len);
		put("bad-zstd.cmr", (uint8_t *)buf, len, NULL, 0);
		free(buf);
	}

	/* ---- bad ---- */
	t = copy(e1, n1);
	t[1] = 'X';
	put("bad-magic.cmr", t, n1, NULL, 0);
	free(t);

	put("bad-truncated-header.cmr", e1, 20, NULL, 0);
	put("bad-truncated-key.cmr", e1, 60, NULL, 0);
	put("bad-truncated-payload.cmr", e1, 48 + 23 + 8, NULL, 0);
	put("bad-truncated-checksum.cmr", e1, n1 - 3, NULL, 0);
	put("bad-stray-bytes.cmr", e1, n1, (const uint8_t *)"abc", 3);

	t = copy(e2, n2);
	t[n2 - 10] ^= 0x01; /* a payload bit */
	put("bad-checksum.cmr", t, n2, NULL, 0);
	put("bad-second-record.cmr", e1, n1, t, n2);
	free(t);

	t = copy(e1, n1);
	t[4] = 2;
	fix(t, n1);
	put("bad-version.cmr", t, n1, NULL, 0);
	free(t);

	t = copy(e1, n1);
	t[12] = CMR_DTYPE_U8;
	t[13] = 3;
	st32(t + 16, 60000);
	st32(t + 20, 60000);
	st32(t + 24, 3);
	fix(t, n1);
	put("bad-dims.cmr", t, n1, NULL, 0);
	free(t);

	t = copy(e1, n1);
	t[13] = 5;
	fix(t, n1);
	put("bad-rank.cmr", t, n1, NULL, 0);
	free(t);

	t = copy(e1, n1);
	t[12] = 99;
	fix(t, n1);
	put("bad-dtype.cmr", t, n1, NULL, 0);
	free(t);

	t = copy(e1, n1);
	t[8] = 0x02;
	fix(t, n1);
	put("bad-flag.cmr", t, n1, NULL, 0);
	free(t);

	t = copy(e1, n1);
	t[48] = 0xff;
	fix(t, n1);
	put("bad-key.cmr", t, n1, NULL, 0);
	free(t);

	t = copy(e1, n1);
	st64(t + 32, 12);
	st64(t + 40, 12);
	fix(t, n1);
	put("bad-length.cmr", t, n1, NULL, 0);
	free(t);

	t = copy(e1, n1);
	st64(t + 32, 1ull << 40);
	fix(t, n1);
	put("bad-huge-payload.cmr", t, n1, NULL, 0);
	free(t);

	for (int i = 1; i <= CMR_EXAMPLES; i++)
		free(ex[i]);
	return 0;
}
