/* ixfix.h - recomputes an index file's section and header checksums in place (cmr-index(5)),
 * so that a crafted or fuzzed file gets past them to the structure checks: a checksum is no
 * defence, anyone can recompute it. For tests/tools/ixpatch.c and tests/fuzz/fuzz_index.c. */
#ifndef CMR_IXFIX_H
#define CMR_IXFIX_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <xxhash.h>

static inline uint64_t ix_ld(const uint8_t *p, int n)
{
	uint64_t v = 0;
	for (int i = n - 1; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static inline void ix_st(uint8_t *p, int n, uint64_t v)
{
	for (int i = 0; i < n; i++, v >>= 8)
		p[i] = (uint8_t)v;
}

/* the entry of section id in the table, or NULL */
static inline uint8_t *ix_entry(uint8_t *h, size_t size, uint32_t id)
{
	if (size < 128 || memcmp(h, "\x89" "CMRIDX\n", 8) != 0)
		return NULL;
	uint64_t hlen = ix_ld(h + 12, 4), ns = ix_ld(h + 44, 4);
	if (hlen < 128 || ns > 64 || hlen + ns * 32 > size)
		return NULL;
	for (uint64_t i = 0; i < ns; i++)
		if (ix_ld(h + hlen + 32 * i, 4) == id)
			return h + hlen + 32 * i;
	return NULL;
}

static inline void ix_fix_checksums(uint8_t *h, size_t size)
{
	if (size < 128 || memcmp(h, "\x89" "CMRIDX\n", 8) != 0)
		return;
	uint64_t hlen = ix_ld(h + 12, 4), ns = ix_ld(h + 44, 4);
	if (hlen < 120 || ns > 64 || hlen + ns * 32 > size)
		return;
	for (uint64_t i = 0; i < ns; i++) {
		uint8_t *e = h + hlen + 32 * i;
		uint64_t off = ix_ld(e + 8, 8), l = ix_ld(e + 16, 8);
		if (off <= size && l <= size - off)
			ix_st(e + 24, 8, XXH3_64bits(h + off, (size_t)l));
	}
	XXH3_state_t *x = XXH3_createState();
	if (!x)
		return;
	XXH3_64bits_reset(x);
	XXH3_64bits_update(x, h, 120);
	XXH3_64bits_update(x, h + hlen, (size_t)ns * 32);
	ix_st(h + 120, 8, XXH3_64bits_digest(x));
	XXH3_freeState(x);
}

#endif
