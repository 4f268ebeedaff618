#!/usr/bin/env bash
# The Cruz demo, on this one machine (run as root; `make demo` runs it after
# `make deps build`):
#
#   1. make sure a cruz agent (cruzd) answers on its default socket, starting
#      one with the built-in defaults if none does (and stopping it at the end);
#   2. run a 4-rank MPI job (mpi_allreduce) to the end as an unprivileged user:
#      the reference output;
#   3. run the same job again, take two checkpoints while it runs, then stop it
#      with a third (`cruz checkpoint --stop`), and restart it from there;
#   4. check that the restarted job exits 0 and that the output before the stop
#      plus the output after the restart is the reference output, line for
#      line, with the same result;
#   5. print a summary (ranks, pods, checkpoints with sizes and dump times,
#      the result) and remove the jobs, their checkpoints and the temp dir.
#
# Environment:
#   CRUZ_BIN         where `make build` put cruz, cruzd and apps/ (/opt/cruz/bin)
#   CRUZ_DEMO_USER   user to run the jobs as (default: cruzt1 if it exists,
#                    else cruzdemo, created if missing)
#   CRUZ_DEMO_ITERS  iterations of the MPI job, 100 ms each (default 60)
#   CRUZ_DEMO_LOG    log of the agent if the demo starts one
#                    (default /var/log/cruz-demo-agent.log)
#
# On failure the jobs and the working directory are kept for inspection (the
# paths are printed); the next run of the demo removes them.
set -euo pipefail

BIN=${CRUZ_BIN:-/opt/cruz/bin}
CRUZ=$BIN/cruz
CRUZD=$BIN/cruzd
APP=$BIN/apps/mpi_allreduce
SOCK=/run/cruz/cruzd.sock # cruzd's built-in default
ITERS=${CRUZ_DEMO_ITERS:-60}
SLEEP_MS=100
NP=4
AGENT_LOG=${CRUZ_DEMO_LOG:-/var/log/cruz-demo-agent.log}

say() { printf '\n== %s\n' "$*"; }
info() { printf 'demo: %s\n' "$*"; }
die() {
	printf 'demo: FAILED: %s\n' "$*" >&2
	exit 1
}
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

[ "$(id -u)" = 0 ] || die "run me as root (I start cruzd and create a user): sudo $0"
for f in "$CRUZ" "$CRUZD" "$APP"; do
	[ -x "$f" ] || die "$f is missing: run \`make build\` (or set CRUZ_BIN)"
done
if ! command -v python3 >/dev/null 2>&1; then # reads cruz's JSON below
	info "installing python3 (apt-get install python3-minimal)"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-minimal >/dev/null ||
		die "python3 is missing and could not be installed: apt-get install python3-minimal"
fi
case $ITERS in '' | *[!0-9]*) die "CRUZ_DEMO_ITERS=$ITERS is not a number" ;; esac
[ "$ITERS" -ge 40 ] || die "CRUZ_DEMO_ITERS=$ITERS is too short to checkpoint in the middle: use 40 or more"

T_START=$(now)
AGENT_PID=""
BRIDGE_WAS_THERE=1
WORK=""
BG_PID=""
OK=0

