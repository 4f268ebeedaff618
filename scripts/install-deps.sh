#!/usr/bin/env bash
# Installs what Cruz needs on a Debian 12 machine, as root, skipping what is
# already there: build tools, MPICH, iproute2, nftables, Slurm and munge, and a
# CRIU >= 4.2. Safe to run again.
#
# Debian 12's own CRIU (3.17) fails on current kernels, and Debian 13's (4.1)
# cannot dump TCP sockets on Linux >= 6.16, so when the distribution has no
# CRIU >= 4.2 we unpack Debian unstable's CRIU and the libraries it needs into a
# private root (/opt/cruz/criu-root) and run it through that root's own loader,
# leaving the system's libc alone. The download uses a private apt
# configuration: the machine's sources lists are not touched.
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

have=""
if command -v criu >/dev/null 2>&1; then have=$(criu_version "$(command -v criu)"); fi
if [ -n "$have" ] && [ "$have" -ge "$CRIU_MIN" ]; then
	log "criu $have already installed at $(command -v criu)"
	exit 0
fi

log "installing CRIU >= 4.2 into $CRIU_ROOT (the distribution has ${have:-none})"
work=$(mktemp -d /tmp/cruz-criu.XXXXXX)
trap 'rm -rf "$work"' EXIT

# fetch SUITE PKG...: apt-get download from one Debian suite with a private
# apt state, so the machine's own apt configuration is never changed.
fetch() {
	local suite=$1; shift
	local d=$work/apt-$suite
	mkdir -p "$d/lists/partial" "$d/cache/archives/partial" "$d/debs"
	echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $suite main" >"$d/sources.list"
	local opts=(-o "Dir::Etc::SourceList=$d/sources.list" -o "Dir::Etc::SourceParts=$work/empty"
		-o "Dir::State::Lists=$d/lists" -o "Dir::Cache=$d/cache" -o "Dir::Etc::Preferences=$work/empty/preferences"
		-o "Dir::Etc::PreferencesParts=$work/empty" -o "APT::Architecture=amd64"
		-o "Acquire::Languages=none" -o "APT::Sandbox::User=root")
	apt-get "${opts[@]}" update -qq
	(cd "$d/debs" && apt-get "${opts[@]}" download "$@" >/dev/null)
	for deb in "$d"/debs/*.deb; do dpkg -x "$deb" "$work/root"; done
}
mkdir -p "$work/root" "$work/empty"
fetch sid criu libcompel1 libnet9 libnl-3-200
fetch trixie libc6 libbsd0 libmd0 libgnutls30t64 libnettle8t64 libhogweed6t64 libgmp10 libp11-kit0 \
	libunistring5 libtasn1-6 libidn2-0 libffi8 libnftables1 libnftnl11 libmnl0 libjansson4 \
	libxtables12 libprotobuf-c1 libuuid1

rm -rf "$CRIU_ROOT.new"
mkdir -p "$(dirname "$CRIU_ROOT")"
mv "$work/root" "$CRIU_ROOT.new"
rm -rf "$CRIU_ROOT"
mv "$CRIU_ROOT.new" "$CRIU_ROOT"
chmod 0755 "$CRIU_ROOT"

mkdir -p "$(dirname "$CRIU_WRAPPER")"
cat >"$CRIU_WRAPPER" <<WRAP
#!/bin/sh
# CRIU from Debian unstable, run with its own libraries (installed by Cruz's install-deps.sh).
R=$CRIU_ROOT
exec "\$R/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" --library-path "\$R/usr/lib/x86_64-linux-gnu" "\$R/usr/sbin/criu" "\$@"
WRAP
chmod 0755 "$CRIU_WRAPPER"
got=$(criu_version "$CRIU_WRAPPER")
if [ -z "$got" ] || [ "$got" -lt "$CRIU_MIN" ]; then
	log "the installed CRIU at $CRIU_WRAPPER reports version '${got:-none}', need >= 4.2"
	exit 1
fi
log "criu $got installed at $CRIU_WRAPPER"
