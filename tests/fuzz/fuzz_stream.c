/* fuzz_stream.c - libFuzzer target: the stream reader on arbitrary bytes must return records
 * or a clean error, never crash, leak or read out of bounds. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "format/stream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	FILE *f = fmemopen((void *)data, size, "rb");
	if (!f)
		return 0;
	cmr_reader *r = cmr_reader_new(f, "fuzz");
	cmr_record rec;
	int rc;
	uint64_t sum = 0;
	while ((rc = cmr_reader_next(r, &rec)) == 1) {
		/* touch every payload byte and the key, as a consumer would */
		const uint8_t *p = rec.data;
		for (uint64_t i = 0; i < rec.nbytes; i++)
			sum += p[i];
		sum += strlen(rec.key) + cmr_record_nelem(&rec);
		if (rec.type == CMR_TYPE_TENSOR && rec.kind == CMR_KIND_HITS) { /* the hits decoder */
			const char *why;
			cmr_hit h[8];
			int64_t n = cmr_hits_decode(&rec, h, 8, &why);
			for (int64_t i = 0; i < n && i < 8; i++)
				if (h[i].key < (const char *)rec.data || h[i].key + h[i].len > (const char *)rec.data + rec.nbytes)
					__builtin_trap();
		}
	}
	if (rc < 0 && !cmr_reader_error(r)[0])
		__builtin_trap(); /* an error must come with a message */
	cmr_reader_free(r);
	fclose(f);
	return (int)(sum & 0);
}
