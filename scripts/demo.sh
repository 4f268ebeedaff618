#!/usr/bin/env bash
# The Cruz demo: a multi-node MPI job that survives the failure of a node by
# itself, on a virtual cluster of 4 nodes on this one machine (run as root;
# `make demo` runs it after `make deps build`):
#
#   1. bring up a private virtual cluster (`cruz cluster up`): 4 nodes, each a
#      cruzd in its own network and UTS namespaces, their pods bridged onto
#      one LAN;
#   2. the reference output of an 8-rank MPI job (mpi_allreduce): what an
#      uninterrupted run prints, which follows from the number of ranks and
#      iterations (tests/apps/mpi_allreduce.c); with CRUZ_DEMO_REFERENCE=run,
#      also a real run of the job to the end, checked against it;
#   3. run the job as an unprivileged user (mpiexec's pod on node1) under the
#      policy engine:
#      `cruz run --interval 3s --spares 1` (a checkpoint every 3 s; its ranks
#      on node1..node3, node4 held back as a spare). While it runs: a periodic
#      checkpoint; rank 3 migrated live to node3; a checkpoint asked for
#      (which has rank 3 where it now runs); then node2 fails as a dead
#      machine does (`cruz cluster fail node2`: its link cut, its agent and
#      pods killed). From then on the demo only watches (`cruz events`): the
#      job's coordinator (node1's agent) notices, rolls the whole job back to
#      its last checkpoint with node2's pods on the spare, and the job
#      finishes, its `cruz run` attached throughout;
#   4. check that `cruz run` exits 0; that the program's output (without
#      MPICH's abort banner, should mpiexec print one) is the reference
#      output line for line, none lost or doubled, with the same result; that
#      every pod kept its IP address and MAC (in cruz's records and as the
#      kernel sees them inside the pods, which also shows on which node each
#      pod really runs); that node2's pods now run on node4 and the others
#      where they were; and that the job's event log tells failure ->
#      restarting -> recovered, once each;
#   5. print a summary (nodes, ranks, pods, checkpoints with sizes and the
#      time the job's traffic was held, the migration's downtime, the
#      failure's timeline from the job's events: detection, rollback, restore,
#      first new output; the lines the rollback repeated and cruz did not show
#      twice; the result);
#   6. if Slurm and the SPANK plugin are installed (the cluster then also
#      runs Slurm, `cruz cluster up --slurm`): submit the program as a Slurm
#      job on node3 and node4 whose step is `srun --cruz-interval=2s`,
#      requeue it half-way (`scontrol requeue`), and check that it resumed
#      from its last checkpoint (its events) and that its output file is an
#      uninterrupted run's, line by line; then remove the jobs and take the
#      cluster down.
#
# Environment:
#   CRUZ_BIN         where `make build` put cruz, cruzd and apps/ (/opt/cruz/bin)
#   CRUZ_DEMO_USER   user to run the jobs as (default: cruzt1 if it exists,
#                    else cruzdemo, created if missing)
#   CRUZ_DEMO_ITERS  iterations of the MPI job, 100 ms each (default 100, at
#                    least 80: node2 fails around iteration 40-60, more on an
#                    idle machine, and the job must not end before that)
#   CRUZ_DEMO_REFERENCE  formula (default): the reference output is computed;
#                    run: also run the job once to the end, uninterrupted, and
#                    check that it prints just that (about 12 s more)
#   CRUZ_DEMO_KEEP   1: if the demo fails (or is interrupted), leave the
#                    virtual cluster up for inspection (default: take it down)
#
# The demo's cluster is its own, apart from one you may have made with `cruz
# cluster up` (/run/cruz-cluster, LAN czlan0, 10.203.0.0/16): its directory is
# /run/cruz-demo (sockets, configs, logs), its LAN bridge czdemo0, its subnet
# 10.212.0.0/16 and its checkpoint store /var/tmp/cruz-demo-store. A cluster
# an earlier demo left there is taken down first.
#
# On success the demo removes everything it made. On failure it takes the
# cluster down (unless CRUZ_DEMO_KEEP=1) but keeps its working directory, with
# the outputs, the job's events and the nodes' logs, and prints its path.
set -euo pipefail

