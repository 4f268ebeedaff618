/*
 * tcp_stream: one TCP connection carrying a known byte pattern, slow enough
 * to be checkpointed while bytes sit in the kernel's socket queues. The
 * receiver checks every byte, so a lost, duplicated or reordered byte after a
 * restore is caught.
 *
 * Usage:
 *   tcp_stream server PORT TOTAL_BYTES [READ_DELAY_MS]
 *       Accepts one connection (IPv4, any address), reads TOTAL_BYTES and
 *       checks byte o == pattern(o). Prints "recv <k*1048576>" each time
 *       another MiB has arrived, then "server ok <TOTAL> bytes" (or
 *       "server BAD at offset <o>" / "server short <got> of <TOTAL> bytes"
 *       and exit 1), sends back the count as 8 bytes big-endian and exits 0.
 *       READ_DELAY_MS (default 0) sleeps between reads so the receive queue
 *       fills up.
 *   tcp_stream client HOST PORT TOTAL_BYTES CHUNK DELAY_MS
 *       Connects (retrying for about 10 s), writes the pattern in CHUNK-byte
 *       writes with DELAY_MS between them, reads the 8-byte reply and prints
 *       "client ok <TOTAL> bytes" if it equals TOTAL (else a message, exit 1).
 *
 * Socket buffers default to 4 MiB (env TCP_STREAM_BUF=<bytes> overrides;
 * 0 keeps the kernel's default). As root SO_*BUFFORCE is used, which is not
 * capped by net.core.[rw]mem_max.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define MIB (1024ULL * 1024ULL)
#define DEFAULT_BUF (4 * 1024 * 1024)
#define CONNECT_TRIES 100 /* x 100 ms = about 10 s */

/* pattern is the byte expected at stream offset o. */
static inline uint8_t pattern(uint64_t o)
{
	return (uint8_t)((o * 2654435761u) >> 13);
}

static void die(const char *msg)
{
	fprintf(stderr, "tcp_stream: %s: %s\n", msg, strerror(errno));
	exit(1);
}

static uint64_t parse_u64(const char *s, const char *what)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || s[0] == '-') {
		fprintf(stderr, "tcp_stream: bad %s: %s\n", what, s);
		exit(2);
	}
	return (uint64_t)v;
}

static void sleep_ms(uint64_t ms)
{
	struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* set_bufs enlarges the send and receive buffers of fd (best effort). */
static void set_bufs(int fd)
{
	int size = DEFAULT_BUF;
	const char *env = getenv("TCP_STREAM_BUF");
	if (env != NULL && *env != '\0')
		size = (int)parse_u64(env, "TCP_STREAM_BUF");
	if (size <= 0)
		return;
	if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size) != 0)
		(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) != 0)
		(void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
}

