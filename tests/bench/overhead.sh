#!/usr/bin/env bash
# overhead.sh: what periodic checkpointing costs a job, as its wall time with
# checkpoints every 1 s, 5 s and 30 s over its wall time with checkpoints
# off, on an idle node and beside two CPU hogs, in one run (issue 12,
# "Benchmark"; goal: at most 1.2x with the hogs).
#
# It starts a private cruzd (own socket, run dir, key, bridge, and a store on
# a disk-backed directory), runs a 4-rank MPICH job (tests/apps/mpi_allreduce,
# 64 MiB per rank, about 60 s of 100 ms iterations) once per interval and
# load, prints a table, writes a CSV and, if gnuplot is installed, a PNG.
# Everything it made (agent, bridge, jobs, checkpoints, hogs, scratch
# directory) is removed on exit, whatever the outcome; the CSV, the PNG and
# the table stay in the output directory. Exit status 0 only if every run
# ended with the right result. Needs root. See tests/bench/README.md.
#
# Environment (all optional):
#   CRUZ_BIN            cruz, cruzd and apps/ (default /opt/cruz/bin)
#   CRUZ_BENCH_SECONDS  the job's length in seconds of iterations (default 60)
#   CRUZ_BENCH_MIB      MiB per rank (default 64)
#   CRUZ_BENCH_OUT      where the CSV, PNG and table go (default
#                       /var/tmp/cruz-bench-overhead)
#   CRUZ_BENCH_ROOT     parent of the scratch directory (default /var/tmp);
#                       must not be tmpfs: the store lives there
#   CRUZ_BENCH_BRIDGE   bridge of the private agent (default czo0)
#   CRUZ_BENCH_SUBNET   its pod subnet (default 10.216.0.0/24)
set -euo pipefail
export LC_ALL=C

BIN=${CRUZ_BIN:-/opt/cruz/bin}
CRUZD=$BIN/cruzd
CRUZ=$BIN/cruz
APP=$BIN/apps/mpi_allreduce
SECONDS_=${CRUZ_BENCH_SECONDS:-60}
MIB=${CRUZ_BENCH_MIB:-64}
OUT=${CRUZ_BENCH_OUT:-/var/tmp/cruz-bench-overhead}
ROOT=${CRUZ_BENCH_ROOT:-/var/tmp}
BRIDGE=${CRUZ_BENCH_BRIDGE:-czo0}
SUBNET=${CRUZ_BENCH_SUBNET:-10.216.0.0/24}
NP=4
SLEEP_MS=100
INTERVALS=(off 30s 5s 1s)
LOADS=(idle hogs)
NHOGS=2

say() { echo "bench: $*" >&2; }
die() {
	say "FAILED: $*"
	exit 1
}

# ---- state for cleanup ------------------------------------------------------
DIR=""
AGENT_PID=""
RUN_PID=""
JOB=""
HOG_PIDS=()
BRIDGE_OURS=0

stop_hogs() {
	local p
	for p in ${HOG_PIDS[@]+"${HOG_PIDS[@]}"}; do
		kill -KILL -- "-$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	HOG_PIDS=()
}

