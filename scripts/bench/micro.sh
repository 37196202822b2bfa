#!/usr/bin/env bash
# Micro benchmarks (BENCHMARKS.md): runs `cargo bench` on the
# criterion benches (benches/*.rs) and prints, for each, criterion's median
# time per iteration (the p50 of its samples, each sample being the mean of
# many iterations) and the match-at-scale check of the targets table.
#
#   scripts/bench/micro.sh [BENCH...]    from the repository root
#                                        (default: matching condition cron envelope)
#
# Extra criterion flags go through CRITERION_ARGS, e.g.
# CRITERION_ARGS="--warm-up-time 1 --measurement-time 2" for a quick look.

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

benches=("$@")
((${#benches[@]})) || benches=(matching condition cron envelope)
machine
for b in "${benches[@]}"; do
    say "cargo bench --bench $b"
    # shellcheck disable=SC2086
    (cd "$ROOT" && cargo bench --quiet --bench "$b" -- ${CRITERION_ARGS:-} >"$WORK/$b.log" 2>&1) ||
        { cat "$WORK/$b.log"; die "cargo bench --bench $b failed"; }
done

# median NAME: criterion's median for target/criterion/NAME, in ns.
median() {
    jq -r '.median.point_estimate' "$TARGET/criterion/$1/new/estimates.json"
}

say "medians (time per iteration)"
find "$TARGET/criterion" -path '*/new/estimates.json' | sed "s|$TARGET/criterion/||; s|/new/estimates.json||" | sort |
    while read -r name; do
        awk -v n="$name" -v t="$(median "$name")" 'BEGIN {
            unit = "ns"; v = t
            if (t >= 1e6) { unit = "ms"; v = t / 1e6 } else if (t >= 1e3) { unit = "µs"; v = t / 1e3 }
            printf "%-55s %10.3f %s\n", n, v, unit }'
    done

if [[ -d $TARGET/criterion/match ]]; then
    say "match at 10 000 SOPs against 10 SOPs (target: ≤ 2 µs, ≤ 2x)"
    for event in "$TARGET"/criterion/match/*/; do
        e=$(basename "$event")
        [[ -f $event/10/new/estimates.json && -f $event/10000/new/estimates.json ]] || continue
        awk -v e="$e" -v a="$(median "match/$e/10")" -v b="$(median "match/$e/10000")" 'BEGIN {
            verdict = (b <= 2000 && b <= 2 * a) ? "met" : "NOT met"
            printf "%-22s 10 SOPs %8.1f ns   10 000 SOPs %8.1f ns   ratio %.2f   %s\n", e, a, b, b / a, verdict }'
    done
fi
