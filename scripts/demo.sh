#!/usr/bin/env bash
# The Cruz demo: a multi-node MPI job on a virtual cluster of 4 nodes on this
# one machine (run as root; `make demo` runs it after `make deps build`):
#
#   1. bring up a private virtual cluster (`cruz cluster up`): 4 nodes, each a
#      cruzd in its own network and UTS namespaces, their pods bridged onto
#      one LAN;
#   2. run an 8-rank MPI job (mpi_allreduce, 2 ranks per node, mpiexec's pod
#      on node1) to the end as an unprivileged user: the reference output;
#   3. run the same job again and, while it runs: take two checkpoints,
#      migrate rank 3 live to another node, drain node2 (move every pod off
#      it), then stop the job with a third checkpoint (`checkpoint --stop`) and
#      restart it on node3 and node4 only;
#   4. check that the restarted job exits 0, that the output before the stop
#      plus the output after the restart is the reference output, line for
#      line, with the same result, and that every pod kept its IP address and
#      MAC throughout: in cruz's records and as the kernel sees them inside the
#      pods (which also shows on which node each pod really runs);
#   5. print a summary (nodes, ranks, pods, checkpoints with sizes and phase
#      times, the migration's downtime, the drain, the restart's time to first
#      output, the result), then remove the jobs and take the cluster down.
#
# Environment:
#   CRUZ_BIN         where `make build` put cruz, cruzd and apps/ (/opt/cruz/bin)
#   CRUZ_DEMO_USER   user to run the jobs as (default: cruzt1 if it exists,
#                    else cruzdemo, created if missing)
#   CRUZ_DEMO_ITERS  iterations of the MPI job, 100 ms each (default 80,
#                    at least 50: the job reaches iteration 25-40 by the time
#                    it is stopped, more on a busy machine)
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
# the outputs and the nodes' logs, and prints its path.
set -euo pipefail

BIN=${CRUZ_BIN:-/opt/cruz/bin}
CRUZ=$BIN/cruz
CRUZD=$BIN/cruzd
APP=$BIN/apps/mpi_allreduce
ITERS=${CRUZ_DEMO_ITERS:-80}
KEEP=${CRUZ_DEMO_KEEP:-0}
SLEEP_MS=100
NODES=4
NP=8
CDIR=/run/cruz-demo # the virtual cluster's directory (unix socket paths must stay short)
LAN=czdemo0
SUBNET=10.212.0.0/16
STORE=/var/tmp/cruz-demo-store
MIG_RANK=3
DRAIN_NODE=node2
RESTART_NODES=node3,node4

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
[ "$ITERS" -ge 50 ] || die "CRUZ_DEMO_ITERS=$ITERS is too short to checkpoint, migrate and drain in the middle: use 50 or more"
case $KEEP in 0 | 1) ;; *) die "CRUZ_DEMO_KEEP=$KEEP: use 0 or 1" ;; esac

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
	"$CRUZ" cluster down --dir "$CDIR" --lan "$LAN" --purge 9<&-
}

