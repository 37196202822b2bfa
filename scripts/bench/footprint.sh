#!/usr/bin/env bash
# Footprint (BENCHMARKS.md): resident memory of an idle daemon with
# the example SOPs, and start-up time and memory with 1 000 and 10 000
# generated SOPs (a mix of MQTT, webhook, peripheral and cron triggers,
# written into a temporary directory, never committed).
#
#   scripts/bench/footprint.sh          from the repository root
#
# Start-up time = from the spawn of `fanin daemon` to its `Listening on`
# line (config, SOPs, store, pairing code and the listener are ready then;
# sources start right after). RSS = VmRSS from /proc after SETTLE seconds
# (default 3) of idleness. Each set is started twice: on a new store, then
# again on the store the first start left (a restart).

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SETTLE=${SETTLE:-3}

build
machine

# measure LABEL CONFIG: starts the daemon on CONFIG, prints start-up and RSS.
measure() {
    local label=$1 config=$2 line ready
    start "$label" "$FANIN" daemon --config "$config"
    line=$(wait_line "$label" "Listening on " 120)
    ready=${line%% *}
    sleep "$SETTLE"
    printf '%-28s start-up %6s ms   RSS %6s MB\n' "$label" "$(elapsed_ms "$START_AT" "$ready")" "$(rss_mb "$PID")"
    stop "$PID"
}

say "idle, example SOPs (examples/config.toml with port 0 and a store in a temp dir)"
ex=$WORK/examples
mkdir -p "$ex"
cp -r "$ROOT/examples/sops" "$ROOT/examples/registries" "$ex/"
sed 's/^port = .*/port = 0/' "$ROOT/examples/config.toml" >"$ex/config.toml"
measure "examples (5 SOPs)" "$ex/config.toml"
measure "examples, restart" "$ex/config.toml"

for n in 1000 10000; do
    say "$n generated SOPs"
    dir=$(new_config "gen-$n" '' '')
    gen_mixed_sops "$dir/sops" "$n"
    measure "$n SOPs" "$dir/config.toml"
    measure "$n SOPs, restart" "$dir/config.toml"
done
