# Cruz build and test entry points. Run as root on Debian 12:
#   make deps    install system packages and CRIU >= 4.2 (scripts/install-deps.sh)
#   make build   build cruz, cruzd and the test apps into $(BIN), and the
#                SPANK plugin if /usr/include/slurm/spank.h exists
#   make spank   build the Slurm SPANK plugin $(BIN)/cruz_spank.so
#   make users   create the unprivileged test users cruzt1 and cruzt2
#   make test    all of the above, then go test ./... with CRUZ_BIN=$(BIN)
#   make demo    scripts/demo.sh
#   make bench   tests/bench/dump-throughput.sh
#   make bench-coord  tests/bench/coordination.sh
#   make bench-overhead  tests/bench/overhead.sh: wall time with periodic
#                checkpoints (1 s, 5 s, 30 s) over without, idle and beside
#                2 CPU hogs (~10 min)
#   make bench-netpipe  NetPIPE between two ranks in one pod, two pods of a
#                node and two nodes (what --ranks-per-pod buys)
#   make finalize-hang  count MPICH jobs that hang in MPI_Finalize, with and
#                without checkpoints (FINALIZE_RUNS each, default 20)
#   make soak    the soak test: 200+ checkpoints with injected failures (~10 min)
#   make install install cruz, cruzd, the SPANK plugin, the config example,
#                the systemd unit and the man pages to FHS paths under
#                $(DESTDIR)$(PREFIX) (PREFIX=/usr/local by default)
#   make uninstall  remove what install put there (not /etc/cruz/cruzd.toml)
#   make deb     the Debian packages cruz and cruz-slurm in $(DIST)
#   make clean   remove what build installed into $(BIN)
#
# Tests run jobs as unprivileged users, so $(BIN) must be reachable by every
# user: it must not be under /root or any other 0700 directory.

BIN ?= /opt/cruz/bin
APPS_DIR := $(BIN)/apps

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

# The Go toolchain lives in /usr/local/go/bin, which CI's PATH may lack.
export PATH := /usr/local/go/bin:$(PATH)
# go needs a home for its caches and module download directory.
export HOME ?= /root

GO ?= go
CC ?= cc
# MPICH, named explicitly: Debian's Open MPI packages make plain mpicc Open MPI's.
MPICC ?= mpicc.mpich
OMPICC ?= mpicc.openmpi
CFLAGS ?= -Wall -Wextra -O2

GO_CMDS := cruz cruzd
C_APPS := tcp_stream memhog counter
MPI_APPS := mpi_allreduce
# The same programs built with Open MPI, named NAME_ompi.
OMPI_APPS := mpi_allreduce_ompi
APP_BINS := $(addprefix $(APPS_DIR)/,$(C_APPS) $(MPI_APPS) $(OMPI_APPS))

TEST_USERS_GROUP := cruztg

.PHONY: all deps build go apps bindir users unit lint test fuzz demo bench bench-coord bench-scale bench-overhead bench-netpipe finalize-hang soak clean spank spank-note install install-files install-build uninstall deb

all: build

deps:
	scripts/install-deps.sh

build: apps go

# The SPANK plugin (slurm-spank/cruz_spank.c) needs Slurm's headers
# (libslurm-dev); without them build goes on without the plugin.
SPANK_H := /usr/include/slurm/spank.h
SPANK_SO := $(BIN)/cruz_spank.so

ifneq ($(wildcard $(SPANK_H)),)
build: spank
else
build: spank-note
endif

spank-note:
	@echo "build: not building the SPANK plugin: no $(SPANK_H) (apt-get install -y libslurm-dev, then make spank)"

spank: $(SPANK_SO)

$(SPANK_SO): slurm-spank/cruz_spank.c | bindir
	@test -f $(SPANK_H) || { echo "spank: no $(SPANK_H): apt-get install -y libslurm-dev" >&2; exit 1; }
	$(CC) -shared -fPIC -Wall -Wextra -Werror -O2 -o $@ $<
	chmod 0755 $@

