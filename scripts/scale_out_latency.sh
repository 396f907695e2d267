#!/usr/bin/env bash
# Issue 17's scale-out figure (BENCHMARKS.md): response → served CLUE on Kafka (the tansu
# test broker) with 1 and with 2 `serve --role scheduler` processes beside one
# `serve --role writer,reader`, at several simulator rates: for each (schedulers, rate) a
# fresh broker and fresh data directories, then `biglearn bench scheduler --skip-reads`
# (simulator load plus probe students, latency from the 200 of `record_responses` to the
# changed CLUE served by the reader). Every load is bounded by the bench itself; every
# process is stopped at the end of its run.
#
#   BIGLEARN=target/release/biglearn bash scripts/scale_out_latency.sh
#
# Settings (environment): TANSU (.test-broker/bin/tansu, installed by
# scripts/install-test-broker.sh), DIR (/var/tmp/scale-out), RATES ("100 200 400"),
# SCHEDULERS ("1 2"), PROBES (15), KAFKA_PROPERTIES (more librdkafka properties for every
# process, space-separated KEY=VALUE, e.g. "fetch.wait.max.ms=20").
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
biglearn=${BIGLEARN:-biglearn}
tansu=${TANSU:-$here/../.test-broker/bin/tansu}
dir=${DIR:-/var/tmp/scale-out}
rates=${RATES:-"100 200 400"}
counts=${SCHEDULERS:-"1 2"}
probes=${PROBES:-15}
broker_port=39291
writer_port=38791
export BIGLEARN_API_TOKEN=scale-out-bench-api-token-0123456789
export BIGLEARN_ADMIN_TOKEN=scale-out-bench-admin-token-0123456789
export BIGLEARN_LOG=warn

pids=()
# The processes first, newest first, the broker (the first) last: a node stopping drains
# to the broker.
stop_all() {
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -INT "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
  pids=()
}
trap stop_all EXIT

wait_for() { # URL
  for _ in $(seq 1 240); do curl -sf "$1" > /dev/null && return 0; sleep 0.5; done
  echo "not ready: $1" >&2
  return 1
}

for schedulers in $counts; do
  for rate in $rates; do
    rm -rf "$dir" && mkdir -p "$dir"
    "$tansu" broker --listener-url "tcp://127.0.0.1:$broker_port" \
      --advertised-listener-url "tcp://127.0.0.1:$broker_port" \
      --storage-engine memory://tansu/ > "$dir/broker.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 100); do (exec 3<> "/dev/tcp/127.0.0.1/$broker_port") 2>/dev/null && break; sleep 0.1; done
    kafka=(--kafka "127.0.0.1:$broker_port" --single-broker --topic-prefix bench
           --kafka-property session.timeout.ms=6000)
    for property in ${KAFKA_PROPERTIES:-}; do kafka+=(--kafka-property "$property"); done
    "$biglearn" serve --role writer,reader "${kafka[@]}" --data-dir "$dir/writer" \
      --listen "127.0.0.1:$writer_port" > "$dir/writer.log" 2>&1 &
    pids+=($!)
    wait_for "http://127.0.0.1:$writer_port/readyz"
    for n in $(seq 1 "$schedulers"); do
      "$biglearn" serve --role scheduler "${kafka[@]}" --data-dir "$dir/scheduler-$n" \
        --listen "127.0.0.1:$((writer_port + n))" > "$dir/scheduler-$n.log" 2>&1 &
      pids+=($!)
    done
    # Every scheduler owns partitions before the load starts.
    for n in $(seq 1 "$schedulers"); do
      wait_for "http://127.0.0.1:$((writer_port + n))/readyz"
      for _ in $(seq 1 120); do
        owned=$(curl -sf "http://127.0.0.1:$((writer_port + n))/metrics" \
          | awk '$1 == "biglearn_scheduler_partitions_owned" {print $2}')
        [ "${owned:-0}" != "0" ] && break
        sleep 0.5
      done
    done
    echo "# schedulers $schedulers rate $rate properties ${KAFKA_PROPERTIES:-none} load $(cut -d' ' -f1-3 /proc/loadavg)"
    "$biglearn" bench scheduler --target "http://127.0.0.1:$writer_port" --skip-reads \
      --sim-rate "$rate" --probes "$probes" --probe-interval-ms 300 --sim-seed 7000 2>/dev/null \
      | sed "s/^{/{\"schedulers\":$schedulers,\"sim_rate\":$rate,/"
    stop_all
  done
done
