#!/usr/bin/env bash
# Webhook end to end (BENCHMARKS.md): a release `fanin daemon` and
# the floor server (examples/floor.rs: read the body, answer a fixed JSON),
# loaded in the same run by the same generator (wrk, 32 connections), then
# the check that every accepted request has its run in the store.
#
#   scripts/bench/webhook.sh            from the repository root
#
# fanin's config: pairing on with one token paired through POST /pair with
# the printed code, webhook_rate_limit_per_minute = 0, the default durable
# SQLite store (WAL, synchronous = FULL), and one webhook SOP in `auto` mode
# with max_concurrent = 100000, destination agent and one step. With no
# agent loop attached each run stays `waiting_agent` with its step pending
# (headless): the measured path is accept → match → admit → durable commit
# → reply, with no delivery traffic competing for the CPU.
#
# Knobs (environment): DURATION (s, default 10), CONNECTIONS (32), THREADS
# (wrk threads, 2), FANIN_BENCH_KEEP=1 keeps the work directory and logs.

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
LUA=$ROOT/scripts/bench/webhook.lua

need_wrk
for tool in curl jq; do command -v $tool >/dev/null || die "$tool is needed"; done

build --example floor
machine

dir=$(new_config webhook 'require_pairing = true
webhook_rate_limit_per_minute = 0' '')
mkdir -p "$dir/sops/bench-webhook"
cat >"$dir/sops/bench-webhook/SOP.toml" <<'EOF'
[sop]
name = "bench-webhook"
description = "Webhook benchmark: every request starts a run"
execution_mode = "auto"
max_concurrent = 100000
admission_policy = "parallel"
destination = "agent"

[[triggers]]
type = "webhook"
path = "/sop/bench"

[[steps]]
title = "Look"
body = "Look at the event."
EOF

say "starting fanin and the floor server"
start fanin "$FANIN" daemon --config "$dir/config.toml"
fanin_pid=$PID
fanin_addr=$(listen_addr fanin)
code=$(grep -m1 'Pairing code: ' "$WORK/fanin.out" | sed 's/.*Pairing code: //')
[[ -n $code ]] || die "fanin printed no pairing code"
token=$(curl -sf -X POST -H "X-Pairing-Code: $code" "http://$fanin_addr/pair" | jq -r .token)
[[ $token == fanin_* ]] || die "pairing failed"
smoke=$(curl -sf -X POST -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -H 'X-Idempotency-Key: smoke' -d '{"kind":"smoke"}' "http://$fanin_addr/sop/bench")
[[ $(jq -r '.runs[0].outcome' <<<"$smoke") == started ]] || die "the smoke request started no run: $smoke"

start floor "$EXAMPLES/floor"
floor_pid=$PID
floor_addr=$(listen_addr floor)
echo "fanin: http://$fanin_addr (pid $fanin_pid)   floor: http://$floor_addr (pid $floor_pid)"

# load NAME URL TOKEN: one wrk run; prints wrk's report and keeps the RESULT line.
load() {
    say "$1: wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s POST $2"
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --timeout 10s -s "$LUA" "$2" -- "$3" "$1-$$" |
        tee "$WORK/$1.wrk"
    grep '^RESULT' "$WORK/$1.wrk" >"$WORK/$1.result"
}
field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" "$WORK/$1.result"; }

load floor "http://$floor_addr/sop/bench" -
sleep 2
load fanin "http://$fanin_addr/sop/bench" "$token"
sleep 2 # let requests wrk cut off at its stop finish their commit

stored=$(runs_in_store "$dir/config.toml")
stored=$((stored - 1)) # the smoke request's run
ok=$(field fanin ok)

say "results ($CONNECTIONS connections, ${DURATION}s each)"
printf '%-6s %10s %10s %10s %10s\n' server 'req/s' 'p50 ms' 'p99 ms' 'non-200'
for s in floor fanin; do
    printf '%-6s %10s %10s %10s %10s\n' "$s" "$(field $s rps)" "$(field $s p50_ms)" "$(field $s p99_ms)" \
        "$(field $s other)"
done
ratio=$(awk -v a="$(field fanin rps)" -v b="$(field floor rps)" 'BEGIN {printf "%.1f", 100 * a / b}')
echo "fanin / floor: $ratio %"
echo "fanin: 200 answers counted by wrk: $ok (duplicates among them: $(field fanin duplicate)); runs in the store: $stored"
fanin_rss=$(rss_mb "$fanin_pid")
echo "fanin RSS after the load: $fanin_rss MB"
if ((stored < ok)); then
    echo "FAIL: $((ok - stored)) accepted requests have no run in the store"
    exit 1
fi
echo "OK: every accepted request has its run ($((stored - ok)) more runs than counted 200s: requests in flight when wrk stopped, committed but never read)"
