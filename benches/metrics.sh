#!/usr/bin/env bash
# Monitoring cost: GET /metrics latency of localhostd beside node_exporter (Debian's
# prometheus-node-exporter) in the same run, and the CPU the sampler costs at the default
# interval.
#
# Scrapes: wrk --latency on 127.0.0.1 with 1 keep-alive connection (a Prometheus server
# scrapes one target at a time), DURATION seconds per run, ROUNDS rounds; in each round ours,
# node_exporter with its default collectors and node_exporter with only the collectors ours
# has (cpu, stat, loadavg, meminfo, filesystem, diskstats, netdev, pressure) run back to back,
# the order rotating each round. Ours serves the latest sample (taken every metrics.interval);
# node_exporter reads the host on every scrape, so this compares what a scrape costs each.
#
# Sampler CPU: two fresh daemons, one with the sampler (metrics.enabled = true, the default
# 10 s interval) and one without (metrics.enabled = false), each left idle for CPU_SECONDS
# while its utime+stime is read from /proc/PID/stat; the difference is the sampler's cost.
#
#   benches/metrics.sh                                   # 3 rounds × 5 s; 2 × 60 s idle
#   ROUNDS=1 DURATION=2 CPU_SECONDS=10 BENCH_RECORD=0 benches/metrics.sh   # quick look
set -euo pipefail
# shellcheck source=benches/lib.sh
source "$(dirname "$0")/lib.sh"

ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-5}"
CPU_SECONDS="${CPU_SECONDS:-60}"
bench_init metrics "ROUNDS=$ROUNDS DURATION=$DURATION CPU_SECONDS=$CPU_SECONDS"

bench_need_tools curl:curl wrk:wrk awk:gawk prometheus-node-exporter:prometheus-node-exporter
bench_build

# node_exporter_start NAME ARGS...: the peer on a free loopback port, its own temp dir.
# Sets NE_PID, NE_PORT.
node_exporter_start() {
    local name="$1" dir
    shift
    dir="$BENCH_TMP/$name"
    mkdir -p "$dir"
    bench_free_port NE_PORT
    bench_spawn NE_PID "$dir/stderr.log" prometheus-node-exporter \
        --web.listen-address="127.0.0.1:$NE_PORT" "$@"
    # shellcheck disable=SC2153 # set by bench_spawn through its name
    bench_wait_http "http://127.0.0.1:$NE_PORT/metrics" "$NE_PID" "$dir/stderr.log"
    bench_log "node_exporter ($name) pid $NE_PID on 127.0.0.1:$NE_PORT"
}

OURS_CONFIG_EXTRA=$'[metrics]\npublic-on-loopback = true'
ours_start ours
node_exporter_start ne-default
NE_DEFAULT_PORT=$NE_PORT
NE_DEFAULT_PID=$NE_PID
node_exporter_start ne-same --collector.disable-defaults --collector.cpu --collector.stat \
    --collector.loadavg --collector.meminfo --collector.filesystem --collector.diskstats \
    --collector.netdev --collector.pressure
NE_SAME_PORT=$NE_PORT
NE_SAME_PID=$NE_PID

declare -A URL=(
    [ours]="http://127.0.0.1:$OURS_PORT/metrics"
    [ne-default]="http://127.0.0.1:$NE_DEFAULT_PORT/metrics"
    [ne-same]="http://127.0.0.1:$NE_SAME_PORT/metrics"
)
SIDES=(ours ne-default ne-same)

# Wait for our first sample, then note each side's size (lines, bytes).
for _ in $(seq 1 100); do
    curl -fsS --max-time 2 "${URL[ours]}" | grep -q '^node_load1 ' && break
    sleep 0.2
done
declare -A SIZE
for t in "${SIDES[@]}"; do
    curl -fsS --max-time 5 "${URL[$t]}" >"$BENCH_TMP/$t.txt"
    SIZE[$t]="$(grep -vc '^#' "$BENCH_TMP/$t.txt") series, $(wc -c <"$BENCH_TMP/$t.txt") B"
done

for t in "${SIDES[@]}"; do
    bench_wrk "${URL[$t]}" 1 1 >/dev/null
done
declare -A RPS P50 P99 ERR
for r in $(seq 1 "$ROUNDS"); do
    case $((r % 3)) in
        1) order="ours ne-default ne-same" ;;
        2) order="ne-default ne-same ours" ;;
        0) order="ne-same ours ne-default" ;;
    esac
    for t in $order; do
        read -r rps p50 p99 err <<<"$(bench_wrk "${URL[$t]}" 1 "$DURATION")"
        bench_log "round $r $t: $rps scrapes/s p50 ${p50}µs p99 ${p99}µs errors $err"
        RPS[$t]+="$rps "
        P50[$t]+="$p50 "
        P99[$t]+="$p99 "
        ERR[$t]=$((${ERR[$t]:-0} + err))
    done
