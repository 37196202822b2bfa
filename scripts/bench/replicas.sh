#!/usr/bin/env bash
# Replicas on PostgreSQL (BENCHMARKS.md): webhook accept on the SQLite
# store, on PostgreSQL with one daemon, and on PostgreSQL with REPLICAS
# replicas (`[cluster]`) sharing it, in the same run: the same SOP, the same
# load (wrk, CONNECTIONS in all, split evenly over the daemons, one wrk per
# daemon), then the CPU each took per accepted request, fanin's processes'
# and the PostgreSQL server's, and the check that every accepted request
# has its run in the store.
#
#   scripts/bench/replicas.sh           from the repository root
#
# The SOP is webhook.sh's (auto, max_concurrent = 100000, agent destination,
# one step, no agent loop attached): accept → match → admit → durable commit
# → reply. With replicas each admission holds the SOP in the store (see
# docs/cluster.md, "Admission"), so this is the worst case for them: every
# request is for one SOP.
#
# PostgreSQL: FANIN_BENCH_POSTGRES_URL, else FANIN_TEST_POSTGRES_URL, else
# postgres://postgres@127.0.0.1:5432/test; each scenario gets a schema of
# its own, dropped at the end. The server's CPU is every `postgres` process
# on this machine, so the figure is only meaningful on a quiet server.
#
# Knobs (environment): DURATION (s, default 10), CONNECTIONS (30), REPLICAS
# (3), FANIN_BENCH_KEEP=1 keeps the work directory and logs.

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-30}
REPLICAS=${REPLICAS:-3}
PG_URL=${FANIN_BENCH_POSTGRES_URL:-${FANIN_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}}
LUA=$ROOT/scripts/bench/webhook.lua
SCHEMAS=()

if ! command -v wrk >/dev/null; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        say "installing wrk (Debian package)"
        apt-get install -y -qq wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
    else
        die "wrk is needed: apt-get install wrk"
    fi
fi
for tool in curl jq psql; do command -v $tool >/dev/null || die "$tool is needed"; done

drop_schemas() {
    local schema
    for schema in "${SCHEMAS[@]}"; do
        psql -q "$PG_URL" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
    done
}
trap 'cleanup; drop_schemas' EXIT

build
machine
psql -qAt "$PG_URL" -c 'SELECT version()' | sed 's/^/postgres: /'

# new_schema NAME: a fresh schema; prints the store URL that uses it.
new_schema() {
    local schema="fanin_bench_$$_$1"
    psql -q "$PG_URL" -c "CREATE SCHEMA $schema" >/dev/null
    SCHEMAS+=("$schema")
    local separator='?'
    [[ $PG_URL == *\?* ]] && separator='&'
    echo "$PG_URL${separator}options=-csearch_path%3D$schema"
}

