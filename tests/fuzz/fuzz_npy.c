/* fuzz_npy.c - libFuzzer target: the .npy preamble parser on arbitrary bytes. */
#include <stdint.h>
#include <stdio.h>

#include "format/npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	cmr_npy h;
	char err[256];
	size_t need;
	int rc = cmr_npy_parse(data, size, &h, &need, err, sizeof err);
	if (rc == 1 && (h.ndim < 0 || h.ndim > CMR_NPY_MAXDIM || h.header_len > size))
		__builtin_trap();
	if (rc == 0 && need && need <= size)
		__builtin_trap(); /* asked for bytes it already had */
	if (size) {
		FILE *f = fmemopen((void *)data, size, "rb");
		if (f) {
			cmr_npy_read_header(f, &h, err, sizeof err);
			fclose(f);
		}
	}
	return 0;
}
