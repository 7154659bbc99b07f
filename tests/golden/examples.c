/* examples.c - builds the example records shown as hex dumps in formats/cmr-stream.md. */
#include "examples.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format/stream.h"

size_t cmr_example_record(int n, uint8_t **out)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	cmr_writer *w = cmr_writer_new(f, "example", 0);
	cmr_record rec;
	int rc = -1;
	if (n == 1) {
		/* a caption's CLIP tokens: start, "a", "dog", end */
		static const int32_t tokens[] = {49406, 320, 1929, 49407};
		uint32_t dims[] = {4};
		cmr_record_tensor(&rec, CMR_KIND_TOKENS, CMR_DTYPE_I32, 1, dims,
				  "1000268201_693b08cb0e#0", tokens);
		rc = cmr_writer_put(w, &rec);
	} else if (n == 2) {
		/* a 4-dimensional f32 embedding of an image */
		static const float emb[] = {0.5f, -0.5f, 0.25f, -0.75f};
		uint32_t dims[] = {4};
		cmr_record_tensor(&rec, CMR_KIND_EMBEDDING, CMR_DTYPE_F32, 1, dims,
				  "1000268201_693b08cb0e", emb);
		rc = cmr_writer_put(w, &rec);
	} else if (n == 3) {
		/* a provenance metadata record */
		cmr_writer_set_provenance(w, "cmr-dump",
					  "{\"tool\":\"cmr-dump\",\"version\":\"0.1.0\",\"args\":[],\"inputs\":[]}");
		rc = cmr_writer_finish(w);
	}
	if (rc == 0)
		rc = cmr_writer_finish(w);
	cmr_writer_free(w);
	fclose(f);
	if (rc < 0) {
		free(buf);
		return 0;
	}
	*out = (uint8_t *)buf;
	return len;
}
