#!/usr/bin/env bash
# Issue 17's response → served CLUE comparison (BENCHMARKS.md): for each build given, in
# turn and ROUNDS times, a release `biglearn up` on a fresh data directory, then
# `biglearn bench scheduler --skip-reads` (simulator load plus probe students) against it,
# and the server's CPU time (utime + stime from /proc) over the bench. Every load is
# bounded by the bench itself.
#
#   CLIENT=/path/to/biglearn bash scripts/clue_latency.sh /path/to/biglearn-base /path/to/biglearn-new
#
# Settings (environment): CLIENT (the biglearn that runs the bench; the last build by
# default), DIR (/var/tmp/clue-latency), PORT (3810), ROUNDS (2), SIM_RATE (300).
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 BIGLEARN [BIGLEARN...]" >&2; exit 2; }
client=${CLIENT:-${!#}}
dir=${DIR:-/var/tmp/clue-latency}
port=${PORT:-3810}
rounds=${ROUNDS:-2}
sim_rate=${SIM_RATE:-300}
mkdir -p "$dir"
for round in $(seq 1 "$rounds"); do
  for build in "$@"; do
    data="$dir/data-$round"
    rm -rf "$data"
    port=$((port + 1))
    "$build" up --data-dir "$data" --listen "127.0.0.1:$port" > "$dir/server-$round.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 120); do curl -sf "http://127.0.0.1:$port/readyz" > /dev/null && break; sleep 0.5; done
    read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
    echo "# $build round $round load $(cut -d' ' -f1-3 /proc/loadavg)"
    "$client" bench scheduler --target "http://127.0.0.1:$port" --data-dir "$data" --skip-reads \
      --sim-rate "$sim_rate" --probes 20 --probe-interval-ms 300 --sim-seed 6000 2>/dev/null
    read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
    ticks=$(getconf CLK_TCK)
    echo "{\"build\":\"$build\",\"round\":$round,\"server_cpu_s\":$(awk -v t=$((u1 + s1 - u0 - s0)) -v h="$ticks" 'BEGIN{printf "%.2f", t / h}')}"
    kill -INT "$pid"; wait "$pid" || true
    rm -rf "$data"
  done
done
