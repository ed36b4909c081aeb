#!/usr/bin/env bash
# File store: uploads and downloads, localhostd vs dufs (uploads and downloads) and nginx
# (downloads), with `dd conv=fsync` as the disk's own figure, all in one run on loopback.
#
#   1 MiB uploads   PUT, 16 connections (wrk), req/s — ours fsyncs every file before its 2xx,
#                   dufs does not; dd: 1 MiB files each written with conv=fsync, 16 at a time
#   1 MiB downloads GET, 16 connections (wrk), req/s — ours, dufs, nginx
#   1 GiB upload    curl -T, MB/s — ours, dufs; dd bs=1M conv=fsync of the same size
#   1 GiB download  curl, MB/s — ours, dufs, nginx (page cache warm for all three)
#   peak RSS        VmHWM of our daemon during one 1 GiB upload (reset before it via
#                   /proc/PID/clear_refs), dufs's beside it
#
# ROUNDS rounds; in each the contenders run back to back, the first one swapped every round;
# the table shows medians. Replaces its entry in docs/benchmarks.md (BENCH_RECORD=0 to only print).
#
#   benches/files.sh                                      # 3 rounds, 10 s per wrk cell
#   ROUNDS=1 DURATION=3 BIG_MB=256 BENCH_RECORD=0 benches/files.sh   # quick look
#
# dufs comes from `cargo install dufs`, cached in ${XDG_CACHE_HOME:-~/.cache}/localhostd-bench
# (DUFS_BIN=path uses another). The state dirs and dd files live in $TMPDIR (default /tmp):
# point TMPDIR at the disk you want measured; a tmpfs there is reported in the notes.
set -euo pipefail
# shellcheck source=benches/lib.sh
source "$(dirname "$0")/lib.sh"

ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10}"
CONNS="${CONNS:-16}"
BIG_MB="${BIG_MB:-1024}"
bench_init files "ROUNDS=$ROUNDS DURATION=$DURATION CONNS=$CONNS BIG_MB=$BIG_MB"

bench_need_tools curl:curl wrk:wrk "nginx:nginx-light|nginx" awk:gawk dd:coreutils
bench_build

# dufs, built once into a cache outside the repository.
DUFS_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/localhostd-bench/dufs"
DUFS_BIN="${DUFS_BIN:-$DUFS_CACHE/bin/dufs}"
if [[ ! -x "$DUFS_BIN" ]]; then
    bench_log "cargo install dufs into $DUFS_CACHE (once)"
    cargo install --quiet --locked --root "$DUFS_CACHE" dufs >&2
fi
DUFS_VERSION="$("$DUFS_BIN" --version 2>/dev/null | head -n 1)"

load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
fs_type="$(stat -f -c %T "$BENCH_TMP")"

# Sources: nginx serves them (its workers run as nobody: the path must be traversable).
chmod 755 "$BENCH_TMP"
SRC="$BENCH_TMP/src"
mkdir -p "$SRC"
head -c $((1 << 20)) /dev/urandom >"$SRC/small.bin"
bench_log "making a ${BIG_MB} MiB source file"
head -c $((BIG_MB << 20)) /dev/urandom >"$SRC/big.bin"
echo ok >"$SRC/health"
chmod -R a+rX "$SRC"
BIG_BYTES=$((BIG_MB << 20))

OURS_CONFIG_EXTRA="[rate-limit]
enabled = false
[files]
max-file-size = \"$((BIG_MB * 2))MiB\"
max-total-size = \"$((BIG_MB * 4 + 1024))MiB\""
ours_start ours
TOKEN="$(cat "$OURS_DIR/state/initial-admin-token")"
AUTH="Authorization: Bearer $TOKEN"
OURS_URL="http://127.0.0.1:$OURS_PORT/api/v1/files"

DUFS_DIR="$BENCH_TMP/dufs"
mkdir -p "$DUFS_DIR/root"
bench_free_port DUFS_PORT
bench_spawn DUFS_PID "$DUFS_DIR/stderr.log" "$DUFS_BIN" "$DUFS_DIR/root" -b 127.0.0.1 -p "$DUFS_PORT" -A
# shellcheck disable=SC2153 # set by bench_spawn through its name
bench_wait_http "http://127.0.0.1:$DUFS_PORT/" "$DUFS_PID" "$DUFS_DIR/stderr.log"
bench_log "dufs pid $DUFS_PID on 127.0.0.1:$DUFS_PORT"
DUFS_URL="http://127.0.0.1:$DUFS_PORT"

