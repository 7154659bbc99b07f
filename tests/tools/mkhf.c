/* mkhf.c - writes a Hugging Face CLIPTokenizer pair (vocab.json, merges.txt) equivalent to
 * CLIP's bpe_simple_vocab_16e6.txt.gz, for testing cmr-caption-ingest --hf.
 * Usage: mkhf BPE.txt.gz OUTDIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <archive.h>
#include <archive_entry.h>
#include <jansson.h>
#include <utf8proc.h>

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: mkhf BPE.txt.gz OUTDIR\n");
		return 2;
	}
	struct archive *a = archive_read_new();
	archive_read_support_filter_all(a);
	archive_read_support_format_raw(a);
	struct archive_entry *e;
	if (archive_read_open_filename(a, argv[1], 1 << 16) != ARCHIVE_OK ||
	    archive_read_next_header(a, &e) != ARCHIVE_OK) {
		fprintf(stderr, "mkhf: %s\n", archive_error_string(a));
		return 1;
	}
	size_t cap = 1 << 22, n = 0;
	char *buf = malloc(cap + 1);
	la_ssize_t got;
	while ((got = archive_read_data(a, buf + n, cap - n)) > 0)
		if ((n += (size_t)got) == cap)
			buf = realloc(buf, (cap *= 2) + 1);
	buf[n] = 0;
	archive_read_free(a);

	/* bytes_to_unicode, in CLIP's order */
	int order[256], k = 0;
	char sym[256][8];
	for (int pass = 0; pass < 2; pass++)
		for (int b = 0, m = 0; b < 256; b++) {
			int pr = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
			if (pr != (pass == 0))
				continue;
			int32_t c = pr ? b : 256 + m++;
			if (pass == 1 && pr)
				continue;
			size_t l = (size_t)utf8proc_encode_char(c, (uint8_t *)sym[k]);
			sym[k][l] = 0;
			order[b] = k++;
		}
	(void)order;
	json_t *v = json_object();
	char tmp[64];
	for (int i = 0; i < 256; i++)
		json_object_set_new(v, sym[i], json_integer(i));
	for (int i = 0; i < 256; i++) {
		snprintf(tmp, sizeof tmp, "%s</w>", sym[i]);
		json_object_set_new(v, tmp, json_integer(256 + i));
	}
	char path[4096];
	snprintf(path, sizeof path, "%s/merges.txt", argv[2]);
	FILE *mf = fopen(path, "w");
	if (!mf) {
		perror(path);
		return 1;
	}
	fprintf(mf, "#version: 0.2\n");
	char *line = buf;
	int id = 512;
	for (int ln = 0; line && *line && ln <= 48894; ln++) {
		char *nl = strchr(line, '\n');
		if (nl)
			*nl = 0;
		if (ln >= 1) {
			fprintf(mf, "%s\n", line);
			char joined[512];
			char *sp = strchr(line, ' ');
			snprintf(joined, sizeof joined, "%.*s%s", (int)(sp - line), line, sp + 1);
			json_object_set_new(v, joined, json_integer(id++));
		}
		line = nl ? nl + 1 : NULL;
	}
	fclose(mf);
	json_object_set_new(v, "<|startoftext|>", json_integer(id++));
	json_object_set_new(v, "<|endoftext|>", json_integer(id++));
	snprintf(path, sizeof path, "%s/vocab.json", argv[2]);
	if (json_dump_file(v, path, JSON_COMPACT) != 0) {
		perror(path);
		return 1;
	}
	json_decref(v);
	free(buf);
	return 0;
}
