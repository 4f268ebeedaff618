#!/usr/bin/env bash
# Builds the Debian packages cruz and cruz-slurm into $DIST (default ./dist)
# with dpkg-deb from a staged `make install PREFIX=/usr`: no debhelper, no
# debian/ directory. cruz: cruzd, cruz, the systemd unit, the config
# (/etc/cruz/cruzd.toml, a conffile), the man pages and docs. cruz-slurm: the
# SPANK plugin and the plugstack.conf line to add.
#
# CRIU >= 4.2 cannot be a dependency: Debian 12 and 13 ship older ones that
# do not work (docs/admin-guide.md, Install), and Debian unstable's packages
# vanish when it moves on. So cruz carries the private CRIU root that
# scripts/install-deps.sh made on the build machine (DEB_CRIU_ROOT, default
# CRUZ_CRIU_ROOT or /opt/cruz/criu-root) in /usr/lib/cruz/criu-root, with a
# wrapper /usr/lib/cruz/criu that runs it through its own loader, and names
# its version in the package's control fields (Cruz-CRIU, Built-Using).
# cruzd uses it when no CRIU >= 4.2 is on PATH. DEB_CRIU_ROOT=none builds
# a cruz without CRIU (it then recommends criu >= 4.2).
set -euo pipefail

cd "$(dirname "$0")/.."
DIST=${DIST:-$PWD/dist}
log() { echo "make-deb: $*" >&2; }
command -v dpkg-deb >/dev/null || { log "dpkg-deb is missing: apt-get install -y dpkg-dev"; exit 1; }

release=$(sed -n 's/^const Release = "\(.*\)"$/\1/p' internal/version/version.go)
[ -n "$release" ] || { log "no Release in internal/version/version.go"; exit 1; }
version=${DEB_VERSION:-$release}
arch=$(dpkg --print-architecture)
criu_root=${DEB_CRIU_ROOT:-${CRUZ_CRIU_ROOT:-/opt/cruz/criu-root}}
L=usr/lib/x86_64-linux-gnu
criu_desc=() criu_fields="" criu_recommends="criu (>= 4.2), "
if [ "$criu_root" != none ]; then
	if [ ! -x "$criu_root/usr/sbin/criu" ] || [ ! -x "$criu_root/$L/ld-linux-x86-64.so.2" ]; then
		log "no private CRIU root at $criu_root (usr/sbin/criu and its loader) to put into the cruz package:"
		log "run CRUZ_CRIU_PRIVATE=1 scripts/install-deps.sh (as root) to make one, set DEB_CRIU_ROOT to another, or DEB_CRIU_ROOT=none to build cruz without CRIU"
		exit 1
	fi
	upstream=$("$criu_root/$L/ld-linux-x86-64.so.2" --library-path "$criu_root/$L" "$criu_root/usr/sbin/criu" --version 2>/dev/null |
		sed -n 's/^Version: *\([0-9.]*\).*/\1/p') || true
	if [ -z "$upstream" ]; then
		log "the CRIU in $criu_root does not run (\`criu --version\` through its own loader printed no version): reinstall it with CRUZ_CRIU_PRIVATE=1 scripts/install-deps.sh"
		exit 1
	fi
	if ! dpkg --compare-versions "$upstream" ge 4.2; then
		log "the CRIU in $criu_root is $upstream, Cruz needs >= 4.2: reinstall it with CRUZ_CRIU_PRIVATE=1 scripts/install-deps.sh"
		exit 1
	fi
	# What install-deps.sh recorded; a root made before it recorded anything
	# is named by what its criu says.
	criu_deb=$(sed -n 's/^criu=//p' "$criu_root/CRIU-VERSION" 2>/dev/null || true)
	criu_suite=$(sed -n 's/^suite=//p' "$criu_root/CRIU-VERSION" 2>/dev/null || true)
	if [ -n "$criu_deb" ]; then
		criu_name="$criu_deb (Debian $criu_suite)"
	else
		criu_name=$upstream
	fi
	criu_fields="Cruz-CRIU: $criu_name"
	if [ -s "$criu_root/PACKAGES" ]; then
		built=$(awk '{print $3 " (= " $4 ")"}' "$criu_root/PACKAGES" | LC_ALL=C sort -u | paste -sd, - | sed 's/,/, /g')
		criu_fields="$criu_fields
Built-Using: $built"
	fi
	criu_desc=("It carries CRIU $criu_name with its own libraries in"
		"/usr/lib/cruz/criu-root; cruzd uses it when no CRIU >= 4.2 is on PATH.")
	criu_recommends=""
	log "the cruz package carries CRIU $criu_name from $criu_root"
fi
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

if [ "$criu_root" != none ]; then
	# The private CRIU root, without what only people read (the copyright
	# files stay), and a wrapper that finds it next to itself, so that the
	# installed package works wherever dpkg put it (also under dpkg --root).
	mkdir -p "$cruz/usr/lib/cruz"
	cp -a "$criu_root" "$cruz/usr/lib/cruz/criu-root"
	rm -rf "$cruz/usr/lib/cruz/criu-root/usr/share/"{man,info,locale,lintian}
	if [ -z "$criu_deb" ]; then
		printf '# recorded by make-deb.sh from `criu --version`: %s had no record\ncriu=%s\n' \
			"$criu_root" "$upstream" >"$cruz/usr/lib/cruz/criu-root/CRIU-VERSION"
	fi
	chmod 0755 "$cruz/usr/lib/cruz/criu-root"
	cat >"$cruz/usr/lib/cruz/criu" <<WRAP
#!/bin/sh
# CRIU $criu_name, carried by the cruz package with its own libraries
# (/usr/lib/cruz/criu-root); cruzd uses it when no CRIU >= 4.2 is on PATH.
R=\$(dirname "\$(readlink -f "\$0")")/criu-root
exec "\$R/$L/ld-linux-x86-64.so.2" --library-path "\$R/$L" "\$R/usr/sbin/criu" "\$@"
WRAP
	chmod 0755 "$cruz/usr/lib/cruz/criu"
fi

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

control "$cruz" cruz "libc6 (>= $libc), iproute2" "Recommends: ${criu_recommends}mpich | openmpi-bin, nftables, iptables, acl
Suggests: cruz-slurm${criu_fields:+
$criu_fields}" \
	"checkpoint, restart and live migration of whole MPI jobs" \
	"Cruz saves a running MPI job as a whole, without its help: every rank" \
	"runs in a pod (its own network, pid, uts, ipc and mount namespaces), a" \
	"packet filter holds the job's traffic while CRIU dumps every pod, and the" \
	"job can be restarted from the checkpoint, on the same or other nodes, or" \
	"have a pod moved while it runs." \
	"." \
	"This package has the node agent cruzd (a systemd service), the cruz" \
	"command and the man pages. It needs CRIU >= 4.2." \
	${criu_desc[@]+"${criu_desc[@]}"}
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
