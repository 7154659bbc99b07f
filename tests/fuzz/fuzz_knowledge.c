/* fuzz_knowledge.c - libFuzzer target: the knowledge file reader (lib/knowledge.c, cmr-knowledge(5)) on arbitrary bytes; what loads is used (a word's prototype, a bridged word, a mapped feature) and saved. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "knowledge.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	cmr_knowledge kn;
	char err[4400];
	if (cmr_knowledge_from_memory(&kn, data, size, "fuzz", err, sizeof err) < 0)
		return 0;
	if (!kn.k || kn.dv < 1 || kn.dw < 1 || kn.words.n != kn.k)
		__builtin_trap();
	float *out = malloc((size_t)kn.dv * sizeof *out), *x = calloc((size_t)kn.dv, sizeof *x);
	float *q = calloc((size_t)kn.dw, sizeof *q), *m = malloc((size_t)kn.dw * sizeof *m);
	if (!out || !x || !q || !m)
		abort();
	char how;
	size_t near;
	if (cmr_knowledge_word(&kn, kn.words.word[0], NULL, 0, 0.1f, 0, out, &near, &how) != 1 || near != 0)
		__builtin_trap(); /* a concept finds itself */
	q[0] = 1;
	cmr_knowledge_word(&kn, "\x01not-a-word", q, 5, 0.1f, -1, out, &near, &how);
	x[0] = 1;
	if (kn.map_w)
		cmr_knowledge_mapped(&kn, x, m);
	else
		cmr_knowledge_visual(&kn, x);
	char path[64];
	snprintf(path, sizeof path, "/tmp/fuzz-knowledge-%d", (int)getpid());
	if (cmr_knowledge_save(&kn, path, err, sizeof err) == 0) {
		cmr_knowledge back;
		if (cmr_knowledge_load(&back, path, err, sizeof err) < 0 || back.k != kn.k)
			__builtin_trap(); /* what loads, saved, loads again */
		cmr_knowledge_free(&back);
		unlink(path);
	}
	free(out), free(x), free(q), free(m);
	cmr_knowledge_free(&kn);
	return 0;
}