# bindir creates $(BIN) and $(BIN)/apps world-readable and checks that every
# directory above them can be traversed by any user.
bindir:
	@umask 022; mkdir -p "$(APPS_DIR)"; chmod 0755 "$(BIN)" "$(APPS_DIR)"
	@d="$$(cd "$(BIN)" && pwd -P)"; \
	while [ "$$d" != / ]; do \
		if [ "$$(( 0$$(stat -c %a "$$d") & 01 ))" -eq 0 ]; then \
			echo "make: $$d is not world-traversable (mode $$(stat -c %a "$$d")): the unprivileged" \
				"test users cannot reach $(BIN). Use BIN=/opt/cruz/bin or another path outside it." >&2; \
			exit 1; \
		fi; \
		d="$$(dirname "$$d")"; \
	done

# The commit both binaries report (cruz --version, cruzd --version); empty
# outside a git checkout (a source package sets COMMIT itself).
COMMIT ?= $(shell c=$$(git rev-parse --short=12 HEAD 2>/dev/null) && { git diff --quiet HEAD 2>/dev/null || c=$$c+dirty; echo $$c; })
GO_LDFLAGS := -X github.com/cruz-hpc/cruz/internal/version.Commit=$(COMMIT)

# go build is incremental by itself (build cache), so it always runs.
go: bindir
	$(GO) mod download
	$(GO) build -ldflags "$(GO_LDFLAGS)" -o "$(BIN)/" $(addprefix ./cmd/,$(GO_CMDS))
	chmod 0755 $(addprefix "$(BIN)"/,$(GO_CMDS))
	$(GO) build -o "$(APPS_DIR)/democheck" ./tests/democheck

apps: bindir $(APP_BINS)

$(addprefix $(APPS_DIR)/,$(C_APPS)): $(APPS_DIR)/%: tests/apps/%.c | bindir
	$(CC) $(CFLAGS) -o $@ $<
	chmod 0755 $@

$(addprefix $(APPS_DIR)/,$(MPI_APPS)): $(APPS_DIR)/%: tests/apps/%.c | bindir
	$(MPICC) $(CFLAGS) -o $@ $<
	chmod 0755 $@

$(addprefix $(APPS_DIR)/,$(OMPI_APPS)): $(APPS_DIR)/%_ompi: tests/apps/%.c | bindir
	$(OMPICC) $(CFLAGS) -o $@ $<
	chmod 0755 $@

# Two unprivileged users for the end-to-end tests; cruzt1 also belongs to
# the supplementary group $(TEST_USERS_GROUP). Safe to run again.
users:
	getent group $(TEST_USERS_GROUP) >/dev/null || groupadd $(TEST_USERS_GROUP)
	id -u cruzt1 >/dev/null 2>&1 || useradd -m -s /bin/bash -G $(TEST_USERS_GROUP) cruzt1
	id -nG cruzt1 | tr ' ' '\n' | grep -qx $(TEST_USERS_GROUP) || usermod -a -G $(TEST_USERS_GROUP) cruzt1
	id -u cruzt2 >/dev/null 2>&1 || useradd -m -s /bin/bash cruzt2
	@echo "users: cruzt1 ($$(id cruzt1)), cruzt2 ($$(id cruzt2))"

# unit: every package but the end-to-end suite, without root and in seconds
# (tests that need root or start a Slurm cluster skip under -short; make test
# runs them). Needs only Go: no dependencies, no build, no test users.
UNIT_PKGS = $$($(GO) list ./... | grep -v '/tests/e2e$$')
unit:
	$(GO) test -short -count=1 $(UNIT_PKGS)

# lint: gofmt, go vet and staticcheck (its default checks: likely bugs SA, needless
# complications S, unused code U1000 and quick fixes QF, without the naming and
# comment-style checks ST). staticcheck is pinned as a tool in go.mod, so the
# same version runs everywhere (go tool staticcheck).
lint:
	@f=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
		[ -z "$$f" ] || { echo "lint: not gofmt'ed (run gofmt -w on them): $$f" >&2; exit 1; }
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

