/* fuzz_tok.c - libFuzzer target: CLIP clean-up and tokenization of arbitrary text (as
 * cmr-caption-ingest passes it: valid UTF-8 only), never crashing, ids in the vocabulary. */
#include <stdint.h>
#include <stdlib.h>

#include <utf8proc.h>

#include "text/clip_tok.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static cmr_clip_tok *t;
	char err[256];
	if (!t && !(t = cmr_clip_tok_new(err, sizeof err)))
		__builtin_trap();
	if (size > 4096)
		return 0;
	for (size_t i = 0; i < size;) {
		utf8proc_int32_t c;
		utf8proc_ssize_t n = utf8proc_iterate(data + i, (utf8proc_ssize_t)(size - i), &c);
		if (n <= 0)
			return 0; /* the tool refuses invalid UTF-8 before tokenizing */
		i += (size_t)n;
	}
	int32_t ids[CMR_CLIP_CONTEXT];
	int n = cmr_clip_tokenize(t, (const char *)data, size, CMR_CLIP_CONTEXT, ids, NULL);
	if (n < 2 || n > CMR_CLIP_CONTEXT || ids[0] != 49406 || ids[n - 1] != 49407)
		__builtin_trap();
	for (int i = 0; i < n; i++)
		if (ids[i] < 0 || ids[i] >= cmr_clip_tok_vocab_size(t))
			__builtin_trap();
	free(cmr_clip_clean((const char *)data, size));
	return 0;
}