cleanup() {
	local rc=$?
	set +e
	trap - EXIT INT TERM HUP
	stop_hogs
	if [[ $rc -ne 0 && -n $DIR && -s $DIR/cruzd.log ]]; then
		say "last lines of the agent's log ($DIR/cruzd.log):"
		tail -n 25 "$DIR/cruzd.log" | sed 's/^/  | /' >&2
	fi
	if [[ -n $JOB && -n $AGENT_PID ]] && kill -0 "$AGENT_PID" 2>/dev/null; then
		timeout 60 "$CRUZ" rm --checkpoints "$JOB" >/dev/null 2>&1
	fi
	if [[ -n $RUN_PID ]]; then
		kill "$RUN_PID" 2>/dev/null
		wait "$RUN_PID" 2>/dev/null
	fi
	if [[ -n $AGENT_PID ]]; then
		kill -TERM "$AGENT_PID" 2>/dev/null
		for _ in $(seq 300); do kill -0 "$AGENT_PID" 2>/dev/null || break; sleep 0.1; done
		if kill -0 "$AGENT_PID" 2>/dev/null; then
			say "cleanup: cruzd $AGENT_PID ignored SIGTERM for 30 s; killing it"
			kill -KILL "$AGENT_PID" 2>/dev/null
		fi
		wait "$AGENT_PID" 2>/dev/null
	fi
	if [[ $BRIDGE_OURS -eq 1 ]] && ip link show "$BRIDGE" >/dev/null 2>&1; then
		ip link del "$BRIDGE" || say "cleanup: could not delete bridge $BRIDGE"
	fi
	if [[ -n $DIR && -d $DIR ]]; then
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
[[ $SECONDS_ =~ ^[1-9][0-9]*$ ]] || die "CRUZ_BENCH_SECONDS must be a positive whole number, not '$SECONDS_'"
[[ $MIB =~ ^[0-9]+$ ]] || die "CRUZ_BENCH_MIB must be a whole number of MiB, not '$MIB'"
[[ $(id -u) -eq 0 ]] || die "must run as root (it starts cruzd); try: sudo $0"
for b in "$CRUZD" "$CRUZ" "$APP"; do
	[[ -x $b ]] || die "$b is missing: run make build (or set CRUZ_BIN)"
done
for t in ip awk jq timeout; do
	command -v "$t" >/dev/null || die "$t is not installed"
done
if ip link show "$BRIDGE" >/dev/null 2>&1; then
	die "bridge $BRIDGE already exists: another benchmark is running, or one was killed (then: ip link del $BRIDGE); or set CRUZ_BENCH_BRIDGE"
fi
mkdir -p "$ROOT" "$OUT"
case $(stat -f -c %T "$ROOT") in tmpfs | ramfs) die "$ROOT is tmpfs: the store must be disk-backed (set CRUZ_BENCH_ROOT)" ;; esac

DIR=$(mktemp -d "$ROOT/cruz-bench-ov.XXXXXX")
chmod 0755 "$DIR"
SOCK=$DIR/run/cruzd.sock
mkdir -p "$DIR/key" "$DIR/store"
chmod 0700 "$DIR/key"
export CRUZ_SOCKET=$SOCK
ITERS=$((SECONDS_ * 1000 / SLEEP_MS))

# ---- the private agent ------------------------------------------------------
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
dir = "$DIR/store"
EOF
say "starting $CRUZD --config $DIR/cruzd.toml (log: $DIR/cruzd.log)"
BRIDGE_OURS=1
"$CRUZD" --config "$DIR/cruzd.toml" >"$DIR/cruzd.log" 2>&1 </dev/null &
AGENT_PID=$!
for _ in $(seq 300); do
	[[ -S $SOCK ]] && break
	kill -0 "$AGENT_PID" 2>/dev/null || { wait "$AGENT_PID" || true; AGENT_PID=""; die "cruzd exited at start: $(tail -n 5 "$DIR/cruzd.log")"; }
	sleep 0.1
done
[[ -S $SOCK ]] || die "cruzd did not create $SOCK within 30 s"

# The result line the job must print: acc over iterations of the sum over
# ranks of (r+1)*i*i mod 1000003 (tests/apps/mpi_allreduce.c).
WANT=$(awk -v n="$NP" -v it="$ITERS" 'BEGIN { acc = 0; for (i = 1; i <= it; i++) for (r = 0; r < n; r++) acc += ((r + 1) * i * i) % 1000003; printf "result %.0f ranks %d iters %d\n", acc, n, it }')

