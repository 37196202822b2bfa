# Helpers shared by the benchmark scripts of scripts/bench/ (sourced, not
# run): where the release binaries are, building them, starting a process
# with its output timestamped, reading its memory and CPU from /proc, and
# stopping only what the script itself started.
#
# Every script works in its own temporary directory ($WORK), removed on exit
# unless FANIN_BENCH_KEEP=1 (then its path is printed, with the logs).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
FANIN=$TARGET/release/fanin
EXAMPLES=$TARGET/release/examples

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fanin-bench.XXXXXX")
STARTED_PIDS=()

cleanup() {
    local pid
    for pid in "${STARTED_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${STARTED_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ ${FANIN_BENCH_KEEP:-0} == 1 ]]; then
        echo "kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

say() { printf '\n== %s\n' "$*"; }
die() {
    echo "error: $*" >&2
    exit 1
}

# build [cargo build args...]: the release fanin binary, then whatever else
# is asked (examples) in a second build, so that the examples' dev-dependencies
# never change the features fanin itself is built with.
build() {
    say "building (release): fanin $*"
    (cd "$ROOT" && cargo build --release --quiet --bin fanin)
    if (($#)); then
        (cd "$ROOT" && cargo build --release --quiet "$@")
    fi
}

# need_wrk: wrk, installed from Debian's package when missing and root.
need_wrk() {
    command -v wrk >/dev/null && return 0
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        say "installing wrk (Debian package)"
        apt-get install -y -qq wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
    else
        die "wrk is needed: apt-get install wrk"
    fi
}

# The machine, as BENCHMARKS.md records it.
machine() {
    echo "machine: $(nproc) cores, $(free -h | awk '/^Mem:/ {print $2}') memory, $(uname -sr)"
    echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
}

# start NAME CMD...: starts CMD in the background; each line it prints goes
# to $WORK/NAME.out prefixed by the time it was read (seconds, microsecond
# resolution), stderr to $WORK/NAME.err. Sets START_AT (the time just before
# the spawn) and PID (the command's own process id).
start() {
    local name=$1
    shift
    : >"$WORK/$name.out"
    START_AT=$EPOCHREALTIME
    (
        sh -c 'echo $$ >"$1"; shift; exec "$@"' sh "$WORK/$name.pid" "$@" 2>"$WORK/$name.err" |
            while IFS= read -r line; do printf '%s %s\n' "$EPOCHREALTIME" "$line"; done >>"$WORK/$name.out"
    ) 2>/dev/null &
    local i
    for i in $(seq 1 500); do
        [[ -s $WORK/$name.pid ]] && break
        sleep 0.01
    done
    PID=$(cat "$WORK/$name.pid")
    STARTED_PIDS+=("$PID")
}

# wait_line NAME PATTERN [SECONDS]: waits until NAME printed a line holding
# PATTERN; prints that line (with its time stamp first).
wait_line() {
    local name=$1 pattern=$2 limit=${3:-60} i
    for i in $(seq 1 $((limit * 100))); do
        if grep -q -- "$pattern" "$WORK/$name.out"; then
            grep -m1 -- "$pattern" "$WORK/$name.out"
            return 0
        fi
        if ! kill -0 "$(cat "$WORK/$name.pid")" 2>/dev/null; then
            cat "$WORK/$name.err" >&2
            die "$name exited before printing '$pattern'"
        fi
        sleep 0.01
    done
    cat "$WORK/$name.err" >&2
    die "$name did not print '$pattern' within ${limit}s"
}

# stop PID: SIGTERM and wait for it.
stop() {
    kill "$1" 2>/dev/null || true
    local i
    for i in $(seq 1 500); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.01
    done
    kill -KILL "$1" 2>/dev/null || true
}

# rss_mb PID: resident set size in MB (VmRSS).
rss_mb() {
    awk '/^VmRSS:/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"
}

# cpu_ticks PID: user + system CPU time so far, in clock ticks. Fields are
# counted after the ")" that closes the command name, which may hold spaces.
cpu_ticks() {
    sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

# A config directory for the daemon: $WORK/NAME/{config.toml,sops/}.
# new_config NAME GATEWAY_EXTRA REST: writes config.toml with host
# 127.0.0.1, port 0, a durable SQLite store in the directory, and REST
# appended after the gateway table.
new_config() {
    local dir=$WORK/$1
    mkdir -p "$dir/sops"
    cat >"$dir/config.toml" <<EOF
[gateway]
host = "127.0.0.1"
port = 0
$2

[store]
url = "sqlite://data/fanin.db"

$3
EOF
    echo "$dir"
}

# The address of a "Listening on ADDR" line.
listen_addr() {
    wait_line "$1" "Listening on " "${2:-60}" | sed 's/.*Listening on //'
}

# The metric line of NAME{...quantile="Q"...} from a Prometheus text page.
quantile() {
    grep -E "^$1\{.*quantile=\"$2\"" | head -1 | awk '{print $NF}'
}

# runs_in_store CONFIG: how many runs the store holds, through the CLI.
runs_in_store() {
    "$FANIN" runs list --json --limit 0 --config "$1" | jq '.runs | length'
}

# gen_mixed_sops DIR N: N generated SOP directories gen-00000… under DIR,
# the trigger type turning with the index like benches/matching.rs: an MQTT
# filter with a condition, a webhook path, a peripheral signal with a
# condition, a daily cron time (distinct per SOP, UTC); two steps each.
gen_mixed_sops() {
    local dir=$1 n=$2
    mkdir -p "$dir"
    seq -f "$dir/gen-%05.0f" 0 $((n - 1)) | xargs mkdir -p
    awk -v dir="$dir" -v n="$n" 'BEGIN {
        for (i = 0; i < n; i++) {
            name = sprintf("gen-%05d", i)
            f = dir "/" name "/SOP.toml"
            printf "[sop]\nname = \"%s\"\ndescription = \"generated SOP %d\"\nexecution_mode = \"auto\"\n\n", name, i > f
            k = i % 4
            if (k == 0) printf "[[triggers]]\ntype = \"mqtt\"\ntopic = \"site/%d/+/alert\"\ncondition = \"$.severity >= 2\"\n", i > f
            if (k == 1) printf "[[triggers]]\ntype = \"webhook\"\npath = \"/sop/gen-%d\"\n", i > f
            if (k == 2) printf "[[triggers]]\ntype = \"peripheral\"\nboard = \"board-%d\"\nsignal = \"pin_%d\"\ncondition = \"> 0\"\n", i % 32, i > f
            if (k == 3) { s = (i * 8) % 86400; printf "[[triggers]]\ntype = \"cron\"\nexpression = \"%d %d %d * * *\"\n", s % 60, int(s / 60) % 60, int(s / 3600) > f }
            printf "\n[[steps]]\ntitle = \"Look\"\nbody = \"Look at the event.\"\n\n[[steps]]\ntitle = \"Report\"\nbody = \"Report what was seen.\"\n" > f
            close(f)
        }
    }'
}

# runs_started ADDR: fanin_runs_total{outcome="started"} from /metrics
# (cheap to ask while fanin works, unlike listing the runs).
runs_started() {
    curl -sf "http://$1/metrics" | awk '/^fanin_runs_total\{.*outcome="started"/ {n += $NF} END {printf "%d", n}'
}

# wait_runs_started ADDR COUNT IDLE_SECS: polls runs_started every 0.2 s
# until it reaches COUNT or stays the same for IDLE_SECS.
wait_runs_started() {
    local last=-1 same=0 count
    while :; do
        count=$(runs_started "$1")
        [[ $count -ge $2 ]] && return 0
        if [[ $count == "$last" ]]; then
            same=$((same + 1))
            ((same >= $3 * 5)) && return 0
        else
            same=0
        fi
        last=$count
        sleep 0.2
    done
}

# elapsed_ms FROM TO: milliseconds between two $EPOCHREALTIME values.
elapsed_ms() {
    awk -v a="$1" -v b="$2" 'BEGIN {printf "%.0f", (b - a) * 1000}'
}