cleanup() {
	local rc=$?
	set +e
	if [ -n "$BG_PID" ] && kill -0 "$BG_PID" 2>/dev/null; then
		kill "$BG_PID" 2>/dev/null
		wait "$BG_PID" 2>/dev/null
	fi
	[ "$OK" = 1 ] && exit "$rc"
	if [ "$CLUSTER" = 1 ] && [ -n "$SOCK" ] && [ -n "$WORK" ]; then
		# What the agent saw happen to the jobs (if this cruz has `events`).
		for j in ref demo; do
			as_user "$CRUZ" events "$j" >"$WORK/events-$j.txt" 2>&1 </dev/null || true
		done
	fi
	if [ "$CLUSTER" = 1 ] && [ "$KEEP" = 1 ]; then
		echo "demo: CRUZ_DEMO_KEEP=1: the virtual cluster is still up for inspection:" \
			"CRUZ_CLUSTER_DIR=$CDIR cruz cluster status; its nodes' logs are $CDIR/nodeK/cruzd.log," \
			"CRIU's logs $CDIR/nodeK/jobs/JOB/criu/; the jobs are ref and demo of user $DEMO_USER" \
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
trap cleanup EXIT
trap 'echo "demo: interrupted (SIGINT)" >&2; exit 130' INT
trap 'echo "demo: terminated (SIGTERM)" >&2; exit 143' TERM

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
t0=$(now)
if ! "$CRUZ" cluster up --nodes "$NODES" --dir "$CDIR" --lan "$LAN" --subnet "$SUBNET" --store "$STORE" \
	>"$WORK/cluster-up.out" 2>&1 9<&-; then
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
# {node, ip, mac, pid}}: for every process of the demo user that is the first
# of its pod (pid 1 in its own pid namespace) and a child of one of the
# cluster's agents (which tells the node), the hostname (the pod's name) and
# eth0's IPv4 address and MAC, read inside its UTS and network namespaces.
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
    pods[lines[0]] = {"node": agents[ppid], "ip": lines[1].split()[2].split("/")[0],
                      "mac": lines[2].split()[2], "pid": int(pid)}
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

# ------------------------------------------------------ the reference run
say "reference run: cruz run --name ref --np $NP -- ${JOB[*]}"
t0=$(now)
rc=0
as_user "$CRUZ" run --name ref --np "$NP" -- "${JOB[@]}" >"$WORK/ref.out" 2>"$WORK/ref.err" || rc=$?
T_REF=$(secs "$t0" "$(now)")
if [ "$rc" != 0 ]; then
	indent <"$WORK/ref.err" >&2
	die "the reference run exited with status $rc (its stderr is above)"
fi
info "done in ${T_REF} s, $(wc -l <"$WORK/ref.out") lines; last: $(tail -n 1 "$WORK/ref.out")"

# ---------------------------------------------- the run that gets moved about
say "the same job again, in the background: cruz run --name demo --np $NP -- ${JOB[*]}"
t_run=$(now)
as_user "$CRUZ" run --name demo --np "$NP" -- "${JOB[@]}" >"$WORK/run.out" 2>"$WORK/run.err" &
BG_PID=$!
wait_iters "$WORK/run.out" 3 "(its start)" >/dev/null
JOB_ID=$(as_user "$CRUZ" status --json demo | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["id"])') ||
	die "cruz status --json demo failed"
look start
"$PYTHON" - "$WORK/start-pods.json" "$NODES" <<'PY' || die "the job is not spread over the cluster as it should be (see above)"
import json, sys
pods = json.load(open(sys.argv[1]))
nodes = {p["node"] for n, p in pods.items() if not n.endswith("-mpiexec")}
mpx = [p["node"] for n, p in pods.items() if n.endswith("-mpiexec")]
want = {"node%d" % i for i in range(1, int(sys.argv[2]) + 1)}
if nodes != want or mpx != ["node1"]:
    sys.exit("    ranks on %s (expected all of %s), mpiexec on %s (expected node1)" % (sorted(nodes), sorted(want), mpx))
PY
info "job $JOB_ID running after $(secs "$t_run" "$(now)") s, $(iters "$WORK/run.out") iterations out; its pods:"
info "  $(where start)"

checkpoint() { # checkpoint N [--stop]: cruz checkpoint --json, saved as ckN.json; sets T_CKN
	local n=$1 t0
	shift
	t0=$(now)
	if ! as_user "$CRUZ" checkpoint "$@" --json demo >"$WORK/ck$n.json" 2>"$WORK/ck$n.err"; then
		indent <"$WORK/ck$n.err" >&2
		die "cruz checkpoint $* demo failed (its error is above)"
	fi
	printf -v "T_CK$n" '%s' "$(secs "$t0" "$(now)")"
}
ck_line() { # ck_line N: one line about checkpoint N
	"$PYTHON" -c 'import json, sys
c = json.load(open(sys.argv[1])); ph = c["phases_ms"]
print("%s%s: %.1f MiB, traffic held %d ms (block %d + dump %d + commit %d), resume %d ms"
      % (c["id"], " (stop)" if c["stopped"] else "", c["bytes"] / 2**20, ph["total"], ph["block"], ph["dump"], ph["commit"], ph["resume"]))' "$WORK/ck$1.json"
}

say "cruz checkpoint demo (twice, while it runs)"
for n in 1 2; do
	checkpoint "$n"
	t=T_CK$n
	info "$(ck_line "$n"); cruz checkpoint took ${!t} s"
	w=$(wait_iters "$WORK/run.out" $(($(iters "$WORK/run.out") + 2)) "after checkpoint $n")
	info "  the job runs on: $(iters "$WORK/run.out") iterations out (the next came after $w s)"
done

say "cruz migrate --rank $MIG_RANK --to NODE demo (live)"
MIG_FROM=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]]["node"])' "$WORK/start-pods.json" "$JOB_ID-r$MIG_RANK")
MIG_TO=node4
[ "$MIG_FROM" != "$MIG_TO" ] || MIG_TO=node3
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

