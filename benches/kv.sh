#!/usr/bin/env bash
# benches/kv.sh: the key-value store, side by side with etcd (Debian's etcd-server, its v3 JSON
# gateway): durable PUT and GET throughput and p50/p99 at 1, 16 and 64 connections with 1 KiB
# values, every PUT body unique (SQLite and etcd could skip identical overwrites otherwise).
#
# Standalone for now, in the style of benches/lib.sh (which arrives with a merge from main;
# then this script should source it instead of its own helpers below): it installs what it
# needs with apt-get, builds the release binary, starts ours and etcd on free loopback ports in
# a temp dir, runs both alternately (the first one swapped every round), prints a markdown
# table and appends it with machine, date and commit to docs/benchmarks.md.
#
# Knobs: ROUNDS (3), DURATION seconds per run (10), CONNS ("1 16 64"), BENCH_RECORD=0 (print
# only), LOCALHOSTD_BIN=path (skip the build), BENCH_KEEP_TMP=1.
#
# Ours runs with rate-limit.enabled = false (the default limits would throttle a benchmark)
# and --log-level warn (no per-request log line), like benches/health.sh. etcd runs with its
# defaults (a durable fsync'd WAL), one member.

set -euo pipefail

ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10}"
CONNS="${CONNS:-1 16 64}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/localhostd-bench-kv.XXXXXX")"
PIDS=()

