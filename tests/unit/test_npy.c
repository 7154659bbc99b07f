/* test_npy.c - unit tests of the .npy preamble parser and writer (lib/format/npy.c). */
#include <stdlib.h>
#include <string.h>

#include "format/npy.h"
#include "format/stream.h"
#include "unit.h"

/* Builds a version 1.0 preamble around a header dictionary text. */
static size_t preamble(uint8_t *out, const char *dict)
{
	size_t n = strlen(dict);
	memcpy(out, "\x93NUMPY\x01\x00", 8);
	out[8] = (uint8_t)(n + 1);
	out[9] = (uint8_t)((n + 1) >> 8);
	memcpy(out + 10, dict, n);
	out[10 + n] = '\n';
	return 11 + n;
}

static int parse(const char *dict, cmr_npy *h, char *err)
{
	uint8_t buf[1024];
	size_t n = preamble(buf, dict), need;
	return cmr_npy_parse(buf, n, h, &need, err, 200);
}

TEST(npy_parses_numpy_headers)
{
	cmr_npy h;
	char err[200];
	CHECK(parse("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 512), }", &h, err) == 1);
	CHECK(h.dtype == CMR_DTYPE_F32 && !h.swap && h.ndim == 2 && h.shape[0] == 3 && h.shape[1] == 512);
	CHECK(parse("{'descr': '|u1', 'fortran_order': False, 'shape': (224, 224, 3), }", &h, err) == 1);
	CHECK(h.dtype == CMR_DTYPE_U8 && h.ndim == 3 && cmr_npy_nelem(&h) == 150528);
	CHECK(parse("{'descr': '>i4', 'fortran_order': False, 'shape': (7,), }", &h, err) == 1);
	CHECK(h.dtype == CMR_DTYPE_I32 && h.swap && h.ndim == 1 && h.shape[0] == 7);
	CHECK(parse("{'descr': '<f8', 'fortran_order': False, 'shape': (), }", &h, err) == 1);
	CHECK(h.ndim == 0 && cmr_npy_nelem(&h) == 1);
	/* key order and quoting as other writers produce them */
	CHECK(parse("{\"shape\": (2L, 3L), \"fortran_order\": False, \"descr\": \"<f2\"}", &h, err) == 1);
	CHECK(h.dtype == CMR_DTYPE_F16 && h.shape[0] == 2 && h.shape[1] == 3);
}

TEST(npy_refuses_what_it_cannot_read)
{
	cmr_npy h;
	char err[200];
	CHECK(parse("{'descr': '<f4', 'fortran_order': True, 'shape': (3, 4), }", &h, err) == -1);
	CHECK(strstr(err, "Fortran"));
	CHECK(parse("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (3,), }", &h, err) == -1);
	CHECK(strstr(err, "structured"));
	CHECK(parse("{'descr': '<c8', 'fortran_order': False, 'shape': (3,), }", &h, err) == -1);
	CHECK(strstr(err, "<c8"));
	CHECK(parse("{'descr': '<f4', 'shape': (3,), }", &h, err) == -1);
	CHECK(strstr(err, "fortran_order"));
	CHECK(parse("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), 'x': 1}", &h, err) == -1);
	CHECK(parse("{'descr': '<f4', 'fortran_order': False, 'shape': (3, x), }", &h, err) == -1);
	size_t need;
	CHECK(cmr_npy_parse("\x93NUMPX\x01\x00", 8, &h, &need, err, sizeof err) == -1);
	CHECK(strstr(err, "magic"));
	CHECK(cmr_npy_parse("\x93NUMPY\x07\x00\x10\x00", 10, &h, &need, err, sizeof err) == -1);
	CHECK(strstr(err, "version 7"));
	/* incomplete input asks for more */
	CHECK(cmr_npy_parse("\x93NUMPY\x01\x00\x40\x00{'descr'", 17, &h, &need, err, sizeof err) == 0);
	CHECK(need == 10 + 64);
}

TEST(npy_writer_output_parses_back_aligned)
{
	uint64_t shapes[][3] = {{5, 0, 0}, {3, 512, 0}, {2, 224, 3}};
	int nds[] = {1, 2, 3};
	for (int t = 0; t < 3; t++) {
		char *buf = NULL;
		size_t len = 0;
		FILE *f = open_memstream(&buf, &len);
		long n = cmr_npy_write_header(f, CMR_DTYPE_F32, nds[t], shapes[t], 0);
		fclose(f);
		CHECK(n > 0 && (size_t)n == len && len % 64 == 0);
		CHECK(buf[len - 1] == '\n');
		cmr_npy h;
		char err[200];
		size_t need;
		CHECK(cmr_npy_parse(buf, len, &h, &need, err, sizeof err) == 1);
		CHECK(h.ndim == nds[t] && h.header_len == len);
		for (int i = 0; i < nds[t]; i++)
			CHECK(h.shape[i] == shapes[t][i]);
		free(buf);
	}
	/* the exact text numpy writes for a 1-d array */
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	uint64_t s5[] = {5};
	cmr_npy_write_header(f, CMR_DTYPE_U8, 1, s5, 0);
	fclose(f);
	CHECK(memcmp(buf + 10, "{'descr': '|u1', 'fortran_order': False, 'shape': (5,), }", 57) == 0);
	free(buf);
	/* min_len pads so a header can be rewritten in place */
	f = open_memstream(&buf, &len);
	CHECK(cmr_npy_write_header(f, CMR_DTYPE_U8, 1, s5, 200) == 256);
	fclose(f);
	free(buf);
	f = open_memstream(&buf, &len);
	CHECK(cmr_npy_write_header(f, CMR_DTYPE_BF16, 1, s5, 0) == -1);
	fclose(f);
	free(buf);
}
