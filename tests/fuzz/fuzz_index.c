/* fuzz_index.c - libFuzzer target: the index reader (lib/index.c) on arbitrary bytes, with
 * the checksums recomputed first (tests/tools/ixfix.h) so that the structure checks are
 * what is tested; an index that opens is searched, read row by row, and its provenance's
 * models parsed (lib/origin.c). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "index.h"
#include "origin.h"
#include "../tools/ixfix.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *h = malloc(size + 8); /* malloc's alignment, as a mapping's */
	if (!h)
		return 0;
	memcpy(h, data, size);
	ix_fix_checksums(h, size);
	char err[1024];
	cmr_index *ix = cmr_index_from_memory(h, size, "fuzz", err, sizeof err);
	if (ix) {
		float *q = malloc(ix->dim * sizeof *q), *row = malloc(ix->dim * sizeof *row);
		uint64_t ord[3];
		float score[3];
		if (q && row) {
			for (uint32_t d = 0; d < ix->dim; d++)
				q[d] = 1.0f / sqrtf((float)ix->dim);
			cmr_search_params sp = {.nprobe = 2, .rerank = ix->exact ? 5 : 0};
			cmr_index_search(ix, q, 1, 3, &sp, 1, ord, score);
			for (uint64_t r = 0; r < ix->n && r < 64; r++)
				cmr_index_row(ix, r, row);
			for (uint64_t r = 0; r < ix->n; r++)
				if (!ix->keys[r] || strlen(ix->keys[r]) > 1024)
					__builtin_trap();
		}
		free(q);
		free(row);
		cmr_origins o;
		if (cmr_origins_from_json(&o, ix->provenance, "fuzz") == 0)
			cmr_origins_free(&o);
		cmr_index_free(ix);
	}
	free(h);
	return 0;
}
