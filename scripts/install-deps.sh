#!/usr/bin/env bash
# Installs what Cruz needs on a Debian 12 machine, as root, skipping what is
# already there: build tools, MPICH, iproute2, nftables, Slurm and munge, and a
# CRIU >= 4.2. Safe to run again.
#
# Debian 12's own CRIU (3.17) fails on current kernels, and Debian 13's (4.1)
# cannot dump TCP sockets on Linux >= 6.16, so when the distribution has no
# CRIU >= 4.2 we take the newest CRIU >= 4.2 that any of the Debian suites in
# CRUZ_CRIU_SUITES offers (backports, trixie, testing, unstable: unstable's
# packages vanish when it moves on, so no suite or version is hard-wired),
# unpack it and the libraries it needs, all from that one suite, into a
# private root (/opt/cruz/criu-root) and run it through that root's own
# loader, leaving the system's libc alone. The root records what it holds
# (CRIU-VERSION, PACKAGES); `make deb` puts it into the cruz package. The
# download uses a private apt configuration and the Debian mirror the machine
# already uses: the machine's sources lists are not touched.
#
# Environment: CRUZ_CRIU_ROOT, CRUZ_CRIU_WRAPPER (the two paths),
# CRUZ_CRIU_SUITES (the suites asked), CRUZ_DEBIAN_MIRROR (default: the
# machine's own Debian mirror), CRUZ_CRIU_VERSION (take exactly this Debian
# version, e.g. 4.2.1-1), CRUZ_CRIU_PRIVATE=1 (install the private root even
# when a CRIU >= 4.2 is on PATH, e.g. to build packages that carry it).
set -euo pipefail

