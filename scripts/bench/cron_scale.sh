#!/usr/bin/env bash
# Cron at scale (BENCHMARKS.md): 10 000 cron triggers, each its own
# (timezone, expression) key, so the scheduler tracks 10 000 timers. Measures
# the CPU the daemon uses while no trigger is due, and the lateness of fires
# (scheduled instant → durable commit) from /metrics
# (`fanin_cron_lateness_seconds`, a summary: its p50 and p99).
#
#   scripts/bench/cron_scale.sh         from the repository root
#
# The triggers are generated relative to the clock at the start (UTC):
# - LIVE_SECONDS × PER_SECOND "live" triggers (default 20 × 10 = 200) fire
#   once each during the run, PER_SECOND distinct expressions due at every
#   second of a window LEAD seconds after generation (7-field expressions
#   for that date that differ only in their year field, e.g. `* ` and
#   `2026-2098`, so each is its own key);
# - the rest (9 800) are daily times spread 4 s apart starting two hours
#   ahead, far from the run: they are planned but never due during it.
# CPU is user + system time from /proc/<pid>/stat over IDLE seconds before
# the fire window and again after it; wake-ups are the context switches of
# all the daemon's threads over the same intervals. Each run of a live SOP
# records one pending step (auto mode, agent destination, no agent loop).

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TOTAL=${TOTAL:-10000}
PER_SECOND=${PER_SECOND:-10}
LIVE_SECONDS=${LIVE_SECONDS:-20}
IDLE=${IDLE:-15}
SETTLE=${SETTLE:-5}
LEAD=${LEAD:-45}
LIVE=$((PER_SECOND * LIVE_SECONDS))
HZ=$(getconf CLK_TCK)

build
machine

dir=$(new_config cron '' '')
sops=$dir/sops

# cron_sop NAME EXPRESSION: one SOP directory.
cron_sop() {
    mkdir -p "$sops/$1"
    printf '[sop]\nname = "%s"\ndescription = "generated cron SOP"\nexecution_mode = "auto"\n\n[[triggers]]\ntype = "cron"\nexpression = "%s"\n\n[[steps]]\ntitle = "Look"\nbody = "Look at the time."\n' \
        "$1" "$2" >"$sops/$1/SOP.toml"
}

now=$(date +%s)
fire_from=$((now + LEAD))
fire_to=$((fire_from + LIVE_SECONDS - 1))
say "generating $TOTAL cron SOPs: $LIVE live ($PER_SECOND due each second from $(date -u -d @$fire_from +%T) to $(date -u -d @$fire_to +%T) UTC), $((TOTAL - LIVE)) far away"
for ((l = 0; l < LIVE; l++)); do
    at=$((fire_from + l / PER_SECOND))
    j=$((l % PER_SECOND))
    read -r s m h d mo y <<<"$(date -u -d "@$at" '+%-S %-M %-H %-d %-m %Y')"
    if ((j == 0)); then years='*'; else years="$y-$((2099 - j))"; fi
    cron_sop "$(printf 'live-%05d' "$l")" "$s $m $h $d $mo * $years"
done
seq -f "$sops/far-%05.0f" 0 $((TOTAL - LIVE - 1)) | xargs mkdir -p
awk -v dir="$sops" -v n=$((TOTAL - LIVE)) -v base=$(((now + 7200) % 86400)) 'BEGIN {
    for (i = 0; i < n; i++) {
        name = sprintf("far-%05d", i)
        t = (base + 4 * i) % 86400
        f = dir "/" name "/SOP.toml"
        printf "[sop]\nname = \"%s\"\ndescription = \"generated cron SOP\"\nexecution_mode = \"auto\"\n\n", name > f
        printf "[[triggers]]\ntype = \"cron\"\nexpression = \"%d %d %d * * *\"\n\n", t % 60, int(t / 60) % 60, int(t / 3600) > f
        printf "[[steps]]\ntitle = \"Look\"\nbody = \"Look at the time.\"\n" > f
        close(f)
    }
}'

say "starting fanin"
start fanin "$FANIN" daemon --config "$dir/config.toml"
pid=$PID
line=$(wait_line fanin "Listening on " 120)
addr=${line##*Listening on }
echo "start-up: $(elapsed_ms "$START_AT" "${line%% *}") ms; RSS $(rss_mb "$pid") MB"

# switches FILE: "tid context-switches" of every thread of the daemon.
switches() {
    local task
    for task in /proc/"$pid"/task/*; do
        awk -v tid="${task##*/}" '/ctxt_switches/ {n += $2} END {print tid, n}' "$task/status" 2>/dev/null || true
    done >"$1"
}

# idle LABEL: CPU and wake-ups over IDLE seconds. Wake-ups are summed over
# the threads alive at both ends (a thread that exits takes its count along).
idle() {
    local t0 t1 woken
    t0=$(cpu_ticks "$pid")
    switches "$WORK/switches.0"
    sleep "$IDLE"
    t1=$(cpu_ticks "$pid")
    switches "$WORK/switches.1"
    woken=$(awk 'NR == FNR {before[$1] = $2; next} ($1 in before) {n += $2 - before[$1]} END {print n + 0}' \
        "$WORK/switches.0" "$WORK/switches.1")
    printf '%-24s CPU %5.2f s over %ss (%.2f %%), %s context switches (%.1f/s)\n' "$1" \
        "$(echo "($t1 - $t0) / $HZ" | bc -l)" "$IDLE" "$(echo "100 * ($t1 - $t0) / $HZ / $IDLE" | bc -l)" \
        "$woken" "$(echo "$woken / $IDLE" | bc -l)"
}

sleep "$SETTLE" # the scheduler plans its keys right after the listener is up
if (($(date +%s) + IDLE + 2 >= fire_from)); then
    die "start-up took too long for an idle interval before the fires; raise LEAD (now $LEAD)"
fi
say "between fires"
idle "before the fire window"

while (($(date +%s) <= fire_to + 3)); do sleep 1; done
metrics=$(curl -sf "http://$addr/metrics")
runs=$(runs_in_store "$dir/config.toml")
idle "after the fire window"

say "results"
count=$(grep -E '^fanin_cron_lateness_seconds_count' <<<"$metrics" | awk '{print $NF}')
p50=$(quantile fanin_cron_lateness_seconds 0.5 <<<"$metrics")
p99=$(quantile fanin_cron_lateness_seconds 0.99 <<<"$metrics")
pmax=$(quantile fanin_cron_lateness_seconds 1 <<<"$metrics")
echo "fires recorded: ${count:-0} of $LIVE due; runs in the store: $runs"
awk -v a="${p50:-nan}" -v b="${p99:-nan}" -v c="${pmax:-nan}" \
    'BEGIN {printf "cron lateness: p50 %.1f ms, p99 %.1f ms, max %.1f ms\n", a * 1000, b * 1000, c * 1000}'
echo "RSS: $(rss_mb "$pid") MB"
if [[ ${count:-0} != "$LIVE" || $runs != "$LIVE" ]]; then
    echo "FAIL: expected $LIVE fires and runs"
    exit 1
fi
