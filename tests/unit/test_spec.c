/* test_spec.c - the hex dumps in formats/cmr-stream.md are what the writer produces. */
#include <stdlib.h>
#include <string.h>

#include "../golden/examples.h"
#include "unit.h"

/* Reads the bytes of the "```hexdump NAME" block of the spec (hexdump -C layout). */
static size_t spec_block(const char *name, uint8_t *out, size_t cap)
{
	char path[4096], line[512], want[64];
	snprintf(path, sizeof path, "%s/formats/cmr-stream.md", unit_srcdir());
	snprintf(want, sizeof want, "```hexdump %s", name);
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	int in = 0;
	size_t n = 0;
	while (fgets(line, sizeof line, f)) {
		line[strcspn(line, "\n")] = 0;
		if (!in) {
			in = strcmp(line, want) == 0;
			continue;
		}
		if (strncmp(line, "```", 3) == 0)
			break;
		/* "OFFSET  xx xx ... |ascii|": the offset must equal the bytes so far */
		char *p = line, *end;
		unsigned long off = strtoul(p, &end, 16);
		if (end == p || off != n) {
			n = 0;
			break;
		}
		p = end;
		for (;;) {
			while (*p == ' ')
				p++;
			if (*p == '|' || !*p)
				break;
			unsigned long b = strtoul(p, &end, 16);
			if (end != p + 2 || n >= cap) {
				fclose(f);
				return 0;
			}
			out[n++] = (uint8_t)b;
			p = end;
		}
	}
	fclose(f);
	return n;
}

TEST(spec_hexdumps)
{
	for (int i = 1; i <= CMR_EXAMPLES; i++) {
		char name[32];
		snprintf(name, sizeof name, "example-%d", i);
		uint8_t spec[1024], *rec;
		size_t ns = spec_block(name, spec, sizeof spec);
		size_t nr = cmr_example_record(i, &rec);
		if (ns != nr || memcmp(spec, rec, nr) != 0)
			fprintf(stderr, "  %s: spec has %zu bytes, writer %zu\n", name, ns, nr);
		CHECK(ns > 48);
		CHECK(ns == nr);
		CHECK(memcmp(spec, rec, nr) == 0);
		free(rec);
	}
}
