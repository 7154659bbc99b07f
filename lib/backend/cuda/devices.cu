// devices.cu - CUDA device discovery for the CUDA backend (built with make CUDA=1).
#include <cuda_runtime.h>
#include <stdio.h>

extern "C" {
#include "../backend.h"
}

extern "C" int cmr_cuda_built(void) { return 1; }

extern "C" int cmr_cuda_devices(char *buf, size_t cap)
{
	int n = 0;
	cudaError_t e = cudaGetDeviceCount(&n);
	if (e != cudaSuccess) {
		snprintf(buf, cap, "%s", cudaGetErrorString(e));
		return 0;
	}
	if (n == 0) {
		snprintf(buf, cap, "no CUDA device");
		return 0;
	}
	cudaDeviceProp p;
	if (cudaGetDeviceProperties(&p, 0) != cudaSuccess) {
		snprintf(buf, cap, "device 0 cannot be queried");
		return n;
	}
	snprintf(buf, cap, "%s, compute capability %d.%d, %.1f GiB", p.name, p.major, p.minor,
		 p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
	return n;
}
