#!/usr/bin/env bash
# dump-throughput.sh [MIB]: how fast, how long and how much memory a Cruz
# checkpoint of a MIB MiB process takes (default 1024; $CRUZ_BENCH_MIB too).
#
# It starts a private cruzd (own socket, run dir, key, bridge and a store on
# a disk-backed directory), runs tests/apps/memhog MIB as a plain job, takes
# one checkpoint that leaves the job running while sampling the memory of
# cruzd and CRIU every 20 ms, writes the same amount of data with dd to the
# store's filesystem for comparison, and prints a table. Everything it made
# (agent, bridge, job, directories) is removed on exit, whatever the outcome.
# Exit status: 0 when every figure was measured, non-zero with a message on
# stderr otherwise. Needs root. See tests/bench/README.md.
#
# Environment (all optional):
#   CRUZ_BIN            cruz, cruzd and apps/ (default /opt/cruz/bin)
#   CRUZ_BENCH_ROOT     parent of the run's scratch directory (default
#                       /var/tmp); must not be tmpfs: the store lives there
#   CRUZ_BENCH_BRIDGE   bridge of the private agent (default czb0)
#   CRUZ_BENCH_SUBNET   its pod subnet (default 10.213.0.0/24)
set -euo pipefail
export LC_ALL=C

BIN=${CRUZ_BIN:-/opt/cruz/bin}
CRUZD=$BIN/cruzd
CRUZ=$BIN/cruz
MEMHOG=$BIN/apps/memhog
SIZE=${1:-${CRUZ_BENCH_MIB:-1024}}
BRIDGE=${CRUZ_BENCH_BRIDGE:-czb0}
SUBNET=${CRUZ_BENCH_SUBNET:-10.213.0.0/24}
ROOT=${CRUZ_BENCH_ROOT:-/var/tmp}
JOB=bench-memhog
SAMPLE_S=0.02 # sampling period of the memory sampler

say() { echo "bench: $*" >&2; }
die() {
	say "FAILED: $*"
	exit 1
}

# ---- state for cleanup ------------------------------------------------------
DIR=""
AGENT_PID=""
RUN_PID=""
SAMPLER_PID=""
BRIDGE_OURS=0
JOB_STARTED=0
POD_PID=""