# ---- one run ----------------------------------------------------------------
# run_job LOAD INTERVAL: runs the job, checks its result, appends a CSV row.
run_job() {
	local load=$1 iv=$2 t0 t1 rc=0 evs
	JOB=ov-$load-$iv
	say "$load, --interval $iv: cruz run --np $NP --interval $iv -- $APP $ITERS $SLEEP_MS $MIB"
	t0=${EPOCHREALTIME/./}
	(cd / && exec "$CRUZ" run --name "$JOB" --np "$NP" --interval "$iv" -- "$APP" "$ITERS" "$SLEEP_MS" "$MIB") \
		>"$DIR/$JOB.out" 2>"$DIR/$JOB.err" </dev/null &
	RUN_PID=$!
	wait "$RUN_PID" || rc=$?
	t1=${EPOCHREALTIME/./}
	RUN_PID=""
	((rc == 0)) || die "$JOB exited with status $rc: $(tail -n 5 "$DIR/$JOB.err")"
	grep -qxF "$WANT" "$DIR/$JOB.out" || die "$JOB did not print '$WANT': $(tail -n 3 "$DIR/$JOB.out")"
	evs=$("$CRUZ" events --json "$JOB") || die "cruz events $JOB failed"
	# checkpoints, the sum of their holds (ms), the longest hold
	read -r nck held maxheld < <(jq -r '[.events[] | select(.kind == "checkpoint") | (.message | capture("traffic held (?<ms>[0-9]+) ms").ms | tonumber)]
		| [length, (add // 0), (max // 0)] | @tsv' <<<"$evs")
	nstr=$(jq '[.events[] | select(.kind == "stretched")] | length' <<<"$evs")
	"$CRUZ" rm --checkpoints "$JOB" >/dev/null 2>"$DIR/rm.err" || die "cruz rm --checkpoints $JOB: $(cat "$DIR/rm.err")"
	JOB=""
	echo "$load,$iv,$(((t1 - t0) / 1000)),$nck,$held,$maxheld,$nstr" >>"$DIR/rows"
}

: >"$DIR/rows"
for load in "${LOADS[@]}"; do
	if [[ $load == hogs ]]; then
		for _ in $(seq "$NHOGS"); do
			# Bounded by timeout even if this script is killed with SIGKILL.
			setsid timeout $((${#INTERVALS[@]} * SECONDS_ * 4 + 120)) sh -c 'while :; do :; done' &
			HOG_PIDS+=($!)
		done
	fi
	for iv in "${INTERVALS[@]}"; do run_job "$load" "$iv"; done
	stop_hogs
done

# ---- table, CSV, plot -------------------------------------------------------
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
CSV=$OUT/overhead-$STAMP.csv
TABLE=$OUT/overhead-$STAMP.txt
awk -F, -v csv="$CSV" '
	{ load[NR] = $1; iv[NR] = $2; wall[NR] = $3; nck[NR] = $4; held[NR] = $5; maxh[NR] = $6; nstr[NR] = $7
	  if ($2 == "off") base[$1] = $3 }
	END {
		print "load,interval,wall_ms,ratio,checkpoints,held_ms,held_pct,max_held_ms,stretched" > csv
		printf "%-5s %-8s %9s %6s %6s %9s %6s %9s %9s\n", "load", "interval", "wall_s", "ratio", "ckpts", "held_s", "held%", "max_held", "stretched"
		for (i = 1; i <= NR; i++) {
			r = wall[i] / base[load[i]]
			pct = 100 * held[i] / wall[i]
			printf "%s,%s,%d,%.3f,%d,%d,%.1f,%d,%d\n", load[i], iv[i], wall[i], r, nck[i], held[i], pct, maxh[i], nstr[i] > csv
			printf "%-5s %-8s %9.1f %5.2fx %6d %9.1f %5.1f%% %7.2f s %9d\n", load[i], iv[i], wall[i] / 1000, r, nck[i], held[i] / 1000, pct, maxh[i] / 1000, nstr[i]
		}
	}' "$DIR/rows" | tee "$TABLE"
{
	echo "job: cruz run --np $NP --interval I -- mpi_allreduce $ITERS $SLEEP_MS $MIB ($NP ranks, $MIB MiB each, ${SECONDS_} s of iterations), as root"
	echo "hogs: $NHOGS x sh -c 'while :; do :; done' beside the job; $(nproc) cores; store on $(findmnt -n -o FSTYPE -T "$DIR/store" 2>/dev/null || echo '?') ($ROOT)"
	echo "ratio: wall / wall with --interval off under the same load; held: the 'traffic held' of every periodic checkpoint (cruz events); stretched: events where policy.max_overhead (the agent's default, 10 %) spaced the checkpoints"
	echo "csv: $CSV"
} | tee -a "$TABLE"
if command -v gnuplot >/dev/null; then
	PNG=$OUT/overhead-$STAMP.png
	awk -F, 'NR > 1 { r[$2] = r[$2] " " $4 } END { for (k in r) print k r[k] }' "$CSV" |
		awk '{ o = ($1 == "off") ? 0 : ($1 == "30s") ? 1 : ($1 == "5s") ? 2 : 3; print o, $0 }' | sort -n | cut -d' ' -f2- >"$DIR/plot.dat"
	gnuplot <<EOF
set terminal png size 800,500
set output "$PNG"
set title "Cruz periodic checkpoints: wall time / wall time without ($NP ranks x $MIB MiB, ${SECONDS_} s)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set ylabel "wall time ratio"
set yrange [0:1.4<*]
set arrow from graph 0, first 1.2 to graph 1, first 1.2 nohead dt 2 lc rgb "red"
plot "$DIR/plot.dat" using 2:xtic(1) title "idle", "" using 3 title "2 CPU hogs"
EOF
	say "plot: $PNG"
else
	say "no plot: gnuplot is not installed (make bench-overhead installs gnuplot-nox)"
fi