cleanup() {
	local rc=$?
	set +e
	if [ -n "$BG_PID" ] && kill -0 "$BG_PID" 2>/dev/null; then
		kill "$BG_PID" 2>/dev/null
		wait "$BG_PID" 2>/dev/null
	fi
	if [ "$OK" = 1 ]; then
		for j in ref demo; do as_user "$CRUZ" rm --checkpoints "$j" >/dev/null 2>&1; done
		[ -n "$WORK" ] && rm -rf "$WORK"
	elif [ -n "$WORK" ]; then
		echo "demo: kept for inspection: $WORK (outputs); the jobs ref and demo of user $DEMO_USER" \
			"(cruz status, cruz checkpoints; CRIU logs under /run/cruz/jobs/JOB/criu/); the next demo removes the jobs, rm -rf the directory yourself" >&2
	fi
	if [ -n "$AGENT_PID" ]; then
		info "stopping the agent this demo started (pid $AGENT_PID)"
		kill -TERM "$AGENT_PID" 2>/dev/null
		for _ in $(seq 100); do kill -0 "$AGENT_PID" 2>/dev/null || break; sleep 0.1; done
		if kill -0 "$AGENT_PID" 2>/dev/null; then
			echo "demo: the agent did not stop within 10 s; killing it" >&2
			kill -KILL "$AGENT_PID" 2>/dev/null
		fi
		wait "$AGENT_PID" 2>/dev/null
		# The pod bridge is the node's, kept by cruzd across restarts; a
		# demo that brought the agent up leaves the machine as it found it.
		if [ "$BRIDGE_WAS_THERE" = 0 ]; then ip link del cruz0 2>/dev/null; fi
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- the agent
say "the cruz agent"
if "$CRUZ" --socket "$SOCK" version >/dev/null 2>&1; then
	info "an agent already answers on $SOCK: $("$CRUZ" --socket "$SOCK" version)"
elif ss -xlnH 2>/dev/null | awk '{ print $5 }' | grep -qxF "$SOCK"; then
	# Something listens there but does not answer: never start a second
	# cruzd with the same run directory, its start-up clean-up would end the
	# first one's jobs.
	die "something listens on $SOCK but \`cruz version\` gets no answer: $("$CRUZ" --socket "$SOCK" version 2>&1 || true)"
else
	info "no agent on $SOCK: starting $CRUZD with its built-in defaults (log: $AGENT_LOG)"
	if ip link show cruz0 >/dev/null 2>&1; then BRIDGE_WAS_THERE=1; else BRIDGE_WAS_THERE=0; fi
	mkdir -p "$(dirname "$AGENT_LOG")"
	echo "--- cruz demo: starting cruzd at $(date -Is)" >>"$AGENT_LOG"
	"$CRUZD" </dev/null >>"$AGENT_LOG" 2>&1 &
	AGENT_PID=$!
	ready=0
	for _ in $(seq 600); do # up to 60 s: cruzd runs `criu check` first
		if "$CRUZ" --socket "$SOCK" version >/dev/null 2>&1; then
			ready=1
			break
		fi
		if ! kill -0 "$AGENT_PID" 2>/dev/null; then
			rc=0
			wait "$AGENT_PID" || rc=$?
			AGENT_PID=""
			echo "demo: cruzd exited with status $rc; the end of its log ($AGENT_LOG):" >&2
			tail -n 20 "$AGENT_LOG" | sed 's/^/    /' >&2
			die "the agent did not start"
		fi
		sleep 0.1
	done
	[ "$ready" = 1 ] || die "cruzd (pid $AGENT_PID) did not answer on $SOCK within 60 s; see $AGENT_LOG"
	info "agent ready: $("$CRUZ" --socket "$SOCK" version)"
fi

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
[ "$(id -u "$DEMO_USER")" != 0 ] || die "the demo user must not be root"
DEMO_GID=$(id -g "$DEMO_USER")
DEMO_HOME=$(getent passwd "$DEMO_USER" | cut -d: -f6)

# as_user CMD ARGS: run CMD as the demo user in the working directory, with a
# clean environment (cruz run hands its environment to the job).
as_user() {
	(cd "${WORK:-/}" && exec setpriv --reuid="$DEMO_USER" --regid="$DEMO_GID" --init-groups \
		env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$DEMO_HOME" USER="$DEMO_USER" LOGNAME="$DEMO_USER" \
		LANG=C.UTF-8 CRUZ_SOCKET="$SOCK" "$@")
}

# Jobs named ref or demo left by an earlier, failed demo would make the names
# ambiguous: remove them (by id) first.
leftovers=$(as_user "$CRUZ" status --json | python3 -c '
import json, sys
for j in json.load(sys.stdin)["jobs"]:
    if j["name"] in ("ref", "demo"):
        print(j["id"])
')
for id in $leftovers; do
	info "removing job $id left by an earlier demo"
	as_user "$CRUZ" rm --checkpoints "$id"
done

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
info "jobs run as $DEMO_USER ($(id "$DEMO_USER")) in $WORK"

JOB=("$APP" "$ITERS" "$SLEEP_MS")

# ------------------------------------------------------ the reference run
say "reference run: cruz run --name ref --np $NP -- ${JOB[*]}"
t0=$(now)
rc=0
as_user "$CRUZ" run --name ref --np "$NP" -- "${JOB[@]}" >"$WORK/ref.out" 2>"$WORK/ref.err" || rc=$?
T_REF=$(secs "$t0" "$(now)")
if [ "$rc" != 0 ]; then
	sed 's/^/    /' "$WORK/ref.err" >&2
	die "the reference run exited with status $rc (its stderr is above)"
fi
info "done in ${T_REF} s, $(wc -l <"$WORK/ref.out") lines; last: $(tail -n 1 "$WORK/ref.out")"

# ---------------------------------------------- the run that gets stopped
say "the same job again, in the background: cruz run --name demo --np $NP -- ${JOB[*]}"
t_run=$(now)
as_user "$CRUZ" run --name demo --np "$NP" -- "${JOB[@]}" >"$WORK/run.out" 2>"$WORK/run.err" &
BG_PID=$!
# Wait for the first iteration, then let it run a little.
for _ in $(seq 300); do
	grep -q '^iter ' "$WORK/run.out" 2>/dev/null && break
	kill -0 "$BG_PID" 2>/dev/null || break
	sleep 0.1
done
grep -q '^iter ' "$WORK/run.out" || {
	sed 's/^/    /' "$WORK/run.err" >&2
	die "the job printed no iteration within 30 s (its stderr is above)"
}
info "running after $(secs "$t_run" "$(now)") s; first iterations are out"
sleep 1.5

checkpoint() { # checkpoint [--stop]: prints the checkpoint id
	local out
	if ! out=$(as_user "$CRUZ" checkpoint "$@" demo 2>"$WORK/ckpt.err"); then
		sed 's/^/    /' "$WORK/ckpt.err" >&2
		die "cruz checkpoint $* demo failed (its error is above)"
	fi
	echo "$out"
}

say "cruz checkpoint demo (twice, while it runs)"
t0=$(now)
CK1=$(checkpoint)
T_CK1=$(secs "$t0" "$(now)")
info "checkpoint $CK1 in ${T_CK1} s; the job runs on ($(grep -c '^iter ' "$WORK/run.out") iterations out so far)"
sleep 1
t0=$(now)
CK2=$(checkpoint)
T_CK2=$(secs "$t0" "$(now)")
info "checkpoint $CK2 in ${T_CK2} s ($(grep -c '^iter ' "$WORK/run.out") iterations out so far)"

say "cruz status demo"
as_user "$CRUZ" status demo | sed 's/^/    /'
JOB_JSON=$(as_user "$CRUZ" status --json demo)

sleep 0.5
say "cruz checkpoint --stop demo"
t0=$(now)
CK3=$(checkpoint --stop)
T_CK3=$(secs "$t0" "$(now)")
info "checkpoint $CK3 in ${T_CK3} s; the job is stopped"
rc=0
wait "$BG_PID" || rc=$?
BG_PID=""
info "the first cruz run exited with status $rc; it said: $(grep '^cruz: ' "$WORK/run.err" | tail -n 1)"
[ "$rc" = 75 ] || {
	sed 's/^/    /' "$WORK/run.err" >&2
	die "cruz run exited $rc after the stop-checkpoint, expected 75 (stopped at a checkpoint)"
}
grep -q "stopped at checkpoint $CK3" "$WORK/run.err" ||
	die "cruz run did not say that checkpoint $CK3 holds the job (its stderr: $(tr '\n' ' ' <"$WORK/run.err"))"
N_BEFORE=$(grep -c '^iter ' "$WORK/run.out" || true)

say "cruz checkpoints demo"
as_user "$CRUZ" checkpoints demo | sed 's/^/    /'

# ------------------------------------------------------------- the restart
say "cruz restart demo"
t0=$(now)
as_user "$CRUZ" restart demo >"$WORK/restart.out" 2>"$WORK/restart.err" &
BG_PID=$!
T_FIRST="?"
while kill -0 "$BG_PID" 2>/dev/null; do
	if [ -s "$WORK/restart.out" ]; then
		T_FIRST=$(secs "$t0" "$(now)")
		break
	fi
	sleep 0.05
done
info "first line of output after the restart came ${T_FIRST} s after cruz restart began"
rc=0
wait "$BG_PID" || rc=$?
BG_PID=""
T_RESTART=$(secs "$t0" "$(now)")
if [ "$rc" != 0 ]; then
	sed 's/^/    /' "$WORK/restart.err" >&2
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
	head -n 40 "$WORK/diff.txt" | sed 's/^/    /' >&2
	die "the output before the stop plus the output after the restart differs from the reference run (diff above: - reference, + stopped and restarted)"
fi
info "stopped run ($N_BEFORE iterations) + restart = reference: $(wc -l <"$WORK/ref.out") lines, none lost or doubled"
REF_RESULT=$(grep '^result ' "$WORK/ref.out" || true)
GOT_RESULT=$(grep '^result ' "$WORK/combined.out" || true)
[ -n "$REF_RESULT" ] || die "the reference run printed no result line"
[ "$REF_RESULT" = "$GOT_RESULT" ] || die "result differs: reference '$REF_RESULT', restarted '$GOT_RESULT'"
info "result lines are equal: $GOT_RESULT"
grep -q "^iter $ITERS " "$WORK/combined.out" || die "the job did not reach iteration $ITERS"

# ------------------------------------------------------------- the summary
say "summary"
CK_JSON=$(as_user "$CRUZ" checkpoints --json demo)
T_TOTAL=$(secs "$T_START" "$(now)")
JOB_JSON=$JOB_JSON CK_JSON=$CK_JSON RESULT=$GOT_RESULT T_REF=$T_REF T_FIRST=$T_FIRST T_RESTART=$T_RESTART T_TOTAL=$T_TOTAL \
	CK_WALL="$CK1=$T_CK1 $CK2=$T_CK2 $CK3=$T_CK3" python3 - <<'PY'
import json, os

job = json.loads(os.environ["JOB_JSON"])
cks = json.loads(os.environ["CK_JSON"])["checkpoints"]
wall = dict(kv.split("=") for kv in os.environ["CK_WALL"].split())

def size(n):
    for unit, f in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= f:
            return "%.1f %s" % (n / f, unit)
    return "%d B" % n

pods = job["pods"]
roles = {}
for p in pods:
    roles[p["role"]] = roles.get(p["role"], 0) + 1
print("job %s (%s): %d ranks, %d pods (%s)" % (job["id"], job["user"], job["np"], len(pods),
      ", ".join("%d %s" % (n, r) for r, n in sorted(roles.items()))))
for p in pods:
    print("  pod %-16s %-8s %-15s %s" % (p["name"], p["role"], p["ip"], p["mac"]))
print("checkpoints: %d" % len(cks))
for c in cks:
    ph = c.get("phases_ms") or {}
    per_pod = ", ".join("%s %s/%d ms" % (p["name"].split("-", 1)[-1], size(p["bytes"]), p["dump_ms"]) for p in c.get("pods") or [])
    print("  %s%s: %s, traffic held %d ms (block %d + dump %d + commit %d); cruz checkpoint took %s s"
          % (c["id"], " (stop)" if c["stopped"] else "", size(c["bytes"]), ph.get("total", 0),
             ph.get("block", 0), ph.get("dump", 0), ph.get("commit", 0), wall.get(c["id"], "?")))
    print("    per pod (image size / dump time): " + per_pod)
print("result: " + os.environ["RESULT"])
print("timings: reference run %s s; restart: first output after %s s, job done after %s s; whole demo %s s"
      % (os.environ["T_REF"], os.environ["T_FIRST"], os.environ["T_RESTART"], os.environ["T_TOTAL"]))
PY

OK=1
say "demo: OK"
