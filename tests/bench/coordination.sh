#!/usr/bin/env bash
# coordination.sh [PODS...]: the Cruz headline figures on a virtual cluster of
# 4 nodes, for jobs of 4, 8, 16 and 32 pods (default; mpiexec's pod + ranks):
#
#   coordination overhead = coordinated checkpoint time (block + dump +
#       commit, as the manifest records it) - the slowest pod's own dump time
#       in the same checkpoint: what coordinating many pods on many nodes
#       costs on top of dumping the slowest one;
#   whole-job restart time (the agent's "restart done" figure: verify,
#       restore every pod on its node, release) against the time to read the
#       checkpoint's images cold (page cache dropped), with cat.
#
# Each size: the job (tests/apps/mpi_allreduce, ranks spread in blocks over
# the 4 nodes) runs as cruzt1; 3 checkpoints while it runs (median reported),
# then a stop-checkpoint and a restart. Everything it made (cluster, jobs,
# store) is removed on exit. Needs root and `make build` (and `make users`).
# Environment: CRUZ_BIN (default /opt/cruz/bin). See tests/bench/README.md.
set -euo pipefail
export LC_ALL=C

BIN=${CRUZ_BIN:-/opt/cruz/bin}
CRUZ=$BIN/cruz
APP=$BIN/apps/mpi_allreduce
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(4 8 16 32)
LAN=czbc0
SUBNET=10.214.0.0/16
USER_NAME=cruzt1
ROUNDS=3

say() { echo "bench: $*" >&2; }
die() {
	say "FAILED: $*"
	exit 1
}

[ "$(id -u)" -eq 0 ] || die "needs root (it starts a virtual cluster)"
for f in "$CRUZ" "$APP"; do [ -x "$f" ] || die "$f missing: run make build"; done
command -v jq >/dev/null || die "jq missing: apt-get install jq"
id "$USER_NAME" >/dev/null 2>&1 || die "user $USER_NAME missing: run make users"

DIR=$(mktemp -d /tmp/czbc.XXXXXX)
chmod 755 "$DIR"
STORE=/var/tmp/cruz-bench-coord.$$
WORK=$(mktemp -d /tmp/czbc-work.XXXXXX)
chmod 777 "$WORK"
cleanup() {
	set +e
	"$CRUZ" cluster down --dir "$DIR/cl" --lan "$LAN" --purge >/dev/null 2>&1
	rm -rf "$DIR" "$WORK" "$STORE"
}
trap cleanup EXIT INT TERM

"$CRUZ" cluster up --nodes 4 --dir "$DIR/cl" --lan "$LAN" --subnet "$SUBNET" --store "$STORE" >/dev/null ||
	die "cruz cluster up failed"
SOCK=$DIR/cl/node1/cruzd.sock
LOG=$DIR/cl/node1/cruzd.log
ucruz() { su "$USER_NAME" -s /bin/bash -c "cd $WORK && CRUZ_SOCKET=$SOCK $CRUZ $(printf '%q ' "$@")"; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

printf '%-5s %-6s %-7s %-8s %-8s %-9s %-8s %-11s %-12s %-11s %-8s %-13s %s\n' pods ranks size block_ms dump_ms commit_ms ckpt_ms slowest_ms overhead_ms restart_ms read_ms restart/read overhead/ckpt
for pods in "${SIZES[@]}"; do
	np=$((pods - 1))
	name=bench$pods
	ucruz run --name "$name" --np "$np" -- "$APP" 100000 200 >"$WORK/$name.out" 2>&1 &
	runpid=$!
	for _ in $(seq 600); do grep -q "^iter 2 " "$WORK/$name.out" 2>/dev/null && break; sleep 0.1; done
	grep -q "^iter 2 " "$WORK/$name.out" || die "job of $pods pods did not start: $(tail -5 "$WORK/$name.out")"
	totals=() slows=() overs=() blocks=() dumps=() commits=()
	for _ in $(seq $ROUNDS); do
		ck=$(ucruz checkpoint --json "$name") || die "checkpoint of $pods pods failed"
		total=$(jq '.phases_ms.block + .phases_ms.dump + .phases_ms.commit' <<<"$ck")
		slow=$(jq '[.pods[].dump_ms] | max' <<<"$ck")
		bytes=$(jq '.bytes' <<<"$ck")
		totals+=("$total") slows+=("$slow") overs+=($((total - slow)))
		blocks+=("$(jq .phases_ms.block <<<"$ck")") dumps+=("$(jq .phases_ms.dump <<<"$ck")") commits+=("$(jq .phases_ms.commit <<<"$ck")")
	done
	ck=$(ucruz checkpoint --stop --json "$name") || die "stop-checkpoint of $pods pods failed"
	wait "$runpid" || true
	dir=$(jq -r .dir <<<"$ck")
	sync
	echo 3 >/proc/sys/vm/drop_caches
	t0=$(date +%s%N)
	find "$dir" -type f -print0 | xargs -0 cat >/dev/null
	read_ms=$((($(date +%s%N) - t0) / 1000000))
	echo 3 >/proc/sys/vm/drop_caches
	ucruz restart "$name" >"$WORK/$name.restart" 2>&1 &
	rpid=$!
	restart_ms=
	for _ in $(seq 600); do
		restart_ms=$({ grep "msg=\"restart done\" job=$(jq -r .job <<<"$ck")" "$LOG" || true; } | tail -1 | sed -n 's/.* ms=\([0-9]*\).*/\1/p')
		[ -n "$restart_ms" ] && break
		sleep 0.1
	done
	[ -n "$restart_ms" ] || die "restart of $pods pods did not finish: $(tail -5 "$WORK/$name.restart")"
	ucruz rm --checkpoints "$name" >/dev/null || true
	wait "$rpid" || true
	t=$(printf '%s\n' "${totals[@]}" | median)
	s=$(printf '%s\n' "${slows[@]}" | median)
	o=$(printf '%s\n' "${overs[@]}" | median)
	printf '%-5s %-6s %-7s %-8s %-8s %-9s %-8s %-11s %-12s %-11s %-8s %-13s %s\n' "$pods" "$np" "$((bytes / 1048576))MiB" \
		"$(printf '%s\n' "${blocks[@]}" | median)" "$(printf '%s\n' "${dumps[@]}" | median)" "$(printf '%s\n' "${commits[@]}" | median)" "$t" "$s" "$o" \
		"$restart_ms" "$read_ms" "$(awk -v a="$restart_ms" -v b="$read_ms" 'BEGIN {printf "%.1f", (b > 0 ? a / b : 0)}')" \
		"$(awk -v a="$o" -v b="$t" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}')"
done
say "each row: median of $ROUNDS checkpoints of a running job, 4 virtual nodes on this machine ($(nproc) cores); ckpt_ms = block+dump+commit from the manifest, slowest_ms = slowest pod's CRIU dump, overhead_ms = ckpt_ms - slowest_ms; restart_ms from node1's agent log, read_ms = cat of every image file with the page cache dropped"
