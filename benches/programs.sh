#!/usr/bin/env bash
# Stored programs end to end (issue 8, benchmark acceptance point): a stored shell "hello"
# and a stored Python "hello" run through POST /api/v1/programs/{id}/runs, side by side in the
# same run with the same interpreter started directly on the same script.
#
#   ours     our daemon (rate limits off, exec.max-concurrent 16, max-queue 256), the program
#            uploaded once; wrk + Lua POSTs `{}` (no arguments) at CONNS connections for
#            DURATION s; every answer is a JSON result (status ok checked on a sample)
#   direct   a python3 driver runs `sh hello.sh` / `python3 hello.py` (the same files) with
#            subprocess.run (no shell, output captured) from CONNS threads for DURATION s
# ROUNDS rounds; inside a round ours and direct alternate per program, the order swapped every
# round. runs/s and p50 are medians over rounds; "added latency" = ours p50 − direct p50 at one
# connection (HTTP + JSON + queue + sandbox build + history write).
# Knobs: ROUNDS (3), DURATION (8), CONNS ("1 8"), BENCH_RECORD, LOCALHOSTD_BIN.
# shellcheck source=benches/lib.sh
source "$(dirname "$0")/lib.sh"
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-8}"
CONNS="${CONNS:-1 8}"
bench_init programs "ROUNDS=$ROUNDS DURATION=$DURATION CONNS=\"$CONNS\""
bench_need_tools curl:curl wrk:wrk python3:python3
bench_build

FIX="$BENCH_TMP/fixtures"
mkdir -p "$FIX"
printf 'echo hello\n' >"$FIX/hello.sh"
printf 'print("hello")\n' >"$FIX/hello.py"

# shellcheck disable=SC2034 # read by ours_start
OURS_CONFIG_EXTRA='[rate-limit]
enabled = false
[exec]
max-concurrent = 16
max-queue = 256'
ours_start ours
TOKEN="$(cat "$OURS_DIR/state/initial-admin-token")"
BASE="http://127.0.0.1:$OURS_PORT/api/v1/programs"
declare -A ID
for p in sh py; do
    resp="$(curl -fsS --max-time 10 -H "Authorization: Bearer $TOKEN" \
        -H 'Content-Type: application/octet-stream' --data-binary "@$FIX/hello.$p" \
        "$BASE?name=hello.$p")" || bench_die "upload hello.$p failed"
    ID[$p]="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["id"])' "$resp")"
    resp="$(curl -fsS --max-time 10 -H "Authorization: Bearer $TOKEN" \
        -H 'Content-Type: application/json' -d '{}' "$BASE/${ID[$p]}/runs")" \
        || bench_die "run hello.$p failed"
    python3 -c 'import json,sys; r=json.loads(sys.argv[1])
sys.exit(0 if r["status"] == "ok" and r["stdout"] == "hello\n" else 1)' "$resp" \
        || bench_die "unexpected answer for hello.$p: $resp"
    bench_log "sample $p: $resp"
done

cat >"$BENCH_TMP/run.lua" <<'EOF'
wrk.method = "POST"
wrk.body = "{}"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("RUN_TOKEN")
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %.1f %d %d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50),
    e.connect + e.read + e.write + e.timeout + e.status))
end
EOF
# ours_run PROG CONNS: "runs_per_s p50_us errors"
ours_run() {
    local url="$BASE/${ID[$1]}/runs" conns="$2" threads cores
    cores="$(nproc)"
    threads=$((conns < cores ? conns : cores))
    {
        echo "== wrk -t$threads -c$conns -d${DURATION}s POST $url"
        RUN_TOKEN="$TOKEN" wrk --latency -t"$threads" -c"$conns" -d"${DURATION}s" --timeout 10s \
            -s "$BENCH_TMP/run.lua" "$url"
    } >>"$BENCH_TMP/wrk.log" 2>&1 || bench_die "wrk failed: see $BENCH_TMP/wrk.log"
    tail -n 1 "$BENCH_TMP/wrk.log" | awk '$1 == "BENCH" { print $2, $3, $4; ok = 1 }
        END { if (!ok) exit 1 }' || bench_die "no result from wrk"
}

cat >"$BENCH_TMP/direct.py" <<'EOF'
import statistics, subprocess, sys, threading, time
argv, conns, secs = sys.argv[3:], int(sys.argv[1]), float(sys.argv[2])
lat, errors, lock = [], [0], threading.Lock()
deadline = time.monotonic() + secs
def worker():
    mine, bad = [], 0
    while time.monotonic() < deadline:
        t = time.monotonic()
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True)
        mine.append(time.monotonic() - t)
        bad += r.returncode != 0 or r.stdout != b"hello\n"
    with lock:
        lat.extend(mine)
        errors[0] += bad
