#!/usr/bin/env bash
# benches/kv.sh: the key-value store, side by side with etcd (Debian's etcd-server, its v3 JSON
# gateway): durable PUT and GET throughput and p50/p99 at 1, 16 and 64 connections with 1 KiB
# values, every PUT body unique (SQLite and etcd could skip identical overwrites otherwise).
#
# On benches/lib.sh: it installs what it needs with apt-get, builds the release binary, starts
# ours and etcd on free loopback ports in a temp dir, runs both alternately (the first one
# swapped every round), prints a markdown table and records it with machine, date, commit and
# load average in the kv section of docs/benchmarks.md.
#
# With LOCALHOSTD_BASELINE_BIN (benches/lib.sh) an earlier build of ours runs beside them as a
# further contender (its own daemon and state, the same config), in every round and every
# cell, the order rotated every round; a second table gives after ÷ baseline per measure
# beside the run's own spread.
#
# The issue's reference figures for this machine ("measured here for reference") are measured
# in the same run too, at 64 connections, from benches/kv_reference.rs (an example of this
# crate): a bare axum handler returning 1 KiB, a naive rusqlite GET through spawn_blocking, and
# naive group commit. They show how fast the machine is at that moment against the issue's
# figures, and what our store's extra work per request (access control, versions, the change
# log and the audit row per write, the cache) costs against the plain way of doing each.
#
# Knobs: ROUNDS (3), DURATION seconds per run (10), CONNS ("1 16 64"), BENCH_RECORD=0 (print
# only), LOCALHOSTD_BIN=path (skip the build), KV_REFERENCE_BIN=path (the reference server;
# built when not given), BENCH_KEEP_TMP=1, LOCALHOSTD_BASELINE_BIN=path and
# LOCALHOSTD_BASELINE_REV=rev (the baseline, above).
#
# Ours runs with rate-limit.enabled = false (the default limits would throttle a benchmark)
# and --log-level warn (no per-request log line), like benches/health.sh. etcd runs with its
# defaults (a durable fsync'd WAL), one member.

set -euo pipefail
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10}"
CONNS="${CONNS:-1 16 64}"
REF_CONNS=64 # the reference servers run at this many connections only (the issue's goals)
bench_init kv "ROUNDS=$ROUNDS DURATION=$DURATION"
TMP="$BENCH_TMP"
log() { bench_log "$@"; }
die() { bench_die "$@"; }
median() { bench_median "$@"; }
us() { bench_us "$1"; }

bench_need_tools wrk:wrk etcd:etcd-server curl:curl
bench_build
bench_baseline
if [[ -z "${KV_REFERENCE_BIN:-}" ]]; then
    log "cargo build --release --locked --example kv-reference"
    (cd "$BENCH_REPO" && cargo build --release --locked --example kv-reference >&2)
    KV_REFERENCE_BIN="$BENCH_REPO/target/release/examples/kv-reference"
fi
[[ -x "$KV_REFERENCE_BIN" ]] || die "KV_REFERENCE_BIN=$KV_REFERENCE_BIN is not executable"
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"

# --- ours
# shellcheck disable=SC2034 # read by ours_start
OURS_CONFIG_EXTRA='[rate-limit]
enabled = false'
ours_start ours
TOKEN="$(cat "$OURS_DIR/state/initial-admin-token")"
if [[ $BENCH_BASELINE == 1 ]]; then
    # ours_start sets OURS_*: take the baseline's, then put ours' back.
    after=("$OURS_PID" "$OURS_PORT" "$OURS_DIR")
    ours_start base "$LOCALHOSTD_BASELINE_BIN"
    BASE_PORT="$OURS_PORT"
    BASE_TOKEN="$(cat "$OURS_DIR/state/initial-admin-token")"
    OURS_PID="${after[0]}" OURS_PORT="${after[1]}" OURS_DIR="${after[2]}"
fi

# --- etcd
bench_free_port ETCD_PORT
bench_free_port ETCD_PEER
bench_spawn ETCD_PID "$TMP/etcd.log" etcd --name bench --data-dir "$TMP/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
    --initial-cluster "bench=http://127.0.0.1:$ETCD_PEER" \
    --quota-backend-bytes 8589934592 --log-level error
bench_wait_http "http://127.0.0.1:$ETCD_PORT/health" "$ETCD_PID" "$TMP/etcd.log"
log "etcd $(etcd --version | head -n 1 | awk '{print $3}') pid $ETCD_PID on 127.0.0.1:$ETCD_PORT"

# --- the reference servers (benches/kv_reference.rs)
bench_free_port REF_PORT
mkdir -p "$TMP/reference"
bench_spawn REF_PID "$TMP/reference.log" "$KV_REFERENCE_BIN" "127.0.0.1:$REF_PORT" "$TMP/reference"
bench_wait_http "http://127.0.0.1:$REF_PORT/bare" "$REF_PID" "$TMP/reference.log"
log "reference servers pid $REF_PID on 127.0.0.1:$REF_PORT"