nginx_start nginx "root $SRC;"
NGINX_URL="http://127.0.0.1:$NGINX_PORT"

# Seed the 1 MiB file for downloads on each server.
curl -fsS -o /dev/null -H "$AUTH" -T "$SRC/small.bin" "$OURS_URL/small.bin"
curl -fsS -o /dev/null -T "$SRC/small.bin" "$DUFS_URL/small.bin"

# wrk scripts: PUT of the 1 MiB file to 64 rotating names; GET with an optional header; both
# report "BENCH rps p50 p99 errors".
cat >"$BENCH_TMP/report.lua" <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %.1f %d %d %d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout + e.status))
end
EOF
cat >"$BENCH_TMP/put.lua" <<EOF
local f = assert(io.open("$SRC/small.bin", "rb"))
local body = f:read("*a")
f:close()
local n = 0
local headers = {}
local auth = os.getenv("BENCH_AUTH")
if auth and auth ~= "" then headers["Authorization"] = auth end
local prefix = os.getenv("BENCH_PREFIX")
request = function()
  n = n + 1
  return wrk.format("PUT", prefix .. "w" .. (n % 64) .. ".bin", headers, body)
end
$(cat "$BENCH_TMP/report.lua")
EOF
cat >"$BENCH_TMP/get.lua" <<EOF
local auth = os.getenv("BENCH_AUTH")
if auth and auth ~= "" then wrk.headers["Authorization"] = auth end
$(cat "$BENCH_TMP/report.lua")
EOF

# wrk_run SCRIPT URL PREFIX AUTH: one bounded wrk run on loopback; "rps p50 p99 errors".
wrk_run() {
    local script="$1" url="$2" prefix="$3" auth="$4" threads
    case "$url" in http://127.0.0.1:*) ;; *) bench_die "load only on loopback: $url" ;; esac
    threads=$((CONNS < $(nproc) ? CONNS : $(nproc)))
    {
        echo "== wrk -t$threads -c$CONNS -d${DURATION}s -s $(basename "$script") $url"
        BENCH_PREFIX="$prefix" BENCH_AUTH="$auth" wrk --latency -t"$threads" -c"$CONNS" \
            -d"${DURATION}s" --timeout 10s -s "$script" "$url"
    } >>"$BENCH_TMP/wrk.log" 2>&1 || bench_die "wrk failed: see $BENCH_TMP/wrk.log"
    tail -n 1 "$BENCH_TMP/wrk.log" | awk '$1 == "BENCH" { print $2, $3, $4, $5; ok = 1 }
        END { if (!ok) exit 1 }' || bench_die "no result from wrk"
}

# now: seconds since the epoch, with microseconds.
now() { echo "$EPOCHREALTIME"; }
mbps() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.0f", b / 1e6 / s }'; }

# dd_small: COUNT 1 MiB files, each written with conv=fsync, CONNS at a time; files/s.
dd_small() {
    local dir="$BENCH_TMP/dd-small" count=$((CONNS * 16)) t0 t1
    mkdir -p "$dir"
    t0="$(now)"
    seq 1 "$count" | xargs -P "$CONNS" -I{} dd if="$SRC/small.bin" of="$dir/{}.bin" bs=1M conv=fsync status=none
    t1="$(now)"
    rm -rf "$dir"
    awk -v n="$count" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }'
}

# dd_big: the big file written with bs=1M conv=fsync to the state dirs' filesystem; MB/s.
dd_big() {
    local t0 t1
    t0="$(now)"
    dd if="$SRC/big.bin" of="$BENCH_TMP/dd-big.bin" bs=1M conv=fsync status=none
    t1="$(now)"
    rm -f "$BENCH_TMP/dd-big.bin"
    mbps "$BIG_BYTES" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')"
}