log() { printf '[kv %s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

stop_pid() {
    local pid="$1" i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? pid
    set +e
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    if [[ "${BENCH_KEEP_TMP:-0}" == 1 ]]; then log "kept $TMP"; else rm -rf -- "$TMP"; fi
    return "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

need_tools() {
    local missing=() spec
    for spec in "$@"; do
        command -v "${spec%%:*}" >/dev/null 2>&1 || missing+=("${spec#*:}")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    local sudo=()
    [[ $EUID -ne 0 ]] && sudo=(sudo)
    log "apt-get install ${missing[*]}"
    "${sudo[@]}" apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >&2
}

free_port() {
    local port hex
    for _ in $(seq 1 500); do
        port=$((20000 + RANDOM % 30000))
        hex="$(printf '%04X' "$port")"
        grep -qE "^ *[0-9]+: [0-9A-F]+:$hex " /proc/net/tcp /proc/net/tcp6 2>/dev/null && continue
        echo "$port"
        return 0
    done
    die "no free loopback port"
}

wait_http() {
    local url="$1" pid="$2" logf="$3"
    for _ in $(seq 1 150); do
        curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || {
            cat "$logf" >&2
            die "process $pid exited"
        }
        sleep 0.1
    done
    die "$url did not answer within 15 s"
}

median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2];
        else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

us() { awk -v u="$1" 'BEGIN { if (u < 1000) printf "%d µs", u; else printf "%.2f ms", u / 1000 }'; }

need_tools wrk:wrk etcd:etcd-server curl:curl

if [[ -z "${LOCALHOSTD_BIN:-}" ]]; then
    log "cargo build --release --locked"
    (cd "$REPO" && cargo build --release --locked >&2)
    LOCALHOSTD_BIN="$REPO/target/release/localhostd"
fi

# --- ours
OURS_PORT="$(free_port)"
mkdir -p "$TMP/ours"
cat >"$TMP/ours/config.toml" <<EOF
state-dir = "$TMP/ours/state"
[server]
listen = ["127.0.0.1:$OURS_PORT"]
[rate-limit]
enabled = false
EOF
"$LOCALHOSTD_BIN" serve --config "$TMP/ours/config.toml" --log-level warn >"$TMP/ours/stderr.log" 2>&1 &
OURS_PID=$!
PIDS+=("$OURS_PID")
wait_http "http://127.0.0.1:$OURS_PORT/health" "$OURS_PID" "$TMP/ours/stderr.log"
TOKEN="$(cat "$TMP/ours/state/initial-admin-token")"
log "localhostd pid $OURS_PID on 127.0.0.1:$OURS_PORT"

# --- etcd
ETCD_PORT="$(free_port)"
ETCD_PEER="$(free_port)"
etcd --name bench --data-dir "$TMP/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
    --initial-cluster "bench=http://127.0.0.1:$ETCD_PEER" \
    --quota-backend-bytes 8589934592 --log-level error >"$TMP/etcd.log" 2>&1 &
ETCD_PID=$!
PIDS+=("$ETCD_PID")
wait_http "http://127.0.0.1:$ETCD_PORT/health" "$ETCD_PID" "$TMP/etcd.log"
log "etcd $(etcd --version | head -n 1 | awk '{print $3}') pid $ETCD_PID on 127.0.0.1:$ETCD_PORT"

# Every PUT: key k00000000000..k00000009999 (12 characters, valid base64 for etcd), a 1 KiB
# value that starts with thread and request number (unique). GETs read k0..k999.
cat >"$TMP/kv.lua" <<'EOF'
local mode = os.getenv("KV_MODE")
local token = os.getenv("KV_TOKEN") or ""
local counter = 0
local nthreads = 0
function setup(thread)
  nthreads = nthreads + 1
  thread:set("tid", nthreads)
end
local pad = string.rep("A", 1368)
local ours_headers = { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json" }
local etcd_headers = { ["Content-Type"] = "application/json" }
function request()
  counter = counter + 1
  local uniq = string.format("%02d%014d", tid, counter)
  if mode == "ours-put" then
    local key = string.format("k%011d", counter % 10000)
    -- 1022 characters inside the quotes: a 1024-byte JSON value.
    local body = '"' .. uniq .. string.sub(pad, 1, 1022 - #uniq) .. '"'
    return wrk.format("PUT", "/api/v1/data/" .. key, ours_headers, body)
  elseif mode == "ours-get" then
    return wrk.format("GET", "/api/v1/data/" .. string.format("k%011d", counter % 1000), ours_headers)
  elseif mode == "etcd-put" then
    local key = string.format("k%011d", counter % 10000)
    -- 1368 base64 characters: a 1026-byte value.
    local val = uniq .. string.sub(pad, 1, 1368 - #uniq)
    return wrk.format("POST", "/v3/kv/put", etcd_headers, '{"key":"' .. key .. '","value":"' .. val .. '"}')
  else
    local key = string.format("k%011d", counter % 1000)
    return wrk.format("POST", "/v3/kv/range", etcd_headers, '{"key":"' .. key .. '"}')
  end
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
    local mode="$1" conns="$2" secs="$3" port threads
    case "$mode" in ours-*) port="$OURS_PORT" ;; *) port="$ETCD_PORT" ;; esac
    threads=$((conns < $(nproc) ? conns : $(nproc)))
    {
        echo "== $mode wrk -t$threads -c$conns -d${secs}s"
        KV_MODE="$mode" KV_TOKEN="$TOKEN" wrk --latency -t"$threads" -c"$conns" -d"${secs}s" \
            --timeout 5s -s "$TMP/kv.lua" "http://127.0.0.1:$port/"
    } >>"$TMP/wrk.log" 2>&1 || die "wrk failed: $(tail -n 5 "$TMP/wrk.log")"
    tail -n 1 "$TMP/wrk.log" | awk '$1 == "BENCH" { print $2, $3, $4, $5; ok = 1 } END { if (!ok) exit 1 }' \
        || die "no result from wrk"
}

log "preloading keys (2 s of PUTs each)"
run ours-put 16 2 >/dev/null
run etcd-put 16 2 >/dev/null

declare -A RPS P50 P99 ERR
for op in put get; do
    for c in $CONNS; do
        for r in $(seq 1 "$ROUNDS"); do
            order="ours etcd"
            ((r % 2 == 0)) && order="etcd ours"
            for who in $order; do
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
} >"$entry"
cat "$entry"

if [[ "${BENCH_RECORD:-1}" != 0 ]]; then
    doc="$REPO/docs/benchmarks.md"
    [[ -f "$doc" ]] || printf '# Benchmarks\n\nResults of the scripts in benches/, newest last in each section.\n' >"$doc"
    marker="<!-- bench:kv -->"
    grep -qF -- "$marker" "$doc" || printf '\n## Key-value store vs etcd (benches/kv.sh)\n\n%s\n' "$marker" >>"$doc"
    commit="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    [[ -n "$(git -C "$REPO" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]] && commit="$commit+dirty"
    cpu="$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
    ram="$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    {
        echo
        echo "### $(date -u +'%Y-%m-%d %H:%M UTC') · commit \`$commit\`"
        echo
        echo "- machine: $cpu, $(nproc) cores, $ram RAM, Linux $(uname -r)"
        echo "- command: \`ROUNDS=$ROUNDS DURATION=$DURATION benches/kv.sh\`"
        cat "$entry"
    } >>"$doc"
    log "recorded in docs/benchmarks.md"
fi
