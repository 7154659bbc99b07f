/* dist.h - the data-parallel process group of a training run: one process, or the ranks an
 * MPI launcher (mpirun, srun) started, with the few collectives that data-parallel training
 * needs (gathering a batch's embeddings in rank order, summing gradients in a fixed order,
 * agreeing on a stop). Built on Open MPI when the build found it (MPI=1), else one process
 * only. Never prints; the collectives return -1 on an MPI error. */
#ifndef CMR_DIST_H
#define CMR_DIST_H

#include <stddef.h>

typedef struct cmr_dist {
	int rank, size; /* this process and the group's size: 0 and 1 for one process */
	int local_size; /* the group's processes on this machine (they share its cores) */
	int mpi;        /* MPI was initialised (cmr_dist_finish finalises it) */
} cmr_dist;

/* How many processes a launcher started this one among, from its environment (Open MPI's
 * OMPI_COMM_WORLD_SIZE, PMI's PMI_SIZE, Hydra's MPI_LOCALNRANKS, Slurm's
 * SLURM_STEP_NUM_TASKS): 1 when none did. */
int cmr_dist_launched(void);
/* Joins the group when a launcher started more than one process, else d is one process.
 * -1 with a message in err when the launcher's group cannot be joined, or when this build
 * has no MPI (the message says how to build it). */
int cmr_dist_init(cmr_dist *d, int *argc, char ***argv, char *err, size_t errlen);
void cmr_dist_finish(cmr_dist *d);
/* The rows [lo, hi) of n that rank r takes: contiguous, in rank order, sizes differing by
 * at most one. */
void cmr_dist_slice(int n, int size, int r, int *lo, int *hi);
/* buf [n, width]: every rank holds its own slice's rows (cmr_dist_slice); afterwards all
 * rows, on every rank. */
int cmr_dist_gather_rows(const cmr_dist *d, float *buf, int n, int width);
/* x [n] := the sum over the ranks of their x, the same bits on every rank: rank 0 adds
 * rank 1's, then rank 2's, and so on, and sends the result to all (MPI_Allreduce's order of
 * summation is its own choice, and may change with the message size). */
int cmr_dist_sum(const cmr_dist *d, float *x, size_t n);
/* 1 on every rank when flag is non-zero on any; -1 on an error. */
int cmr_dist_any(const cmr_dist *d, int flag);
/* A barrier that waits without spinning (MPI's blocking calls poll the network at full
 * speed): it polls every millisecond. For the ranks waiting while rank 0 alone works (a
 * checkpoint, an evaluation). 0, or -1 on an error. */
int cmr_dist_idle_barrier(const cmr_dist *d);

#endif
