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
#      checkpoint; rank 3 migrated live to node3; another periodic checkpoint
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
# running PID: the process exists and is not a zombie
running() { [ -r "/proc/$1/stat" ] && [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" != Z ]; }

[ "$(id -u)" = 0 ] || die "run me as root (I make a virtual cluster and create a user): sudo $0"
for f in "$CRUZ" "$CRUZD" "$APP"; do
	[ -x "$f" ] || die "$f is missing: run \`make build\` (or set CRUZ_BIN)"
done
for c in setpriv nsenter flock ip; do
	command -v "$c" >/dev/null 2>&1 || die "$c is missing: run \`make deps\`"
done
if ! command -v python3 >/dev/null 2>&1; then # reads cruz's JSON below
	info "installing python3 (apt-get install python3-minimal)"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-minimal >/dev/null ||
		die "python3 is missing and could not be installed: apt-get install python3-minimal"
fi
# The interpreter itself, not a wrapper such as a pyenv shim that would cost
# a fraction of a second per call (the job runs on meanwhile).
PYTHON=$(python3 -c 'import sys; print(sys.executable)') || die "python3 does not run"
[ -x "$PYTHON" ] || die "python3 does not say where it is (sys.executable: '$PYTHON')"
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
SOCK=$("$PYTHON" - "$WORK/cluster.json" "$NODES" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
nodes = c["nodes"]
want = ["node%d" % i for i in range(1, int(sys.argv[2]) + 1)]
if [n["name"] for n in nodes] != want:
    sys.exit("demo: the cluster's nodes are %s, expected %s" % ([n["name"] for n in nodes], want))
down = [n["name"] for n in nodes if not n.get("alive")]
if down:
    sys.exit("demo: nodes not alive right after cluster up: %s" % ", ".join(down))
print(nodes[0]["socket"])
PY
) || die "the cluster is not as expected (see above)"
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
	"$PYTHON" - "$1" "$DEMO_UID" "$WORK/cluster.json" <<'PY'
import json, os, subprocess, sys
job, uid = sys.argv[1], sys.argv[2]
agents = {str(n["pid"]): n["name"] for n in json.load(open(sys.argv[3]))["nodes"]}
pods = {}
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        with open("/proc/%s/status" % pid) as f:
            st = dict(l.split(":", 1) for l in f.read().splitlines() if ":" in l)
    except OSError:
        continue
    nspid = st.get("NSpid", "").split()
    if st["Uid"].split()[0] != uid or len(nspid) < 2 or nspid[-1] != "1":
        continue
    ppid = st["PPid"].strip()
    if ppid not in agents:
        continue
    r = subprocess.run(["nsenter", "-t", pid, "-u", "-n", "sh", "-c",
                        "hostname; ip -br -4 addr show dev eth0; ip -br link show dev eth0"],
                       capture_output=True, text=True, timeout=20)
    lines = r.stdout.splitlines()
    if r.returncode != 0 or len(lines) != 3 or not lines[0].startswith(job + "-"):
        continue
    try:
        with open("/proc/%s/stat" % pid) as f:
            start = int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        continue
    pods[lines[0]] = {"node": agents[ppid], "ip": lines[1].split()[2].split("/")[0],
                      "mac": lines[2].split()[2], "pid": int(pid), "start": start}
json.dump(pods, sys.stdout, indent=1, sort_keys=True)
PY
}

# look STAGE: save cruz's view of the demo job (status --json) and the
# kernel's (pod_view) as STAGE-status.json and STAGE-pods.json, and check that
# they agree on every pod's node, IP and MAC.
look() {
	as_user "$CRUZ" status --json "$JOB_ID" >"$WORK/$1-status.json" || die "cruz status --json $JOB_ID failed"
	pod_view "$JOB_ID" >"$WORK/$1-pods.json" || die "could not look into the pods of job $JOB_ID"
	"$PYTHON" - "$WORK/$1-status.json" "$WORK/$1-pods.json" "$1" <<'PY' || die "cruz's records and the pods themselves disagree ($1, see above)"
import json, sys
job = json.load(open(sys.argv[1]))
if job["state"] != "running":
    sys.exit("    job %s is %s, not running: use a larger CRUZ_DEMO_ITERS if it ended too soon" % (job["id"], job["state"]))
rec = {p["name"]: p for p in job["pods"]}
seen = json.load(open(sys.argv[2]))
bad = []
for name in sorted(set(rec) | set(seen)):
    if name not in seen:
        bad.append("%s: in cruz's records (on %s) but no such pod runs here" % (name, rec[name].get("node")))
    elif name not in rec:
        bad.append("%s: runs on %s but is not in cruz's records" % (name, seen[name]["node"]))
    else:
        for k in ("node", "ip", "mac"):
            if rec[name].get(k) != seen[name][k]:
                bad.append("%s: %s is %s in cruz's records, %s in the pod" % (name, k, rec[name].get(k), seen[name][k]))
for b in bad:
    print("    " + b, file=sys.stderr)
sys.exit(1 if bad else 0)
PY
}

# where STAGE: "pod@node ..." from STAGE-pods.json
where() {
	"$PYTHON" -c 'import json, sys
pods = json.load(open(sys.argv[1]))
by = {}
for name, p in sorted(pods.items()):
    by.setdefault(p["node"], []).append(name.split("-", 1)[1])
print("; ".join("%s: %s" % (n, " ".join(sorted(ps, key=lambda s: (s != "mpiexec", s)))) for n, ps in sorted(by.items())))' "$WORK/$1-pods.json"
}

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
	"$PYTHON" - "$@" <<'PY' || die "could not compute the reference output"
import sys
np, iters = int(sys.argv[2]), int(sys.argv[3])
out, acc = ["start ranks %d" % np], 0
for i in range(1, iters + 1):
    s = sum((r + 1) * i * i % 1000003 for r in range(np))
    acc += s
    out.append("iter %d sum %d acc %d" % (i, s, acc))
out.append("result %d ranks %d iters %d" % (acc, np, iters))
open(sys.argv[1], "w").write("".join(l + "\n" for l in out))
PY
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
JOB_ID=$(as_user "$CRUZ" status --json demo | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["id"])') ||
	die "cruz status --json demo failed"
look start
"$PYTHON" - "$WORK/start-status.json" "$WORK/start-pods.json" "$NODES" "$SPARES" <<'PY' || die "the job is not spread over the cluster as it should be (see above)"
import json, sys
job, pods = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
nnodes, nspares = int(sys.argv[3]), int(sys.argv[4])
all_nodes = ["node%d" % i for i in range(1, nnodes + 1)]
want, spares = set(all_nodes[:nnodes - nspares]), all_nodes[nnodes - nspares:]
nodes = {p["node"] for n, p in pods.items() if not n.endswith("-mpiexec")}
mpx = [p["node"] for n, p in pods.items() if n.endswith("-mpiexec")]
bad = []
if nodes != want or mpx != ["node1"]:
    bad.append("ranks on %s (expected all of %s), mpiexec on %s (expected node1)" % (sorted(nodes), sorted(want), mpx))
if job.get("spares") != spares:
    bad.append("the job's spares are %s, expected %s" % (job.get("spares"), spares))
if not job.get("policy"):
    bad.append("the job has no policy in cruz status --json")
for b in bad:
    print("    " + b, file=sys.stderr)
sys.exit(1 if bad else 0)
PY
POLICY=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["policy"])' "$WORK/start-status.json")
info "job $JOB_ID running after $(secs "$t_run" "$(now)") s, $(iters "$WORK/run.out") iterations out; policy: $POLICY; spare: $SPARE_NODE"
info "  $(where start)"

