/*
 * mpi_allreduce: a small MPI job whose output depends only on the number of
 * ranks and the iteration count, so a checkpointed-and-restored run can be
 * compared line by line with an uninterrupted one.
 *
 * Usage: mpi_allreduce [--finalize-grace S] ITERS SLEEP_MS [MIB]
 *
 * With MIB (default 0), each rank also allocates MIB MiB with malloc and
 * touches every page of it (memset with a byte that depends on the rank)
 * before the first iteration, and keeps it until the end, so that each
 * rank's checkpoint carries about that much memory. MIB never changes the
 * output.
 *
 * Rank 0 prints:
 *   start ranks <n>
 *   iter <i> sum <s> acc <acc>          one line per iteration i = 1..ITERS
 *   result <acc> ranks <n> iters <ITERS>
 * where s = sum over ranks r of ((r+1) * i * i) mod 1000003 and acc is the
 * running total of s. After each iteration every rank sleeps SLEEP_MS, so the
 * job runs long enough to be checkpointed in the middle.
 *
 * With the environment variable MPI_ALLREDUCE_STAMPS set, rank 0 also prints
 * "stamp <i> <unix time in ns>" on stderr when iteration i's allreduce has
 * completed: tests measure from it when the job's traffic flowed again after
 * a checkpoint. stdout stays the same.
 *
 * --finalize-grace S (default 10): a rank still in MPI_Finalize S seconds
 * after the result ends itself with status 0 (see the end of main); 0 turns
 * this off, so that a hang in MPI_Finalize shows (tests/bench/finalize.sh
 * counts them).
 */
#include <mpi.h>
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#define MODULUS 1000003ULL
#define FINALIZE_GRACE_S 10 /* default of --finalize-grace */

/* finalize_watchdog ends a rank stuck in MPI_Finalize (see main). */
static void finalize_watchdog(int sig)
{
	(void)sig;
	_exit(0);
}

/* ballast holds the MIB MiB of each rank; volatile so that the compiler
 * cannot drop the allocation or the memset as dead stores. */
static unsigned char *volatile ballast;

/* parse_u64 parses a non-negative decimal argument or exits with a message. */
static uint64_t parse_u64(const char *s, const char *what)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || s[0] == '-') {
		fprintf(stderr, "mpi_allreduce: bad %s: %s\n", what, s);
		exit(2);
	}
	return (uint64_t)v;
}

/* sleep_ms sleeps for ms milliseconds, resuming after signals. */
static void sleep_ms(uint64_t ms)
{
	struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* value is the deterministic contribution of one rank to iteration i. */
static int64_t value(int rank, uint64_t i)
{
	uint64_t v = ((uint64_t)rank + 1) % MODULUS;
	v = v * (i % MODULUS) % MODULUS;
	v = v * (i % MODULUS) % MODULUS;
	return (int64_t)v;
}

int main(int argc, char **argv)
{
	uint64_t grace = FINALIZE_GRACE_S;
	int a = 1; /* first positional argument */
	if (argc > 2 && strcmp(argv[1], "--finalize-grace") == 0) {
		grace = parse_u64(argv[2], "--finalize-grace seconds");
		if (grace > 86400) {
			fprintf(stderr, "mpi_allreduce: bad --finalize-grace seconds: %s (at most 86400; 0: off)\n", argv[2]);
			exit(2);
		}
		a = 3;
	}
	if (argc - a != 2 && argc - a != 3) {
		fprintf(stderr, "usage: mpi_allreduce [--finalize-grace S] ITERS SLEEP_MS [MIB]\n");
		return 2;
	}
	uint64_t iters = parse_u64(argv[a], "ITERS");
	uint64_t sleep = parse_u64(argv[a + 1], "SLEEP_MS");
	uint64_t mib = argc - a == 3 ? parse_u64(argv[a + 2], "MIB") : 0;
	if (mib > SIZE_MAX / (1024 * 1024)) {
		fprintf(stderr, "mpi_allreduce: bad MIB: %s\n", argv[a + 2]);
		exit(2);
	}

	MPI_Init(&argc, &argv);
	int rank, n;
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &n);

	/* ballast: MIB MiB per rank, every page touched, kept until the end */
	size_t ballast_len = (size_t)mib * 1024 * 1024;
	if (ballast_len > 0) {
		unsigned char *p = malloc(ballast_len);
		if (p == NULL) {
			fprintf(stderr, "mpi_allreduce: rank %d: cannot allocate %" PRIu64 " MiB\n", rank, mib);
			MPI_Abort(MPI_COMM_WORLD, 1);
			return 1;
		}
		memset(p, 0x5a ^ (rank & 0xff), ballast_len);
		ballast = p;
	}

	if (rank == 0) {
		printf("start ranks %d\n", n);
		fflush(stdout);
	}

	int stamps = rank == 0 && getenv("MPI_ALLREDUCE_STAMPS") != NULL;
	int64_t acc = 0; /* running total; identical on every rank */
	for (uint64_t i = 1; i <= iters; i++) {
		int64_t mine = value(rank, i), sum = 0;
		MPI_Allreduce(&mine, &sum, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
		acc += sum;
		if (stamps) {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			fprintf(stderr, "stamp %" PRIu64 " %lld\n", i, (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
		}
		if (rank == 0) {
			printf("iter %" PRIu64 " sum %" PRId64 " acc %" PRId64 "\n", i, sum, acc);
			fflush(stdout);
		}
		sleep_ms(sleep);
	}

	if (rank == 0) {
		printf("result %" PRId64 " ranks %d iters %" PRIu64 "\n", acc, n, iters);
		fflush(stdout);
	}
	free(ballast);
	/*
	 * Debian 12's MPICH 4.0.2 over UCX 1.13's TCP transport sometimes hangs
	 * in MPI_Finalize, with or without Cruz: a rank's endpoint flush waits
	 * for an answer from a peer that has already closed its own endpoints
	 * and stopped progressing in a PMI barrier (removed in later MPICH,
	 * pmodels/mpich#6596; see "Limits" in docs/user-guide.md). Everything this
	 * program computes and prints is done by now, so a rank still stuck in
	 * MPI_Finalize after FINALIZE_GRACE_S ends itself successfully rather
	 * than hang the test that runs it. --finalize-grace 0 lets it hang.
	 */
	if (grace > 0) {
		signal(SIGALRM, finalize_watchdog);
		alarm((unsigned)grace);
	}
	MPI_Finalize();
	return 0;
}
