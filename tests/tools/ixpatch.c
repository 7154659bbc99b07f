/* ixpatch.c - crafts hostile index files for the tests: changes fields of an index and
 * recomputes every checksum (ixfix.h), as an attacker would.
 *   ixpatch IN.idx OUT.idx set SECTION OFFSET u32|u64 VALUE   (SECTION 0: the header)
 *   ixpatch IN.idx OUT.idx keys-bomb BYTES   (the keys become a valid zstd frame of BYTES
 *                                            zero bytes, in RLE blocks: a few KB on disk) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ixfix.h"

static void die(const char *m)
{
	fprintf(stderr, "ixpatch: %s\n", m);
	exit(2);
}

int main(int argc, char **argv)
{
	if (argc < 5)
		die("usage: ixpatch IN OUT set SECTION OFFSET u32|u64 VALUE | keys-bomb BYTES");
	FILE *f = fopen(argv[1], "rb");
	if (!f)
		die("cannot open the input");
	fseek(f, 0, SEEK_END);
	size_t size = (size_t)ftell(f), extra = 0;
	rewind(f);
	if (strcmp(argv[3], "keys-bomb") == 0)
		extra = 64 + 16 + 4 * (size_t)(strtoull(argv[4], NULL, 10) / (128 << 10) + 1);
	uint8_t *h = calloc(1, size + extra);
	if (!h || fread(h, 1, size, f) != size)
		die("cannot read the input");
	fclose(f);
	if (strcmp(argv[3], "set") == 0 && argc == 8) {
		uint32_t id = (uint32_t)strtoul(argv[4], NULL, 10);
		uint64_t at = strtoull(argv[5], NULL, 10), v = strtoull(argv[7], NULL, 10);
		int n = strcmp(argv[6], "u64") == 0 ? 8 : 4;
		if (id) {
			uint8_t *e = ix_entry(h, size, id);
			if (!e)
				die("no such section");
			at += ix_ld(e + 8, 8);
		}
		if (at + n > size)
			die("offset beyond the file");
		ix_st(h + at, n, v);
	} else if (strcmp(argv[3], "keys-bomb") == 0) {
		uint64_t bytes = strtoull(argv[4], NULL, 10);
		uint8_t *e = ix_entry(h, size, 6);
		if (!e || bytes >= (1ull << 32))
			die("no keys section, or BYTES over 4 GiB");
		size_t at = (size + 63) / 64 * 64, p = at;
		ix_st(h + p, 4, 0xFD2FB528u), p += 4; /* magic */
		h[p++] = 0xA0;                        /* 4-byte content size, single segment */
		ix_st(h + p, 4, bytes), p += 4;
		for (uint64_t left = bytes; left || p == at + 9;) {
			uint64_t b = left > (128 << 10) ? (128 << 10) : left;
			left -= b;
			ix_st(h + p, 3, (b << 3) | (1 << 1) | (left == 0)), p += 3; /* RLE block */
			h[p++] = 0;
		}
		ix_st(e + 8, 8, at);
		ix_st(e + 16, 8, p - at);
		size = p;
	} else {
		die("unknown operation");
	}
	ix_fix_checksums(h, size);
	f = fopen(argv[2], "wb");
	if (!f || fwrite(h, 1, size, f) != size || fclose(f) != 0)
		die("cannot write the output");
	free(h);
	return 0;
}
