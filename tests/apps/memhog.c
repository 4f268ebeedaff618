/*
 * memhog: holds a known amount of non-trivial memory, for measuring how long
 * a checkpoint freezes a process and checking that its memory survives.
 *
 * Usage: memhog MIB
 *
 * Allocates MIB MiB and fills every 64-bit word with a value derived from
 * its index (so no page is zero or a duplicate of another), prints
 * "ready <MIB>", then wakes every 100 ms forever. When the time since the
 * previous wake-up exceeds 200 ms (the process was frozen or starved) it
 * prints "pause <ms>" with that gap. On SIGUSR1 it re-checks every word and
 * prints "memory ok" or "memory BAD" (details on stderr).
 *
 * Gaps use CLOCK_MONOTONIC; if that clock goes backwards (restored on a
 * different boot) it prints "clock back <ms>" instead.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static volatile sig_atomic_t check_requested;

static void on_usr1(int sig)
{
	(void)sig;
	check_requested = 1;
}

/* word is the value stored at 64-bit word index i (splitmix64 of i). */
static inline uint64_t word(uint64_t i)
{
	uint64_t z = i + 0x9E3779B97F4A7C15ULL;
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	z ^= z >> 31;
	return z | 1; /* never zero */
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: memhog MIB\n");
		return 2;
	}
	char *end;
	errno = 0;
	unsigned long long mib = strtoull(argv[1], &end, 10);
	if (errno != 0 || end == argv[1] || *end != '\0' || argv[1][0] == '-' ||
	    mib > (1ULL << 20)) {
		fprintf(stderr, "memhog: bad MIB: %s\n", argv[1]);
		return 2;
	}

	size_t bytes = (size_t)mib << 20;
	size_t words = bytes / sizeof(uint64_t);
	uint64_t *mem = NULL;
	if (bytes > 0) {
		mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (mem == MAP_FAILED) {
			fprintf(stderr, "memhog: mmap %llu MiB: %s\n", mib, strerror(errno));
			return 1;
		}
	}
	for (size_t i = 0; i < words; i++)
		mem[i] = word(i);

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_usr1; /* no SA_RESTART: the sleep is cut short */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);

	printf("ready %llu\n", mib);
	fflush(stdout);

	int64_t last = now_ms();
	for (;;) {
		if (check_requested) {
			check_requested = 0;
			size_t bad = 0, first = 0;
			for (size_t i = 0; i < words; i++) {
				if (mem[i] != word(i)) {
					if (bad++ == 0)
						first = i;
				}
			}
			if (bad == 0) {
				printf("memory ok\n");
			} else {
				fprintf(stderr, "memhog: %zu bad words, first at byte offset %zu\n",
					bad, first * sizeof(uint64_t));
				printf("memory BAD\n");
			}
			fflush(stdout);
		}

		struct timespec ts = { 0, 100 * 1000000L };
		nanosleep(&ts, NULL); /* EINTR (SIGUSR1) just ends this nap early */

		int64_t t = now_ms(), gap = t - last;
		last = t;
		if (gap > 200) {
			printf("pause %" PRId64 "\n", gap);
			fflush(stdout);
		} else if (gap < 0) {
			printf("clock back %" PRId64 "\n", -gap);
			fflush(stdout);
		}
	}
}
