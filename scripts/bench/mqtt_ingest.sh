#!/usr/bin/env bash
# MQTT ingest (BENCHMARKS.md): against the real broker, a publisher
# at fixed rates (QoS 1, JSON payloads, every second message matching
# `$.severity >= 2`), first to a bare rumqttc subscriber that only counts
# (the broker's own ceiling on this machine), then to fanin. For each it
# finds the highest offered rate with no message lost; for fanin "not lost"
# means a run in the store for every matching message.
#
#   scripts/bench/mqtt_ingest.sh        from the repository root
#
# fanin speaks PROTOCOL (default 5, its own default; or 3.1.1). The bare
# subscriber always speaks 5 with fanin's Receive Maximum: RECEIVE_MAXIMUM
# when set (fanin's `receive_maximum`), else fanin's default.
#
# Broker: FANIN_TEST_MQTT_URL, else mqtt://127.0.0.1:1883 (plaintext). All
# topics are under a prefix unique to the run and every client uses a clean
# session, so nothing is left on the broker.
#
# Rates tried in order, stopping at the first with a loss: RATES (messages/s,
# default "1000 2000 5000 10000 15000 20000 30000 40000"); each step publishes
# STEP_SECONDS (default 3) worth of messages. Sustained rates are measured,
# not assumed: the subscriber's from its first to its last message, fanin's
# from the start times of the step's first and last runs.
#
# fanin's SOP: one MQTT trigger on the step topics with the condition, auto
# mode, agent destination and one step, so each run records its step as
# pending (no agent loop attached) and nothing is delivered.

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

URL=${FANIN_TEST_MQTT_URL:-mqtt://127.0.0.1:1883}
PROTOCOL=${PROTOCOL:-5}
RECEIVE_MAXIMUM=${RECEIVE_MAXIMUM:-}
RATES=${RATES:-1000 2000 5000 10000 15000 20000 30000 40000}
STEP_SECONDS=${STEP_SECONDS:-3}
IDLE_SECS=${IDLE_SECS:-3}
PREFIX=fanin-bench/$$-$RANDOM
LOAD=$EXAMPLES/mqtt_load

for tool in curl jq; do command -v $tool >/dev/null || die "$tool is needed"; done
build --example mqtt_load
machine
echo "broker: $URL   topics under: $PREFIX/"

kv() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$2"; }

# ---- the bare subscriber ----------------------------------------------------
say "bare subscriber (counts only, automatic acks)"
sub_best=0 sub_best_rate=0
for rate in $RATES; do
    n=$((rate * STEP_SECONDS))
    start "sub-$rate" "$LOAD" count "$URL" "$PREFIX/sub/r$rate/#" "$n" "$IDLE_SECS" $RECEIVE_MAXIMUM
    sub_pid=$PID
    wait_line "sub-$rate" ready 10 >/dev/null
    pub=$("$LOAD" publish "$URL" "$PREFIX/sub/r$rate" "$n" "$rate")
    while kill -0 "$sub_pid" 2>/dev/null; do sleep 0.2; done
    got=$(grep -m1 'received=' "$WORK/sub-$rate.out" | cut -d' ' -f2-)
    printf 'offered %6s msg/s: publisher %-46s subscriber %s\n' "$rate" "$pub" "$got"
    if [[ $(kv received "$got") != "$n" ]]; then
        echo "  loss at $rate msg/s: $(($n - $(kv received "$got"))) of $n messages"
        break
    fi
    sub_best=$rate sub_best_rate=$(kv rate "$got")
done

# ---- fanin ------------------------------------------------------------------
say "fanin (MQTT $PROTOCOL, receive_maximum ${RECEIVE_MAXIMUM:-default})"
dir=$(new_config mqtt '' "[channels_config.mqtt]
broker_url = \"$URL\"
client_id = \"fanin-bench-$$\"
topics = [\"$PREFIX/fanin/#\"]
qos = 1
clean_session = true
protocol = \"$PROTOCOL\"
${RECEIVE_MAXIMUM:+receive_maximum = $RECEIVE_MAXIMUM}")
mkdir -p "$dir/sops/bench-mqtt"
cat >"$dir/sops/bench-mqtt/SOP.toml" <<EOF
[sop]
name = "bench-mqtt"
description = "MQTT ingest benchmark: every matching message starts a run"
execution_mode = "auto"
max_concurrent = 100000
destination = "agent"

[[triggers]]
type = "mqtt"
topic = "$PREFIX/fanin/+/+/alert"
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
curl -sf "http://$addr/ready" >/dev/null || die "fanin is not ready (MQTT source down?): $(curl -s "http://$addr/ready")"

# step_runs RATE: the runs of one step, as "count first_start last_start" (epoch seconds).
step_runs() {
    "$FANIN" runs list --json --limit 0 --config "$dir/config.toml" | jq -r --arg p "$PREFIX/fanin/r$1/" '
        def epoch: (.[0:19] + "Z" | fromdateiso8601) + ((.[19:] | ltrimstr(".") | rtrimstr("Z")) as $f
            | if $f == "" then 0 else ("0." + $f | tonumber) end);
        [.runs[] | select(.topic | startswith($p)) | .started_at | epoch]
        | "\(length) \(min // 0) \(max // 0)"'
}

fanin_best=0 fanin_best_rate=0
for rate in $RATES; do
    n=$((rate * STEP_SECONDS))
    pub=$("$LOAD" publish "$URL" "$PREFIX/fanin/r$rate" "$n" "$rate")
    matching=$(kv matching "$pub")
    # Wait until the step's runs stop growing (or all are there).
    last=-1 same=0
    for i in $(seq 1 60); do
        read -r count first lastrun <<<"$(step_runs "$rate")"
        [[ $count == "$matching" ]] && break
        if [[ $count == "$last" ]]; then
            same=$((same + 1))
            ((same >= 3)) && break
        else
            same=0
        fi
        last=$count
        sleep 1
    done
    sustained=$(awk -v c="$count" -v a="$first" -v b="$lastrun" 'BEGIN {printf "%.0f", (b > a) ? (c - 1) / (b - a) : 0}')
    printf 'offered %6s msg/s: publisher %-46s fanin runs=%s of %s matching, %s runs/s sustained\n' \
        "$rate" "$pub" "$count" "$matching" "$sustained"
    if [[ $count != "$matching" ]]; then
        echo "  loss at $rate msg/s: $((matching - count)) matching messages without a run"
        break
    fi
    fanin_best=$rate fanin_best_rate=$sustained
done
metrics=$(curl -sf "http://$addr/metrics")
echo "fanin /metrics: $(grep -E '^fanin_mqtt_(messages|dispatch_failures)_total' <<<"$metrics" | tr '\n' ' ')"
echo "fanin RSS: $(rss_mb "$fanin_pid") MB"

say "results (QoS 1, ${STEP_SECONDS}s per step)"
echo "bare subscriber: highest lossless offered rate $sub_best msg/s (received at $sub_best_rate msg/s)"
echo "fanin:           highest lossless offered rate $fanin_best msg/s = $((fanin_best / 2)) runs/s offered (runs started at $fanin_best_rate runs/s)"
if ((sub_best > 0)); then
    awk -v a="$fanin_best" -v b="$sub_best" 'BEGIN {printf "fanin / bare subscriber (messages/s): %.1f %%\n", 100 * a / b}'
fi
