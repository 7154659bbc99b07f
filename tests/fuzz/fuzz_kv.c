/* fuzz_kv.c - libFuzzer target: the KEY<TAB>VALUE line files users give (cmr-eval --labels,
 * cmr-query --query-text; cmr_kv_parse in lib/util.c) on arbitrary bytes: a parse that
 * succeeds gives non-empty keys and values without NULs, at most one pair per line, and
 * cmr_kv_get finds the first of each key. First byte: bit 0, plain lines allowed. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	cmr_kv kv;
	char err[256];
	const char *text = (const char *)data + 1;
	size_t len = size - 1, lines = 1;
	for (size_t i = 0; i < len; i++)
		lines += text[i] == '\n';
	if (cmr_kv_parse(text, len, data[0] & 1, "fuzz", "VALUE", &kv, err, sizeof err) < 0) {
		if (!err[0])
			__builtin_trap();
		return 0;
	}
	if (kv.n > lines)
		__builtin_trap();
	for (size_t i = 0; i < kv.n; i++) {
		if (!kv.key[i][0] || !kv.val[i][0] || strchr(kv.key[i], '\t') || strchr(kv.key[i], '\n'))
			__builtin_trap();
		const char *v = cmr_kv_get(&kv, kv.key[i]);
		if (!v)
			__builtin_trap();
	}
	cmr_kv_free(&kv);
	return 0;
}