cleanup() {
	local rc=$?
	set +e
	trap - EXIT INT TERM HUP
	if [[ -n $SAMPLER_PID ]]; then
		kill "$SAMPLER_PID" 2>/dev/null
		wait "$SAMPLER_PID" 2>/dev/null
	fi
	if [[ $rc -ne 0 && -n $DIR && -s $DIR/cruzd.log ]]; then
		say "last lines of the agent's log ($DIR/cruzd.log):"
		tail -n 25 "$DIR/cruzd.log" | sed 's/^/  | /' >&2
	fi
	if [[ $JOB_STARTED -eq 1 && -n $AGENT_PID ]] && kill -0 "$AGENT_PID" 2>/dev/null; then
		CRUZ_SOCKET=$DIR/run/cruzd.sock timeout 60 "$CRUZ" rm --checkpoints "$JOB" >/dev/null 2>&1 ||
			say "cleanup: cruz rm --checkpoints $JOB failed (the agent's shutdown ends the job)"
	fi
	if [[ -n $RUN_PID ]]; then
		for _ in $(seq 50); do kill -0 "$RUN_PID" 2>/dev/null || break; sleep 0.1; done
		kill "$RUN_PID" 2>/dev/null
		wait "$RUN_PID" 2>/dev/null
	fi
	if [[ -n $AGENT_PID ]]; then
		kill -TERM "$AGENT_PID" 2>/dev/null
		for _ in $(seq 150); do kill -0 "$AGENT_PID" 2>/dev/null || break; sleep 0.1; done
		if kill -0 "$AGENT_PID" 2>/dev/null; then
			say "cleanup: cruzd $AGENT_PID ignored SIGTERM for 15 s; killing it"
			kill -KILL "$AGENT_PID" 2>/dev/null
		fi
		wait "$AGENT_PID" 2>/dev/null
	fi
	# An agent that died (or was killed) before it could end the job leaves
	# the pod running: its PID 1 is the job's process, and killing it ends
	# the pod's pid namespace.
	if [[ -n $POD_PID ]] && grep -qF "$MEMHOG" "/proc/$POD_PID/cmdline" 2>/dev/null; then
		say "cleanup: the job's pod (pid $POD_PID) outlived the agent; killing it"
		kill -KILL "$POD_PID" 2>/dev/null
		for _ in $(seq 50); do [[ -e /proc/$POD_PID ]] || break; sleep 0.1; done
	fi
	if [[ $BRIDGE_OURS -eq 1 ]] && ip link show "$BRIDGE" >/dev/null 2>&1; then
		ip link del "$BRIDGE" || say "cleanup: could not delete bridge $BRIDGE"
	fi
	if [[ -n $DIR && -d $DIR ]]; then
		# cruzd bind-mounts run/netns on itself (and pod netns files in it).
		local m
		while read -r m; do umount -l "$m" 2>/dev/null; done < <(
			awk -v d="$DIR/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
		rm -rf "$DIR" || say "cleanup: could not remove $DIR"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT
trap 'say "terminated"; exit 143' TERM HUP

# ---- checks -----------------------------------------------------------------
[[ $SIZE =~ ^[1-9][0-9]*$ ]] || die "MIB must be a positive whole number of MiB, not '$SIZE' (usage: $0 [MIB])"
[[ $(id -u) -eq 0 ]] || die "must run as root (it starts cruzd); try: sudo $0 $*"
for b in "$CRUZD" "$CRUZ" "$MEMHOG"; do
	[[ -x $b ]] || die "$b is missing: run make build (or set CRUZ_BIN)"
done
for t in ip awk dd jq mkfifo; do
	command -v "$t" >/dev/null || die "$t is not installed"
done
if ip link show "$BRIDGE" >/dev/null 2>&1; then
	die "bridge $BRIDGE already exists: another benchmark is running, or one was killed (then: ip link del $BRIDGE); or set CRUZ_BENCH_BRIDGE"
fi
mkdir -p "$ROOT"
fstype=$(stat -f -c %T "$ROOT")
case $fstype in tmpfs | ramfs) die "$ROOT is $fstype: the store must be disk-backed (set CRUZ_BENCH_ROOT)" ;; esac
avail_mib=$(($(df -Pk "$ROOT" | awk 'NR == 2 { print $4 }') / 1024))
((avail_mib > 2 * SIZE + 512)) || die "$ROOT has $avail_mib MiB free, need about $((2 * SIZE + 512)) MiB (checkpoint + dd file)"
command -v findmnt >/dev/null || die "findmnt (util-linux) is not installed"
mem_mib=$(awk '/^MemAvailable:/ { print int($2 / 1024) }' /proc/meminfo)
((mem_mib > SIZE + 512)) || die "only $mem_mib MiB of memory available, memhog $SIZE needs about $((SIZE + 512)) MiB"

DIR=$(mktemp -d "$ROOT/cruz-bench.XXXXXX")
chmod 0755 "$DIR"
STORE=$DIR/store
SOCK=$DIR/run/cruzd.sock
mkdir -p "$DIR/key" "$STORE"
chmod 0700 "$DIR/key"
export CRUZ_SOCKET=$SOCK
STORE_FS=$(findmnt -n -o FSTYPE,SOURCE -T "$STORE" | awk '{ print $1 " on " $2 }')

# ---- helpers ----------------------------------------------------------------
# now_ms: sets NOW to the wall clock in milliseconds, without a fork.
now_ms() {
	NOW=${EPOCHREALTIME/./}
	NOW=$((NOW / 1000))
}
# read_status PID: sets RSS, HWM (KiB) and PPID_ from /proc/PID/status, 0 if gone.
read_status() {
	RSS=0 HWM=0 PPID_=0
	local k v _r
	{ while read -r k v _r; do
		case $k in VmRSS:) RSS=$v ;; VmHWM:) HWM=$v ;; PPid:) PPID_=$v ;; esac
	done <"/proc/$1/status"; } 2>/dev/null || true
}
# children PID: sets KIDS to PID's child processes (all its threads' children).
children() {
	KIDS=()
	local f line
	for f in /proc/"$1"/task/*/children; do
		line=""
		{ read -r line <"$f"; } 2>/dev/null || true
		[[ -n $line ]] && KIDS+=($line)
	done
	return 0
}
# agent_alive WHEN: fails the run if cruzd is gone.
agent_alive() {
	kill -0 "$AGENT_PID" 2>/dev/null && return 0
	local st=0
	wait "$AGENT_PID" 2>/dev/null || st=$?
	AGENT_PID=""
	if ((st > 128)); then
		die "cruzd died $1: killed by signal $((st - 128)) ($(kill -l "$((st - 128))" 2>/dev/null || echo ?)) from outside"
	fi
	die "cruzd died $1 (exit status $st)"
}
mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; } # KiB -> "x.y MiB"
# is_criu PID: CRIU itself, not the agent binary that is about to exec it
# (cruzd __cruz-criu-as UID GID criu ..., comm "cruzd"), so matched on
# /proc/PID/comm == criu. When CRIU runs through its own dynamic loader (the
# wrapper /usr/local/sbin/criu that install-deps.sh writes for its private
# CRIU root), comm is the loader's name (ld-linux-x86-64): then an argument
# naming .../criu decides.
is_criu() {
	local comm a
	{ read -r comm <"/proc/$1/comm"; } 2>/dev/null || return 1
	[[ $comm == criu ]] && return 0
	[[ $comm == ld-* ]] || return 1
	local -a argv=()
	{ mapfile -d '' -t argv <"/proc/$1/cmdline"; } 2>/dev/null || return 1
	for a in "${argv[@]:1}"; do [[ $a == */criu || $a == criu ]] && return 0; done
	return 1
}
# sampler OUT: until killed, every SAMPLE_S appends to OUT a line
# "ms cruzd_rss criu_rss_sum criu_hwm_max n_criu" (KiB). CRIU processes are
# looked for among the agent's children and their descendants only, so that
# CRIUs of other agents on the node stay out of the figures. No forks: it
# sleeps with read -t on a FIFO that nobody writes.
sampler() {
	local out=$1 fd p sum hwm n
	local -a todo
	trap 'exit 0' TERM
	mkfifo "$DIR/sampler.fifo"
	exec {fd}<>"$DIR/sampler.fifo"
	while :; do
		sum=0 hwm=0 n=0
		children "$AGENT_PID"
		todo=(${KIDS[@]+"${KIDS[@]}"})
		while ((${#todo[@]})); do
			p=${todo[0]}
			todo=("${todo[@]:1}")
			is_criu "$p" || continue
			read_status "$p"
			((RSS > 0)) || continue
			sum=$((sum + RSS)) n=$((n + 1))
			((HWM <= hwm)) || hwm=$HWM
			children "$p"
			todo+=(${KIDS[@]+"${KIDS[@]}"})
		done
		read_status "$AGENT_PID"
		now_ms
		echo "$NOW $RSS $sum $hwm $n" >>"$out"
		read -r -t "$SAMPLE_S" -u "$fd" _ || true
	done
}
# pod_rss_kib PID: VmRSS of PID and all its descendants.
pod_rss_kib() {
	local total=0 p
	local -a todo=("$1")
	while ((${#todo[@]})); do
		p=${todo[0]}
		todo=("${todo[@]:1}")
		read_status "$p"
		total=$((total + RSS))
		children "$p"
		todo+=(${KIDS[@]+"${KIDS[@]}"})
	done
	echo "$total"
}

# ---- 1. private agent, idle RSS --------------------------------------------
cat >"$DIR/cruzd.toml" <<EOF
version = 1
[agent]
socket = "$SOCK"
run_dir = "$DIR/run"
key_file = "$DIR/key/cluster.key"
[network]
bridge = "$BRIDGE"
subnet = "$SUBNET"
[store]
dir = "$STORE"
EOF
say "starting $CRUZD --config $DIR/cruzd.toml (log: $DIR/cruzd.log)"
BRIDGE_OURS=1 # from here on the bridge, if any, is this run's (checked above)
"$CRUZD" --config "$DIR/cruzd.toml" >"$DIR/cruzd.log" 2>&1 </dev/null &
AGENT_PID=$!
for _ in $(seq 300); do
	[[ -S $SOCK ]] && break
	kill -0 "$AGENT_PID" 2>/dev/null || { wait "$AGENT_PID" || true; AGENT_PID=""; die "cruzd exited at start: $(tail -n 5 "$DIR/cruzd.log")"; }
	sleep 0.1
done
[[ -S $SOCK ]] || die "cruzd did not create $SOCK within 30 s"
"$CRUZ" version >"$DIR/version" 2>"$DIR/version.err" || die "cruz version: $(cat "$DIR/version.err")"
CRIU_VERSION=$(sed -n 's/.*CRIU \([^ ]*\).*/\1/p' "$DIR/version")
sleep 1 # let the agent settle after its start-up checks
read_status "$AGENT_PID"
IDLE_RSS=$RSS

# ---- 2. memhog --------------------------------------------------------------
say "starting $MEMHOG $SIZE as job $JOB"
(cd / && exec "$CRUZ" run --plain --name "$JOB" -- "$MEMHOG" "$SIZE") >"$DIR/memhog.out" 2>&1 </dev/null &
RUN_PID=$!
JOB_STARTED=1
now_ms
t_ready0=$NOW
until grep -q '^ready ' "$DIR/memhog.out"; do
	agent_alive "while memhog started"
	if ! kill -0 "$RUN_PID" 2>/dev/null; then
		die "the memhog job ended before it was ready: $(tail -n 5 "$DIR/memhog.out")"
	fi
	now_ms
	((NOW - t_ready0 < 300000)) || die "memhog $SIZE not ready after 300 s: $(tail -n 5 "$DIR/memhog.out")"
	sleep 0.1
done
"$CRUZ" status --json "$JOB" >"$DIR/status.json" 2>"$DIR/status.err" || die "cruz status: $(cat "$DIR/status.err")"
POD_PID=$(jq -r '[.pods[]?.pid // empty][0] // empty' "$DIR/status.json")
[[ -n $POD_PID ]] || die "no pod pid in cruz status --json $JOB: $(cat "$DIR/status.json")"
POD_RSS=$(pod_rss_kib "$POD_PID")

# ---- 3. checkpoint, sampled -------------------------------------------------
sync # start from a clean page cache, as dd does below
lines_before=$(wc -l <"$DIR/memhog.out")
: >"$DIR/samples"
sampler "$DIR/samples" &
SAMPLER_PID=$!
sleep 0.1 # a couple of samples before the checkpoint
say "checkpointing (the job keeps running)"
now_ms
t0=$NOW
ck_rc=0
"$CRUZ" checkpoint --json "$JOB" >"$DIR/ck.json" 2>"$DIR/ck.err" || ck_rc=$?
now_ms
t1=$NOW
sleep 0.1
kill "$SAMPLER_PID" 2>/dev/null || true
wait "$SAMPLER_PID" 2>/dev/null || true
SAMPLER_PID=""
if ((ck_rc != 0)); then
	die "cruz checkpoint --json $JOB exited $ck_rc: $(cat "$DIR/ck.err")"
fi
agent_alive "during the checkpoint"
read_status "$AGENT_PID"
AGENT_HWM=$HWM
CK_WALL=$((t1 - t0))
CK_ID=$(jq -r '.id' "$DIR/ck.json")
BYTES=$(jq -r '.bytes' "$DIR/ck.json")
P_BLOCK=$(jq -r '.phases_ms.block // empty' "$DIR/ck.json")
P_DUMP=$(jq -r '.phases_ms.dump // empty' "$DIR/ck.json")
P_COMMIT=$(jq -r '.phases_ms.commit // empty' "$DIR/ck.json")
P_TOTAL=$(jq -r '.phases_ms.total // empty' "$DIR/ck.json")
POD_DUMP=$(jq -r '[.pods[]?.dump_ms] | map(tostring) | join(",")' "$DIR/ck.json")
[[ $BYTES =~ ^[0-9]+$ && $BYTES -gt 0 ]] || die "checkpoint reports no bytes: $(cat "$DIR/ck.json")"
[[ $P_DUMP =~ ^[0-9]+$ && $P_DUMP -gt 0 && $P_TOTAL =~ ^[0-9]+$ && $P_TOTAL -gt 0 ]] ||
	die "checkpoint reports no dump/total phase times: $(jq -c .phases_ms "$DIR/ck.json")"
n_listed=$("$CRUZ" checkpoints --json "$JOB" | jq --arg id "$CK_ID" '[.checkpoints[] | select(.id == $id)] | length')
[[ $n_listed -eq 1 ]] || die "checkpoint $CK_ID is not listed by cruz checkpoints --json $JOB"
kill -0 "$RUN_PID" 2>/dev/null || die "the job ended after the checkpoint (it should keep running): $(tail -n 5 "$DIR/memhog.out")"

# Memory peaks over the samples taken while the checkpoint ran.
read -r N_SAMPLES PEAK_AGENT PEAK_CRIU PEAK_CRIU_HWM MAX_NCRIU PERIOD < <(awk -v t0="$t0" -v t1="$t1" '
	$1 >= t0 && $1 <= t1 + 20 {
		n++; if ($2 > a) a = $2; if ($3 > c) c = $3; if ($4 > h) h = $4; if ($5 > k) k = $5
		if (n == 1) first = $1; last = $1
	}
	END { printf "%d %d %d %d %d %.1f\n", n, a, c, h, k, (n > 1 ? (last - first) / (n - 1) : 0) }' "$DIR/samples")
((N_SAMPLES > 0)) || die "the memory sampler took no sample during the checkpoint"
((MAX_NCRIU > 0)) || die "no CRIU process was seen during the ${CK_WALL} ms checkpoint ($N_SAMPLES samples): cannot measure its memory"
CRIU_PEAK=$((PEAK_CRIU > PEAK_CRIU_HWM ? PEAK_CRIU : PEAK_CRIU_HWM))

# ---- 7. the pause memhog saw ------------------------------------------------
# memhog wakes every 100 ms and reports a gap > 200 ms when it wakes up.
for _ in $(seq 30); do
	tail -n +"$((lines_before + 1))" "$DIR/memhog.out" | grep -q '^pause ' && break
	sleep 0.1
done
agent_alive "after the checkpoint"
kill -0 "$RUN_PID" 2>/dev/null || die "the job ended after the checkpoint (it should keep running): $(tail -n 5 "$DIR/memhog.out")"
PAUSE=$(tail -n +"$((lines_before + 1))" "$DIR/memhog.out" | awk '$1 == "pause" && $2 > m { m = $2 } END { print m + 0 }')

# ---- 5. dd to the store's filesystem ----------------------------------------
say "writing $SIZE MiB with dd to $STORE"
sync
DD_CMD="dd if=/dev/zero of=$STORE/dd.test bs=1M count=$SIZE conv=fdatasync"
dd_out=$($DD_CMD 2>&1) || die "$DD_CMD failed: $dd_out"
rm -f "$STORE/dd.test"
read -r DD_BYTES DD_S < <(echo "$dd_out" | sed -nE 's/^([0-9]+) bytes.* copied, ([0-9.e+-]+) s,.*/\1 \2/p' | tail -n 1) ||
	die "cannot parse dd's output: $dd_out"
[[ -n ${DD_S:-} ]] || die "cannot parse dd's output: $dd_out"

agent_alive "during the benchmark"

# ---- report -----------------------------------------------------------------
calc() { awk "BEGIN { printf \"$1\", $2 }"; }
DUMP_MIBS=$(calc %.1f "$BYTES / 1048576 / ($P_DUMP / 1000)")
TOTAL_MIBS=$(calc %.1f "$BYTES / 1048576 / ($P_TOTAL / 1000)")
DD_MIBS=$(calc %.1f "$DD_BYTES / 1048576 / $DD_S")
RATIO=$(calc %.2f "$DUMP_MIBS / $DD_MIBS")
RATIO_TOTAL=$(calc %.2f "$TOTAL_MIBS / $DD_MIBS")
FRAC=$(calc %.4f "$CRIU_PEAK / $POD_RSS")

C="CRUZ_SOCKET=$SOCK $CRUZ"
row() { printf ' %-3s %-38s %s\n' "$1" "$2" "$3"; }
how() { printf '     %-38s $ %s\n' "" "$1"; }
echo
echo "Cruz checkpoint dump throughput: memhog $SIZE MiB, 1 pod, checkpoint $CK_ID (job left running)"
echo "store $STORE ($STORE_FS); CRIU $CRIU_VERSION; kernel $(uname -r)"
echo
row "#" "measure" "value"
row 1 "cruzd idle RSS" "$(mib "$IDLE_RSS")"
how "grep VmRSS /proc/$AGENT_PID/status   # 1 s after the socket appeared"
row 2 "pod RSS (memhog $SIZE MiB ready)" "$(mib "$POD_RSS")"
how "$C run --plain --name $JOB -- $MEMHOG $SIZE; VmRSS of pod pid $POD_PID + descendants"
row 3 "checkpoint wall time" "$CK_WALL ms"
how "$C checkpoint --json $JOB"
row "" "  phases block/dump/commit/total" "$P_BLOCK / $P_DUMP / $P_COMMIT / $P_TOTAL ms (pod dump_ms $POD_DUMP)"
row "" "  cruzd peak RSS during checkpoint" "$(mib "$PEAK_AGENT")"
row "" "  CRIU peak RSS during checkpoint" "$(mib "$PEAK_CRIU") (sum over <= $MAX_NCRIU criu processes; largest VmHWM $(mib "$PEAK_CRIU_HWM"))"
how "VmRSS/VmHWM in /proc/PID/status every ${SAMPLE_S}s: $N_SAMPLES samples, mean period $PERIOD ms"
row "" "  cruzd VmHWM after checkpoint" "$(mib "$AGENT_HWM")"
how "grep VmHWM /proc/$AGENT_PID/status"
row 4 "dump throughput (bytes / dump)" "$DUMP_MIBS MiB/s ($BYTES bytes in $P_DUMP ms)"
row "" "  end-to-end (bytes / total)" "$TOTAL_MIBS MiB/s ($BYTES bytes in $P_TOTAL ms)"
how "bytes and phases_ms from $C checkpoint --json $JOB"
row 5 "dd throughput, same filesystem" "$DD_MIBS MiB/s ($DD_BYTES bytes in $DD_S s)"
how "$DD_CMD"
row 6 "dump / dd throughput" "$RATIO   (end-to-end / dd: $RATIO_TOTAL)"
row 7 "application pause (memhog)" "$( ((PAUSE > 0)) && echo "$PAUSE ms" || echo "< 200 ms (memhog reports only gaps > 200 ms)")"
how "largest 'pause <ms>' line memhog printed after the checkpoint began"
row 8 "CRIU peak RSS / pod RSS" "$FRAC   ($(mib "$CRIU_PEAK") / $(mib "$POD_RSS"))"
echo
