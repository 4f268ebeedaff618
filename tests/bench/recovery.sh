#!/usr/bin/env bash
# recovery.sh [MIB...]: how long a job takes to run again after a node fails,
# against the size of its checkpoint, on a virtual cluster of 4 nodes; MIB is
# the memory each rank holds (default 16 64 256 MiB per rank):
#
#   detection = the coordinator's "failure" event - the moment the node was
#       failed (cruz cluster fail node2): heartbeats and their timeout;
#   recovery = its "recovered" event - its "failure" event: the automatic
#       rollback to the last checkpoint, node2's pods moved to the spare;
#   total = "recovered" - the moment of the failure: what the job lost;
#   rollback = the "recovered" event's own ms, as the agent measures it;
#   against the time to read the checkpoint's images cold (page cache
#   dropped), with cat.
#
# Each size gets a fresh cluster (4 nodes, node4 held back as the spare):
# tests/apps/mpi_allreduce with 4 ranks on node1..node3 and MIB MiB per rank
# runs as cruzt1 without periodic checkpoints; one checkpoint is taken while
# it runs; the page cache is dropped (as on a spare node, which has never
# read the images); node2 fails; the coordinator (node1) rolls the job back.
# Everything it made (clusters, jobs, store) is removed on exit. Needs root,
# `make build` (and `make users`) and jq. Environment: CRUZ_BIN (default
# /opt/cruz/bin). See tests/bench/README.md.
set -euo pipefail
export LC_ALL=C

BIN=${CRUZ_BIN:-/opt/cruz/bin}
CRUZ=$BIN/cruz
APP=$BIN/apps/mpi_allreduce
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(16 64 256)
LAN=czbr0
SUBNET=10.215.0.0/16
USER_NAME=cruzt1
NP=4
VICTIM=node2
SPARE=node4
WAIT_RECOVERED=120 # seconds

say() { echo "bench: $*" >&2; }
die() {
	say "FAILED: $*"
	exit 1
}

[ "$(id -u)" -eq 0 ] || die "needs root (it starts a virtual cluster)"
for f in "$CRUZ" "$APP"; do [ -x "$f" ] || die "$f missing: run make build"; done
command -v jq >/dev/null || die "jq missing: apt-get install jq"
id "$USER_NAME" >/dev/null 2>&1 || die "user $USER_NAME missing: run make users"
for m in "${SIZES[@]}"; do [[ $m =~ ^[0-9]+$ ]] || die "bad size $m: MiB per rank, a whole number"; done

DIR=$(mktemp -d /tmp/czbr.XXXXXX)
chmod 755 "$DIR"
STORE=/var/tmp/cruz-bench-recovery.$$
WORK=$(mktemp -d /tmp/czbr-work.XXXXXX)
chmod 777 "$WORK"
runpid=
cleanup() {
	set +e
	"$CRUZ" cluster down --dir "$DIR/cl" --lan "$LAN" --purge >/dev/null 2>&1
	[ -z "$runpid" ] || kill "$runpid" 2>/dev/null
	rm -rf "$DIR" "$WORK" "$STORE"
}
trap cleanup EXIT INT TERM

SOCK=$DIR/cl/node1/cruzd.sock
LOG=$DIR/cl/node1/cruzd.log
ucruz() { su "$USER_NAME" -s /bin/bash -c "cd $WORK && CRUZ_SOCKET=$SOCK $CRUZ $(printf '%q ' "$@")"; }
now_ns() { date +%s%N; }
# ns TIME: an RFC 3339 time (as cruz prints it) in ns since the epoch.
ns() { date -d "$1" +%s%N; }
# policy KEY: KEY's value in the [policy] section of node1's config (what
# cruz cluster up wrote, the agents' defaults), or "?".
policy() {
	local v
	v=$(awk -v k="$1" '/^\[/ {s = ($0 == "[policy]")} s && $1 == k && $2 == "=" {gsub(/"/, "", $3); print $3}' "$DIR/cl/node1/cruzd.toml" 2>/dev/null || true)
	echo "${v:-?}"
}
POLICY=
# pods_on JOBJSON: "node:count ..." of the job's pods (mpiexec's included).
pods_on() { jq -r '[.pods[].node] | group_by(.) | map("\(.[0]):\(length)") | join(" ")' <<<"$1"; }
# tail_diag NAME: what to show when a size fails.
tail_diag() {
	echo "--- output:"
	tail -5 "$WORK/$1.out" 2>/dev/null
	echo "--- events:"
	ucruz events "$1" 2>&1 | tail -15
	echo "--- node1 agent log:"
	tail -15 "$LOG" 2>/dev/null
}