# Every PUT: key k00000000000..k00000009999 (12 characters, valid base64 for etcd), a 1 KiB
# value that starts with thread and request number (unique). GETs read k0..k999.
# wrk shares the 2 cores with the servers, so each request is put together from pieces made
# once in init() (a request head per key, the value's fixed tail): building every request with
# wrk.format took wrk ~0.6 cores at 19k PUT/s (perf), time the servers did not get.
cat >"$TMP/kv.lua" <<'EOF'
local mode = os.getenv("KV_MODE")
local token = os.getenv("KV_TOKEN") or ""
local counter = 0
local nthreads = 0
function setup(thread)
  nthreads = nthreads + 1
  thread:set("tid", nthreads)
end
local UNIQ = 16 -- the length of string.format("%02d%014d", tid, counter)
local pad = string.rep("A", 1368)
local ours_headers = { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json" }
local etcd_headers = { ["Content-Type"] = "application/json" }
local head, tail, whole = {}, "", {}
-- The request for a body `before .. <UNIQ characters> .. after`, up to where they go.
local function head_of(method, path, headers, before, after)
  local body = before .. string.rep("u", UNIQ) .. after
  local req = wrk.format(method, path, headers, body)
  return req:sub(1, #req - #body) .. before
end
function init(args)
  if mode == "ours-put" or mode == "ref-put" then
    -- 1022 characters inside the quotes: a 1024-byte JSON value.
    tail = string.sub(pad, 1, 1022 - UNIQ) .. '"'
    local path = mode == "ours-put" and "/api/v1/data/k%011d" or "/kv/k%011d"
    for i = 0, 9999 do
      head[i] = head_of("PUT", string.format(path, i), ours_headers, '"', tail)
    end
  elseif mode == "etcd-put" then
    -- 1368 base64 characters: a 1026-byte value.
    tail = string.sub(pad, 1, 1368 - UNIQ) .. '"}'
    for i = 0, 9999 do
      local key = string.format("k%011d", i)
      head[i] = head_of("POST", "/v3/kv/put", etcd_headers, '{"key":"' .. key .. '","value":"', tail)
    end
  else
    for i = 0, 999 do
      local key = string.format("k%011d", i)
      if mode == "ours-get" then
        whole[i] = wrk.format("GET", "/api/v1/data/" .. key, ours_headers)
      elseif mode == "ref-get" then
        whole[i] = wrk.format("GET", "/kv/" .. key, ours_headers)
      elseif mode == "bare-get" then
        whole[i] = wrk.format("GET", "/bare", ours_headers)
      else
        whole[i] = wrk.format("POST", "/v3/kv/range", etcd_headers, '{"key":"' .. key .. '"}')
      end
    end
  end
end
function request()
  counter = counter + 1
  if mode == "ours-put" or mode == "etcd-put" or mode == "ref-put" then
    return head[counter % 10000] .. string.format("%02d%014d", tid, counter) .. tail
  end
  return whole[counter % 1000]
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %.1f %d %d %d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout + e.status))
end
EOF

# run MODE CONNS SECONDS -> "rps p50_us p99_us errors"
run() {
    local who="$1" mode="$1" conns="$2" secs="$3" port threads token="$TOKEN"
    case "$mode" in
        # The baseline is ours from another build: the same requests, its own port and token.
        base-*)
            port="$BASE_PORT" token="$BASE_TOKEN"
            mode="ours-${mode#base-}"
            ;;
        ours-*) port="$OURS_PORT" ;;
        ref-* | bare-*) port="$REF_PORT" ;;
        *) port="$ETCD_PORT" ;;
    esac
    threads=$((conns < $(nproc) ? conns : $(nproc)))
    {
        echo "== $who wrk -t$threads -c$conns -d${secs}s"
        KV_MODE="$mode" KV_TOKEN="$token" wrk --latency -t"$threads" -c"$conns" -d"${secs}s" \
            --timeout 5s -s "$TMP/kv.lua" "http://127.0.0.1:$port/"
    } >>"$TMP/wrk.log" 2>&1 || die "wrk failed: $(tail -n 5 "$TMP/wrk.log")"
    tail -n 1 "$TMP/wrk.log" | awk '$1 == "BENCH" { print $2, $3, $4, $5; ok = 1 } END { if (!ok) exit 1 }' \
        || die "no result from wrk"
}

log "preloading keys (2 s of PUTs each)"
run ours-put 16 2 >/dev/null
[[ $BENCH_BASELINE == 1 ]] && run base-put 16 2 >/dev/null
run etcd-put 16 2 >/dev/null
run ref-put 16 2 >/dev/null