# -p 1: packages one at a time (the Slurm tests of two packages share
# slurmctld's port). go test -v so that loud skips are visible; the log is summarised at the end
# with a "test: N passed, N failed, N skipped" line (subtests included).
test: deps build users lint
	@log="$$(mktemp /tmp/cruz-test.XXXXXX.log)"; \
	echo "test: go test -p 1 -count=1 -timeout 60m ./... with CRUZ_BIN=$(BIN) (log: $$log)"; \
	set +e; \
	CRUZ_BIN="$(BIN)" $(GO) test -p 1 -count=1 -timeout 60m -v ./... 2>&1 | tee "$$log"; \
	rc=$${PIPESTATUS[0]}; \
	set -e; \
	pass=$$(grep -cE '^[[:space:]]*--- PASS' "$$log" || true); \
	fail=$$(grep -cE '^[[:space:]]*--- FAIL' "$$log" || true); \
	skip=$$(grep -cE '^[[:space:]]*--- SKIP' "$$log" || true); \
	echo; \
	if [ "$$skip" -gt 0 ]; then echo "test: skipped tests (with the last line each logged):"; \
		awk '/^=== (RUN|CONT|NAME) / { cur = $$3 } \
			/^[[:space:]]+[^ ]+\.go:[0-9]+: / && cur != "" { m = $$0; sub(/^[[:space:]]+/, "", m); last[cur] = m } \
			/^[[:space:]]*--- SKIP: / { print "  " $$3 ($$3 in last ? "  <- " last[$$3] : "") }' "$$log"; fi; \
	if [ "$$fail" -gt 0 ]; then echo "test: failed tests:"; grep -E '^[[:space:]]*--- FAIL' "$$log" | sed 's/^/  /'; fi; \
	if [ "$$rc" -ne 0 ] && [ "$$fail" -eq 0 ]; then \
		echo "test: go test exited $$rc without a failed test (build error, panic or timeout?)"; \
		grep -E '^(FAIL|panic:|# )' "$$log" | sed 's/^/  /' || true; \
	fi; \
	frc=0; $(MAKE) --no-print-directory fuzz FUZZTIME=2000x || frc=$$?; \
	if [ "$$rc" -ne 0 ]; then echo "test: FAILED (go test exit $$rc)"; \
	elif [ "$$frc" -ne 0 ]; then echo "test: FAILED (make fuzz exit $$frc)"; rc=$$frc; else echo "test: OK"; fi; \
	echo "test: $$pass passed, $$fail failed, $$skip skipped"; \
	exit $$rc

# Go fuzz targets, package:name. `make fuzz` runs each for FUZZTIME; a crash
# it finds is saved under the package's testdata/fuzz/NAME/ (commit it with
# the fix: plain go test then replays it). FUZZTIME is a count of inputs
# (Nx), not a duration: Go 1.26's fuzzing coordinator can fail a target with
# "context deadline exceeded" and no crasher when a duration runs out while
# a worker is busy (golang/go#75804, fixed in Go 1.27), as seen here on a
# loaded machine (FuzzRunRequest, -fuzztime 3s).
FUZZTIME ?= 20000x
FUZZ_TARGETS = internal/store:FuzzManifest internal/store:FuzzLayoutMarker internal/api:FuzzSignedHeaders internal/config:FuzzParse \
	launcher:FuzzHostlist agent:FuzzRunRequest internal/joblog:FuzzOutputLog

