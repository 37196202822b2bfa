#!/usr/bin/env bash
# Filesystem burst (BENCHMARKS.md): COUNT small files are written into a
# watched directory as fast as one shell loop writes them, and the time
# from each file's write (its mtime) to its durable run (the run's
# started_at, stamped in the commit that makes it durable) is measured.
# The floor, measured in the same run: the time the writer itself took to
# write the burst, and the debounce, which every change waits out by
# design before it is looked at.
#
#   scripts/bench/fs_burst.sh        from the repository root
#
# COUNT (default 10000) files; DEBOUNCE_MS (default 500, fanin's default).
# fanin's SOP: one filesystem trigger on the directory's *.csv files, auto
# mode, agent destination and one step, so each run records its step as
# pending (no agent loop attached) and nothing is delivered.

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

COUNT=${COUNT:-10000}
DEBOUNCE_MS=${DEBOUNCE_MS:-500}
IDLE_SECS=${IDLE_SECS:-10}

for tool in curl jq; do command -v $tool >/dev/null || die "$tool is needed"; done
build
machine

drop=$WORK/drop
mkdir -p "$drop"
dir=$(new_config fs '' "[channels_config.filesystem]
paths = [\"$drop\"]
debounce_ms = $DEBOUNCE_MS")
mkdir -p "$dir/sops/bench-fs"
cat >"$dir/sops/bench-fs/SOP.toml" <<EOF
[sop]
name = "bench-fs"
description = "Filesystem burst benchmark: every file starts a run"
execution_mode = "auto"
max_concurrent = 1000000
destination = "agent"

[[triggers]]
type = "filesystem"
path = "$drop/*.csv"
events = ["created"]

[[steps]]
title = "Look"
body = "Look at the file."
EOF
start fanin "$FANIN" daemon --config "$dir/config.toml"
fanin_pid=$PID
addr=$(listen_addr fanin)
for i in $(seq 1 100); do
    curl -sf "http://$addr/ready" | jq -e '.sources.filesystem.status == "up"' >/dev/null 2>&1 && break
    sleep 0.1
done
curl -sf "http://$addr/ready" | jq -e '.sources.filesystem.status == "up"' >/dev/null ||
    die "the filesystem source is not up: $(curl -s "http://$addr/ready")"
cpu_before=$(cpu_ticks "$fanin_pid")

say "writing $COUNT files (debounce ${DEBOUNCE_MS} ms)"
write_start=$EPOCHREALTIME
for ((i = 0; i < COUNT; i++)); do
    printf 'id,value\n%d,%d\n' "$i" "$((i * 7))" >"$drop/f$i.csv"
done
write_end=$EPOCHREALTIME
echo "writer: $COUNT files in $(elapsed_ms "$write_start" "$write_end") ms"

wait_runs_started "$addr" "$COUNT" "$IDLE_SECS"
all_runs_at=$EPOCHREALTIME
cpu_after=$(cpu_ticks "$fanin_pid")
echo "fanin RSS: $(rss_mb "$fanin_pid") MB"
stop "$fanin_pid"

# Per file: run started_at minus the file's mtime, in milliseconds.
find "$drop" -name '*.csv' -printf '%p %T@\n' | sort >"$WORK/mtimes"
"$FANIN" runs list --json --sop bench-fs --limit 0 --config "$dir/config.toml" | jq -r '
    def epoch: (.[0:19] + "Z" | fromdateiso8601) + ((.[19:] | ltrimstr(".") | rtrimstr("Z")) as $f
        | if $f == "" then 0 else ("0." + $f | tonumber) end);
    .runs[] | "\(.topic) \(.started_at | epoch)"' | sort >"$WORK/starts"
runs=$(wc -l <"$WORK/starts")
join "$WORK/mtimes" "$WORK/starts" | awk '{printf "%.1f\n", ($3 - $2) * 1000}' | sort -n >"$WORK/latency"
pct() { awk -v p="$1" '{v[NR] = $1} END {i = int(NR * p / 100); if (i < 1) i = 1; print v[i]}' "$WORK/latency"; }
ticks=$(getconf CLK_TCK)

say "results ($COUNT files, debounce $DEBOUNCE_MS ms)"
echo "runs: $runs of $COUNT"
[[ $runs == "$COUNT" ]] || echo "  LOSS OR DUPLICATES: $runs runs for $COUNT files"
echo "writer (floor): $(elapsed_ms "$write_start" "$write_end") ms for the burst"
echo "write -> durable run: p50 $(pct 50) ms, p99 $(pct 99) ms, max $(pct 100) ms (each includes the $DEBOUNCE_MS ms debounce)"
echo "first write -> every run durable: $(elapsed_ms "$write_start" "$all_runs_at") ms (observed by polling, 200 ms steps)"
awk -v c="$((cpu_after - cpu_before))" -v t="$ticks" -v n="$runs" \
    'BEGIN {if (n > 0) printf "fanin CPU: %.2f s in all, %.0f us per run\n", c / t, 1e6 * c / t / n}'
