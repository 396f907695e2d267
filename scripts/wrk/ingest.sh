#!/usr/bin/env bash
# Issue 16's ingest benchmark, measured from outside the process with wrk (BENCHMARKS.md):
# starts a release `biglearn up` on a fresh data directory, measures in the same minutes
#   1. /ping (the HTTP ceiling of the same server),
#   2. record_responses of BATCH responses per request (scripts/wrk/record_responses.lua),
#   3. the count back of every acknowledged response through /fetch_course_events,
#   4. raw appends to the embedded log (`biglearn bench append`, no HTTP),
# and prints one JSON line per step, with the CPU time the server's threads spent per
# 1,000 acknowledged responses during the load. Every load is bounded by wrk's duration.
#
#   BIGLEARN=target/release/biglearn bash scripts/wrk/ingest.sh
#   KAFKA=127.0.0.1:39092 BIGLEARN=… bash scripts/wrk/ingest.sh   # the same on a broker
#
# Settings (environment): DIR (/var/tmp/bench16), PORT (38416), THREADS (4), CONNECTIONS
# (32), DURATION (20s), COURSES_PER_THREAD (50), BATCH (10), RUN (random), TIMEOUT (10s,
# wrk's per-request timeout).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
biglearn=${BIGLEARN:-biglearn}
dir=${DIR:-/var/tmp/bench16}
port=${PORT:-38416}
threads=${THREADS:-4}
connections=${CONNECTIONS:-32}
duration=${DURATION:-20s}
courses=${COURSES_PER_THREAD:-50}
batch=${BATCH:-10}
run=${RUN:-$((RANDOM * 32768 + RANDOM))}
target="http://127.0.0.1:$port"

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
rm -rf "$dir"
mkdir -p "$dir"
backend=(--data-dir "$dir/node")
if [ -n "${KAFKA:-}" ]; then
    backend+=(--kafka "$KAFKA" --single-broker --topic-prefix "bench$run")
fi
BIGLEARN_LOG=warn "$biglearn" up "${backend[@]}" --listen "127.0.0.1:$port" \
    >"$dir/node.log" 2>&1 &
node=$!
trap 'kill "$node" 2>/dev/null || true; wait "$node" 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
    if curl -fsS "$target/readyz" >/dev/null 2>&1; then break; fi
    sleep 0.1
done
curl -fsS "$target/readyz" >/dev/null || { echo "the node never became ready; see $dir/node.log" >&2; exit 1; }
token=$(cat "$dir/node/api-token")

echo "{\"uptime\":\"$(uptime | sed 's/.*load average: //')\",\"step\":\"before\"}"
wrk -t"$threads" -c"$connections" -d10s "$target/ping" >"$dir/ping.txt"
ping_rps=$(awk '/Requests\/sec/ {print $2}' "$dir/ping.txt")
echo "{\"bench\":\"wrk_ping\",\"threads\":$threads,\"connections\":$connections,\"requests_per_s\":$ping_rps}"

# CPU time of the server's threads by name (HTTP workers, log writer, derived state),
# in clock ticks, before and after the load: what each answer costs, steadier on a
# shared machine than a rate.
cpu_by_thread() {
    for stat in /proc/"$node"/task/*/stat; do cat "$stat" 2>/dev/null; done | python3 -c '
import json, sys
ticks = {}
for line in sys.stdin:
    name = line[line.index("(") + 1:line.rindex(")")]
    fields = line[line.rindex(")") + 2:].split()
    ticks[name] = ticks.get(name, 0) + int(fields[11]) + int(fields[12])
print(json.dumps(ticks))'
}
cpu_before=$(cpu_by_thread)
wrk -t"$threads" -c"$connections" -d"$duration" --timeout "${TIMEOUT:-10s}" \
    -s "$here/record_responses.lua" "$target" \
    -- "$run" "$courses" "$batch" "$token" >"$dir/ingest.txt"
ingest=$(grep '^{"bench":"wrk_record_responses"' "$dir/ingest.txt")
echo "$ingest"
acked=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["acked_responses"])' "$ingest")
cpu_after=$(cpu_by_thread)
python3 -c '
import json, os, sys
before, after, acked = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
per_1k = {name: round((after[name] - before.get(name, 0)) * tick_ms * 1000 / max(acked, 1), 2)
          for name in sorted(after) if after[name] > before.get(name, 0)}
print(json.dumps({"server_cpu_ms_per_1000_acked_responses": per_1k}))' "$cpu_before" "$cpu_after" "$acked"
echo "{\"uptime\":\"$(uptime | sed 's/.*load average: //')\",\"step\":\"after ingest\"}"
# The server's own view: mean time of a record_responses answer and of its append.
curl -fsS "$target/metrics" | python3 -c '
import json, re, sys
sums = {}
for line in sys.stdin:
    m = re.match(r"(biglearn_(?:http_request_duration|produce_delivery)_seconds_(?:sum|count))\{([^}]*)\} (\S+)", line)
    if m and ("record_responses" in m.group(2) or "course-events" in m.group(2)):
        sums[m.group(1)] = float(m.group(3))
def mean(name):
    n = sums.get(name + "_count", 0)
    return round(1000 * sums.get(name + "_sum", 0) / n, 3) if n else None
print(json.dumps({"server_mean_ms": {"record_responses": mean("biglearn_http_request_duration_seconds"), "append": mean("biglearn_produce_delivery_seconds")}}))'

# The projections catch up, then every acknowledged response must be read back.
python3 "$here/count_back.py" --target "$target" --token "$token" --run "$run" \
    --threads "$threads" --courses-per-thread "$courses" --acked "$acked"

kill "$node"; wait "$node" 2>/dev/null || true
trap - EXIT
if [ -z "${KAFKA:-}" ]; then
    "$biglearn" bench append --data-dir "$dir/append" --records 200000 --concurrency 64 --batch 10
fi
