#!/usr/bin/env bash
# GET /health throughput and latency: localhostd vs nginx answering the same JSON body.
#
# wrk --latency on 127.0.0.1 at 1, 16 and 64 keep-alive connections, DURATION seconds per run,
# ROUNDS rounds; in each round ours and nginx run back to back, alternating which goes first.
# The table shows the median over rounds (req/s also as min–max). Replaces its entry in
# docs/benchmarks.md (BENCH_RECORD=0 to only print).
#
#   benches/health.sh                          # 3 rounds × 10 s × 3 connection counts × 2
#   ROUNDS=1 DURATION=3 BENCH_RECORD=0 benches/health.sh   # quick look
set -euo pipefail
# shellcheck source=benches/lib.sh
source "$(dirname "$0")/lib.sh"

ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10}"
CONNS="${CONNS:-1 16 64}"
WARMUP="${WARMUP:-2}"
bench_init health "ROUNDS=$ROUNDS DURATION=$DURATION CONNS=\"$CONNS\""

bench_need_tools curl:curl wrk:wrk "nginx:nginx-light|nginx" awk:gawk
bench_build

ours_start ours
nginx_start nginx "default_type application/json; return 200 '{\"status\":\"ok\"}';"

declare -A URL=(
    [ours]="http://127.0.0.1:$OURS_PORT/health"
    [nginx]="http://127.0.0.1:$NGINX_PORT/health"
)

# Same body on both sides; the header bytes differ (ours adds x-request-id), so show them.
declare -A RESP
for t in ours nginx; do
    body="$(curl -fsS --max-time 2 "${URL[$t]}")"
    [[ "$body" == '{"status":"ok"}' ]] || bench_die "$t /health answered $body"
    RESP[$t]="$(curl -fsS -o /dev/null --max-time 2 -w '%{size_header}+%{size_download} B' "${URL[$t]}")"
done

for t in ours nginx; do
    bench_log "warm-up $t (${WARMUP}s, 16 connections)"
    bench_wrk "${URL[$t]}" 16 "$WARMUP" >/dev/null
done

declare -A RPS P50 P99 ERR
for c in $CONNS; do
    for r in $(seq 1 "$ROUNDS"); do
        if ((r % 2)); then order="ours nginx"; else order="nginx ours"; fi
        for t in $order; do
            out="$(bench_wrk "${URL[$t]}" "$c" "$DURATION")"
            read -r rps p50 p99 err <<<"$out"
            bench_log "c=$c round $r $t: $rps req/s p50 ${p50}µs p99 ${p99}µs errors $err"
            RPS[$t,$c]+="$rps "
            P50[$t,$c]+="$p50 "
            P99[$t,$c]+="$p99 "
            ERR[$t]=$((${ERR[$t]:-0} + err))
        done
    done
done

# Memory after the load, before stopping (ours: one process; nginx: master + workers).
out="$(bench_mem "$OURS_PID")"
read -r o_rss _ _ o_pss o_thr <<<"$out"
out="$(bench_mem_tree "$NGINX_PID")"
read -r n_rss _ _ n_pss n_procs <<<"$out"

entry="$BENCH_TMP/entry.md"
{
    echo "- peer: $(nginx -v 2>&1 | sed 's/^nginx version: //'), worker_processes ${NGINX_WORKERS:-auto}" \
        "(= $(bench_children "$NGINX_PID" | wc -l) workers), \`return 200 '{\"status\":\"ok\"}'\`," \
        "access_log off, keepalive_requests unlimited; load: $(wrk -v 2>&1 | head -n1 | awk '{print $1, $2}')," \
        "threads = min(connections, cores), keep-alive"
    echo "- $ROUNDS rounds × ${DURATION}s per cell, ours and nginx alternating; median over rounds" \
        "(req/s: median, then min–max); response size ours ${RESP[ours]}, nginx ${RESP[nginx]}"
    echo
    echo "| connections | ours req/s | nginx req/s | ours/nginx | ours p50 | nginx p50 | ours p99 | nginx p99 |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
    for c in $CONNS; do
        # shellcheck disable=SC2086
        {
            o_r="$(bench_median ${RPS[ours,$c]})"
            n_r="$(bench_median ${RPS[nginx,$c]})"
            printf '| %s | %.0f (%s) | %.0f (%s) | %s | %s | %s | %s | %s |\n' "$c" \
                "$o_r" "$(bench_minmax ${RPS[ours,$c]} | awk -F– '{ printf "%.0f–%.0f", $1, $2 }')" \
                "$n_r" "$(bench_minmax ${RPS[nginx,$c]} | awk -F– '{ printf "%.0f–%.0f", $1, $2 }')" \
                "$(awk -v a="$o_r" -v b="$n_r" 'BEGIN { printf "%.2f", a / b }')" \
                "$(bench_us "$(bench_median ${P50[ours,$c]})")" \
                "$(bench_us "$(bench_median ${P50[nginx,$c]})")" \
                "$(bench_us "$(bench_median ${P99[ours,$c]})")" \
                "$(bench_us "$(bench_median ${P99[nginx,$c]})")"
        }
    done
    echo
    echo "- errors (socket errors + non-2xx, all runs): ours ${ERR[ours]}, nginx ${ERR[nginx]}"
    echo "- memory right after the load: ours VmRSS $(bench_kb "$o_rss") (PSS $(bench_kb "$o_pss"), $o_thr threads);" \
        "nginx VmRSS summed $(bench_kb "$n_rss") (PSS $(bench_kb "$n_pss"), $n_procs processes)"
} >"$entry"

echo
cat "$entry"
echo
bench_record "health — GET /health throughput and latency (benches/health.sh)" "$entry"