declare -A RPS P50 P99 ERR
for op in put get; do
    for c in $CONNS; do
        for r in $(seq 1 "$ROUNDS"); do
            who_all=(ours etcd)
            [[ $BENCH_BASELINE == 1 ]] && who_all=(ours base etcd)
            if [[ "$c" == "$REF_CONNS" ]]; then
                who_all+=(ref)
                [[ "$op" == get ]] && who_all+=(bare)
            fi
            # Each round starts one further along the list.
            for who in $(bench_rotate "$r" "${who_all[@]}"); do
                read -r rps p50 p99 err < <(run "$who-$op" "$c" "$DURATION")
                log "$who $op c=$c round $r: $rps req/s p50 $(us "$p50") p99 $(us "$p99") errors $err"
                RPS[$who,$op,$c]+="$rps "
                P50[$who,$op,$c]+="$p50 "
                P99[$who,$op,$c]+="$p99 "
                ERR[$who,$op,$c]=$((${ERR[$who,$op,$c]:-0} + err))
            done
        done
    done
done

entry="$TMP/entry.md"
{
    echo "- rounds: $ROUNDS × ${DURATION}s per cell, medians; ours with rate-limit.enabled = false and --log-level warn; etcd $(etcd --version | head -n 1 | awk '{print $3}'), one member, defaults"
    echo "- values 1 KiB, every PUT body unique, 10,000 keys for PUT, 1,000 for GET; both durable (fsync before the answer)"
    echo "- wrk on the same 2 cores; load average before $LOAD_BEFORE, after $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    echo "| op | conns | localhostd req/s | p50 | p99 | etcd req/s | p50 | p99 | ours ÷ etcd | errors (ours/etcd) |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    for op in put get; do
        for c in $CONNS; do
            # shellcheck disable=SC2086
            {
                o="$(median ${RPS[ours,$op,$c]})"
                e="$(median ${RPS[etcd,$op,$c]})"
                printf '| %s | %s | %.0f | %s | %s | %.0f | %s | %s | %.1f× | %s/%s |\n' \
                    "$op" "$c" "$o" "$(us "$(median ${P50[ours,$op,$c]})")" \
                    "$(us "$(median ${P99[ours,$op,$c]})")" "$e" \
                    "$(us "$(median ${P50[etcd,$op,$c]})")" "$(us "$(median ${P99[etcd,$op,$c]})")" \
                    "$(awk -v a="$o" -v b="$e" 'BEGIN { print (b > 0 ? a / b : 0) }')" \
                    "${ERR[ours,$op,$c]}" "${ERR[etcd,$op,$c]}"
            }
        done
    done
    if [[ " $CONNS " == *" $REF_CONNS "* ]]; then
        echo
        echo "The issue's reference figures (\"measured here for reference\") in this run, $REF_CONNS connections (benches/kv_reference.rs; etcd from the table above):"
        echo
        echo "| server | issue's figure | this run req/s | p50 | p99 |"
        echo "|---|---:|---:|---:|---:|"
        c=$REF_CONNS
        # shellcheck disable=SC2086
        for row in "bare;get;bare axum handler returning 1 KiB;≈ 136,000" \
            "ref;get;naive rusqlite GET through spawn_blocking;≈ 40,000" \
            "ref;put;naive group commit (durable PUT);≈ 30,000" \
            "etcd;get;etcd GET;≈ 9,000–12,000" \
            "etcd;put;etcd PUT;≈ 10,000–12,000" \
            "ours;get;**localhostd GET** (goal ≥ 60,000 with p99 < 3 ms);—" \
            "ours;put;**localhostd PUT** (goal ≥ 30,000 and ≥ 3× etcd);—"; do
            IFS=';' read -r who op what ref <<<"$row"
            printf '| %s | %s | %.0f | %s | %s |\n' "$what" "$ref" "$(median ${RPS[$who,$op,$c]})" \
                "$(us "$(median ${P50[$who,$op,$c]})")" "$(us "$(median ${P99[$who,$op,$c]})")"
        done
    fi
    if [[ $BENCH_BASELINE == 1 ]]; then
        echo
        bench_compare_head
        for op in put get; do
            for c in $CONNS; do
                bench_compare_row "$op c=$c req/s" higher bench_int "${RPS[ours,$op,$c]}" "${RPS[base,$op,$c]}"
                bench_compare_row "$op c=$c p50" lower bench_us "${P50[ours,$op,$c]}" "${P50[base,$op,$c]}"
                bench_compare_row "$op c=$c p99" lower bench_us "${P99[ours,$op,$c]}" "${P99[base,$op,$c]}"
            done
        done
        echo
        errs=""
        for op in put get; do
            for c in $CONNS; do errs+="${errs:+, }$op c=$c ${ERR[base,$op,$c]}"; done
        done
        echo "- errors of the baseline: $errs"
    fi
} >"$entry"
cat "$entry"

bench_record "Key-value store vs etcd (benches/kv.sh)" "$entry"
