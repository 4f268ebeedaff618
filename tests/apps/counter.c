/*
 * counter: prints "line 1" .. "line N", flushing each line, with DELAY_MS
 * between lines, then exits 0. Used to test plain (non-MPI) commands in a pod,
 * including checkpoint/restore of a simple process with an open stdout.
 *
 * Usage: counter N DELAY_MS
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* parse_ul parses a non-negative decimal argument or exits with a message. */
static unsigned long parse_ul(const char *s, const char *what)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || s[0] == '-') {
		fprintf(stderr, "counter: bad %s: %s\n", what, s);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: counter N DELAY_MS\n");
		return 2;
	}
	unsigned long n = parse_ul(argv[1], "N");
	unsigned long delay = parse_ul(argv[2], "DELAY_MS");

	for (unsigned long i = 1; i <= n; i++) {
		printf("line %lu\n", i);
		if (fflush(stdout) != 0)
			return 1;
		if (i < n) {
			struct timespec ts = { (time_t)(delay / 1000), (long)(delay % 1000) * 1000000L };
			while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
				;
		}
	}
	return 0;
}