BIN=${CRUZ_BIN:-/opt/cruz/bin}
CRUZ=$BIN/cruz
CRUZD=$BIN/cruzd
APP=$BIN/apps/mpi_allreduce
CHECK=$BIN/apps/democheck # the checks, shared with the e2e tests (tests/check)
ITERS=${CRUZ_DEMO_ITERS:-100}
KEEP=${CRUZ_DEMO_KEEP:-0}
REFERENCE=${CRUZ_DEMO_REFERENCE:-formula}
SLEEP_MS=100
NODES=4
NP=8
INTERVAL=3s # the policy's checkpoint interval
SPARES=1    # the last SPARES nodes are held back: node4
CDIR=/run/cruz-demo # the virtual cluster's directory (unix socket paths must stay short)
LAN=czdemo0
SUBNET=10.212.0.0/16
STORE=/var/tmp/cruz-demo-store
MIG_RANK=3
FAIL_NODE=node2
SPARE_NODE=node4

say() { printf '\n== %s\n' "$*"; }
info() { printf 'demo: %s\n' "$*"; }
die() {
	printf 'demo: FAILED: %s\n' "$*" >&2
	exit 1
}
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
indent() { sed 's/^./    &/'; }

[ "$(id -u)" = 0 ] || die "run me as root (I make a virtual cluster and create a user): sudo $0"
for f in "$CRUZ" "$CRUZD" "$APP" "$CHECK"; do
	[ -x "$f" ] || die "$f is missing: run \`make build\` (or set CRUZ_BIN)"
done
for c in setpriv nsenter flock ip; do
	command -v "$c" >/dev/null 2>&1 || die "$c is missing: run \`make deps\`"
done
case $ITERS in '' | *[!0-9]*) die "CRUZ_DEMO_ITERS=$ITERS is not a number" ;; esac
[ "$ITERS" -ge 80 ] || die "CRUZ_DEMO_ITERS=$ITERS is too short to checkpoint, migrate and fail a node in the middle: use 80 or more"
case $KEEP in 0 | 1) ;; *) die "CRUZ_DEMO_KEEP=$KEEP: use 0 or 1" ;; esac
case $REFERENCE in formula | run) ;; *) die "CRUZ_DEMO_REFERENCE=$REFERENCE: use formula or run" ;; esac
JOBS=(demo) # the names of the demo's jobs
[ "$REFERENCE" != run ] || JOBS=(ref demo)

# One demo at a time: a second one would take the first one's cluster down.
# (The lock is on this script, so that it leaves no file behind; the cluster's
# daemons must not inherit it: see `9<&-` below.)
exec 9<"${BASH_SOURCE[0]}"
flock -n 9 || die "another demo is running (it holds a lock on ${BASH_SOURCE[0]})"

T_START=$(now)
WORK=""
SOCK="" # node1's socket, once the cluster is up
BG_PID=""
CLUSTER=0 # 1 once this demo has (tried to) set up its cluster
OK=0

cluster_down() { # takes the demo's cluster down, with its store; quiet unless it fails
	"$CRUZ" cluster down --dir "$CDIR" --lan "$LAN" --purge 7>&- 8>&- 9<&-
}

cleanup() {
	local rc=$?
	set +e
	exec 1>&7 2>&8 # the demo's own output, even if a command's redirections were in force
	if [ -n "$BG_PID" ] && kill -0 "$BG_PID" 2>/dev/null; then
		kill "$BG_PID" 2>/dev/null
		wait "$BG_PID" 2>/dev/null
	fi
	[ "$OK" = 1 ] && exit "$rc"
	if [ "$CLUSTER" = 1 ] && [ -n "$SOCK" ] && [ -n "$WORK" ]; then
		# What the agent saw happen to the jobs (if this cruz has `events`).
		for j in "${JOBS[@]}"; do
			as_user "$CRUZ" events "$j" >"$WORK/events-$j.txt" 2>&1 </dev/null || true
		done
		"$CRUZ" cluster status --dir "$CDIR" >"$WORK/cluster-status.txt" 2>&1 </dev/null || true
	fi
	if [ "$CLUSTER" = 1 ] && [ "$KEEP" = 1 ]; then
		echo "demo: CRUZ_DEMO_KEEP=1: the virtual cluster is still up for inspection:" \
			"CRUZ_CLUSTER_DIR=$CDIR cruz cluster status; its nodes' logs are $CDIR/nodeK/cruzd.log," \
			"CRIU's logs $CDIR/nodeK/jobs/JOB/criu/; the jobs are ${JOBS[*]} of user $DEMO_USER" \
			"(cruz --socket $CDIR/node1/cruzd.sock status). Take it down with:" \
			"cruz cluster down --dir $CDIR --lan $LAN --purge (or run the demo again)" >&2
	elif [ "$CLUSTER" = 1 ]; then
		if [ -n "$WORK" ] && [ -d "$CDIR" ]; then
			# The nodes' run directories go with the cluster: keep their logs
			# (cruzd.log, jobs/*/criu/ with CRIU's logs) and job records.
			for n in "$CDIR"/node*/; do
				[ -d "$n" ] || continue
				mkdir -p "$WORK/nodes/$(basename "$n")"
				cp -a "$n/cruzd.log" "$n/cruzd.toml" "$n/jobs" "$WORK/nodes/$(basename "$n")/" 2>/dev/null
			done
			cp -a "$CDIR/cluster.json" "$WORK/nodes/" 2>/dev/null
		fi
		echo "demo: taking the virtual cluster down (CRUZ_DEMO_KEEP=1 keeps it up after a failure)" >&2
		cluster_down >&2 || echo "demo: cruz cluster down failed: take it down yourself: cruz cluster down --dir $CDIR --lan $LAN --purge" >&2
	fi
	if [ -n "$WORK" ]; then
		what="the jobs' outputs, cruz's JSON answers and events"
		[ ! -d "$WORK/nodes" ] || what="$what; nodes/: the nodes' logs, job records and CRIU logs"
		echo "demo: kept for inspection: $WORK ($what); rm -rf it yourself" >&2
	fi
	exit "$rc"
}
# The demo's stdout and stderr, for its clean-up (which may run while a
# command's output goes to a file); the cluster's daemons must not inherit
# them (nor the lock): see `7>&- 8>&- 9<&-` below.
exec 7>&1 8>&2
trap cleanup EXIT
trap 'echo "demo: interrupted (SIGINT)" >&8; exit 130' INT
trap 'echo "demo: terminated (SIGTERM)" >&8; exit 143' TERM