# events_read KIND [SHOW T0]: reads the job's event log (saved as
# events.json); writes "<events of KIND> <events in all>" to events.count and,
# with SHOW, the events from index SHOW on, timed from T0, to events.new.
events_read() {
	as_user "$CRUZ" events --json "$JOB_ID" >"$WORK/events.json" 2>"$WORK/events.err" ||
		die "cruz events --json $JOB_ID failed: $(cat "$WORK/events.err")"
	"$PYTHON" - "$WORK/events.json" "$@" >"$WORK/events.count" <<'PY' || die "cannot read the job's event log (see above)"
import json, sys
from datetime import datetime, timezone
evs = json.load(open(sys.argv[1]))["events"]
print(sum(e["kind"] == sys.argv[2] for e in evs), len(evs))
if len(sys.argv) > 4:
    def t(s):  # RFC 3339 with nanoseconds, in UTC
        base, _, frac = s.rstrip("Z").partition(".")
        return datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp() + float("0." + (frac or "0"))
    with open(sys.argv[1].replace("events.json", "events.new"), "w") as f:
        for e in evs[int(sys.argv[3]):]:
            m = e["message"]
            m = m if len(m) <= 100 else m[:58] + " ... " + m[-37:]
            f.write("demo:   %+7.2f s  %-17s %s\n" % (t(e["time"]) - float(sys.argv[4]), e["kind"], m))
PY
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
MIG_FROM=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]]["node"])' "$WORK/start-pods.json" "$JOB_ID-r$MIG_RANK")
MIG_TO=node3
[ "$MIG_FROM" != "$MIG_TO" ] || MIG_TO=node1
t0=$(now)
if ! as_user "$CRUZ" migrate --json --rank "$MIG_RANK" --to "$MIG_TO" demo >"$WORK/migrate.json" 2>"$WORK/migrate.err"; then
	indent <"$WORK/migrate.err" >&2
	die "cruz migrate --rank $MIG_RANK --to $MIG_TO demo failed (its error is above)"
