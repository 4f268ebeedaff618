#!/usr/bin/env bash
# Builds the Debian packages cruz and cruz-slurm into $DIST (default ./dist)
# with dpkg-deb from a staged `make install PREFIX=/usr`: no debhelper, no
# debian/ directory. cruz: cruzd, cruz, the systemd unit, the config
# (/etc/cruz/cruzd.toml, a conffile), the man pages and docs. cruz-slurm: the
# SPANK plugin and the plugstack.conf line to add.
#
# CRIU >= 4.2 is not a dependency: Debian 12 and 13 ship older ones that do
# not work (docs/admin-guide.md, Install), so the packages only recommend it
# and scripts/install-deps.sh installs one.
set -euo pipefail

cd "$(dirname "$0")/.."
DIST=${DIST:-$PWD/dist}
log() { echo "make-deb: $*" >&2; }
command -v dpkg-deb >/dev/null || { log "dpkg-deb is missing: apt-get install -y dpkg-dev"; exit 1; }

release=$(sed -n 's/^const Release = "\(.*\)"$/\1/p' internal/version/version.go)
[ -n "$release" ] || { log "no Release in internal/version/version.go"; exit 1; }
version=${DEB_VERSION:-$release}
arch=$(dpkg --print-architecture)
maintainer=${DEB_MAINTAINER:-"Cruz developers <cruz@localhost>"}

work="$DIST/deb"
rm -rf "$work"
mkdir -p "$work"
root="$work/root"
make --no-print-directory install DESTDIR="$root" PREFIX=/usr SYSCONFDIR=/etc UNITDIR=/lib/systemd/system DIST="$DIST" >&2

# Split the staged tree: the plugin and its plugstack line go to cruz-slurm.
cruz="$work/cruz"
slurm="$work/cruz-slurm"
cp -a "$root" "$cruz"
mkdir -p "$slurm/usr/lib/cruz" "$slurm/usr/share/cruz" "$slurm/usr/share/doc/cruz-slurm"
mv "$cruz/usr/lib/cruz/cruz_spank.so" "$slurm/usr/lib/cruz/"
mv "$cruz/usr/share/cruz/plugstack.conf" "$slurm/usr/share/cruz/"
find "$cruz" -type d -empty -delete

# libc: the Go binaries and the plugin link it dynamically.
libc=$(dpkg-query -W -f='${Version}' libc6 | sed 's/-.*//')
control() { # DIR PACKAGE DEPENDS EXTRA DESCRIPTION...
	local dir=$1 pkg=$2 depends=$3 extra=$4
	shift 4
	mkdir -p "$dir/DEBIAN"
	local size
	size=$(du -sk --exclude=DEBIAN "$dir" | cut -f1)
	{
		echo "Package: $pkg"
		echo "Version: $version"
		echo "Architecture: $arch"
		echo "Maintainer: $maintainer"
		echo "Installed-Size: $size"
		echo "Depends: $depends"
		[ -z "$extra" ] || printf '%s\n' "$extra"
		echo "Section: admin"
		echo "Priority: optional"
		echo "Homepage: https://github.com/cruz-hpc/cruz"
		printf 'Description: %s\n' "$1"
		shift
		for l in "$@"; do printf ' %s\n' "$l"; done
	} >"$dir/DEBIAN/control"
	(cd "$dir" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) >"$dir/DEBIAN/md5sums"
}

control "$cruz" cruz "libc6 (>= $libc), iproute2" "Recommends: criu (>= 4.2), mpich | openmpi-bin, nftables, iptables, acl
Suggests: cruz-slurm" \
	"checkpoint, restart and live migration of whole MPI jobs" \
	"Cruz saves a running MPI job as a whole, without its help: every rank" \
	"runs in a pod (its own network, pid, uts, ipc and mount namespaces), a" \
	"packet filter holds the job's traffic while CRIU dumps every pod, and the" \
	"job can be restarted from the checkpoint, on the same or other nodes, or" \
	"have a pod moved while it runs." \
	"." \
	"This package has the node agent cruzd (a systemd service), the cruz" \
	"command and the man pages. It needs CRIU >= 4.2 (scripts/install-deps.sh" \
	"in the source installs one where Debian has none)."
echo /etc/cruz/cruzd.toml >"$cruz/DEBIAN/conffiles"

# Maintainer scripts. Under DPKG_ROOT (an install into another root, as the
# package test does) they touch nothing of the running system.
cat >"$cruz/DEBIAN/postinst" <<'SH'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -z "${DPKG_ROOT:-}" ]; then
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload >/dev/null || true
	fi
	if command -v deb-systemd-helper >/dev/null; then
		deb-systemd-helper enable cruzd.service >/dev/null || true
	fi
	echo "cruz: edit /etc/cruz/cruzd.toml (agent.listen, cluster.peers, store.dir), then: systemctl start cruzd"
fi
exit 0
SH
cat >"$cruz/DEBIAN/prerm" <<'SH'
#!/bin/sh
set -e
# Stopping cruzd ends every job it runs (they can be restarted from their
# checkpoints); an upgrade leaves it running: restart it when no job runs.
if [ "$1" = remove ] && [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; then
	systemctl stop cruzd.service || true
fi
exit 0
SH
cat >"$cruz/DEBIAN/postrm" <<'SH'
#!/bin/sh
set -e
if [ "$1" = purge ]; then
	# The cluster key cruzd made; checkpoints in /var/lib/cruz are the
	# users' and stay.
	rm -f "${DPKG_ROOT:-}/etc/cruz/cluster.key"
	rmdir "${DPKG_ROOT:-}/etc/cruz" 2>/dev/null || true
	if [ -z "${DPKG_ROOT:-}" ] && command -v deb-systemd-helper >/dev/null; then
		deb-systemd-helper purge cruzd.service >/dev/null || true
	fi
fi
if [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null || true
fi
exit 0
SH
chmod 0755 "$cruz"/DEBIAN/postinst "$cruz"/DEBIAN/prerm "$cruz"/DEBIAN/postrm

cp -a "$cruz/usr/share/doc/cruz/README.md" "$slurm/usr/share/doc/cruz-slurm/"
control "$slurm" cruz-slurm "libc6 (>= $libc), cruz (= $version)" "Enhances: slurmd, slurm-client" \
	"Slurm SPANK plugin of Cruz: srun --cruz" \
	"With this plugin in Slurm's plugstack.conf, srun --cruz runs a job step's" \
	"tasks in Cruz pods as one job: checkpointed by policy, ended by scancel," \
	"resumed from its last checkpoint when Slurm requeues it." \
	"." \
	"Add the line in /usr/share/cruz/plugstack.conf to plugstack.conf on every" \
	"node."

for d in "$cruz" "$slurm"; do
	pkg=$(basename "$d")
	dpkg-deb --root-owner-group -Zgzip --build "$d" "$DIST/${pkg}_${version}_${arch}.deb" >&2
	echo "$DIST/${pkg}_${version}_${arch}.deb"
done
rm -rf "$work"