fuzz:
	@rc=0; for t in $(FUZZ_TARGETS); do \
		pkg="$${t%%:*}"; name="$${t##*:}"; log="$$(mktemp /tmp/cruz-fuzz.XXXXXX.log)"; \
		if $(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime "$(FUZZTIME)" "./$$pkg" >"$$log" 2>&1; then \
			echo "fuzz: $$name (./$$pkg, $(FUZZTIME)): ok, $$(grep -o 'execs: [0-9]*' "$$log" | tail -1 | cut -d' ' -f2) inputs"; rm -f "$$log"; \
		else \
			echo "fuzz: $$name (./$$pkg, $(FUZZTIME)): FAILED (log: $$log)"; tail -20 "$$log" | sed 's/^/  /'; rc=1; \
		fi; \
	done; exit $$rc

demo: deps build
	CRUZ_BIN="$(BIN)" scripts/demo.sh

bench: deps build
	CRUZ_BIN="$(BIN)" tests/bench/dump-throughput.sh

bench-coord: deps build users
	CRUZ_BIN="$(BIN)" tests/bench/coordination.sh

# The coordinator against 16..4096 simulated nodes (agent/scale_bench_test.go):
# no root, no CRIU. CRUZ_SIM_NODES, CRUZ_SIM_OP_MS, CRUZ_SIM_DUMP_MS, CRUZ_SIM_FAIL.
bench-scale:
	$(GO) test -count=1 -run '^$$' -bench BenchmarkProtocolScale -benchtime 3x -timeout 30m ./agent/

# gnuplot draws the PNG; installed here only, and only if missing (the
# benchmark prints its table and CSV without it).
bench-netpipe: deps build users
	CRUZ_BIN="$(BIN)" CRUZ_NETPIPE=1 $(GO) test -count=1 -v -run '^TestNetPIPE$$' -timeout 20m ./tests/e2e/

bench-overhead: deps build
	@command -v gnuplot >/dev/null || apt-get install -y gnuplot-nox || echo "bench-overhead: could not install gnuplot-nox: no PNG"
	CRUZ_BIN="$(BIN)" tests/bench/overhead.sh

FINALIZE_RUNS ?= 20
finalize-hang: deps build users
	rc=0; for iv in off 1s; do \
		CRUZ_FINALIZE_RUNS=$(FINALIZE_RUNS) CRUZ_FINALIZE_INTERVAL=$$iv CRUZ_BIN="$(BIN)" \
			$(GO) test -count=1 -timeout 60m -v -run TestMPIFinalizeHang ./tests/e2e/ || rc=1; \
	done; exit $$rc

soak: deps build users
	CRUZ_SOAK=1 CRUZ_BIN="$(BIN)" $(GO) test -count=1 -timeout 40m -v -run TestSoak ./tests/e2e/

# Removes only the files build put in $(BIN), then the directories if empty.
clean:
	rm -f $(addprefix "$(BIN)"/,$(GO_CMDS)) $(APP_BINS) "$(APPS_DIR)/democheck" "$(SPANK_SO)"
	rmdir "$(APPS_DIR)" "$(BIN)" 2>/dev/null || true

# ---- Install (FHS) and Debian packages ----
# make install PREFIX=/usr DESTDIR=/tmp/root: everything is built and the man
# pages and unit written into $(STAGE) first, so a build that fails writes
# nothing under $(DESTDIR). The config goes to $(SYSCONFDIR)/cruz/cruzd.toml
# only if there is none: an admin's file is never overwritten.
PREFIX ?= /usr/local
DESTDIR ?=
SYSCONFDIR ?= /etc
BINDIR := $(PREFIX)/bin
SBINDIR := $(PREFIX)/sbin
LIBDIR := $(PREFIX)/lib/cruz
DATADIR := $(PREFIX)/share/cruz
MANDIR := $(PREFIX)/share/man
DOCDIR := $(PREFIX)/share/doc/cruz
UNITDIR ?= $(PREFIX)/lib/systemd/system
DIST ?= $(CURDIR)/dist
STAGE := $(DIST)/build
CONFIG_EXAMPLE := configs/cruzd.toml

install-build:
	@test -f $(SPANK_H) || { echo "install: no $(SPANK_H) for the SPANK plugin: apt-get install -y libslurm-dev" >&2; exit 1; }
	rm -rf "$(STAGE)"
	mkdir -p "$(STAGE)/man"
	$(GO) build -ldflags "$(GO_LDFLAGS)" -o "$(STAGE)/" $(addprefix ./cmd/,$(GO_CMDS))
	$(CC) -shared -fPIC -Wall -Wextra -Werror -O2 -o "$(STAGE)/cruz_spank.so" slurm-spank/cruz_spank.c
	"$(STAGE)/cruz" man "$(STAGE)/man"
	"$(STAGE)/cruzd" --man "$(STAGE)/man"
	gzip -9n "$(STAGE)"/man/*.[18]

install: install-build
	$(MAKE) --no-print-directory install-files

# install-files copies what install-build staged (nothing there depends on
# PREFIX) and writes the files that name the installed paths.
install-files:
	@test -x "$(STAGE)/cruzd" || { echo "install-files: nothing staged in $(STAGE): run make install" >&2; exit 1; }
	sed -e 's|/usr/sbin/cruzd|$(SBINDIR)/cruzd|g' -e 's|/etc/cruz/cruzd.toml|$(SYSCONFDIR)/cruz/cruzd.toml|g' \
		configs/cruzd.service >"$(STAGE)/cruzd.service"
	printf '%s\n' "# Add this line to Slurm's plugstack.conf on every node (see $(DOCDIR)/admin-guide.md, Slurm):" \
		"required $(LIBDIR)/cruz_spank.so socket=/run/cruz/cruzd.sock cruz=$(BINDIR)/cruz" >"$(STAGE)/plugstack.conf"
	install -d -m 0755 "$(DESTDIR)$(BINDIR)" "$(DESTDIR)$(SBINDIR)" "$(DESTDIR)$(LIBDIR)" "$(DESTDIR)$(DATADIR)" \
		"$(DESTDIR)$(MANDIR)/man1" "$(DESTDIR)$(MANDIR)/man8" "$(DESTDIR)$(DOCDIR)" "$(DESTDIR)$(UNITDIR)" "$(DESTDIR)$(SYSCONFDIR)/cruz"
	install -m 0755 "$(STAGE)/cruz" "$(DESTDIR)$(BINDIR)/cruz"
	install -m 0755 "$(STAGE)/cruzd" "$(DESTDIR)$(SBINDIR)/cruzd"
	install -m 0644 "$(STAGE)/cruz_spank.so" "$(DESTDIR)$(LIBDIR)/cruz_spank.so"
	install -m 0644 "$(STAGE)/plugstack.conf" "$(DESTDIR)$(DATADIR)/plugstack.conf"
	install -m 0644 $(CONFIG_EXAMPLE) "$(DESTDIR)$(DATADIR)/cruzd.toml.example"
	install -m 0644 docs/grafana-cruz.json "$(DESTDIR)$(DATADIR)/grafana-cruz.json"
	install -m 0644 "$(STAGE)/cruzd.service" "$(DESTDIR)$(UNITDIR)/cruzd.service"
	install -m 0644 "$(STAGE)"/man/*.1.gz "$(DESTDIR)$(MANDIR)/man1/"
	install -m 0644 "$(STAGE)"/man/*.8.gz "$(DESTDIR)$(MANDIR)/man8/"
	install -m 0644 README.md docs/admin-guide.md docs/user-guide.md "$(DESTDIR)$(DOCDIR)/"
	@if [ -e "$(DESTDIR)$(SYSCONFDIR)/cruz/cruzd.toml" ]; then \
		echo "install: keeping $(DESTDIR)$(SYSCONFDIR)/cruz/cruzd.toml (the new example is $(DATADIR)/cruzd.toml.example)"; \
	else \
		install -m 0644 $(CONFIG_EXAMPLE) "$(DESTDIR)$(SYSCONFDIR)/cruz/cruzd.toml"; \
	fi

uninstall:
	rm -f "$(DESTDIR)$(BINDIR)/cruz" "$(DESTDIR)$(SBINDIR)/cruzd" "$(DESTDIR)$(LIBDIR)/cruz_spank.so" \
		"$(DESTDIR)$(DATADIR)/plugstack.conf" "$(DESTDIR)$(DATADIR)/cruzd.toml.example" "$(DESTDIR)$(DATADIR)/grafana-cruz.json" \
		"$(DESTDIR)$(UNITDIR)/cruzd.service" "$(DESTDIR)$(MANDIR)"/man1/cruz.1.gz "$(DESTDIR)$(MANDIR)"/man1/cruz-*.1.gz \
		"$(DESTDIR)$(MANDIR)/man8/cruzd.8.gz" $(addprefix "$(DESTDIR)$(DOCDIR)"/,README.md admin-guide.md user-guide.md)
	rmdir "$(DESTDIR)$(LIBDIR)" "$(DESTDIR)$(DATADIR)" "$(DESTDIR)$(DOCDIR)" 2>/dev/null || true
	@echo "uninstall: $(SYSCONFDIR)/cruz/cruzd.toml, the cluster key and the checkpoint store are left in place"

# make deb: the Debian packages cruz (agent, CLI, unit, man pages) and
# cruz-slurm (the SPANK plugin), built with dpkg-deb from a staged install.
deb:
	DIST="$(DIST)" GO="$(GO)" CC="$(CC)" COMMIT="$(COMMIT)" scripts/make-deb.sh