# ---------------------------------------------------- the user and its dir
if [ -n "${CRUZ_DEMO_USER:-}" ]; then
	DEMO_USER=$CRUZ_DEMO_USER
	id -u "$DEMO_USER" >/dev/null 2>&1 || die "CRUZ_DEMO_USER=$DEMO_USER does not exist"
elif id -u cruzt1 >/dev/null 2>&1; then
	DEMO_USER=cruzt1
else
	DEMO_USER=cruzdemo
	if ! id -u "$DEMO_USER" >/dev/null 2>&1; then
		info "creating the unprivileged user $DEMO_USER"
		useradd -m -s /bin/bash "$DEMO_USER"
	fi
fi
DEMO_UID=$(id -u "$DEMO_USER")
[ "$DEMO_UID" != 0 ] || die "the demo user must not be root"
DEMO_GID=$(id -g "$DEMO_USER")
DEMO_HOME=$(getent passwd "$DEMO_USER" | cut -d: -f6)

# as_user CMD ARGS: run CMD as the demo user in the working directory, with a
# clean environment (cruz run hands its environment to the job), talking to
# node1's agent.
as_user() {
	(cd "${WORK:-/}" && exec setpriv --reuid="$DEMO_USER" --regid="$DEMO_GID" --init-groups \
		env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$DEMO_HOME" USER="$DEMO_USER" LOGNAME="$DEMO_USER" \
		LANG=C.UTF-8 CRUZ_SOCKET="$SOCK" "$@")
}

WORK=$(mktemp -d /tmp/cruz-demo.XXXXXX)
chown "$DEMO_USER:" "$WORK"
chmod 0755 "$WORK"
# The pods run as the user in this directory: every directory above it must
# be traversable by others.
d=$(dirname "$WORK")
while [ "$d" != / ]; do
	[ $((0$(stat -c %a "$d") & 01)) -ne 0 ] || die "$d (mode $(stat -c %a "$d")) is not traversable by $DEMO_USER"
	d=$(dirname "$d")
done

# ------------------------------------------------------------ the cluster
say "a virtual cluster of $NODES nodes: cruz cluster up --nodes $NODES --dir $CDIR --lan $LAN --subnet $SUBNET --store $STORE"
if "$CRUZ" cluster status --dir "$CDIR" >/dev/null 2>&1 || [ -e "$CDIR" ] || ip link show "$LAN" >/dev/null 2>&1; then
	info "an earlier demo left its cluster in $CDIR (or part of it): taking it down first"
	cluster_down || die "could not take the earlier demo's cluster down: cruz cluster down --dir $CDIR --lan $LAN --purge"
fi
CLUSTER=1
# With Slurm and the SPANK plugin there, the cluster also runs Slurm, for
# the last act (srun --cruz, requeued half-way).
SLURM=0
UP_SLURM=()
if [ -e "$BIN/cruz_spank.so" ] && command -v slurmctld slurmd munged sbatch srun scontrol >/dev/null 2>&1; then
	SLURM=1
	UP_SLURM=(--slurm)
else
	info "no Slurm or no SPANK plugin ($BIN/cruz_spank.so): the Slurm act is left out (make deps build installs and builds them)"
fi
t0=$(now)
if ! "$CRUZ" cluster up --nodes "$NODES" --dir "$CDIR" --lan "$LAN" --subnet "$SUBNET" --store "$STORE" "${UP_SLURM[@]}" \
	>"$WORK/cluster-up.out" 2>&1 7>&- 8>&- 9<&-; then
	indent <"$WORK/cluster-up.out" >&2
	die "cruz cluster up failed (its output is above)"
fi
T_UP=$(secs "$t0" "$(now)")
"$CRUZ" cluster status --json --dir "$CDIR" >"$WORK/cluster.json" ||
	die "cruz cluster status --json --dir $CDIR failed right after cluster up"
"$CRUZ" cluster status --dir "$CDIR" | indent
SOCK=$("$CHECK" cluster "$WORK/cluster.json" "$NODES") || die "the cluster is not as expected (see above)"
as_user "$CRUZ" version >/dev/null 2>&1 || die "$DEMO_USER gets no answer from node1's agent on $SOCK: $(as_user "$CRUZ" version 2>&1)"
info "cluster up in ${T_UP} s: $(as_user "$CRUZ" version)"
info "jobs run as $DEMO_USER ($(id "$DEMO_USER")) in $WORK, talking to node1 (CRUZ_SOCKET=$SOCK)"

JOB=("$APP" "$ITERS" "$SLEEP_MS")

# pod_view JOBID: the job's pods as the kernel sees them, as JSON {name:
# {node, ip, mac, pid, start}} (start: the process's start time, in clock
# ticks since boot, which tells it from a later process with the same PID):
# for every process of the demo user that is the first of its pod (pid 1 in
# its own pid namespace) and a child of one of the cluster's agents (which
# tells the node), the hostname (the pod's name) and eth0's IPv4 address and
# MAC, read inside its UTS and network namespaces.
pod_view() {
	"$CHECK" pods "$1" "$DEMO_UID" "$WORK/cluster.json"
}

# look STAGE: save cruz's view of the demo job (status --json) and the
# kernel's (pod_view) as STAGE-status.json and STAGE-pods.json, and check that
# they agree on every pod's node, IP and MAC.
look() {
	as_user "$CRUZ" status --json "$JOB_ID" >"$WORK/$1-status.json" || die "cruz status --json $JOB_ID failed"
	pod_view "$JOB_ID" >"$WORK/$1-pods.json" || die "could not look into the pods of job $JOB_ID"
	"$CHECK" look "$WORK/$1-status.json" "$WORK/$1-pods.json" ||
		die "cruz's records and the pods themselves disagree ($1, see above; a job that ended too soon wants a larger CRUZ_DEMO_ITERS)"
}

# where STAGE: "pod@node ..." from STAGE-pods.json
where() { "$CHECK" where "$WORK/$1-pods.json"; }

iters() { grep -c '^iter ' "$1" 2>/dev/null || true; }

# wait_iters FILE N WHAT: wait (30 s at most) until FILE has N iteration lines
# while the background client runs; prints how long it took.
wait_iters() {
	local t0
	t0=$(now)
	for _ in $(seq 600); do
		[ "$(iters "$1")" -ge "$2" ] && break
		kill -0 "$BG_PID" 2>/dev/null || break
		sleep 0.05
	done
	[ "$(iters "$1")" -ge "$2" ] || {
		indent <"${1%.out}.err" >&2
		die "the job did not reach iteration $2 $3 within 30 s (it is at $(iters "$1"); its stderr is above)"
	}
	secs "$t0" "$(now)"
}

# -------------------------------------------------- the reference output
# What an uninterrupted run prints follows from the number of ranks and
# iterations (tests/apps/mpi_allreduce.c; the pause does not change it).
reference() { # FILE NP ITERS
	"$CHECK" reference "$@" || die "could not compute the reference output"
}
reference "$WORK/ref.out" "$NP" "$ITERS"
T_REF=""
if [ "$REFERENCE" = run ]; then
	say "reference run: cruz run --name ref --np $NP -- ${JOB[*]}"
	t0=$(now)
	rc=0
	as_user "$CRUZ" run --name ref --np "$NP" -- "${JOB[@]}" >"$WORK/ref-run.out" 2>"$WORK/ref-run.err" || rc=$?
	T_REF=$(secs "$t0" "$(now)")
	if [ "$rc" != 0 ]; then
		indent <"$WORK/ref-run.err" >&2
		die "the reference run exited with status $rc (its stderr is above)"
	fi
	if ! diff -u "$WORK/ref.out" "$WORK/ref-run.out" >"$WORK/ref-diff.txt"; then
		head -n 20 "$WORK/ref-diff.txt" | indent >&2
		die "the reference run's output is not what mpi_allreduce computes (diff above: - computed, + printed)"
	fi
	info "done in ${T_REF} s: $(wc -l <"$WORK/ref-run.out") lines, those the program's formula gives; last: $(tail -n 1 "$WORK/ref-run.out")"
else
	say "reference output: what an uninterrupted run of ${JOB[*]##*/} with $NP ranks prints"
	info "$(wc -l <"$WORK/ref.out") lines computed from the program's formula (CRUZ_DEMO_REFERENCE=run also runs the job once to compare); last: $(tail -n 1 "$WORK/ref.out")"
fi

# ------------------------------------- the run that loses a node and recovers
say "the job again, under the policy engine: cruz run --name demo --np $NP --interval $INTERVAL --spares $SPARES -- ${JOB[*]}"
t_run=$(now)
as_user "$CRUZ" run --name demo --np "$NP" --interval "$INTERVAL" --spares "$SPARES" -- "${JOB[@]}" \
	>"$WORK/run.out" 2>"$WORK/run.err" &
BG_PID=$!
wait_iters "$WORK/run.out" 3 "(its start)" >/dev/null
JOB_ID=$(as_user "$CRUZ" status --json demo | "$CHECK" get - id) ||
	die "cruz status --json demo failed"
look start
"$CHECK" spread "$WORK/start-status.json" "$WORK/start-pods.json" "$NODES" "$SPARES" ||
	die "the job is not spread over the cluster as it should be (see above)"
POLICY=$("$CHECK" get "$WORK/start-status.json" policy)
info "job $JOB_ID running after $(secs "$t_run" "$(now)") s, $(iters "$WORK/run.out") iterations out; policy: $POLICY; spare: $SPARE_NODE"
info "  $(where start)"

# events_read KIND [SHOW T0]: reads the job's event log (saved as
# events.json); writes "<events of KIND> <events in all>" to events.count and,
# with SHOW, the events from index SHOW on, timed from T0, to events.new.
events_read() {
	as_user "$CRUZ" events --json "$JOB_ID" >"$WORK/events.json" 2>"$WORK/events.err" ||
		die "cruz events --json $JOB_ID failed: $(cat "$WORK/events.err")"
	"$CHECK" events "$WORK/events.json" "$@" >"$WORK/events.count" || die "cannot read the job's event log (see above)"
}

# await_event KIND N LIMIT WHAT [T0]: waits (LIMIT seconds at most) until the
# job's event log has N events of KIND; with T0, prints every new event as it
# comes, timed from T0.
SHOWN=0
await_event() {
	local kind=$1 n=$2 limit=$3 what=$4 t0 got total
	t0=$(now)
	while :; do
		events_read "$kind" ${5:+"$SHOWN" "$5"}
		read -r got total <"$WORK/events.count"
		if [ -n "${5:-}" ]; then
			cat "$WORK/events.new"
			SHOWN=$total
		fi
		[ "$got" -lt "$n" ] || return 0
		if [ -n "$BG_PID" ] && ! kill -0 "$BG_PID" 2>/dev/null; then
			indent <"$WORK/run.err" >&2
			as_user "$CRUZ" events "$JOB_ID" | indent >&2
			die "the job ended before $what (cruz run's stderr and the job's events are above)"
		fi
		if [ "$(awk -v a="$t0" -v b="$(now)" -v l="$limit" 'BEGIN { print (b - a > l) }')" = 1 ]; then
			as_user "$CRUZ" events "$JOB_ID" | indent >&2
			die "no $what within $limit s (the job's events are above)"
		fi
		sleep 0.1
	done
}

# ck_snapshot NAME: the job's checkpoints as cruz lists them now, as NAME.json
ck_snapshot() {
	as_user "$CRUZ" checkpoints --json "$JOB_ID" >"$WORK/$1.json" || die "cruz checkpoints --json $JOB_ID failed"
}

say "the policy engine checkpoints the job every $INTERVAL (cruz events $JOB_ID)"
await_event checkpoint 1 30 "first periodic checkpoint"
ck_snapshot cks1
info "$(grep -o 'periodic checkpoint ckpt-[0-9]*: [^;]*' "$WORK/events.json" | tail -n 1); $(iters "$WORK/run.out") iterations out"

say "cruz migrate --rank $MIG_RANK --to NODE demo (live)"
MIG_FROM=$("$CHECK" get "$WORK/start-pods.json" "$JOB_ID-r$MIG_RANK.node")
MIG_TO=node3
[ "$MIG_FROM" != "$MIG_TO" ] || MIG_TO=node1
t0=$(now)
if ! as_user "$CRUZ" migrate --json --rank "$MIG_RANK" --to "$MIG_TO" demo >"$WORK/migrate.json" 2>"$WORK/migrate.err"; then
	indent <"$WORK/migrate.err" >&2
	die "cruz migrate --rank $MIG_RANK --to $MIG_TO demo failed (its error is above)"
fi
T_MIG=$(secs "$t0" "$(now)")
info "$("$CHECK" migration "$WORK/migrate.json"); cruz migrate took $T_MIG s"
w=$(wait_iters "$WORK/run.out" $(($(iters "$WORK/run.out") + 2)) "after the migration")
info "  the job runs on: $(iters "$WORK/run.out") iterations out (the next came after $w s)"
look moved
"$CHECK" migrated "$WORK/moved-pods.json" "$JOB_ID-r$MIG_RANK" "$MIG_TO" ||
	die "rank $MIG_RANK is not where the migration should have put it (see above)"
info "pods now: $(where moved)"

# The job is rolled back to its last checkpoint: take one now, with rank 3
# where it now runs (the policy's own come every 3 s or later, as
# policy.max_overhead spaces them out when they hold the job long, as on a
# busy machine), and let the job print a few lines after it (the restored
# run prints them again; cruz must not show them twice).
say "cruz checkpoint --wait 60s demo (with rank $MIG_RANK on $MIG_TO), then a few more iterations"
t0=$(now)
if ! as_user "$CRUZ" checkpoint --json --wait 60s demo >"$WORK/checkpoint.json" 2>"$WORK/checkpoint.err"; then
	indent <"$WORK/checkpoint.err" >&2
	die "cruz checkpoint --wait 60s demo failed (its error is above)"
fi
ck_snapshot cks2
info "checkpoint $("$CHECK" get "$WORK/checkpoint.json" id) in $(secs "$t0" "$(now)") s, the job held $("$CHECK" get "$WORK/checkpoint.json" phases_ms.held) ms; $(iters "$WORK/run.out") iterations out"
wait_iters "$WORK/run.out" $(($(iters "$WORK/run.out") + 5)) "after the checkpoint" >/dev/null
n=$(iters "$WORK/run.out")
[ "$n" -le $((ITERS - 20)) ] ||
	die "the job is already at iteration $n of $ITERS, too close to its end to fail a node under it: use a larger CRUZ_DEMO_ITERS"

# ----------------------------------------------------------- the failure
FAILED_PODS=$("$CHECK" pods-on "$WORK/moved-pods.json" "$FAIL_NODE")
[ -n "$FAILED_PODS" ] || die "no pod of the job runs on $FAIL_NODE"
say "cruz cluster fail $FAIL_NODE (as root): the node dies under the job, with its pods ${FAILED_PODS//$JOB_ID-/}"
T_FAIL0=$(now)
if ! "$CRUZ" cluster fail --dir "$CDIR" "$FAIL_NODE" >"$WORK/fail.out" 2>&1 7>&- 8>&- 9<&-; then
	indent <"$WORK/fail.out" >&2
	die "cruz cluster fail $FAIL_NODE failed (its output is above)"
fi
T_FAIL=$(secs "$T_FAIL0" "$(now)")
N_AT_FAIL=$(iters "$WORK/run.out")
info "$(tail -n 1 "$WORK/fail.out"), in $T_FAIL s; the job had printed $N_AT_FAIL iterations"
"$CRUZ" cluster status --json --dir "$CDIR" >"$WORK/cluster-failed.json" || die "cruz cluster status --json failed after the failure"
"$CHECK" cluster-failed "$WORK/cluster-failed.json" "$FAIL_NODE" ||
	die "cruz cluster status does not show the failure as it should (see above)"
info "cruz cluster status: $FAIL_NODE failed, the other nodes up; what the job's coordinator does (cruz events, times since the failure):"
events_read failure
read -r _ SHOWN <"$WORK/events.count"
await_event recovered 1 120 "recovery from the failure of $FAIL_NODE" "$T_FAIL0"
look recovered
wait_iters "$WORK/run.out" $((N_AT_FAIL + 1)) "after the recovery" >/dev/null
T_NEW=$(secs "$T_FAIL0" "$(now)")
info "the job is running again; its next new line came $T_NEW s after the failure (iteration $(iters "$WORK/run.out"))"
info "pods now: $(where recovered)"
"$CHECK" recovered "$WORK/moved-pods.json" "$WORK/recovered-pods.json" "$WORK/recovered-status.json" "$FAIL_NODE" "$SPARE_NODE" ||
	die "the pods are not where the recovery should have put them (see above)"

say "the job runs to its end"
rc=0
wait "$BG_PID" || rc=$?
BG_PID=""
T_RUN=$(secs "$t_run" "$(now)")
await_event exited 1 10 "the job's exited event" "$T_FAIL0"
[ "$rc" = 0 ] || {
	indent <"$WORK/run.err" >&2
	die "cruz run exited with status $rc, expected the job's own 0 (its stderr is above)"
}
info "cruz run exited 0 after $T_RUN s, $(iters "$WORK/run.out") iterations out"
ck_snapshot cks3

# -------------------------------------------------------------- the checks
say "checks"
# cruz writes its own messages ("cruz: ...") to stderr; drop any that reached
# stdout, and the lines of MPICH's abort banner ("BAD TERMINATION OF ONE OF
# YOUR APPLICATION PROCESSES"), which a dying mpiexec may print before anyone
# knows the run has failed: what is left is the program's own output.
BANNERS=$("$CHECK" program-output "$WORK/run.out" "$WORK/program.out") || die "could not read the job's output"
if ! diff -u "$WORK/ref.out" "$WORK/program.out" >"$WORK/diff.txt"; then
	head -n 40 "$WORK/diff.txt" | indent >&2
	die "the job's output differs from the reference output (diff above: - reference, + the run that lost $FAIL_NODE)"
fi
info "the output is the reference's, line for line: $(wc -l <"$WORK/ref.out") lines, none lost or doubled (MPICH abort banners left out: $BANNERS)"
REF_RESULT=$(grep '^result ' "$WORK/ref.out" || true)
GOT_RESULT=$(grep '^result ' "$WORK/program.out" || true)
[ -n "$REF_RESULT" ] || die "the reference output has no result line"
[ "$REF_RESULT" = "$GOT_RESULT" ] || die "result differs: reference '$REF_RESULT', recovered '$GOT_RESULT'"
grep -q "^iter $ITERS " "$WORK/program.out" || die "the job did not reach iteration $ITERS"
info "result lines are equal: $GOT_RESULT"
"$CHECK" addresses "$WORK" || die "a pod's IP address or MAC changed (see above)"
info "every pod kept its IP address and MAC across the migration and the recovery (cruz's records and inside the pods)"
info "$FAIL_NODE's pods (${FAILED_PODS//$JOB_ID-/}) now run on $SPARE_NODE, the others where they were"
"$CHECK" story "$WORK/events.json" "$FAIL_NODE" "$T_FAIL0" ||
	die "the job's event log does not tell the story it should (see above; cruz events $JOB_ID)"
info "the job's events: failure -> restarting -> recovered, once each, from its last checkpoint before the failure, then exited"

# ------------------------------------------------------------- the summary
say "summary"
T_TOTAL=$(secs "$T_START" "$(now)")
RESULT=$GOT_RESULT NREF=$(wc -l <"$WORK/ref.out") ITERS=$ITERS T_UP=$T_UP T_REF=$T_REF T_RUN=$T_RUN \
	T_MIG=$T_MIG T_FAIL=$T_FAIL T_FAIL0=$T_FAIL0 T_NEW=$T_NEW T_TOTAL=$T_TOTAL N_AT_FAIL=$N_AT_FAIL \
	BANNERS=$BANNERS LAN=$LAN SUBNET=$SUBNET FAIL_NODE=$FAIL_NODE INTERVAL=$INTERVAL SPARES=$SPARES \
	"$CHECK" summary "$WORK" || die "could not write the summary (see above)"

# ------------------------------------------------------------- under Slurm
if [ "$SLURM" = 1 ]; then
	S_NP=4
	S_ITERS=80
	S_NODES=node3,node4 # node2 is dead; node1 ran the job above
	SCONF=$("$CHECK" get "$WORK/cluster.json" slurm.conf) ||
		die "cruz cluster status --json has no Slurm configuration"
	slurm_as_user() { as_user env SLURM_CONF="$SCONF" "$@"; }
	say "the program under Slurm: sbatch -N2 -n$S_NP -w $S_NODES, its step srun --cruz-interval=2s ($S_ITERS iterations); scontrol requeue half-way"
	printf '#!/bin/sh\nsrun --cruz-interval=2s %s %s %s\n' "$APP" "$S_ITERS" "$SLEEP_MS" >"$WORK/slurm-job.sh"
	chmod 0755 "$WORK/slurm-job.sh"
	chown "$DEMO_USER:" "$WORK/slurm-job.sh"
	SJOB=$(slurm_as_user sbatch --parsable -N2 -n"$S_NP" -w "$S_NODES" -o "$WORK/slurm-%j.out" -e "$WORK/slurm-%j.err" "$WORK/slurm-job.sh") ||
		die "sbatch failed"
	info "Slurm job $SJOB; its step runs as cruz job slurm-$SJOB-0, a pod per task, coordinated by node3's agent"
	for _ in $(seq 600); do grep -q '^iter 40 ' "$WORK/slurm-$SJOB.out" 2>/dev/null && break; sleep 0.1; done
	grep -q '^iter 40 ' "$WORK/slurm-$SJOB.out" || die "the Slurm job did not reach iteration 40 in 60 s: $(cat "$WORK/slurm-$SJOB.err")"
	as_user "$CRUZ" checkpoints --json "$SJOB" >"$WORK/slurm-cks.json" || die "cruz checkpoints $SJOB failed"
	N_CK=$("$CHECK" get "$WORK/slurm-cks.json" checkpoints.#)
	[ "$N_CK" -ge 1 ] || die "no checkpoint of the Slurm job's step after 40 iterations"
	info "cruz checkpoints $SJOB (a Slurm job id, asked of node1's agent, answered by node3's): $N_CK so far"
	t_rq=$(now)
	slurm_as_user scontrol requeue "$SJOB" || die "scontrol requeue $SJOB failed"
	info "scontrol requeue $SJOB at iteration $(grep -c '^iter ' "$WORK/slurm-$SJOB.out")"
	state=""
	for _ in $(seq 1200); do
		state=$(slurm_as_user scontrol show job -o "$SJOB" | sed -n 's/.* JobState=\([A-Z_]*\).*/\1/p')
		case $state in COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL) break ;; esac
		sleep 0.1
	done
	[ "$state" = COMPLETED ] || die "the requeued Slurm job ended $state: $(cat "$WORK/slurm-$SJOB.err")"
	T_SLURM=$(secs "$t_rq" "$(now)")
	reference "$WORK/slurm-ref.out" "$S_NP" "$S_ITERS"
	if ! diff -u "$WORK/slurm-ref.out" "$WORK/slurm-$SJOB.out" >"$WORK/slurm-diff.txt"; then
		head -n 40 "$WORK/slurm-diff.txt" | indent >&2
		die "the Slurm job's output file differs from the reference (diff above)"
	fi
	as_user "$CRUZ" events --json "$SJOB" >"$WORK/slurm-events.json" || die "cruz events $SJOB failed"
	"$CHECK" resumed "$WORK/slurm-events.json" || die "the Slurm step's events do not tell a resume (see above)"
	info "the Slurm job completed $T_SLURM s after the requeue; its output file is the reference's, line for line ($(wc -l <"$WORK/slurm-ref.out") lines: Slurm truncated it at the requeue, the resumed step wrote the earlier lines again, none lost or doubled)"
fi

# ------------------------------------------------------------- clean up
say "clean up"
for j in "${JOBS[@]}"; do as_user "$CRUZ" rm --checkpoints "$j" || die "cruz rm --checkpoints $j failed"; done
t0=$(now)
cluster_down || die "cruz cluster down --dir $CDIR --lan $LAN --purge failed"
left=""
[ ! -e "$CDIR" ] || left="$left $CDIR"
[ ! -e "$STORE" ] || left="$left $STORE"
! ip link show "$LAN" >/dev/null 2>&1 || left="$left the bridge $LAN"
# The nodes' agents and namespace holders must be gone (or dead, waiting for
# init to reap them), and so must every pod the demo saw (the failed node's
# too): a PID is taken for the same process if its start time is the same.
if ! procs=$("$CHECK" leftovers "$WORK/cluster.json" "$WORK/start-pods.json" "$WORK/moved-pods.json" "$WORK/recovered-pods.json" 2>&1); then
	left="$left
$procs"
fi
[ -z "$left" ] || die "cruz cluster down left behind:$left"
info "jobs removed, cluster down in $(secs "$t0" "$(now)") s: nothing left in $CDIR, $STORE, on $LAN, nor of the nodes or pods"
OK=1
rm -rf "$WORK"
say "demo: OK ($(secs "$T_START" "$(now)") s)"
