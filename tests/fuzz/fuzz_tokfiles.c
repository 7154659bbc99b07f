/* fuzz_tokfiles.c - libFuzzer target: the tokenizer files a user gives (lib/text/clip_tok.c):
 * a Hugging Face vocab.json + merges.txt pair (cmr-caption-ingest --hf) and a CLIP merges
 * file (--bpe), from arbitrary bytes; what loads then tokenizes a fixed caption, and every
 * id it gives must lie in the loaded vocabulary. Input: vocab.json, a NUL byte, merges.txt
 * (without a NUL: the bytes are a --bpe merges file). The files are memfds. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "text/clip_tok.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int file_of(const void *p, size_t n, char *path, size_t cap)
{
	int fd = memfd_create("tokfile", 0);
	if (fd < 0)
		return -1;
	if (n && write(fd, p, n) != (ssize_t)n) {
		close(fd);
		return -1;
	}
	snprintf(path, cap, "/proc/self/fd/%d", fd);
	return fd;
}

static void try_it(cmr_clip_tok *t)
{
	static const char text[] = "a photo of two dogs playing in the snow, 2 dogs!";
	int32_t ids[CMR_CLIP_CONTEXT];
	int n = cmr_clip_tokenize(t, text, sizeof text - 1, CMR_CLIP_CONTEXT, ids, NULL);
	for (int i = 0; i < n; i++)
		if (ids[i] < 0 || ids[i] >= cmr_clip_tok_vocab_size(t))
			__builtin_trap();
	cmr_clip_tok_free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char pv[64], pm[64], err[512];
	const uint8_t *nul = memchr(data, 0, size);
	if (nul) {
		size_t nv = (size_t)(nul - data);
		int fv = file_of(data, nv, pv, sizeof pv), fm = file_of(nul + 1, size - nv - 1, pm, sizeof pm);
		if (fv >= 0 && fm >= 0) {
			cmr_clip_tok *t = cmr_clip_tok_from_hf(pv, pm, err, sizeof err);
			if (t)
				try_it(t);
		}
		if (fv >= 0)
			close(fv);
		if (fm >= 0)
			close(fm);
	} else {
		int fm = file_of(data, size, pm, sizeof pm);
		if (fm >= 0) {
			cmr_clip_tok *t = cmr_clip_tok_from_merges(pm, err, sizeof err);
			if (t)
				try_it(t);
			close(fm);
		}
	}
	return 0;
}
