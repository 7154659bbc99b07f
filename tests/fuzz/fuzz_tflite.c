/* fuzz_tflite.c - libFuzzer target: the TFLite flatbuffer reader, the interpreter's checks of a graph, and one run of what passes them. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tflite/tflite.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	cmr_tfl_model m;
	char err[1024];
	if (cmr_tfl_parse(&m, data, size, err, sizeof err) < 0)
		return 0;
	if (m.input < 0 || m.input >= m.ntensors || m.output < 0 || m.output >= m.ntensors)
		__builtin_trap();
	/* a graph may declare tensors of up to 2^31 values: keep the run's memory small */
	size_t act = 0;
	for (int i = 0; i < m.ntensors; i++)
		if (!m.t[i].data)
			act += m.t[i].nbytes;
	if (act <= (4u << 20)) {
		cmr_tfl_run *r = cmr_tfl_run_new(&m, size % 2, err, sizeof err);
		if (r) {
			int h, w;
			cmr_tfl_input_size(&m, &h, &w);
			uint8_t *px = calloc((size_t)h * w * 3, 1);
			float *out = malloc(m.t[m.output].nelem * sizeof *out);
			if (px && out) {
				for (size_t i = 0; i < (size_t)h * w * 3; i++)
					px[i] = (uint8_t)(i * 37);
				if (cmr_tfl_invoke(r, px, err, sizeof err) == 0)
					cmr_tfl_read(r, m.output, out);
			}
			free(px), free(out);
			cmr_tfl_run_free(r);
		}
	}
	cmr_tfl_free(&m);
	return 0;
}