CRIU_MIN=40200
CRIU_ROOT=${CRUZ_CRIU_ROOT:-/opt/cruz/criu-root}
CRIU_WRAPPER=${CRUZ_CRIU_WRAPPER:-/usr/local/sbin/criu}
log() { echo "install-deps: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
	log "must run as root (it installs packages); try: sudo $0"
	exit 1
fi

# Both MPIs, as on a user's Debian machine: Open MPI's packages (which lammps
# and python3-mpi4py bring) make it the default mpicc/mpiexec; Cruz and the
# Makefile name each MPI's programs explicitly (mpiexec.hydra, mpicc.mpich,
# mpirun.openmpi, mpicc.openmpi). lammps, python3-mpi4py and netpipe-mpich2
# are the real applications the end-to-end tests run.
apt_packages=(gcc make libc6-dev mpich libmpich-dev openmpi-bin libopenmpi-dev lammps python3-mpi4py netpipe-mpich2 iproute2 nftables iptables procps psmisc acl curl jq
	util-linux passwd slurmctld slurmd slurm-client munge libslurm-dev systemd)
missing=()
for p in "${apt_packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	log "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	# Debian's slurm and munge packages start their daemons; Cruz runs its own.
	for svc in slurmctld slurmd munge; do
		systemctl disable --now "$svc" >/dev/null 2>&1 || service "$svc" stop >/dev/null 2>&1 || true
	done
fi

criu_version() { # prints e.g. 40201, or nothing
	local v
	v=$("$1" --version 2>/dev/null | sed -n 's/^Version: *\([0-9.]*\).*/\1/p') || return 0
	[ -n "$v" ] || return 0
	IFS=. read -r a b c <<<"$v"
	echo $((a * 10000 + ${b:-0} * 100 + ${c:-0}))
}

vstr() { [ -n "$1" ] && echo "$(($1 / 10000)).$(($1 / 100 % 100)).$(($1 % 100))" || echo none; }

criu_version_of_root() { # ROOT: the version of ROOT's criu run through ROOT's loader
	local r=$1 l=usr/lib/x86_64-linux-gnu
	local v
	v=$("$r/$l/ld-linux-x86-64.so.2" --library-path "$r/$l" "$r/usr/sbin/criu" --version 2>/dev/null |
		sed -n 's/^Version: *\([0-9.]*\).*/\1/p') || return 0
	[ -n "$v" ] || return 0
	IFS=. read -r a b c <<<"$v"
	echo $((a * 10000 + ${b:-0} * 100 + ${c:-0}))
}

have=""
if command -v criu >/dev/null 2>&1; then have=$(criu_version "$(command -v criu)"); fi
if [ -n "$have" ] && [ "$have" -ge "$CRIU_MIN" ] && [ "${CRUZ_CRIU_PRIVATE:-}" != 1 ]; then
	log "criu $have already installed at $(command -v criu)"
	exit 0
fi

work=$(mktemp -d /tmp/cruz-criu.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/empty" "$work/root"

# The Debian mirror this machine already uses for its own release.
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
mirror=${CRUZ_DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
	mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 2>/dev/null |
		awk -v c="$codename" '$2 == c && $1 ~ /\/debian\/?$/ {print $1; exit}')
fi
mirror=${mirror:-http://deb.debian.org/debian/}
suites=${CRUZ_CRIU_SUITES:-"${codename:+$codename-backports }trixie trixie-backports testing unstable"}

# aptopts DIR SUITE...: options for apt-get/apt-cache with a private state in
# DIR (lists, cache, an empty dpkg status, no preferences) and SUITE's
# sources, so the machine's own apt configuration is neither used nor changed.
aptopts() {
	local d=$1; shift
	mkdir -p "$d/lists/partial" "$d/cache/archives/partial"
	: >"$d/status"
	local s
	for s in "$@"; do
		echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $s main"
	done >"$d/sources.list"
	opts=(-o "Dir::Etc::SourceList=$d/sources.list" -o "Dir::Etc::SourceParts=$work/empty"
		-o "Dir::State::Lists=$d/lists" -o "Dir::Cache=$d/cache" -o "Dir::State::status=$d/status"
		-o "Dir::Etc::Preferences=$work/empty/preferences" -o "Dir::Etc::PreferencesParts=$work/empty"
		-o "APT::Architecture=amd64" -o "Acquire::Languages=none" -o "APT::Sandbox::User=root")
}

# Which CRIU does each suite offer? A suite that does not exist (any more)
# is skipped with a warning, not fatal.
read -r -a suite_list <<<"$suites"
log "looking for CRIU >= 4.2 in ${suite_list[*]} at $mirror (criu on PATH: $(vstr "$have"))"
aptopts "$work/all" "${suite_list[@]}"
apt-get "${opts[@]}" update -qq 2>&1 | sed 's/^/install-deps: apt: /' >&2 || true
best="" best_suite="" offered=()
while IFS='|' read -r _ v src; do
	v=$(echo "$v" | tr -d ' ')
	s=$(echo "$src" | awk '{print $2}' | cut -d/ -f1)
	[ -n "$v" ] && [ -n "$s" ] || continue
	offered+=("$v ($s)")
	if [ -n "${CRUZ_CRIU_VERSION:-}" ]; then
		[ "$v" = "$CRUZ_CRIU_VERSION" ] && [ -z "$best" ] && best=$v best_suite=$s
		continue
	fi
	dpkg --compare-versions "$v" ge 4.2 || continue
	if [ -z "$best" ] || dpkg --compare-versions "$v" gt "$best"; then best=$v best_suite=$s; fi
done < <(apt-cache "${opts[@]}" madison criu 2>/dev/null)
if [ -z "$best" ]; then
	if [ -n "${CRUZ_CRIU_VERSION:-}" ]; then
		log "CRUZ_CRIU_VERSION=$CRUZ_CRIU_VERSION: no suite of ${suite_list[*]} at $mirror offers that version (offered: ${offered[*]:-none}); unset it to take the newest CRIU >= 4.2"
	else
		log "no Debian suite offers CRIU >= 4.2: asked ${suite_list[*]} at $mirror, offered: ${offered[*]:-none}."
		log "Cruz needs CRIU >= 4.2 (older ones fail on current kernels or cannot dump TCP sockets on Linux >= 6.16)."
		log "Install a CRIU >= 4.2 yourself and put it on PATH (or set criu.path in /etc/cruz/cruzd.toml), or name suites that have one in CRUZ_CRIU_SUITES (and a mirror in CRUZ_DEBIAN_MIRROR)."
	fi
	exit 1
fi
log "taking criu $best from $best_suite (offered: ${offered[*]})"

# The closure of criu's dependencies, resolved in that one suite (a suite is
# installable on its own; a backports suite needs its base), against an empty
# package database: every library comes from the suite, none from the system.
resolve=("$best_suite")
case $best_suite in *-backports) resolve+=("${best_suite%-backports}") ;; esac
aptopts "$work/one" "${resolve[@]}"
apt-get "${opts[@]}" update -qq
apt-get "${opts[@]}" -o "APT::Default-Release=$best_suite" install -y -qq --download-only \
	--no-install-recommends "criu=$best" >/dev/null
{
	echo "# CRIU for Cruz, installed by scripts/install-deps.sh"
	echo "criu=$best"
	echo "suite=$best_suite"
	echo "mirror=$mirror"
	echo "installed=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
} >"$work/root/CRIU-VERSION"
for deb in "$work"/one/cache/archives/*.deb; do
	dpkg -x "$deb" "$work/root"
	dpkg-deb --showformat='${Package} ${Version} ${source:Package} ${source:Version}\n' -W "$deb"
done | LC_ALL=C sort >"$work/root/PACKAGES"

# Try the new root before it replaces the old one: a failed install leaves
# the previous CRIU in place.
L=usr/lib/x86_64-linux-gnu
got=$(criu_version_of_root "$work/root")
if [ -z "$got" ] || [ "$got" -lt "$CRIU_MIN" ]; then
	log "the downloaded criu $best from $best_suite reports version '${got:-none}' through its own loader, need >= 4.2; nothing was changed"
	exit 1
fi

rm -rf "$CRIU_ROOT.new" "$CRIU_ROOT.old"
mkdir -p "$(dirname "$CRIU_ROOT")"
mv "$work/root" "$CRIU_ROOT.new"
chmod 0755 "$CRIU_ROOT.new"
[ ! -e "$CRIU_ROOT" ] || mv "$CRIU_ROOT" "$CRIU_ROOT.old"
mv "$CRIU_ROOT.new" "$CRIU_ROOT"
rm -rf "$CRIU_ROOT.old"

mkdir -p "$(dirname "$CRIU_WRAPPER")"
cat >"$CRIU_WRAPPER.new" <<WRAP
#!/bin/sh
# CRIU $best from Debian $best_suite, run with its own libraries (installed by Cruz's install-deps.sh;
# $CRIU_ROOT/CRIU-VERSION says what it is).
R=$CRIU_ROOT
exec "\$R/$L/ld-linux-x86-64.so.2" --library-path "\$R/$L" "\$R/usr/sbin/criu" "\$@"
WRAP
chmod 0755 "$CRIU_WRAPPER.new"
mv "$CRIU_WRAPPER.new" "$CRIU_WRAPPER"
got=$(criu_version "$CRIU_WRAPPER")
if [ -z "$got" ] || [ "$got" -lt "$CRIU_MIN" ]; then
	log "the installed CRIU at $CRIU_WRAPPER reports version '${got:-none}', need >= 4.2"
	exit 1
fi
log "criu $best (from Debian $best_suite) installed at $CRIU_WRAPPER, root $CRIU_ROOT"