/* write_all writes len bytes, retrying short writes and EINTR. */
static int write_all(int fd, const uint8_t *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* read_full reads exactly len bytes; returns bytes read (< len on EOF) or -1. */
static ssize_t read_full(int fd, uint8_t *buf, size_t len)
{
	size_t got = 0;
	while (got < len) {
		ssize_t n = read(fd, buf + got, len - got);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

static int server(int argc, char **argv)
{
	if (argc != 3 && argc != 4) {
		fprintf(stderr, "usage: tcp_stream server PORT TOTAL_BYTES [READ_DELAY_MS]\n");
		return 2;
	}
	uint64_t port = parse_u64(argv[1], "PORT");
	uint64_t total = parse_u64(argv[2], "TOTAL_BYTES");
	uint64_t delay = argc == 4 ? parse_u64(argv[3], "READ_DELAY_MS") : 0;
	if (port == 0 || port > 65535) {
		fprintf(stderr, "tcp_stream: bad PORT: %s\n", argv[1]);
		return 2;
	}

	int ls = socket(AF_INET, SOCK_STREAM, 0);
	if (ls < 0)
		die("socket");
	int one = 1;
	(void)setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	set_bufs(ls); /* before listen: accepted sockets inherit it, window scale follows */
	struct sockaddr_in sa;
	memset(&sa, 0, sizeof sa);
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_ANY);
	sa.sin_port = htons((uint16_t)port);
	if (bind(ls, (struct sockaddr *)&sa, sizeof sa) != 0)
		die("bind");
	if (listen(ls, 1) != 0)
		die("listen");

	int fd;
	while ((fd = accept(ls, NULL, NULL)) < 0) {
		if (errno != EINTR)
			die("accept");
	}
	close(ls);

	static uint8_t buf[256 * 1024];
	uint64_t got = 0, next_report = MIB;
	while (got < total) {
		size_t want = sizeof buf;
		if (total - got < want)
			want = (size_t)(total - got);
		ssize_t n = read(fd, buf, want);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("read");
		}
		if (n == 0) {
			printf("server short %" PRIu64 " of %" PRIu64 " bytes\n", got, total);
			fflush(stdout);
			return 1;
		}
		for (ssize_t k = 0; k < n; k++) {
			if (buf[k] != pattern(got + (uint64_t)k)) {
				printf("server BAD at offset %" PRIu64 "\n", got + (uint64_t)k);
				fflush(stdout);
				return 1;
			}
		}
		got += (uint64_t)n;
		for (; next_report <= got; next_report += MIB)
			printf("recv %" PRIu64 "\n", next_report);
		fflush(stdout);
		if (delay > 0)
			sleep_ms(delay);
	}
	printf("server ok %" PRIu64 " bytes\n", got);
	fflush(stdout);

	uint8_t reply[8];
	for (int k = 0; k < 8; k++)
		reply[k] = (uint8_t)(got >> (56 - 8 * k));
	if (write_all(fd, reply, sizeof reply) != 0)
		die("write reply");
	/* Send FIN after the reply; the queued reply is still delivered. */
	(void)shutdown(fd, SHUT_WR);
	close(fd);
	return 0;
}

static int client(int argc, char **argv)
{
	if (argc != 6) {
		fprintf(stderr, "usage: tcp_stream client HOST PORT TOTAL_BYTES CHUNK DELAY_MS\n");
		return 2;
	}
	const char *host = argv[1];
	const char *port = argv[2];
	(void)parse_u64(port, "PORT");
	uint64_t total = parse_u64(argv[3], "TOTAL_BYTES");
	uint64_t chunk = parse_u64(argv[4], "CHUNK");
	uint64_t delay = parse_u64(argv[5], "DELAY_MS");
	if (chunk == 0 || chunk > 64 * MIB) {
		fprintf(stderr, "tcp_stream: CHUNK must be 1..%llu\n", 64 * MIB);
		return 2;
	}

	struct addrinfo hints, *res = NULL;
	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	int rc = getaddrinfo(host, port, &hints, &res);
	if (rc != 0) {
		fprintf(stderr, "tcp_stream: %s:%s: %s\n", host, port, gai_strerror(rc));
		return 1;
	}

	/* Connect, retrying a bounded number of times while the server starts. */
	int fd = -1;
	for (int attempt = 1; fd < 0; attempt++) {
		fd = socket(res->ai_family, SOCK_STREAM, 0);
		if (fd < 0)
			die("socket");
		set_bufs(fd);
		if (connect(fd, res->ai_addr, res->ai_addrlen) == 0)
			break;
		int err = errno;
		close(fd);
		fd = -1;
		if (attempt >= CONNECT_TRIES) {
			fprintf(stderr, "tcp_stream: connect %s:%s: %s (gave up after %d tries)\n",
				host, port, strerror(err), attempt);
			return 1;
		}
		sleep_ms(100);
	}
	freeaddrinfo(res);

	uint8_t *buf = malloc((size_t)chunk);
	if (buf == NULL)
		die("malloc");
	for (uint64_t sent = 0; sent < total;) {
		size_t n = (size_t)chunk;
		if (total - sent < n)
			n = (size_t)(total - sent);
		for (size_t k = 0; k < n; k++)
			buf[k] = pattern(sent + k);
		if (write_all(fd, buf, n) != 0)
			die("write");
		sent += n;
		if (delay > 0 && sent < total)
			sleep_ms(delay);
	}
	free(buf);

	uint8_t reply[8];
	ssize_t r = read_full(fd, reply, sizeof reply);
	if (r < 0)
		die("read reply");
	if (r != (ssize_t)sizeof reply) {
		fprintf(stderr, "tcp_stream: short reply (%zd bytes)\n", r);
		printf("client BAD reply\n");
		return 1;
	}
	uint64_t count = 0;
	for (int k = 0; k < 8; k++)
		count = (count << 8) | reply[k];
	close(fd);
	if (count != total) {
		printf("client BAD server counted %" PRIu64 " of %" PRIu64 " bytes\n", count, total);
		return 1;
	}
	printf("client ok %" PRIu64 " bytes\n", total);
	return 0;
}

int main(int argc, char **argv)
{
	/* A peer that went away must give EPIPE from write, not kill us silently. */
	signal(SIGPIPE, SIG_IGN);
	if (argc >= 2 && strcmp(argv[1], "server") == 0)
		return server(argc - 1, argv + 1);
	if (argc >= 2 && strcmp(argv[1], "client") == 0)
		return client(argc - 1, argv + 1);
	fprintf(stderr, "usage: tcp_stream server PORT TOTAL_BYTES [READ_DELAY_MS]\n"
			"       tcp_stream client HOST PORT TOTAL_BYTES CHUNK DELAY_MS\n");
	return 2;
}