HDR='%-9s %-10s %-8s %-10s %-11s %-12s %-9s %-8s %-10s %s\n'
# shellcheck disable=SC2059 # the format is HDR
printf "$HDR" mib/rank ckpt_size ckpt_ms detect_ms recovery_ms rollback_ms total_ms read_ms total/read moved
for mib in "${SIZES[@]}"; do
	name=rb$mib
	"$CRUZ" cluster up --nodes 4 --dir "$DIR/cl" --lan "$LAN" --subnet "$SUBNET" --store "$STORE" >"$WORK/up.out" 2>&1 ||
		die "cruz cluster up failed: $(tail -5 "$WORK/up.out")"
	[ -n "$POLICY" ] || POLICY="heartbeat $(policy heartbeat), heartbeat_timeout $(policy heartbeat_timeout), restart_base $(policy restart_base)"
	ucruz run --name "$name" --np "$NP" --interval off --spares 1 -- "$APP" 100000 200 "$mib" >"$WORK/$name.out" 2>&1 &
	runpid=$!
	for _ in $(seq 1200); do grep -q "^iter 2 " "$WORK/$name.out" 2>/dev/null && break; sleep 0.1; done
	grep -q "^iter 2 " "$WORK/$name.out" || die "job of $mib MiB per rank did not start: $(tail_diag "$name")"
	st=$(ucruz status --json "$name") || die "cruz status $name failed"
	before=$(pods_on "$st")
	[ "$(jq -r '.spares | join(",")' <<<"$st")" = "$SPARE" ] || die "$name: spares are $(jq -c .spares <<<"$st"), not $SPARE"
	jq -e --arg n "$VICTIM" 'any(.pods[]; .node == $n)' <<<"$st" >/dev/null || die "$name: no pod on $VICTIM ($before)"

	ck=$(ucruz checkpoint --json "$name") || die "checkpoint of $mib MiB per rank failed: $(tail_diag "$name")"
	bytes=$(jq -e '.bytes' <<<"$ck") || die "checkpoint without bytes: $ck"
	ckpt_ms=$(jq -e '.phases_ms.block + .phases_ms.dump + .phases_ms.commit' <<<"$ck") || die "checkpoint without phases: $ck"
	ckdir=$(jq -er .dir <<<"$ck") || die "checkpoint without dir: $ck"
	[ -d "$ckdir" ] || die "checkpoint dir $ckdir is not here"
	say "$name: checkpoint $(jq -r .id <<<"$ck"): $bytes bytes, phases $(jq -c .phases_ms <<<"$ck"); pods: $before"

	# The spare has never read these images: neither should the rollback.
	sync
	echo 3 >/proc/sys/vm/drop_caches
	t0=$(now_ns)
	"$CRUZ" cluster fail --dir "$DIR/cl" "$VICTIM" >"$WORK/fail.out" 2>&1 || die "cruz cluster fail $VICTIM failed: $(cat "$WORK/fail.out")"
	evs='{"events": []}'
	deadline=$((SECONDS + WAIT_RECOVERED))
	while [ $SECONDS -lt $deadline ]; do
		e=$(ucruz events --json "$name" 2>/dev/null) && evs=$e
		jq -e 'any(.events[]; .kind == "recovered" or .kind == "gave_up")' <<<"$evs" >/dev/null && break
		sleep 0.1
	done
	fail_ev=$(jq -c 'first(.events[] | select(.kind == "failure")) // empty' <<<"$evs")
	rec_ev=$(jq -c 'first(.events[] | select(.kind == "recovered")) // empty' <<<"$evs")
	[ -n "$fail_ev" ] || die "$name: no failure event within ${WAIT_RECOVERED}s of failing $VICTIM: $(tail_diag "$name")"
	[ -n "$rec_ev" ] || die "$name: not recovered within ${WAIT_RECOVERED}s of failing $VICTIM: $(tail_diag "$name")"
	say "$name: failure: $(jq -r .message <<<"$fail_ev")"
	say "$name: recovered: $(jq -r .message <<<"$rec_ev")"
	tf=$(ns "$(jq -r .time <<<"$fail_ev")")
	trec=$(ns "$(jq -r .time <<<"$rec_ev")")
	rollback_ms=$(jq -e .ms <<<"$rec_ev") || die "$name: recovered event without ms: $rec_ev"
	detect_ms=$(((tf - t0) / 1000000))
	recovery_ms=$(((trec - tf) / 1000000))
	total_ms=$(((trec - t0) / 1000000))
	st=$(ucruz status --json "$name") || die "cruz status $name failed after the recovery"
	after=$(pods_on "$st")
	[ "$(jq -r .state <<<"$st")" = running ] || die "$name: $(jq -r .state <<<"$st") after the recovery, not running: $(tail_diag "$name")"
	if jq -e --arg n "$VICTIM" 'any(.pods[]; .node == $n)' <<<"$st" >/dev/null; then
		die "$name: pods still on $VICTIM after the recovery ($after)"
	fi
	say "$name: pods after: $after"
	# Running again means computing again: wait for an iteration it had not
	# reached before (replayed lines are not printed twice).
	iters=$(grep -c "^iter " "$WORK/$name.out" || true)
	for _ in $(seq 600); do [ "$(grep -c "^iter " "$WORK/$name.out" || true)" -gt "$iters" ] && break; sleep 0.1; done
	[ "$(grep -c "^iter " "$WORK/$name.out" || true)" -gt "$iters" ] || die "$name: no new iteration within 60s of the recovery: $(tail_diag "$name")"

	sync
	echo 3 >/proc/sys/vm/drop_caches
	r0=$(now_ns)
	find "$ckdir" -type f -print0 | xargs -0 cat >/dev/null
	read_ms=$((($(now_ns) - r0) / 1000000))

	ucruz rm --checkpoints "$name" >/dev/null || die "cruz rm --checkpoints $name failed"
	wait "$runpid" || true
	runpid=
	"$CRUZ" cluster down --dir "$DIR/cl" --lan "$LAN" --purge >"$WORK/down.out" 2>&1 ||
		die "cruz cluster down failed: $(tail -5 "$WORK/down.out")"
	# shellcheck disable=SC2059 # the format is HDR
	printf "$HDR" "$mib" "$((bytes / 1048576))MiB" "$ckpt_ms" "$detect_ms" "$recovery_ms" "$rollback_ms" "$total_ms" "$read_ms" \
		"$(awk -v a="$total_ms" -v b="$read_ms" 'BEGIN {printf "%.1f", (b > 0 ? a / b : 0)}')" \
		"$(jq -r '.message | capture("moved (?<m>.*)").m // "-" | gsub(" -> "; "->") | gsub(", "; ",")' <<<"$rec_ev")"
done
say "each row: one node failure of a job of $NP ranks (mpi_allreduce, MIB MiB each) on 4 virtual nodes on this machine ($(nproc) cores), $SPARE the spare, a fresh cluster per row;" \
	"ckpt_ms = block+dump+commit of its one checkpoint (ckpt_size); detect_ms = coordinator's failure event - cruz cluster fail $VICTIM;" \
	"recovery_ms = recovered event - failure event; rollback_ms = the recovered event's ms (agent's own: restart delay + restore);" \
	"total_ms = recovered event - cruz cluster fail; read_ms = cat of every image file with the page cache dropped (also dropped before the failure);" \
	"detection is driven by the coordinator's policy ($POLICY: a node counts as failed after heartbeat_timeout without an answer, checked every heartbeat), the rollback waits restart_base first"
