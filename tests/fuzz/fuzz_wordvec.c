/* fuzz_wordvec.c - libFuzzer target: the word-vector readers (GloVe/word2vec text, JSON; lib/text/wordvec.c), lookups, and the words of a text. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

#include "text/wordvec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	cmr_wordvec wv;
	char err[512];
	if (cmr_wordvec_parse(&wv, (const char *)data, size, "fuzz", err, sizeof err) == 0) {
		if (wv.dim < 1 || wv.dim > CMR_WORDVEC_DIM_MAX || !wv.n)
			__builtin_trap();
		for (size_t i = 0; i < wv.n; i++)
			if (cmr_wordvec_find(&wv, wv.word[i]) != wv.vec + i * (size_t)wv.dim)
				__builtin_trap(); /* every word finds its own vector */
		cmr_wordvec_free(&wv);
	}
	/* the bytes as a caption, when they are UTF-8 (cmr_text_words takes valid text) */
	for (size_t i = 0; i < size;) {
		utf8proc_int32_t c;
		utf8proc_ssize_t k = utf8proc_iterate(data + i, (utf8proc_ssize_t)(size - i), &c);
		if (k <= 0)
			return 0;
		i += (size_t)k;
	}
	char **w;
	int n = cmr_text_words((const char *)data, size, &w);
	for (int i = 0; i < n; i++)
		if (!w[i][0] || strlen(w[i]) > CMR_WORDVEC_WORD_MAX)
			__builtin_trap();
	if (n > 0)
		free(w[0]);
	free(w);
	return 0;
}
