/* dist.c - the data-parallel process group (dist.h): MPI when built with it (CMR_MPI), one
 * process otherwise. */
#include "dist.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef CMR_MPI
#include <mpi.h>
#endif

int cmr_dist_launched(void)
{
	/* mpirun (Open MPI), PMI-2, MPICH's Hydra, and srun's job step (a batch script's own step
	 * has one task, so cmr-train run there without srun stays one process) */
	static const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MPI_LOCALNRANKS", "SLURM_STEP_NUM_TASKS"};
	for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) {
		const char *v = getenv(vars[i]);
		char *end;
		long n = v ? strtol(v, &end, 10) : 0;
		if (v && *v && !*end && n > 1 && n < 1 << 20)
			return (int)n;
	}
	return 1;
}

void cmr_dist_slice(int n, int size, int r, int *lo, int *hi)
{
	*lo = (int)((long long)n * r / size);
	*hi = (int)((long long)n * (r + 1) / size);
}

#ifdef CMR_MPI
static int mpi_ok(int rc)
{
	return rc == MPI_SUCCESS ? 0 : -1;
}

int cmr_dist_init(cmr_dist *d, int *argc, char ***argv, char *err, size_t errlen)
{
	*d = (cmr_dist){.rank = 0, .size = 1, .local_size = 1};
	if (cmr_dist_launched() < 2)
		return 0;
	int provided;
	if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
		snprintf(err, errlen, "cannot join the MPI job");
		return -1;
	}
	d->mpi = 1;
	/* errors come back as codes, so that a message can name what failed */
	MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
	MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
	MPI_Comm_size(MPI_COMM_WORLD, &d->size);
	MPI_Comm node;
	if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, d->rank, MPI_INFO_NULL, &node) == MPI_SUCCESS) {
		MPI_Comm_size(node, &d->local_size);
		MPI_Comm_free(&node);
	}
	return 0;
}

void cmr_dist_finish(cmr_dist *d)
{
	if (d->mpi)
		MPI_Finalize();
	d->mpi = 0;
}

int cmr_dist_gather_rows(const cmr_dist *d, float *buf, int n, int width)
{
	if (d->size < 2)
		return 0;
	int *cnt = malloc(2 * (size_t)d->size * sizeof *cnt);
	if (!cnt)
		return -1;
	for (int r = 0; r < d->size; r++) {
		int lo, hi;
		cmr_dist_slice(n, d->size, r, &lo, &hi);
		cnt[r] = (hi - lo) * width;
		cnt[d->size + r] = lo * width;
	}
	int rc = mpi_ok(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, cnt, cnt + d->size, MPI_FLOAT,
				       MPI_COMM_WORLD));
	free(cnt);
	return rc;
}

int cmr_dist_sum(const cmr_dist *d, float *x, size_t n)
{
	if (d->size < 2)
		return 0;
	enum { CHUNK = 1 << 20 };
	float *in = d->rank == 0 ? malloc((n < CHUNK ? n : CHUNK) * sizeof *in + 1) : NULL;
	int bad = d->rank == 0 && !in;
	/* every rank learns whether rank 0 can take part, so that none waits for it */
	if (mpi_ok(MPI_Bcast(&bad, 1, MPI_INT, 0, MPI_COMM_WORLD)) < 0 || bad) {
		free(in);
		return -1;
	}
	int rc = 0;
	for (size_t at = 0; at < n && rc == 0; at += CHUNK) {
		int c = (int)(n - at < CHUNK ? n - at : CHUNK);
		if (d->rank == 0) {
			for (int r = 1; r < d->size && rc == 0; r++) {
				rc = mpi_ok(MPI_Recv(in, c, MPI_FLOAT, r, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
				for (int i = 0; rc == 0 && i < c; i++)
					x[at + (size_t)i] += in[i];
			}
		} else {
			rc = mpi_ok(MPI_Send(x + at, c, MPI_FLOAT, 0, 0, MPI_COMM_WORLD));
		}
		if (rc == 0)
			rc = mpi_ok(MPI_Bcast(x + at, c, MPI_FLOAT, 0, MPI_COMM_WORLD));
	}
	free(in);
	return rc;
}

int cmr_dist_any(const cmr_dist *d, int flag)
{
	if (d->size < 2)
		return flag != 0;
	int in = flag != 0, out = 0;
	return MPI_Allreduce(&in, &out, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD) == MPI_SUCCESS ? out : -1;
}

int cmr_dist_idle_barrier(const cmr_dist *d)
{
	if (d->size < 2)
		return 0;
	MPI_Request rq;
	if (MPI_Ibarrier(MPI_COMM_WORLD, &rq) != MPI_SUCCESS)
		return -1;
	for (;;) {
		int done = 0;
		if (MPI_Test(&rq, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS)
			return -1;
		if (done)
			return 0;
		nanosleep(&(struct timespec){0, 1000000}, NULL);
	}
}

#else /* one process */

int cmr_dist_init(cmr_dist *d, int *argc, char ***argv, char *err, size_t errlen)
{
	(void)argc, (void)argv;
	*d = (cmr_dist){.rank = 0, .size = 1, .local_size = 1};
	int n = cmr_dist_launched();
	if (n > 1) {
		snprintf(err, errlen, "started as one of %d MPI processes, but built without MPI (install libopenmpi-dev "
				      "and rebuild: make MPI=1)", n);
		return -1;
	}
	return 0;
}

void cmr_dist_finish(cmr_dist *d)
{
	(void)d;
}

int cmr_dist_gather_rows(const cmr_dist *d, float *buf, int n, int width)
{
	(void)buf, (void)n, (void)width;
	return d->size < 2 ? 0 : -1;
}

int cmr_dist_sum(const cmr_dist *d, float *x, size_t n)
{
	(void)x, (void)n;
	return d->size < 2 ? 0 : -1;
}

int cmr_dist_any(const cmr_dist *d, int flag)
{
	return d->size < 2 ? flag != 0 : -1;
}

int cmr_dist_idle_barrier(const cmr_dist *d)
{
	return d->size < 2 ? 0 : -1;
}

#endif
