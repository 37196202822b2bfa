#!/usr/bin/env bash
# AMQP ingest (BENCHMARKS.md): against the real broker, COUNT persistent
# JSON messages, each with its own message_id, are published (with
# publisher confirms) into a durable queue before anyone consumes it; then
# the queue is drained, once by a bare lapin consumer that acks each
# delivery and stores nothing (the floor: the broker's and the client
# library's own ceiling on this machine), once by fanin. Both consume with
# the same prefetch and one ack per delivery. For fanin every message
# matches one SOP, so the run is lossless when the store holds COUNT runs
# at the end and the queue is empty.
#
#   scripts/bench/amqp_ingest.sh        from the repository root
#
# Broker: FANIN_TEST_AMQP_URL, else amqp://guest:guest@127.0.0.1:5672/%2f.
# The exchange and both queues are named for the run and deleted at the end.
#
# COUNT (default 50000) messages per consumer; PREFETCH (default 256,
# fanin's default) deliveries unacknowledged at once. Rates are measured,
# not assumed: the bare consumer's from its first delivery to its last ack,
# fanin's from the start times of its first and last runs.
#
# fanin's SOP: one amqp trigger on the run's routing keys with a condition,
# auto mode, agent destination and one step, so each run records its step
# as pending (no agent loop attached) and nothing is delivered.

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

URL=${FANIN_TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
COUNT=${COUNT:-50000}
PREFETCH=${PREFETCH:-256}
IDLE_SECS=${IDLE_SECS:-5}
RUN=fanin-bench-$$-$RANDOM
EXCHANGE=$RUN
LOAD=$EXAMPLES/amqp_load

for tool in curl jq; do command -v $tool >/dev/null || die "$tool is needed"; done
build --example amqp_load
machine
echo "broker: $(sed 's#//[^@]*@#//#' <<<"$URL")   exchange: $EXCHANGE   queues: $RUN-bare, $RUN-fanin"
# Whatever happens, the broker keeps nothing of the run.
trap '"$LOAD" delete "$URL" "$EXCHANGE" "$RUN-bare" "$RUN-fanin" >/dev/null 2>&1 || true; cleanup' EXIT

kv() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$2"; }

# ---- the bare consumer ------------------------------------------------------
say "bare consumer (prefetch $PREFETCH, one ack per delivery, no store)"
pub=$("$LOAD" publish "$URL" "$EXCHANGE" "$RUN-bare" "$RUN.bare" "$COUNT")
echo "publisher: $pub"
start bare "$LOAD" consume "$URL" "$RUN-bare" "$COUNT" "$PREFETCH" "$IDLE_SECS"
bare_pid=$PID
while kill -0 "$bare_pid" 2>/dev/null; do sleep 0.2; done
bare=$(grep -m1 'received=' "$WORK/bare.out" | cut -d' ' -f2-) || die "the bare consumer failed: $(cat "$WORK/bare.err")"
echo "bare consumer: $bare"
[[ $(kv received "$bare") == "$COUNT" ]] || echo "  the bare consumer got $(kv received "$bare") of $COUNT"

# ---- fanin ------------------------------------------------------------------
say "fanin (prefetch $PREFETCH)"
# Published before fanin starts: fanin drains a full queue, as the bare
# consumer did.
pub=$("$LOAD" publish "$URL" "$EXCHANGE" "$RUN-fanin" "$RUN.fanin" "$COUNT")
echo "publisher: $pub"
dir=$(new_config amqp '' "[channels_config.amqp]
url = \"$URL\"
exchange = \"$EXCHANGE\"
queue = \"$RUN-fanin\"
bindings = [\"$RUN.fanin.#\"]
prefetch = $PREFETCH")
mkdir -p "$dir/sops/bench-amqp"
cat >"$dir/sops/bench-amqp/SOP.toml" <<EOF
[sop]
name = "bench-amqp"
description = "AMQP ingest benchmark: every message starts a run"
execution_mode = "auto"
max_concurrent = 1000000
destination = "agent"

[[triggers]]
type = "amqp"
routing_key = "$RUN.fanin.*.alert"
condition = "\$.severity >= 2"

[[steps]]
title = "Look"
body = "Look at the reading."
EOF
start fanin "$FANIN" daemon --config "$dir/config.toml"
fanin_pid=$PID
addr=$(listen_addr fanin)
for i in $(seq 1 100); do
    curl -sf "http://$addr/ready" >/dev/null && break
    sleep 0.1
done
curl -sf "http://$addr/ready" >/dev/null || die "fanin is not ready (AMQP source down?): $(curl -s "http://$addr/ready")"

wait_runs_started "$addr" "$COUNT" "$IDLE_SECS"
metrics=$(curl -sf "http://$addr/metrics")
echo "fanin /metrics: $(grep -E '^fanin_(source_events_total\{source="amqp"|amqp_dispatch_failures_total|events_refused_total)' <<<"$metrics" | tr '\n' ' ')"
echo "fanin RSS: $(rss_mb "$fanin_pid") MB"
stop "$fanin_pid"

# The runs in the store, as "count first_start last_start" (epoch seconds).
read -r runs first lastrun <<<"$("$FANIN" runs list --json --sop bench-amqp --limit 0 --config "$dir/config.toml" | jq -r '
    def epoch: (.[0:19] + "Z" | fromdateiso8601) + ((.[19:] | ltrimstr(".") | rtrimstr("Z")) as $f
        | if $f == "" then 0 else ("0." + $f | tonumber) end);
    [.runs[].started_at | epoch]
    | "\(length) \(min // 0) \(max // 0)"')"
sustained=$(awk -v c="$runs" -v a="$first" -v b="$lastrun" 'BEGIN {printf "%.0f", (b > a) ? (c - 1) / (b - a) : 0}')
drain=$(awk -v a="$first" -v b="$lastrun" 'BEGIN {printf "%.3f", b - a}')
echo "fanin: runs=$runs of $COUNT seconds=$drain rate=$sustained"

say "results ($COUNT persistent messages, prefetch $PREFETCH)"
echo "bare consumer: $(kv rate "$bare") msg/s acked"
echo "fanin:         $sustained runs/s durable ($runs of $COUNT runs in the store)"
[[ $runs == "$COUNT" ]] || echo "  LOSS OR DUPLICATES: $runs runs for $COUNT messages"
if (($(kv rate "$bare") > 0)); then
    awk -v a="$sustained" -v b="$(kv rate "$bare")" 'BEGIN {printf "fanin / bare consumer: %.1f %%\n", 100 * a / b}'
fi