done
LOAD_SCRAPES="$(cut -d' ' -f1-3 /proc/loadavg)"
for pid in "$OURS_PID" "$NE_DEFAULT_PID" "$NE_SAME_PID"; do bench_stop "$pid"; done

# cpu_ticks PID: utime + stime of PID (fields 14 and 15 of /proc/PID/stat).
cpu_ticks() {
    local line fields
    read -r line <"/proc/$1/stat"
    read -ra fields <<<"${line##*) }"
    echo $((fields[11] + fields[12]))
}

HZ="$(getconf CLK_TCK)"
declare -A CPU
for mode in on off fast; do
    case $mode in
        on) OURS_CONFIG_EXTRA=$'[metrics]\nenabled = true' ;;
        off) OURS_CONFIG_EXTRA=$'[metrics]\nenabled = false' ;;
        # Ten times the default rate, so the cost of one sample rises above a clock tick.
        fast) OURS_CONFIG_EXTRA=$'[metrics]\ninterval = "1s"' ;;
    esac
    ours_start "cpu-$mode"
    sleep 2
    t0="$(cpu_ticks "$OURS_PID")"
    bench_log "sampler $mode: idle for ${CPU_SECONDS}s"
    sleep "$CPU_SECONDS"
    t1="$(cpu_ticks "$OURS_PID")"
    CPU[$mode]="$(awk -v d=$((t1 - t0)) -v hz="$HZ" -v s="$CPU_SECONDS" 'BEGIN { printf "%.3f", 100 * d / hz / s }')"
    CPU[$mode,ticks]=$((t1 - t0))
    bench_log "sampler $mode: $((t1 - t0)) ticks = ${CPU[$mode]}% of one CPU"
    bench_stop "$OURS_PID"
done
LOAD_END="$(cut -d' ' -f1-3 /proc/loadavg)"
SAMPLER="$(awk -v a="${CPU[on]}" -v b="${CPU[off]}" 'BEGIN { d = a - b; if (d < 0) d = 0; printf "%.3f", d }')"
# CPU per sample from the 1 s run (CPU_SECONDS samples), less the idle daemon's own.
PER_SAMPLE_MS="$(awk -v a="${CPU[fast,ticks]}" -v b="${CPU[off,ticks]}" -v hz="$HZ" -v n="$CPU_SECONDS" \
    'BEGIN { d = a - b; if (d < 0) d = 0; printf "%.2f", 1000 * d / hz / n }')"

us() { bench_us "$(bench_median $1)"; }
entry="$BENCH_TMP/entry.md"
{
    echo "- load average (1/5/15 min) after the scrapes: $LOAD_SCRAPES; at the end: $LOAD_END (the machine is shared with other builds and tests)"
    echo
    echo "| GET /metrics, 1 connection | scrapes/s (median) | p50 | p99 | errors | size |"
    echo "|---|---|---|---|---|---|"
    for t in "${SIDES[@]}"; do
        case $t in
            ours) label="localhostd (latest sample + process_* + registry)" ;;
            ne-default) label="node_exporter, default collectors" ;;
            ne-same) label="node_exporter, the same collectors as ours" ;;
        esac
        echo "| $label | $(bench_median ${RPS[$t]}) | $(us "${P50[$t]}") | $(us "${P99[$t]}") | ${ERR[$t]} | ${SIZE[$t]} |"
    done
    echo
    echo "| idle ${CPU_SECONDS} s, default interval (10 s) | CPU ticks | % of one CPU |"
    echo "|---|---|---|"
    echo "| localhostd, sampler on | ${CPU[on,ticks]} | ${CPU[on]} |"
    echo "| localhostd, sampler off (metrics.enabled = false) | ${CPU[off,ticks]} | ${CPU[off]} |"
    echo "| the sampler's cost (difference) | | $SAMPLER |"
    echo "| localhostd, sampler every 1 s (10× the default) | ${CPU[fast,ticks]} | ${CPU[fast]} |"
    echo
    echo "One sample costs about $PER_SAMPLE_MS ms of CPU (1 s run, less the idle daemon), so the default 10 s interval costs about $(awk -v m="$PER_SAMPLE_MS" 'BEGIN { printf "%.3f", m / 10 / 10 }')% of one CPU."
    echo
    echo "Ours answers from the latest sample (taken every metrics.interval) plus /proc/self read at the scrape; node_exporter reads /proc and statvfs on every scrape. So the table compares what a scrape costs, not what collecting costs: that is the CPU table below."
    echo
    echo "Goals: a scrape under 5 ms; the sampler under 1% of one CPU at the default interval. Ticks are $HZ per second, so one tick over ${CPU_SECONDS} s is $(awk -v hz="$HZ" -v s="$CPU_SECONDS" 'BEGIN { printf "%.3f", 100 / hz / s }')%."
} >"$entry"
cat "$entry"
bench_record "Monitoring: /metrics scrape latency and sampler CPU (benches/metrics.sh)" "$entry"