fi
T_MIG=$(secs "$t0" "$(now)")
info "$("$PYTHON" -c 'import json, sys
m = json.load(open(sys.argv[1]))
print("%s moved from %s to %s: downtime %d ms (dump %d ms, restore %d ms, %.1f MiB)"
      % (m["pod"], m["from"], m["to"], m["downtime_ms"], m["dump_ms"], m["restore_ms"], m["bytes"] / 2**20))' "$WORK/migrate.json"); cruz migrate took $T_MIG s"
w=$(wait_iters "$WORK/run.out" $(($(iters "$WORK/run.out") + 2)) "after the migration")
info "  the job runs on: $(iters "$WORK/run.out") iterations out (the next came after $w s)"
look moved
"$PYTHON" - "$WORK/moved-pods.json" "$JOB_ID-r$MIG_RANK" "$MIG_TO" <<'PY' || die "rank $MIG_RANK is not where the migration should have put it (see above)"
import json, sys
pods, pod, to = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
if pods[pod]["node"] != to:
    sys.exit("    %s runs on %s, not on %s where it was migrated" % (pod, pods[pod]["node"], to))
PY
info "pods now: $(where moved)"

# The job is rolled back to its last checkpoint: let the policy take one
# with rank 3 where it now runs, and let the job print a few lines after it
# (the restored run prints them again; cruz must not show them twice).
say "the next periodic checkpoint, then a few more iterations"
events_read checkpoint
read -r n _ <"$WORK/events.count"
await_event checkpoint $((n + 1)) 30 "periodic checkpoint after the migration"
ck_snapshot cks2
info "$(grep -o 'periodic checkpoint ckpt-[0-9]*: [^;]*' "$WORK/events.json" | tail -n 1); $(iters "$WORK/run.out") iterations out"
wait_iters "$WORK/run.out" $(($(iters "$WORK/run.out") + 5)) "after the checkpoint" >/dev/null
n=$(iters "$WORK/run.out")
[ "$n" -le $((ITERS - 20)) ] ||
	die "the job is already at iteration $n of $ITERS, too close to its end to fail a node under it: use a larger CRUZ_DEMO_ITERS"