say "cruz drain $DRAIN_NODE (as root)"
t0=$(now)
if ! "$CRUZ" --socket "$SOCK" drain --json "$DRAIN_NODE" >"$WORK/drain.json" 2>"$WORK/drain.err"; then
	indent <"$WORK/drain.err" >&2
	die "cruz drain $DRAIN_NODE failed (its error is above)"
fi
T_DRAIN=$(secs "$t0" "$(now)")
"$PYTHON" -c 'import json, sys
d = json.load(open(sys.argv[1]))
for m in d["migrations"]:
    print("demo:   %s moved from %s to %s: downtime %d ms (dump %d ms, restore %d ms)"
          % (m["pod"], m["from"], m["to"], m["downtime_ms"], m["dump_ms"], m["restore_ms"]))' "$WORK/drain.json"
info "cruz drain took $T_DRAIN s"
w=$(wait_iters "$WORK/run.out" $(($(iters "$WORK/run.out") + 2)) "after the drain")
info "  the job runs on: $(iters "$WORK/run.out") iterations out (the next came after $w s)"
look moved
"$PYTHON" - "$WORK/moved-pods.json" "$JOB_ID-r$MIG_RANK" "$MIG_TO" "$DRAIN_NODE" <<'PY' || die "the pods are not where the migration and the drain should have put them (see above)"
import json, sys
pods, pod, to, drained = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3], sys.argv[4]
bad = []
if pods[pod]["node"] != to:
    bad.append("%s runs on %s, not on %s where it was migrated" % (pod, pods[pod]["node"], to))
bad += ["%s still runs on %s after the drain" % (n, drained) for n, p in sorted(pods.items()) if p["node"] == drained]
for b in bad:
    print("    " + b)
sys.exit(1 if bad else 0)
PY
info "pods now: $(where moved)"

say "cruz checkpoint --stop demo"
# The restarted job must run long enough for a look into its pods.
n=$(iters "$WORK/run.out")
[ "$n" -le $((ITERS - 15)) ] ||
	die "the job is already at iteration $n of $ITERS, too close to its end to stop and restart it: use a larger CRUZ_DEMO_ITERS"
checkpoint 3 --stop
info "$(ck_line 3); cruz checkpoint took $T_CK3 s"
rc=0
wait "$BG_PID" || rc=$?
BG_PID=""
T_RUN=$(secs "$t_run" "$(now)")
CK3=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["id"])' "$WORK/ck3.json")
info "the first cruz run exited with status $rc; it said: $(grep '^cruz: ' "$WORK/run.err" | tail -n 1)"
[ "$rc" = 75 ] || {
	indent <"$WORK/run.err" >&2
	die "cruz run exited $rc after the stop-checkpoint, expected 75 (stopped at a checkpoint)"
}
grep -q "stopped at checkpoint $CK3" "$WORK/run.err" ||
	die "cruz run did not say that checkpoint $CK3 holds the job (its stderr: $(tr '\n' ' ' <"$WORK/run.err"))"
N_BEFORE=$(iters "$WORK/run.out")

# ------------------------------------------------------------- the restart
say "cruz restart --nodes $RESTART_NODES demo"
t0=$(now)
as_user "$CRUZ" restart --nodes "$RESTART_NODES" demo >"$WORK/restart.out" 2>"$WORK/restart.err" &
BG_PID=$!
T_FIRST=""
while kill -0 "$BG_PID" 2>/dev/null; do
	if [ -s "$WORK/restart.out" ]; then
		T_FIRST=$(secs "$t0" "$(now)")
		break
	fi
	sleep 0.05
done
if [ -z "$T_FIRST" ]; then
	rc=0
	wait "$BG_PID" || rc=$?
	BG_PID=""
	indent <"$WORK/restart.err" >&2
	die "cruz restart exited with status $rc before the job printed anything (its stderr is above)"