# curl_put URL [HEADER]: upload the big file; MB/s (fails on a non-2xx).
curl_put() {
    local url="$1" out code secs
    shift
    out="$(curl -sS -o /dev/null -w '%{http_code} %{time_total}' --max-time 600 "$@" -T "$SRC/big.bin" "$url")"
    read -r code secs <<<"$out"
    [[ "$code" == 2* ]] || bench_die "upload to $url answered $code"
    mbps "$BIG_BYTES" "$secs"
}

# curl_get URL [HEADER]: download; MB/s (checks the size).
curl_get() {
    local url="$1" out code size secs
    shift
    out="$(curl -sS -o /dev/null -w '%{http_code} %{size_download} %{time_total}' --max-time 600 "$@" "$url")"
    read -r code size secs <<<"$out"
    [[ "$code" == 200 && "$size" == "$BIG_BYTES" ]] || bench_die "download of $url: $code, $size bytes"
    mbps "$BIG_BYTES" "$secs"
}

hwm_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
reset_hwm() { echo 5 >"/proc/$1/clear_refs" 2>/dev/null || true; }

declare -A R
add() { R[$1]+="$2 "; }

for r in $(seq 1 "$ROUNDS"); do
    if ((r % 2)); then order="ours dufs"; else order="dufs ours"; fi
    # Big uploads: dd, then both servers; our peak RSS during ours.
    add dd_big "$(dd_big)"
    for t in $order; do
        if [[ $t == ours ]]; then
            reset_hwm "$OURS_PID"
            add rss_start_ours "$(awk '/^VmRSS:/ { print $2 }' "/proc/$OURS_PID/status")"
            add up_big_ours "$(curl_put "$OURS_URL/big.bin" -H "$AUTH")"
            add rss_ours "$(hwm_kb "$OURS_PID")"
        else
            reset_hwm "$DUFS_PID"
            add up_big_dufs "$(curl_put "$DUFS_URL/big.bin")"
            add rss_dufs "$(hwm_kb "$DUFS_PID")"
        fi
    done
    bench_log "round $r: $BIG_MB MiB up: dd ${R[dd_big]}| ours ${R[up_big_ours]}| dufs ${R[up_big_dufs]}MB/s"
    # Big downloads.
    for t in $order nginx; do
        case $t in
            ours) add down_big_ours "$(curl_get "$OURS_URL/big.bin" -H "$AUTH")" ;;
            dufs) add down_big_dufs "$(curl_get "$DUFS_URL/big.bin")" ;;
            nginx) add down_big_nginx "$(curl_get "$NGINX_URL/big.bin")" ;;
        esac
    done
    # Small uploads: the disk's fsync'd rate, then both servers.
    add dd_small "$(dd_small)"
    for t in $order; do
        if [[ $t == ours ]]; then
            read -r rps _ p99 err <<<"$(wrk_run "$BENCH_TMP/put.lua" "$OURS_URL/" "/api/v1/files/small/" "Bearer $TOKEN")"
        else
            read -r rps _ p99 err <<<"$(wrk_run "$BENCH_TMP/put.lua" "$DUFS_URL/" "/small/" "")"
        fi
        add "up_small_$t" "$rps"
        add "up_small_p99_$t" "$p99"
        add "err_$t" "$err"
    done
    bench_log "round $r: 1 MiB up: dd ${R[dd_small]}| ours ${R[up_small_ours]}| dufs ${R[up_small_dufs]}req/s"
    # Small downloads.
    for t in $order nginx; do
        case $t in
            ours) out="$(wrk_run "$BENCH_TMP/get.lua" "$OURS_URL/small.bin" "" "Bearer $TOKEN")" ;;
            dufs) out="$(wrk_run "$BENCH_TMP/get.lua" "$DUFS_URL/small.bin" "" "")" ;;
            nginx) out="$(wrk_run "$BENCH_TMP/get.lua" "$NGINX_URL/small.bin" "" "")" ;;
        esac
        read -r rps _ _ err <<<"$out"
        add "down_small_$t" "$rps"
        add "err_$t" "$err"
    done
done

