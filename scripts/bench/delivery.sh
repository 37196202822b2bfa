#!/usr/bin/env bash
# Delivery end to end (BENCHMARKS.md): webhooks accepted by a
# release `fanin daemon`, each starting a run whose one envelope the outbox
# worker delivers to a local sink, against the floor forwarder measured in
# the same run (examples/forward.rs: take a request, POST its body to the
# same sink, answer). The sink is the floor server (examples/floor.rs),
# which counts what it answered (`GET /count`), so both are metered at the
# same place.
#
#   scripts/bench/delivery.sh            from the repository root
#
# fanin's config: pairing on with one token paired through POST /pair with
# the printed code, webhook_rate_limit_per_minute = 0, the default durable
# SQLite store (WAL, synchronous = FULL), default [delivery], and one
# webhook SOP in `auto` mode with max_concurrent = 10000000, destination
# agent and no steps, so every run is one legacy envelope to
# [destinations.agent] = the sink. The measured path is accept → match →
# admit → commit (run + envelope) → reply, then read → POST → commit
# (delivered, run completed), all on the same two cores as wrk and the sink.
#
# Figures: fanin's accepted requests/s (wrk), envelopes delivered per second
# while wrk runs (sink count over wrk's duration), and the whole: accepted
# runs ÷ time from wrk's start to the last envelope's arrival. The check:
# every accepted request's envelope reached the sink and its run completed.
#
# DESTINATION chooses the case: "sink" (default) as above; "none", no
# destination configured, so envelopes wait in the outbox (what intake
# costs with nothing delivered, and how much it logs); "later", none during
# the load, then fanin restarts with the sink configured and the worker
# drains the backlog alone (envelopes/s and fanin CPU per envelope).
#
# Knobs (environment): DESTINATION (sink), DURATION (s, default 10),
# CONNECTIONS (32), THREADS (wrk threads, 2), FANIN_BIN (another fanin
# binary, e.g. an older build, instead of this tree's), FANIN_BENCH_KEEP=1
# keeps the work directory.

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DESTINATION=${DESTINATION:-sink}
[[ $DESTINATION =~ ^(sink|none|later)$ ]] || die "DESTINATION must be sink, none or later, not $DESTINATION"
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
LUA=$ROOT/scripts/bench/webhook.lua

need_wrk
for tool in curl jq; do command -v $tool >/dev/null || die "$tool is needed"; done

build --example floor --example forward
FANIN=${FANIN_BIN:-$FANIN}
machine
echo "fanin binary: $FANIN"

sink_count() { curl -sf "http://$sink_addr/count"; }

# load NAME URL TOKEN: one wrk run; keeps its RESULT line; sets LOAD_FROM
# and LOAD_TO (sink counts just before and after).
load() {
    say "$1: wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s POST $2"
    LOAD_FROM=$(sink_count)
    LOAD_AT=$EPOCHREALTIME
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --timeout 10s -s "$LUA" "$2" -- "$3" "$1-$$" |
        tee "$WORK/$1.wrk"
    LOAD_TO=$(sink_count)
    grep '^RESULT' "$WORK/$1.wrk" >"$WORK/$1.result"
}
field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" "$WORK/$1.result"; }
per_second() { awk -v n="$1" -v s="$2" 'BEGIN {printf "%.0f", n / s}'; }

say "starting the sink and the floor forwarder"
start sink "$EXAMPLES/floor"
sink_addr=$(listen_addr sink)
start forward "$EXAMPLES/forward" "http://$sink_addr/in"
forward_pid=$PID
forward_addr=$(listen_addr forward)
echo "sink: http://$sink_addr   forwarder: http://$forward_addr (pid $forward_pid)"

if [[ $DESTINATION == sink ]]; then
    load forward "http://$forward_addr/sop/bench" -
    forward_seconds=$(field forward seconds)
    forwarded=$((LOAD_TO - LOAD_FROM))
    forward_rate=$(per_second "$forwarded" "$forward_seconds")
fi
stop "$forward_pid"
sleep 2