fi
info "first line of output ${T_FIRST} s after cruz restart began"
look restarted
"$PYTHON" - "$WORK/restarted-pods.json" "$RESTART_NODES" <<'PY' || die "the restarted pods are not on $RESTART_NODES as asked (see above)"
import json, sys
pods, nodes = json.load(open(sys.argv[1])), sys.argv[2].split(",")
bad = ["%s runs on %s" % (n, p["node"]) for n, p in sorted(pods.items()) if p["node"] not in nodes]
mpx = [p["node"] for n, p in pods.items() if n.endswith("-mpiexec")]
if mpx != nodes[:1]:
    bad.append("mpiexec's pod runs on %s, expected %s" % (mpx, nodes[0]))
for b in bad:
    print("    " + b)
sys.exit(1 if bad else 0)
PY
info "pods now: $(where restarted)"
rc=0
wait "$BG_PID" || rc=$?
BG_PID=""
T_RESTART=$(secs "$t0" "$(now)")
if [ "$rc" != 0 ]; then
	indent <"$WORK/restart.err" >&2
	die "cruz restart exited with status $rc, expected the job's own 0 (its stderr is above)"
fi
info "the restarted job finished with status 0 in ${T_RESTART} s, printing $(wc -l <"$WORK/restart.out") more lines"

# -------------------------------------------------------------- the checks
say "checks"
# cruz writes its own messages ("cruz: ...") to stderr; drop any that reached
# stdout, so that only the job's output is compared.
grep -v '^cruz: ' "$WORK/run.out" >"$WORK/combined.out" || true
grep -v '^cruz: ' "$WORK/restart.out" >>"$WORK/combined.out" || true
if ! diff -u "$WORK/ref.out" "$WORK/combined.out" >"$WORK/diff.txt"; then
	head -n 40 "$WORK/diff.txt" | indent >&2
	die "the output before the stop plus the output after the restart differs from the reference run (diff above: - reference, + moved, stopped and restarted)"
fi
info "stopped run ($N_BEFORE iterations) + restart = reference: $(wc -l <"$WORK/ref.out") lines, none lost or doubled"
REF_RESULT=$(grep '^result ' "$WORK/ref.out" || true)
GOT_RESULT=$(grep '^result ' "$WORK/combined.out" || true)
[ -n "$REF_RESULT" ] || die "the reference run printed no result line"
[ "$REF_RESULT" = "$GOT_RESULT" ] || die "result differs: reference '$REF_RESULT', restarted '$GOT_RESULT'"
info "result lines are equal: $GOT_RESULT"
grep -q "^iter $ITERS " "$WORK/combined.out" || die "the job did not reach iteration $ITERS"
"$PYTHON" - "$WORK" <<'PY' || die "a pod's IP address or MAC changed (see above)"
import json, os, sys
w = sys.argv[1]
stages = ("start", "moved", "restarted")
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
    print("    " + b)
sys.exit(1 if bad else 0)
PY
info "every pod kept its IP address and MAC across the migration, the drain and the restart (cruz's records and inside the pods)"

# ------------------------------------------------------------- the summary
say "summary"
T_TOTAL=$(secs "$T_START" "$(now)")
RESULT=$GOT_RESULT NREF=$(wc -l <"$WORK/ref.out") N_BEFORE=$N_BEFORE ITERS=$ITERS T_UP=$T_UP T_REF=$T_REF T_RUN=$T_RUN \
	T_CK="$T_CK1 $T_CK2 $T_CK3" T_MIG=$T_MIG T_DRAIN=$T_DRAIN T_FIRST=$T_FIRST T_RESTART=$T_RESTART T_TOTAL=$T_TOTAL \
	LAN=$LAN SUBNET=$SUBNET RESTART_NODES=$RESTART_NODES "$PYTHON" - "$WORK" <<'PY'
import json, os, sys

e = os.environ
w = sys.argv[1]
def load(name):
    with open(os.path.join(w, name)) as f:
        return json.load(f)

def mib(n):
    return "%.1f MiB" % (n / 2**20)

cl = load("cluster.json")
job = load("start-status.json")
views = [load(s + "-pods.json") for s in ("start", "moved", "restarted")]
cks = [load("ck%d.json" % i) for i in (1, 2, 3)]
mig = load("migrate.json")
drain = load("drain.json")
short = lambda name: name.split("-", 1)[1]

nodes = cl["nodes"]
print("cluster      %d nodes (%s), each a cruzd in its own network namespace; LAN %s, %s; up in %s s"
      % (len(nodes), ", ".join(n["name"] for n in nodes), e["LAN"], e["SUBNET"], e["T_UP"]))
