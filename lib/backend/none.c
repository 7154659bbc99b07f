/* backend/none.c - stands in for lib/backend/cuda/ in builds without CUDA (make CUDA=0). */
#include <stdio.h>

#include "backend/backend.h"

int cmr_cuda_built(void) { return 0; }

int cmr_cuda_devices(char *buf, size_t cap)
{
	snprintf(buf, cap, "this build has no CUDA backend (rebuild with make CUDA=1)");
	return 0;
}