# ----------------------------------------------------------- the failure
FAILED_PODS=$("$PYTHON" -c 'import json, sys
print(" ".join(sorted(n for n, p in json.load(open(sys.argv[1])).items() if p["node"] == sys.argv[2])))' "$WORK/moved-pods.json" "$FAIL_NODE")
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
"$PYTHON" - "$WORK/cluster-failed.json" "$FAIL_NODE" <<'PY' || die "cruz cluster status does not show the failure as it should (see above)"
import json, sys
bad = []
for n in json.load(open(sys.argv[1]))["nodes"]:
    if (n["name"] == sys.argv[2]) != bool(n.get("failed")):
        bad.append("%s: failed is %s" % (n["name"], n.get("failed")))
    elif n["name"] != sys.argv[2] and not n.get("alive"):
        bad.append("%s is not alive" % n["name"])
for b in bad:
    print("    " + b, file=sys.stderr)
sys.exit(1 if bad else 0)
PY
info "cruz cluster status: $FAIL_NODE failed, the other nodes up; what the job's coordinator does (cruz events, times since the failure):"
events_read failure
read -r _ SHOWN <"$WORK/events.count"
await_event recovered 1 120 "recovery from the failure of $FAIL_NODE" "$T_FAIL0"
look recovered
wait_iters "$WORK/run.out" $((N_AT_FAIL + 1)) "after the recovery" >/dev/null
T_NEW=$(secs "$T_FAIL0" "$(now)")
info "the job is running again; its next new line came $T_NEW s after the failure (iteration $(iters "$WORK/run.out"))"
info "pods now: $(where recovered)"
"$PYTHON" - "$WORK/moved-pods.json" "$WORK/recovered-pods.json" "$WORK/recovered-status.json" "$FAIL_NODE" "$SPARE_NODE" <<'PY' || die "the pods are not where the recovery should have put them (see above)"
import json, sys
before, after, job = (json.load(open(f)) for f in sys.argv[1:4])
failed, spare = sys.argv[4], sys.argv[5]
bad = []
for n, p in sorted(before.items()):
    want = spare if p["node"] == failed else p["node"]
    if after[n]["node"] != want:
        bad.append("%s runs on %s, expected %s (it was on %s)" % (n, after[n]["node"], want, p["node"]))
if job.get("restarts") != 1:
    bad.append("cruz status says restarts %s, expected 1" % job.get("restarts"))
if job.get("spares"):
    bad.append("the job still holds spares %s after using %s" % (job["spares"], spare))
for b in bad:
    print("    " + b, file=sys.stderr)
sys.exit(1 if bad else 0)
PY

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
BANNERS=$("$PYTHON" - "$WORK/run.out" "$WORK/program.out" <<'PY'
import sys
out, banners = [], 0
for l in open(sys.argv[1]).read().splitlines():
    if l.startswith("cruz: "):
        continue
    if l == "" or l.startswith("="):
        banners += "BAD TERMINATION" in l
        continue
    if l.startswith("YOUR APPLICATION TERMINATED WITH THE EXIT STRING") or l in (
            "This typically refers to a problem with your application.",
            "Please see the FAQ page for debugging suggestions"):
        continue
    out.append(l)
open(sys.argv[2], "w").write("".join(l + "\n" for l in out))
print(banners)
PY
) || die "could not read the job's output"
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
"$PYTHON" - "$WORK" <<'PY' || die "a pod's IP address or MAC changed (see above)"
import json, os, sys
w = sys.argv[1]
stages = ("start", "moved", "recovered")
views = {}
for s in stages:
    views[s + " (cruz)"] = {p["name"]: p for p in json.load(open(os.path.join(w, s + "-status.json")))["pods"]}
    views[s + " (pod)"] = json.load(open(os.path.join(w, s + "-pods.json")))
first = views["start (cruz)"]
bad = []
for v, pods in views.items():
    if set(pods) != set(first):
        bad.append("%s: pods %s, at the start %s" % (v, sorted(pods), sorted(first)))
        continue
    for name, p in pods.items():
        for k in ("ip", "mac"):
            if p[k] != first[name][k]:
                bad.append("%s: %s %s is %s, at the start %s" % (v, name, k, p[k], first[name][k]))
for b in bad:
    print("    " + b, file=sys.stderr)
sys.exit(1 if bad else 0)
PY
info "every pod kept its IP address and MAC across the migration and the recovery (cruz's records and inside the pods)"
info "$FAIL_NODE's pods (${FAILED_PODS//$JOB_ID-/}) now run on $SPARE_NODE, the others where they were"
"$PYTHON" - "$WORK/events.json" "$FAIL_NODE" "$T_FAIL0" <<'PY' || die "the job's event log does not tell the story it should (see above; cruz events $JOB_ID)"
import json, sys
from datetime import datetime, timezone
def t(s):
    base, _, frac = s.rstrip("Z").partition(".")
    return datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp() + float("0." + (frac or "0"))
evs = json.load(open(sys.argv[1]))["events"]
kinds = [e["kind"] for e in evs]
bad = []
for k in ("failure", "restarting", "recovered", "output"):
    if kinds.count(k) != 1:
        bad.append("%d %s events, expected 1" % (kinds.count(k), k))
if not bad:
    f, r, rec, out = (kinds.index(k) for k in ("failure", "restarting", "recovered", "output"))
    if not f < r < rec or not r < out:
        bad.append("the events are not in the order failure, restarting, recovered (output after restarting): %s" % kinds)
    if evs[f].get("node") != sys.argv[2]:
        bad.append("the failure is blamed on %r, not %s" % (evs[f].get("node"), sys.argv[2]))
    if t(evs[f]["time"]) < float(sys.argv[3]):
        bad.append("the failure event came before %s failed" % sys.argv[2])
    cks = [e.get("checkpoint") for e in evs[:f] if e["kind"] == "checkpoint"]
    if not cks or evs[rec].get("checkpoint") != cks[-1]:
        bad.append("recovered from %s, not from the last checkpoint before the failure (%s)" % (evs[rec].get("checkpoint"), cks[-1:]))
if kinds[-1:] != ["exited"]:
    bad.append("the last event is %s, not exited" % kinds[-1:])
for b in bad:
    print("    " + b, file=sys.stderr)
sys.exit(1 if bad else 0)
PY
info "the job's events: failure -> restarting -> recovered, once each, from its last checkpoint before the failure, then exited"

# ------------------------------------------------------------- the summary
say "summary"
T_TOTAL=$(secs "$T_START" "$(now)")
RESULT=$GOT_RESULT NREF=$(wc -l <"$WORK/ref.out") ITERS=$ITERS T_UP=$T_UP T_REF=$T_REF T_RUN=$T_RUN \
	T_MIG=$T_MIG T_FAIL=$T_FAIL T_FAIL0=$T_FAIL0 T_NEW=$T_NEW T_TOTAL=$T_TOTAL N_AT_FAIL=$N_AT_FAIL \
	BANNERS=$BANNERS LAN=$LAN SUBNET=$SUBNET FAIL_NODE=$FAIL_NODE INTERVAL=$INTERVAL SPARES=$SPARES \
	"$PYTHON" - "$WORK" <<'PY'
import json, os, re, sys
from datetime import datetime, timezone

e = os.environ
w = sys.argv[1]
def load(name):
    with open(os.path.join(w, name)) as f:
        return json.load(f)
def mib(n):
    return "%.1f MiB" % (n / 2**20)
def t(s):  # an event's time (RFC 3339, UTC, nanoseconds) as seconds since the epoch
    base, _, frac = s.rstrip("Z").partition(".")
    return datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp() + float("0." + (frac or "0"))
def cut(s):  # a long message: its start and its end
    return s if len(s) <= 100 else s[:58] + " ... " + s[-37:]

cl = load("cluster.json")
job = load("start-status.json")
views = [load(s + "-pods.json") for s in ("start", "moved", "recovered")]
mig = load("migrate.json")
evs = load("events.json")["events"]
cks = {}
for s in ("cks1", "cks2", "cks3"):
    for c in load(s + ".json")["checkpoints"]:
        cks[c["id"]] = c
short = lambda name: name.split("-", 1)[1]
t0 = float(e["T_FAIL0"])  # the failure: t
at = lambda x: "t%+.1f s" % (t(x["time"]) - t0)
kinds = [x["kind"] for x in evs]
fail, restarting, rec = kinds.index("failure"), kinds.index("restarting"), kinds.index("recovered")
back = evs[rec].get("checkpoint")

nodes = cl["nodes"]
print("cluster      %d nodes (%s), each a cruzd in its own network namespace; LAN %s, %s; up in %s s"
      % (len(nodes), ", ".join(n["name"] for n in nodes), e["LAN"], e["SUBNET"], e["T_UP"]))
pods = job["pods"]
print("job          %s (id %s) of %s: %d ranks, %d pods (1 mpiexec + %d ranks), %s"
      % (job["name"], job["id"], job["user"], job["np"], len(pods), len(pods) - 1, " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(job["argv"]))))
print("policy       %s; spare %s (cruz run --interval %s --spares %s)" % (job["policy"], ", ".join(job["spares"]), e["INTERVAL"], e["SPARES"]))
print("pods         IP and MAC the same throughout; node at the start -> after the migration -> after the recovery")
for p in pods:
    n = p["name"]
    print("  %-9s  %-12s %s   %s -> %s -> %s" % (short(n), p["ip"], p["mac"], views[0][n]["node"], views[1][n]["node"], views[2][n]["node"]))
taken = [x for x in evs if x["kind"] == "checkpoint"]
print("checkpoints  %d periodic, the next %s after one ends; the job's traffic held while all pods are dumped at once; t: when %s failed"
      % (len(taken), e["INTERVAL"], e["FAIL_NODE"]))
for x in taken:
    c = cks.get(x["checkpoint"])
    mark = "  <- rolled back to" if x["checkpoint"] == back else ""
    if c is None:  # pruned before the demo listed it: what the event says
        m = re.search(r": (.*?); next", x["message"])
        print("  %-10s %-9s %s%s" % (x["checkpoint"], at(x), m.group(1) if m else x["message"], mark))
        continue
    ph, per = c["phases_ms"], c["pods"]
    ranks = [p for p in per if not p["name"].endswith("-mpiexec")]
    lo, hi = mib(min(p["bytes"] for p in ranks)), mib(max(p["bytes"] for p in ranks))
    print("  %-10s %-9s %s (mpiexec %s, ranks %s); held %4d ms (block %d + dump %d + commit %d)%s"
          % (c["id"], at(x), mib(c["bytes"]), mib(sum(p["bytes"] for p in per if p["name"].endswith("-mpiexec"))),
             lo + " each" if lo == hi else lo + " to " + hi, ph["total"], ph["block"], ph["dump"], ph["commit"], mark))
for x in evs:
    if x["kind"] in ("checkpoint_failed", "checkpoint_skipped", "pruned"):
        print("  %-10s %-9s %s" % (x["kind"].replace("checkpoint_", ""), at(x), cut(x["message"])))
print("migration    %s %s -> %s, live: downtime %d ms (dump %d ms, restore %d ms, %s); cruz migrate %s s"
      % (short(mig["pod"]), mig["from"], mig["to"], mig["downtime_ms"], mig["dump_ms"], mig["restore_ms"], mib(mig["bytes"]), e["T_MIG"]))
print("failure      t         cruz cluster fail %s (link cut, agent and pods killed), %s s; then the job's coordinator (its events):"
      % (e["FAIL_NODE"], e["T_FAIL"]))
for x in evs[fail:rec + 1]:
    if x["kind"] in ("failure", "restarting", "recovered"):
        print("  %-10s %-9s %s" % (x["kind"], at(x), cut(x["message"])))
print("  %-10s t%+.1f s  the job's next new line of output" % ("new line", float(e["T_NEW"])))
print("recovery     the job ran again %.1f s after %s failed: %.1f s to detect and declare the failure, %.1f s to roll the job back"
      % (t(evs[rec]["time"]) - t0, e["FAIL_NODE"], t(evs[fail]["time"]) - t0, t(evs[rec]["time"]) - t(evs[fail]["time"])))
out = [x for x in evs if x["kind"] == "output"]
rep = int(re.search(r"repeated (\d+) lines", out[0]["message"]).group(1)) if out else 0
print("rollback     the failed run had printed %s iterations; restored from %s, the job printed %d of those lines again: not shown twice (output event)"
      % (e["N_AT_FAIL"], back, rep))
ref = "an uninterrupted run's" if e["T_REF"] else "the program's formula's"
print("output       = %s, %s lines, none lost or doubled; MPICH abort banners left out: %s" % (ref, e["NREF"], e["BANNERS"]))
print("result       %s (the same)" % e["RESULT"])
print("timings      cluster up %s s;%s the run that lost %s %s s; demo so far %s s"
      % (e["T_UP"], " reference run %s s;" % e["T_REF"] if e["T_REF"] else "", e["FAIL_NODE"], e["T_RUN"], e["T_TOTAL"]))
PY

# ------------------------------------------------------------- under Slurm
if [ "$SLURM" = 1 ]; then
	S_NP=4
	S_ITERS=80
	S_NODES=node3,node4 # node2 is dead; node1 ran the job above
	SCONF=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["slurm"]["conf"])' "$WORK/cluster.json") ||
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
	N_CK=$("$PYTHON" -c 'import json, sys; print(len(json.load(open(sys.argv[1]))["checkpoints"]))' "$WORK/slurm-cks.json")
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
	"$PYTHON" - "$WORK/slurm-events.json" <<'PY' || die "the Slurm step's events do not tell a resume (see above)"
import json, sys
evs = json.load(open(sys.argv[1]))["events"]
kinds = [e["kind"] for e in evs]
bad = []
for k, n in (("started", 1), ("cancelled", 1), ("restarted", 1), ("exited", 1)):
    if kinds.count(k) != n:
        bad.append("%d %s events, expected %d: %s" % (kinds.count(k), k, n, kinds))
if bad:
    print("\n".join("    " + b for b in bad), file=sys.stderr)
    sys.exit(1)
r = evs[kinds.index("restarted")]
print("demo: Slurm started the job again; its step resumed from %s (%s), not from the start" % (r["checkpoint"], r["message"]))
PY
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
for pid in $("$PYTHON" -c 'import json, sys
for n in json.load(open(sys.argv[1]))["nodes"]:
    print(n["pid"], n.get("holder_pid", ""))' "$WORK/cluster.json"); do
	for _ in $(seq 50); do running "$pid" || break; sleep 0.1; done
	! running "$pid" || left="$left process $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null))"
done
for ps in $("$PYTHON" -c 'import json, sys
seen = set()
for f in sys.argv[1:]:
    for n, p in json.load(open(f)).items():
        seen.add("%d:%d:%s" % (p["pid"], p["start"], n))
print("\n".join(sorted(seen)))' "$WORK/start-pods.json" "$WORK/moved-pods.json" "$WORK/recovered-pods.json"); do
	pid=${ps%%:*} rest=${ps#*:}
	for _ in $(seq 20); do running "$pid" || break; sleep 0.1; done
	if running "$pid" && [ "$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f20)" = "${rest%%:*}" ]; then
		left="$left pod ${rest#*:} (process $pid)"
	fi
done
[ -z "$left" ] || die "cruz cluster down left behind:$left"
info "jobs removed, cluster down in $(secs "$t0" "$(now)") s: nothing left in $CDIR, $STORE, on $LAN, nor of the nodes or pods"
OK=1
rm -rf "$WORK"
say "demo: OK ($(secs "$T_START" "$(now)") s)"