load_after="$(cut -d' ' -f1-3 /proc/loadavg)"
# shellcheck disable=SC2086 # word splitting wanted: one number per word
med() { bench_median ${R[$1]}; }
# shellcheck disable=SC2086
sumv() { printf '%s\n' ${R[$1]} | awk '{ s += $1 } END { print s + 0 }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f%%", 100 * a / b }'; }
fmt0() { awk -v v="$1" 'BEGIN { printf "%.0f", v }'; }

entry="$BENCH_TMP/entry.md"
{
    echo "- peers: $DUFS_VERSION (\`-A\`, no fsync), $(nginx -v 2>&1 | sed 's/^nginx version: //')" \
        "(static root, downloads only); load: curl (1 GiB), $(wrk -v 2>&1 | head -n1 | awk '{print $1, $2}')" \
        "(1 MiB, $CONNS connections, ${DURATION}s per cell, keep-alive)"
    echo "- $ROUNDS rounds, ours and dufs alternating first; medians; state dirs and dd files on" \
        "$fs_type ($BENCH_TMP); load average before $load_before, after $load_after"
    echo
    echo "| what | dd conv=fsync | ours | dufs | nginx | ours vs goal |"
    echo "|---|---:|---:|---:|---:|---|"
    echo "| upload ${BIG_MB} MiB, MB/s | $(med dd_big) | $(med up_big_ours) | $(med up_big_dufs) | – |" \
        "$(pct "$(med up_big_ours)" "$(med dd_big)") of dd (goal ≥ 80%) |"
    echo "| upload 1 MiB × $CONNS conns, req/s | $(med dd_small) files/s | $(fmt0 "$(med up_small_ours)") | $(fmt0 "$(med up_small_dufs)") | – |" \
        "$(pct "$(med up_small_ours)" "$(med dd_small)") of dd (goal ≥ 80%; seed 50/s) |"
    echo "| download ${BIG_MB} MiB, MB/s | – | $(med down_big_ours) | $(med down_big_dufs) | $(med down_big_nginx) |" \
        "goal ≥ 1500 and > dufs |"
    echo "| download 1 MiB × $CONNS conns, req/s | – | $(fmt0 "$(med down_small_ours)") | $(fmt0 "$(med down_small_dufs)") | $(fmt0 "$(med down_small_nginx)") | |"
    echo "| peak RSS during a ${BIG_MB} MiB upload | – | $(bench_kb "$(med rss_ours)") | $(bench_kb "$(med rss_dufs)") | – | goal < 32 MB |"
    echo
    echo "- 1 MiB upload p99: ours $(bench_us "$(med up_small_p99_ours)"), dufs $(bench_us "$(med up_small_p99_dufs)");" \
        "errors (socket + non-2xx, all wrk runs): ours $(sumv err_ours), dufs $(sumv err_dufs), nginx $(sumv err_nginx)"
    echo "- per round: ${BIG_MB} MiB up ours ${R[up_big_ours]}/ dufs ${R[up_big_dufs]}/ dd ${R[dd_big]}MB/s;" \
        "${BIG_MB} MiB down ours ${R[down_big_ours]}/ dufs ${R[down_big_dufs]}/ nginx ${R[down_big_nginx]}MB/s"
    # shellcheck disable=SC2086 # one number per word
    echo "- peak RSS per round (VmHWM, reset just before the upload; VmRSS at that moment in brackets):" \
        "$(paste -d' ' <(printf '%s\n' ${R[rss_ours]}) <(printf '%s\n' ${R[rss_start_ours]}) |
            awk '{ printf "%s%.1f MB (%.1f MB)", (NR > 1 ? ", " : ""), $1 * 1024 / 1e6, $2 * 1024 / 1e6 }')." \
        "Round 1 is a fresh daemon; later rounds follow the 16-connection phases, whose freed memory" \
        "the allocator keeps (RSS at the start), so they show retention, not what the upload needs"
    echo "- dd 1 MiB: $((CONNS * 16)) files of 1 MiB, each \`dd conv=fsync\`, $CONNS at a time (xargs -P)"
} >"$entry"

echo
cat "$entry"
echo
bench_record "files — uploads and downloads vs dufs and nginx (benches/files.sh)" "$entry"
