/* replay.c - runs a fuzz target's input files through it without libFuzzer, so that every
 * machine replays the corpus in make check. Usage: fuzz-replay stream|npy|tok|image|tuning|index|model|caption|tokfiles|state|kv|labels|tflite|wordvec|knowledge FILE... */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format/npy.h"
#include "format/stream.h"

int fuzz_stream_one(const uint8_t *data, size_t size);
int fuzz_npy_one(const uint8_t *data, size_t size);
int fuzz_tflite_one(const uint8_t *data, size_t size);
int fuzz_wordvec_one(const uint8_t *data, size_t size);
int fuzz_knowledge_one(const uint8_t *data, size_t size);
int fuzz_tuning_one(const uint8_t *data, size_t size);
int fuzz_index_one(const uint8_t *data, size_t size);
int fuzz_model_one(const uint8_t *data, size_t size);
int fuzz_caption_one(const uint8_t *data, size_t size);
int fuzz_tokfiles_one(const uint8_t *data, size_t size);
int fuzz_state_one(const uint8_t *data, size_t size);
int fuzz_kv_one(const uint8_t *data, size_t size);
int fuzz_labels_one(const uint8_t *data, size_t size);
int fuzz_tok_one(const uint8_t *data, size_t size);
int fuzz_image_one(const uint8_t *data, size_t size);

static const struct { const char *name; int (*fn)(const uint8_t *, size_t); } targets[] = {
	{"stream", fuzz_stream_one}, {"npy", fuzz_npy_one}, {"tok", fuzz_tok_one}, {"image", fuzz_image_one},
	{"tuning", fuzz_tuning_one}, {"index", fuzz_index_one},
	{"model", fuzz_model_one}, {"caption", fuzz_caption_one},
	{"tokfiles", fuzz_tokfiles_one}, {"state", fuzz_state_one}, {"kv", fuzz_kv_one}, {"labels", fuzz_labels_one},
	{"tflite", fuzz_tflite_one}, {"wordvec", fuzz_wordvec_one},
	{"knowledge", fuzz_knowledge_one},
};

int main(int argc, char **argv)
{
	int (*fn)(const uint8_t *, size_t) = NULL;
	for (size_t i = 0; argc >= 2 && i < sizeof targets / sizeof targets[0]; i++)
		if (strcmp(argv[1], targets[i].name) == 0)
			fn = targets[i].fn;
	if (!fn) {
		fprintf(stderr, "usage: fuzz-replay stream|npy|tok|image|tuning|index|model|caption|tokfiles|state|kv|labels|tflite|wordvec|knowledge FILE...\n");
		return 2;
	}
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
