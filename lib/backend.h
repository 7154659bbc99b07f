/* backend.h - which compute backends this build has (the CUDA one is optional at build time). */
#ifndef CMR_BACKEND_H
#define CMR_BACKEND_H

#include <stddef.h>

/* 1 if this build was compiled with CUDA (make CUDA=1), else 0. */
int cmr_cuda_built(void);
/* Number of CUDA devices usable now (0 without a device, a driver or CUDA), and in buf the
 * first device's name or the reason there is none. */
int cmr_cuda_devices(char *buf, size_t cap);

#endif
