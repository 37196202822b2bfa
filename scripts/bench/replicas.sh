#!/usr/bin/env bash
# Replicas on PostgreSQL (BENCHMARKS.md): webhook accept and MQTT ingest
# on the SQLite store, on PostgreSQL with one daemon, and on PostgreSQL with
# REPLICAS replicas (`[cluster]`) sharing it, in the same run, with the CPU
# per run of fanin's processes and of the PostgreSQL server, and the check
# that every accepted request and every matching message has its run.
#
#   scripts/bench/replicas.sh           from the repository root
#
# Webhooks: webhook.sh's SOP (auto, agent destination, one step, no agent
# loop attached: accept → match → admit → durable commit → reply) and its
# wrk script, CONNECTIONS in all split evenly over the daemons, one wrk per
# daemon, for DURATION seconds. Every request is for one SOP, the worst
# case for replicas: they admit one SOP's runs one replica at a time (see
# docs/cluster.md, "Admission").
#
# MQTT: MQTT_MESSAGES QoS 1 messages offered at MQTT_RATE msg/s by
# examples/mqtt_load (every second one matches the SOP's condition), to one
# daemon, or to the replicas in one shared subscription group; runs/s is
# sustained from the first run's start to the last's. Broker:
# FANIN_TEST_MQTT_URL, else mqtt://127.0.0.1:1883.
#
# PostgreSQL: FANIN_BENCH_POSTGRES_URL, else FANIN_TEST_POSTGRES_URL, else
# postgres://postgres@127.0.0.1:5432/test; each scenario gets a schema of
# its own, dropped at the end. The server's CPU is every `postgres` process
# on this machine, so the figure is only meaningful on a quiet server.
#
# Knobs (environment): DURATION (s, default 10), CONNECTIONS (30), REPLICAS
# (3), MQTT_MESSAGES (40000), MQTT_RATE (10000), FANIN_BENCH_KEEP=1 keeps the
# work directory and logs.

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-30}
REPLICAS=${REPLICAS:-3}
PG_URL=${FANIN_BENCH_POSTGRES_URL:-${FANIN_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}}
MQTT_URL=${FANIN_TEST_MQTT_URL:-mqtt://127.0.0.1:1883}
MQTT_MESSAGES=${MQTT_MESSAGES:-40000}
MQTT_RATE=${MQTT_RATE:-10000}
MQTT_PREFIX=fanin-bench/$$-$RANDOM
LUA=$ROOT/scripts/bench/webhook.lua
SCHEMAS=()

need_wrk
for tool in curl jq psql; do command -v $tool >/dev/null || die "$tool is needed"; done

drop_schemas() {
    local schema
    for schema in "${SCHEMAS[@]}"; do
        psql -q "$PG_URL" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
    done
}
trap 'cleanup; drop_schemas' EXIT

build --example mqtt_load
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

# config NAME STORE_URL REST TOPICS: a config directory with the two SOPs:
# webhook.sh's, and one MQTT trigger under TOPICS with mqtt_ingest.sh's
# condition (every second message of mqtt_load matches).
config() {
    local dir
    dir=$(new_config "$1" 'require_pairing = true
webhook_rate_limit_per_minute = 0' "$3")
    sed -i "s|^url = .*|url = \"$2\"|" "$dir/config.toml"
    mkdir -p "$dir/sops/bench-webhook" "$dir/sops/bench-mqtt"
    cat >"$dir/sops/bench-webhook/SOP.toml" <<'EOF'
[sop]
name = "bench-webhook"
description = "Webhook benchmark: every request starts a run"
execution_mode = "auto"
max_concurrent = 1000000
admission_policy = "parallel"
destination = "agent"

[[triggers]]
type = "webhook"
path = "/sop/bench"

[[steps]]
title = "Look"
body = "Look at the event."
EOF
    cat >"$dir/sops/bench-mqtt/SOP.toml" <<EOF
[sop]
name = "bench-mqtt"
description = "MQTT ingest benchmark: every matching message starts a run"
execution_mode = "auto"
max_concurrent = 1000000
destination = "agent"

[[triggers]]
type = "mqtt"
topic = "$4/+/+/alert"
condition = "\$.severity >= 2"

[[steps]]
title = "Look"
body = "Look at the reading."
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

# cpu_of PIDS...: their CPU ticks so far, and the PostgreSQL server's.
cpu_of() {
    local sum=0 pid
    for pid in "$@"; do sum=$((sum + $(cpu_ticks "$pid"))); done
    echo "$sum $(postgres_ticks)"
}

# per_run BEFORE AFTER N: "fanin_µs pg_µs", the CPU per run between two cpu_of.
per_run() {
    local hz
    hz=$(getconf CLK_TCK)
    awk -v b="$1" -v a="$2" -v n="$3" -v hz="$hz" 'BEGIN {
        split(b, x, " "); split(a, y, " ")
        if (n == 0) n = 1
        printf "%.0f %.0f", (y[1] - x[1]) * 1e6 / hz / n, (y[2] - x[2]) * 1e6 / hz / n }'
}

# webhook_load NAME TOKEN ADDR...: wrk on every daemon at once; prints
# "req/s p99_ms non-200 ok" over all of them.
webhook_load() {
    local name=$1 token=$2 pid i=0 loads=()
    shift 2
    local daemons=$#
    say "$name webhooks: wrk -c$((CONNECTIONS / daemons)) -d${DURATION}s on each of $daemons daemon(s)" >&2
    for addr in "$@"; do
        wrk -t1 -c$((CONNECTIONS / daemons)) -d"${DURATION}s" --timeout 10s -s "$LUA" \
            "http://$addr/sop/bench" -- "$token" "$name-$i-$$" >"$WORK/$name-$i.wrk" &
        loads+=($!)
        i=$((i + 1))
    done
    for pid in "${loads[@]}"; do wait "$pid"; done
    local rps=0 ok=0 other=0 p99=0 f
    for i in $(seq 0 $((daemons - 1))); do
        f=$(grep '^RESULT' "$WORK/$name-$i.wrk")
        rps=$(awk -v a="$rps" -v b="$(sed -n 's/.* rps=\([^ ]*\).*/\1/p' <<<"$f")" 'BEGIN {print a + b}')
        ok=$((ok + $(sed -n 's/.* ok=\([^ ]*\).*/\1/p' <<<"$f")))
        other=$((other + $(sed -n 's/.* other=\([^ ]*\).*/\1/p' <<<"$f")))
        p99=$(awk -v a="$p99" -v b="$(sed -n 's/.* p99_ms=\([^ ]*\).*/\1/p' <<<"$f")" 'BEGIN {print (b > a) ? b : a}')
    done
    echo "$rps $p99 $other $ok"
}

# store_runs CONFIG PREFIX: "count first_start last_start" (epoch seconds)
# of the runs whose topic starts with PREFIX.
store_runs() {
    "$FANIN" runs list --json --limit 0 --config "$1" | jq -r --arg p "$2" '
        def epoch: (.[0:19] + "Z" | fromdateiso8601) + ((.[19:] | ltrimstr(".") | rtrimstr("Z")) as $f
            | if $f == "" then 0 else ("0." + $f | tonumber) end);
        [.runs[] | select(.topic | startswith($p)) | .started_at | epoch]
        | "\(length) \(min // 0) \(max // 0)"'
}

# result NAME LOAD RATE P99 NON200 CPU COUNTS: one line of the results table.
result() {
    printf '%-14s %-8s %10.0f %8s %8s %7s %7s %14s\n' "$1" "$2" "$3" "$4" "$5" $6 "$7" | tee -a "$WORK/results"
}

# scenario NAME STORE_URL DAEMONS: starts DAEMONS daemons on the store
# (replicas, in one shared MQTT group, when more than one), loads them with
# webhooks, then with MQTT messages, and prints a line for each.
scenario() {
    local name=$1 url=$2 daemons=$3 i dirs=() pids=() addrs=()
    local topics="$MQTT_PREFIX/$name"
    for i in $(seq 1 "$daemons"); do
        local rest="[channels_config.mqtt]
broker_url = \"$MQTT_URL\"
client_id = \"fanin-bench-$$-$name\"
topics = [\"$topics/#\"]
qos = 1
clean_session = true"
        ((daemons > 1)) && rest="$rest
shared_group = \"bench\"

[cluster]
node_id = \"r$i\""
        dirs+=("$(config "$name-r$i" "$url" "$rest" "$topics")")
    done
    for i in $(seq 0 $((daemons - 1))); do
        # Every replica reads the first one's pairing key.
        ((i > 0)) && install -m 600 "${dirs[0]}/pairing.key" "${dirs[$i]}/pairing.key"
        start "$name-r$i" "$FANIN" daemon --config "${dirs[$i]}/config.toml"
        pids+=("$PID")
        addrs+=("$(listen_addr "$name-r$i")")
    done
    local code token addr
    code=$(grep -m1 'Pairing code: ' "$WORK/$name-r0.out" | sed 's/.*Pairing code: //')
    token=$(curl -sf -X POST -H "X-Pairing-Code: $code" "http://${addrs[0]}/pair" | jq -r .token)
    [[ $token == fanin_* ]] || die "$name: pairing failed"
    for addr in "${addrs[@]}"; do
        for i in $(seq 1 100); do
            curl -sf "http://$addr/ready" >/dev/null && break
            sleep 0.1
        done
        curl -sf "http://$addr/ready" >/dev/null || die "$name: not ready: $(curl -s "http://$addr/ready")"
    done

    local before after rps p99 other ok stored
    before=$(cpu_of "${pids[@]}")
    read -r rps p99 other ok <<<"$(webhook_load "$name" "$token" "${addrs[@]}")"
    after=$(cpu_of "${pids[@]}")
    sleep 2 # requests wrk cut off at its stop finish their commit
    stored=$(store_runs "${dirs[0]}/config.toml" /sop/bench | cut -d' ' -f1)
    result "$name" webhook "$rps" "$p99" "$other" "$(per_run "$before" "$after" "$ok")" "$stored/$ok"
    ((stored >= ok)) || die "$name: $((ok - stored)) accepted requests have no run in the store"

    say "$name MQTT: $MQTT_MESSAGES QoS 1 messages offered at $MQTT_RATE msg/s"
    local pub matching count=0 first=0 last=0 seen=-1 same=0
    before=$(cpu_of "${pids[@]}")
    pub=$("$EXAMPLES/mqtt_load" publish "$MQTT_URL" "$topics/m" "$MQTT_MESSAGES" "$MQTT_RATE")
    echo "publisher: $pub"
    matching=$(sed -n 's/.*matching=\([0-9]*\).*/\1/p' <<<"$pub")
    while :; do
        read -r count first last <<<"$(store_runs "${dirs[0]}/config.toml" "$topics/")"
        [[ $count == "$matching" ]] && break
        if [[ $count == "$seen" ]]; then
            same=$((same + 1))
            ((same >= 5)) && break
        else
            same=0
        fi
        seen=$count
        sleep 1
    done
    after=$(cpu_of "${pids[@]}")
    result "$name" mqtt "$(awk -v c="$count" -v a="$first" -v b="$last" 'BEGIN {print (b > a) ? (c - 1) / (b - a) : 0}')" \
        - - "$(per_run "$before" "$after" "$count")" "$count/$matching"
    for pid in "${pids[@]}"; do stop "$pid"; done
    # A loss is the broker's (it drops QoS 1 messages past its queue for a
    # subscriber that does not keep up): said, and the other scenarios run.
    ((count == matching)) || echo "LOSS: $name: $((matching - count)) matching messages without a run" |
        tee -a "$WORK/losses"
}

: >"$WORK/results"
scenario sqlite "sqlite://data/fanin.db" 1
scenario postgres-1 "$(new_schema one)" 1
scenario "postgres-$REPLICAS" "$(new_schema many)" "$REPLICAS"

say "results (webhooks: $CONNECTIONS connections in all, ${DURATION}s; MQTT: $MQTT_MESSAGES messages at $MQTT_RATE msg/s)"
printf '%-14s %-8s %10s %8s %8s %7s %7s %14s\n' scenario load 'runs/s' 'p99 ms' 'non-200' 'fanin' 'pg' 'runs/sent'
printf '%-14s %-8s %10s %8s %8s %7s %7s %14s\n' '' '' '' '' '' 'µs/run' 'µs/run' ''
cat "$WORK/results"
if [[ -s $WORK/losses ]]; then
    cat "$WORK/losses"
    exit 1
fi