destination_block="[destinations.agent]
url = \"http://$sink_addr/in\""
dir=$(new_config delivery 'require_pairing = true
webhook_rate_limit_per_minute = 0' "$([[ $DESTINATION == sink ]] && echo "$destination_block")")
mkdir -p "$dir/sops/bench-delivery"
cat >"$dir/sops/bench-delivery/SOP.toml" <<'EOT'
[sop]
name = "bench-delivery"
description = "Delivery benchmark: every request starts a run delivered as one envelope"
execution_mode = "auto"
max_concurrent = 10000000
admission_policy = "parallel"
destination = "agent"

[[triggers]]
type = "webhook"
path = "/sop/bench"
EOT

# undelivered_case none|later: the load ran with no destination; every
# accepted request must have its run and its envelope waiting. "later" then
# restarts fanin with the sink configured and times the drain.
undelivered_case() {
    local clk ok runs waiting lines us
    clk=$(getconf CLK_TCK)
    ok=$(field fanin ok)
    runs=$("$FANIN" runs list --json --limit 0 --config "$dir/config.toml" | jq '.runs | length')
    waiting=$("$FANIN" outbox list --status pending --json --limit 0 --config "$dir/config.toml" | jq '.outbox | length')
    lines=$(cat "$WORK/fanin.out" "$WORK/fanin.err" | wc -l)
    us=$(awk -v t="$((cpu_after - cpu_before))" -v c="$clk" -v n="$ok" 'BEGIN {printf "%.0f", t / c * 1e6 / n}')
    say "results, no destination during the load ($CONNECTIONS connections, ${DURATION}s)"
    printf '%-22s %10s %10s %10s\n' '' 'req/s' 'p50 ms' 'p99 ms'
    printf '%-22s %10s %10s %10s\n' 'fanin accepted' "$(field fanin rps)" "$(field fanin p50_ms)" \
        "$(field fanin p99_ms)"
    echo "fanin CPU per accepted request: $us µs; log lines written: $lines"
    echo "fanin: 200 answers counted by wrk: $ok; runs in the store: $runs; envelopes waiting: $waiting"
    ((runs > ok && waiting > ok)) || { echo "FAIL: accepted requests without their run or envelope"; exit 1; }
    [[ $1 == later ]] || { echo "OK: every accepted request has its run and its envelope waiting"; return; }

    stop "$fanin_pid"
    echo "$destination_block" >>"$dir/config.toml"
    local base at cpu0 cpu1 ms
    base=$(sink_count)
    start fanin-later "$FANIN" daemon --config "$dir/config.toml"
    local pid=$PID
    at=$START_AT
    cpu0=0
    while (($(sink_count) < base + waiting)); do
        sleep 0.02
        kill -0 "$pid" 2>/dev/null || die "fanin stopped while draining"
    done
    ms=$(elapsed_ms "$at" "$EPOCHREALTIME")
    cpu1=$(cpu_ticks "$pid")
    us=$(awk -v t="$((cpu1 - cpu0))" -v c="$clk" -v n="$waiting" 'BEGIN {printf "%.0f", t / c * 1e6 / n}')
    say "results, the backlog drained by the worker alone"
    echo "fanin: $waiting envelopes delivered $ms ms after its start:" \
        "$(awk -v n="$waiting" -v ms="$ms" 'BEGIN {printf "%.0f", n * 1000 / ms}') envelopes/s;" \
        "fanin CPU per envelope (start-up included): $us µs"
    echo "OK: the backlog reached the sink"
}

say "starting fanin"
start fanin "$FANIN" daemon --config "$dir/config.toml"
fanin_pid=$PID
fanin_addr=$(listen_addr fanin)
code=$(grep -m1 'Pairing code: ' "$WORK/fanin.out" | sed 's/.*Pairing code: //')
[[ -n $code ]] || die "fanin printed no pairing code"
token=$(curl -sf -X POST -H "X-Pairing-Code: $code" "http://$fanin_addr/pair" | jq -r .token)
[[ $token == fanin_* ]] || die "pairing failed"
before_smoke=$(sink_count)
smoke=$(curl -sf -X POST -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -H 'X-Idempotency-Key: smoke' -d '{"kind":"smoke"}' "http://$fanin_addr/sop/bench")
[[ $(jq -r '.runs[0].outcome' <<<"$smoke") == started ]] || die "the smoke request started no run: $smoke"
if [[ $DESTINATION != sink ]]; then
    cpu_before=$(cpu_ticks "$fanin_pid")
    load fanin "http://$fanin_addr/sop/bench" "$token"
    cpu_after=$(cpu_ticks "$fanin_pid")
    undelivered_case "$DESTINATION"
    exit 0
fi
for _ in $(seq 1 500); do
    (($(sink_count) > before_smoke)) && break
    sleep 0.01
done
(($(sink_count) > before_smoke)) || die "the smoke run's envelope never reached the sink"
echo "fanin: http://$fanin_addr (pid $fanin_pid); the smoke run's envelope arrived"

cpu_before=$(cpu_ticks "$fanin_pid")
load fanin "http://$fanin_addr/sop/bench" "$token"
fanin_seconds=$(field fanin seconds)
delivered_during=$((LOAD_TO - LOAD_FROM))
ok=$(field fanin ok)

# The backlog left when wrk stopped drains; wait for the sink to stop
# counting (2 s without a new arrival), remembering when the last came.
last=$LOAD_TO
last_at=$EPOCHREALTIME
quiet_since=$EPOCHREALTIME
while true; do
    sleep 0.05
    now=$(sink_count)
    if ((now != last)); then
        last=$now
        last_at=$EPOCHREALTIME
        quiet_since=$EPOCHREALTIME
    elif (($(elapsed_ms "$quiet_since" "$EPOCHREALTIME") > 2000)); then
        break
    fi
done
cpu_after=$(cpu_ticks "$fanin_pid")
delivered=$((last - LOAD_FROM))
whole_ms=$(elapsed_ms "$LOAD_AT" "$last_at")

completed=$("$FANIN" runs list --json --limit 0 --config "$dir/config.toml" |
    jq '[.runs[] | select(.status == "completed")] | length')
completed=$((completed - 1)) # the smoke run
pending=$("$FANIN" outbox list --status pending --json --config "$dir/config.toml" | jq '.outbox | length')
clk=$(getconf CLK_TCK)
cpu_us=$(awk -v t="$((cpu_after - cpu_before))" -v c="$clk" -v n="$delivered" 'BEGIN {printf "%.0f", t / c * 1e6 / n}')

say "results ($CONNECTIONS connections, ${DURATION}s each)"
printf '%-22s %10s %10s %10s\n' '' 'req/s' 'p50 ms' 'p99 ms'
printf '%-22s %10s %10s %10s\n' 'forwarder accepted' "$(field forward rps)" "$(field forward p50_ms)" \
    "$(field forward p99_ms)"
printf '%-22s %10s %10s %10s\n' 'fanin accepted' "$(field fanin rps)" "$(field fanin p50_ms)" \
    "$(field fanin p99_ms)"
echo "forwarder: $forward_rate delivered/s ($forwarded at the sink in ${forward_seconds}s, non-200: $(field forward other))"
during_rate=$(per_second "$delivered_during" "$fanin_seconds")
whole_rate=$(awk -v n="$delivered" -v ms="$whole_ms" 'BEGIN {printf "%.0f", n * 1000 / ms}')
echo "fanin: $during_rate delivered/s while loaded ($delivered_during in ${fanin_seconds}s);" \
    "all $delivered delivered $whole_ms ms after the load began: $whole_rate delivered/s"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", 100 * a / b}'; }
echo "fanin / forwarder, delivered/s: while loaded $(ratio "$during_rate" "$forward_rate") %," \
    "whole $(ratio "$whole_rate" "$forward_rate") %"
echo "fanin CPU per delivered envelope (accept + delivery): $cpu_us µs"
echo "fanin: 200 answers counted by wrk: $ok; envelopes at the sink: $delivered; runs completed: $completed;" \
    "entries still pending: $pending"
if ((delivered < ok || completed < ok)); then
    echo "FAIL: $((ok - delivered)) accepted requests' envelopes did not arrive, or runs did not complete"
    exit 1
fi
echo "OK: every accepted request's envelope arrived and its run completed"
