/* mkvec.c - writes N clustered random unit vectors as embedding records, from a seed.
 * Usage: mkvec N DIM CLUSTERS NOISE SEED [PREFIX [FIRST]] > vectors.cmr
 * Each vector is a random cluster centre plus uniform noise of NOISE per dimension,
 * normalised; keys PREFIX<i> (default "v"); only vectors FIRST.. are written (queries from
 * the same clusters: mkvec N+Q ... v N). Integer generator: the same bytes everywhere. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "format/stream.h"

static uint64_t s;
static double u(void) /* uniform [-1, 1) */
{
	s ^= s << 13;
	s ^= s >> 7;
	s ^= s << 17;
	return (double)(s >> 11) / 4503599627370496.0 - 1.0;
}

int main(int argc, char **argv)
{
	if (argc < 6) {
		fprintf(stderr, "usage: mkvec N DIM CLUSTERS NOISE SEED [PREFIX] > vectors.cmr\n");
		return 2;
	}
	long n = atol(argv[1]), d = atol(argv[2]), c = atol(argv[3]);
	double noise = atof(argv[4]);
	s = strtoull(argv[5], NULL, 10) * 0x9e3779b97f4a7c15ULL + 99;
	const char *prefix = argc > 6 ? argv[6] : "v";
	long first = argc > 7 ? atol(argv[7]) : 0;
	double *centre = malloc((size_t)(c * d) * sizeof *centre);
	float *v = malloc((size_t)d * sizeof *v);
	for (long i = 0; i < c * d; i++)
		centre[i] = u();
	cmr_writer *w = cmr_writer_new(stdout, "(stdout)", 0);
	for (long i = 0; i < n; i++) {
		long k = (long)((u() + 1) / 2 * (double)c) % c;
		double norm = 0;
		for (long j = 0; j < d; j++) {
			double x = centre[k * d + j] + noise * u();
			v[j] = (float)x;
			norm += x * x;
		}
		for (long j = 0; j < d; j++)
			v[j] = (float)(v[j] / sqrt(norm));
		if (i < first)
			continue;
		char key[64];
		snprintf(key, sizeof key, "%s%ld", prefix, i);
		cmr_record rec;
		uint32_t dims[1] = {(uint32_t)d};
		cmr_record_tensor(&rec, CMR_KIND_EMBEDDING, CMR_DTYPE_F32, 1, dims, key, v);
		if (cmr_writer_put(w, &rec) < 0)
			return 1;
	}
	if (cmr_writer_finish(w) < 0)
		return 1;
	cmr_writer_free(w);
	free(centre);
	free(v);
	return 0;
}