ts = [threading.Thread(target=worker) for _ in range(conns)]
start = time.monotonic()
for t in ts: t.start()
for t in ts: t.join()
took = time.monotonic() - start
print("%.1f %d %d" % (len(lat) / took, statistics.median(lat) * 1e6, errors[0]))
EOF
# The interpreters the daemon resolves (programs.runtimes, searched in /usr/local/bin,
# /usr/bin, /bin), so a PATH shim (pyenv…) does not slow the direct side down.
resolve() {
    local d
    for d in /usr/local/bin /usr/bin /bin; do
        [[ -x "$d/$1" ]] && { echo "$d/$1"; return 0; }
    done
    bench_die "no $1 in /usr/local/bin, /usr/bin, /bin"
}
SH_BIN="$(resolve sh)"
PY_BIN="$(resolve python3)"
# direct_run PROG CONNS: "runs_per_s p50_us errors"
direct_run() {
    local argv
    case "$1" in sh) argv=("$SH_BIN" "$FIX/hello.sh") ;; py) argv=("$PY_BIN" "$FIX/hello.py") ;; esac
    python3 "$BENCH_TMP/direct.py" "$2" "$DURATION" "${argv[@]}"
}

bench_log "warm-up"
DURATION=2 ours_run sh 8 >/dev/null
declare -A RPS P50 ERR
for r in $(seq 1 "$ROUNDS"); do
    for p in sh py; do
        for c in $CONNS; do
            if (((r + c) % 2)); then order="ours direct"; else order="direct ours"; fi
            for who in $order; do
                read -r rps p50 err <<<"$("${who}_run" "$p" "$c")"
                RPS[$who,$p,$c]+="$rps "
                P50[$who,$p,$c]+="$p50 "
                ERR[$who,$p,$c]=$((${ERR[$who,$p,$c]:-0} + err))
                bench_log "round $r $who $p c=$c: $rps runs/s, p50 $p50 µs, $err errors"
            done
        done
    done
done

entry="$BENCH_TMP/entry.md"
{
    echo "- load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores; other engineers build on this machine)"
    echo "- $ROUNDS rounds × ${DURATION}s per cell; ours and direct alternate, order swapped per round; medians over rounds (runs/s: median, min–max)"
    echo "- ours: \`POST /api/v1/programs/{id}/runs\` \`{}\` with wrk + Lua, keep-alive; direct: python3 \`subprocess.run\` of the same file, no shell, output captured, from the same number of threads"
    echo "- ours ran as $(if [[ $EUID -eq 0 ]]; then echo 'root (each job under its own uid from sandbox.uid-range)'; else echo "uid $EUID"; fi); both sides run $SH_BIN ($(readlink -f "$SH_BIN")) and $PY_BIN ($("$PY_BIN" --version))"
    echo "- each of our runs also commits its history row, the program's run counters and an audit row (one fsync'd SQLite transaction, synchronous=FULL): part of the added latency"
    echo
    echo "| program | connections | ours runs/s | direct runs/s | ours p50 | direct p50 | added latency (p50) | errors (ours/direct) |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    for p in sh py; do
        for c in $CONNS; do
            # shellcheck disable=SC2086
            {
                o="$(bench_median ${RPS[ours,$p,$c]})"
                d="$(bench_median ${RPS[direct,$p,$c]})"
                op="$(bench_median ${P50[ours,$p,$c]})"
                dp="$(bench_median ${P50[direct,$p,$c]})"
                printf '| hello.%s | %s | %.0f (%s) | %.0f (%s) | %s | %s | %s | %s/%s |\n' "$p" "$c" \
                    "$o" "$(bench_minmax ${RPS[ours,$p,$c]} | awk -F– '{ printf "%.0f–%.0f", $1, $2 }')" \
                    "$d" "$(bench_minmax ${RPS[direct,$p,$c]} | awk -F– '{ printf "%.0f–%.0f", $1, $2 }')" \
                    "$(bench_us "$op")" "$(bench_us "$dp")" \
                    "$(bench_us "$(awk -v a="$op" -v b="$dp" 'BEGIN { print (a > b ? a - b : 0) }')")" \
                    "${ERR[ours,$p,$c]}" "${ERR[direct,$p,$c]}"
            }
        done
    done
    echo
    # shellcheck disable=SC2086
    best="$(for c in $CONNS; do bench_median ${RPS[ours,sh,$c]}; done | sort -g | tail -n 1)"
    echo "Goal (issue 8): ≥ 100 runs/s for the stored shell hello (the seed: 10/s): best $(printf '%.0f' "$best") runs/s —" \
        "$(awk -v b="$best" 'BEGIN { print (b >= 100 ? "**met**" : "**not met**") }')."
} >"$entry"
cat "$entry"
bench_record "programs — stored programs end to end vs the interpreter run directly (benches/programs.sh)" "$entry"