pods = job["pods"]
print("job          %s (id %s) of %s: %d ranks, %d pods (1 mpiexec + %d ranks), %s"
      % (job["name"], job["id"], job["user"], job["np"], len(pods), len(pods) - 1, " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(job["argv"]))))
print("pods         IP and MAC the same throughout; node at the start -> after migrate+drain -> after the restart")
for p in pods:
    n = p["name"]
    print("  %-9s  %-12s %s   %s -> %s -> %s" % (short(n), p["ip"], p["mac"], views[0][n]["node"], views[1][n]["node"], views[2][n]["node"]))
print("checkpoints  (traffic held = block + dump + commit; all pods dumped in parallel)")
tck = e["T_CK"].split()
for c, t in zip(cks, tck):
    ph = c["phases_ms"]
    per = c["pods"]
    ranks = [p for p in per if not p["name"].endswith("-mpiexec")]
    mpx = [p for p in per if p["name"].endswith("-mpiexec")]
    print("  %-16s %s  held %4d ms (block %d + dump %d + commit %d), resume %d ms; cruz checkpoint %s s"
          % (c["id"] + (" (stop)" if c["stopped"] else ""), mib(c["bytes"]), ph["total"], ph["block"], ph["dump"], ph["commit"], ph.get("resume", 0), t))
    lo, hi = mib(min(p["bytes"] for p in ranks)), mib(max(p["bytes"] for p in ranks))
    print("  %-16s per pod: mpiexec %s, ranks %s; dumps %d-%d ms"
          % ("", mib(sum(p["bytes"] for p in mpx)), lo + " each" if lo == hi else lo + " to " + hi,
             min(p["dump_ms"] for p in per), max(p["dump_ms"] for p in per)))
print("migration    %s %s -> %s, live: downtime %d ms (dump %d ms, restore %d ms, %s); cruz migrate %s s"
      % (short(mig["pod"]), mig["from"], mig["to"], mig["downtime_ms"], mig["dump_ms"], mig["restore_ms"], mib(mig["bytes"]), e["T_MIG"]))
ms = drain["migrations"]
print("drain        %s: %d pod%s moved (%s); cruz drain %s s"
      % (drain["node"], len(ms), "" if len(ms) == 1 else "s",
         ", ".join("%s -> %s, downtime %d ms" % (short(m["pod"]), m["to"], m["downtime_ms"]) for m in ms) or "none", e["T_DRAIN"]))
print("stop         at %s after %s of %s iterations; cruz run exited 75"
      % (cks[2]["id"], e["N_BEFORE"], e["ITERS"]))
print("restart      on %s: first output %s s after cruz restart began, job done (exit 0) after %s s"
      % (e["RESTART_NODES"], e["T_FIRST"], e["T_RESTART"]))
print("output       before the stop + after the restart = the reference run, %s lines, none lost or doubled" % e["NREF"])
print("result       %s (the same as the reference run's)" % e["RESULT"])
print("timings      cluster up %s s; reference run %s s; the moved and stopped run %s s; demo so far %s s"
      % (e["T_UP"], e["T_REF"], e["T_RUN"], e["T_TOTAL"]))
PY

# ------------------------------------------------------------- clean up
say "clean up"
for j in ref demo; do as_user "$CRUZ" rm --checkpoints "$j" || die "cruz rm --checkpoints $j failed"; done
t0=$(now)
cluster_down || die "cruz cluster down --dir $CDIR --lan $LAN --purge failed"
left=""
[ ! -e "$CDIR" ] || left="$left $CDIR"
[ ! -e "$STORE" ] || left="$left $STORE"
! ip link show "$LAN" >/dev/null 2>&1 || left="$left the bridge $LAN"
# The nodes' agents and namespace holders must be gone (or dead, waiting for
# init to reap them).
for pid in $("$PYTHON" -c 'import json, sys
for n in json.load(open(sys.argv[1]))["nodes"]:
    print(n["pid"], n.get("holder_pid", ""))' "$WORK/cluster.json"); do
	for _ in $(seq 50); do running "$pid" || break; sleep 0.1; done
	! running "$pid" || left="$left process $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null))"
done
[ -z "$left" ] || die "cruz cluster down left behind:$left"
info "jobs removed, cluster down in $(secs "$t0" "$(now)") s: nothing left in $CDIR, $STORE or on $LAN"
OK=1
rm -rf "$WORK"
say "demo: OK ($(secs "$T_START" "$(now)") s)"