# config NAME STORE_URL CLUSTER_TABLE: a config directory with the SOP.
config() {
    local dir
    dir=$(new_config "$1" 'require_pairing = true
webhook_rate_limit_per_minute = 0' "$3")
    sed -i "s|^url = .*|url = \"$2\"|" "$dir/config.toml"
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
    echo "$dir"
}

postgres_ticks() {
    local pid sum=0
    for pid in $(pgrep -x postgres); do
        sum=$((sum + $(cpu_ticks "$pid" 2>/dev/null || echo 0)))
    done
    echo $sum
}

# scenario NAME STORE_URL DAEMONS: starts DAEMONS daemons on the store
# (replicas when more than one), loads them together, prints one line.
scenario() {
    local name=$1 url=$2 daemons=$3 i dirs=() pids=() addrs=()
    for i in $(seq 1 "$daemons"); do
        local cluster=''
        ((daemons > 1)) && cluster="[cluster]
node_id = \"r$i\""
        dirs+=("$(config "$name-r$i" "$url" "$cluster")")
    done
    for i in $(seq 0 $((daemons - 1))); do
        # Every replica reads the first one's pairing key.
        ((i > 0)) && install -m 600 "${dirs[0]}/pairing.key" "${dirs[$i]}/pairing.key"
        start "$name-r$i" "$FANIN" daemon --config "${dirs[$i]}/config.toml"
        pids+=("$PID")
        addrs+=("$(listen_addr "$name-r$i")")
    done
    local code token
    code=$(grep -m1 'Pairing code: ' "$WORK/$name-r0.out" | sed 's/.*Pairing code: //')
    token=$(curl -sf -X POST -H "X-Pairing-Code: $code" "http://${addrs[0]}/pair" | jq -r .token)
    [[ $token == fanin_* ]] || die "$name: pairing failed"

    local fanin_before=0 pg_before pid
    for pid in "${pids[@]}"; do fanin_before=$((fanin_before + $(cpu_ticks "$pid"))); done
    pg_before=$(postgres_ticks)
    say "$name: wrk -c$((CONNECTIONS / daemons)) -d${DURATION}s on each of $daemons daemon(s)"
    local loads=()
    for i in $(seq 0 $((daemons - 1))); do
        wrk -t1 -c$((CONNECTIONS / daemons)) -d"${DURATION}s" --timeout 10s -s "$LUA" \
            "http://${addrs[$i]}/sop/bench" -- "$token" "$name-$i-$$" >"$WORK/$name-$i.wrk" &
        loads+=($!)
    done
    for pid in "${loads[@]}"; do wait "$pid"; done
    local fanin_after=0 pg_after
    for pid in "${pids[@]}"; do fanin_after=$((fanin_after + $(cpu_ticks "$pid"))); done
    pg_after=$(postgres_ticks)
    sleep 2 # requests wrk cut off at its stop finish their commit

    local rps=0 ok=0 other=0 p99=0 f
    for i in $(seq 0 $((daemons - 1))); do
        f=$(grep '^RESULT' "$WORK/$name-$i.wrk")
        rps=$(awk -v a="$rps" -v b="$(sed -n 's/.* rps=\([^ ]*\).*/\1/p' <<<"$f")" 'BEGIN {print a + b}')
        ok=$((ok + $(sed -n 's/.* ok=\([^ ]*\).*/\1/p' <<<"$f")))
        other=$((other + $(sed -n 's/.* other=\([^ ]*\).*/\1/p' <<<"$f")))
        p99=$(awk -v a="$p99" -v b="$(sed -n 's/.* p99_ms=\([^ ]*\).*/\1/p' <<<"$f")" 'BEGIN {print (b > a) ? b : a}')
    done
    local stored hz
    stored=$(runs_in_store "${dirs[0]}/config.toml")
    hz=$(getconf CLK_TCK)
    printf '%-14s %10.0f %8s %8s %12.0f %12.0f %10s\n' "$name" "$rps" "$p99" "$other" \
        "$(awk -v t=$((fanin_after - fanin_before)) -v n="$ok" -v hz="$hz" 'BEGIN {print t * 1e6 / hz / n}')" \
        "$(awk -v t=$((pg_after - pg_before)) -v n="$ok" -v hz="$hz" 'BEGIN {print t * 1e6 / hz / n}')" \
        "$stored/$ok" | tee -a "$WORK/results"
    for pid in "${pids[@]}"; do stop "$pid"; done
    if ((stored < ok)); then
        echo "FAIL: $name: $((ok - stored)) accepted requests have no run in the store"
        exit 1
    fi
}

: >"$WORK/results"
header=$(printf '%-14s %10s %8s %8s %12s %12s %10s' scenario 'req/s' 'p99 ms' 'non-200' 'fanin µs/req' 'pg µs/req' 'runs/200s')
scenario sqlite "sqlite://data/fanin.db" 1
scenario postgres-1 "$(new_schema one)" 1
scenario "postgres-$REPLICAS" "$(new_schema many)" "$REPLICAS"

say "results ($CONNECTIONS connections in all, ${DURATION}s each)"
echo "$header"
cat "$WORK/results"
