/* replay.c - runs a fuzz target's input files through it without libFuzzer, so that every
 * machine replays the corpus in make check. Usage: fuzz-replay stream|npy FILE... */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "npy.h"
#include "stream.h"

int fuzz_stream_one(const uint8_t *data, size_t size);
int fuzz_npy_one(const uint8_t *data, size_t size);

int main(int argc, char **argv)
{
	if (argc < 2 || (strcmp(argv[1], "stream") != 0 && strcmp(argv[1], "npy") != 0)) {
		fprintf(stderr, "usage: fuzz-replay stream|npy FILE...\n");
		return 2;
	}
	int (*fn)(const uint8_t *, size_t) = strcmp(argv[1], "stream") == 0 ? fuzz_stream_one : fuzz_npy_one;
	int n = 0;
	for (int i = 2; i < argc; i++) {
		FILE *f = fopen(argv[i], "rb");
		if (!f) {
			perror(argv[i]);
			return 1;
		}
		uint8_t *buf = NULL;
		size_t len = 0, cap = 0, got;
		do {
			if (len == cap) {
				cap = cap ? 2 * cap : 65536;
				buf = realloc(buf, cap);
			}
			got = fread(buf + len, 1, cap - len, f);
			len += got;
		} while (got);
		fclose(f);
		fn(buf, len);
		free(buf);
		n++;
	}
	printf("replayed %d inputs\n", n);
	return 0;
}
