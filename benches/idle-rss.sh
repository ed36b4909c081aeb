#!/usr/bin/env bash
# Idle memory: localhostd vs nginx after startup, 100 requests and 10 s idle.
#
# Issue 2's acceptance point: idle RSS of the running daemon under 12 MB (10^6 bytes), measured
# after startup, 100 requests and 10 s idle. Each round starts a fresh process (ours with an
# empty state dir), sends REQUESTS requests over loopback (one curl each, a new connection each,
# /health, /ready and /api/v1/health in turn; /ready commits a fsync'd write), waits IDLE
# seconds, then reads VmRSS / RssAnon / RssFile from /proc/PID/status and PSS from
# /proc/PID/smaps_rollup, and stops it. nginx (master + workers, each and summed) is measured
# the same way in the same run; rounds alternate which one goes first. Medians over ROUNDS.
# With LOCALHOSTD_BASELINE_BIN (benches/lib.sh) an earlier build of ours is measured the same
# way in every round too (the three in an order rotated every round), and a second table gives
# after ÷ baseline per measure beside the run's own spread.
#
#   benches/idle-rss.sh                        # 3 rounds, about 80 s
#   ROUNDS=1 BENCH_RECORD=0 benches/idle-rss.sh
#   LOCALHOSTD_BASELINE_BIN=/path/localhostd-old LOCALHOSTD_BASELINE_REV=01fe5f3 benches/idle-rss.sh
#   UI_PAGES=1 LOCALHOSTD_BASELINE_BIN=/path/localhostd-before-ui benches/idle-rss.sh
#
# UI_PAGES=1 (issue 26: the UI adds at most 1 MB to the idle RSS): after the requests, a headless
# Chromium (benches/ui_driver.py visit) logs in with the initial admin token and loads every
# page of the web UI once, then closes; the idle wait and the measurement follow. A baseline
# without a web UI (GET / is no HTML page) gets only the requests, so after ÷ baseline is the
# cost of the UI with all its pages loaded once (UI_PAGE_LIST=/,/data… to choose them). Needs chromium and Python's `websockets`
# (tests/e2e/requirements.txt; put in a venv under target/ when missing).
set -euo pipefail
# shellcheck source=benches/lib.sh
source "$(dirname "$0")/lib.sh"

ROUNDS="${ROUNDS:-3}"
REQUESTS="${REQUESTS:-100}"
IDLE="${IDLE:-10}"
LIMIT_MB=12
UI_PAGES="${UI_PAGES:-0}"
bench_init idle-rss "ROUNDS=$ROUNDS REQUESTS=$REQUESTS IDLE=$IDLE UI_PAGES=$UI_PAGES"

bench_need_tools curl:curl "nginx:nginx-light|nginx" awk:gawk
bench_build
bench_baseline

PATHS=(/health /ready /api/v1/health)

# ui_python: a Python with `websockets` for benches/ui_driver.py.
ui_python() {
    local venv="$BENCH_REPO/target/ci-venv"
    if ! "$venv/bin/python3" -c 'import websockets' >/dev/null 2>&1; then
        bench_log "installing tests/e2e/requirements.txt into $venv"
        python3 -m venv "$venv" >&2 || bench_die "python3 -m venv failed (apt-get install python3-venv)"
        "$venv/bin/pip" install -q --disable-pip-version-check \
            -r "$BENCH_REPO/tests/e2e/requirements.txt" >&2 || bench_die "pip install failed"
    fi
    echo "$venv/bin/python3"
}

if [[ $UI_PAGES == 1 ]]; then
    bench_need_tools chromium:chromium python3:python3
    UI_PY="$(ui_python)"
fi

# visit_pages PORT: every page of the web UI once, logged in with the initial admin token;
# nothing for a build without the UI.
visit_pages() {
    local port="$1" ctype
    [[ $UI_PAGES == 1 ]] || return 0
    ctype="$(curl -sS -o /dev/null --max-time 5 -w '%{content_type}' "http://127.0.0.1:$port/" || true)"
    if [[ $ctype != text/html* ]]; then
        bench_log "no web UI on port $port (GET / is $ctype): pages not visited"
        return 0
    fi
    LOCALHOSTD_TOKEN="$(cat "$OURS_DIR/state/initial-admin-token")" timeout 300 \
        "$UI_PY" "$BENCH_REPO/benches/ui_driver.py" visit --base "http://127.0.0.1:$port" ${UI_PAGE_LIST:+--pages "$UI_PAGE_LIST"} >&2 \
        || bench_die "loading the UI's pages failed"
}

# send_requests PORT: REQUESTS requests, PATHS in turn; fails unless every answer is 2xx.
send_requests() {
    local port="$1" i code bad=0
    for ((i = 0; i < REQUESTS; i++)); do
        code="$(curl -sS -o /dev/null --max-time 5 -w '%{http_code}' \
            "http://127.0.0.1:$port${PATHS[i % ${#PATHS[@]}]}" || true)"
        [[ "$code" == 2* ]] || bad=$((bad + 1))
    done
    [[ $bad -eq 0 ]] || bench_die "$bad of $REQUESTS requests to port $port were not 2xx"
}

# What the RSS of one process is made of, from /proc/PID/smaps: kB per kind of mapping.
rss_breakdown() {
    local pid="$1" exe
    exe="$(readlink "/proc/$pid/exe")"
    awk -v exe="$exe" -v state="$OURS_DIR/state" '
        /^[0-9a-f]+-[0-9a-f]+ / {
            name = (NF >= 6) ? $6 : ""
            if (name == exe && $2 ~ /x/) g = "the binary, code (r-x, clean file pages)"
            else if (name == exe && $2 ~ /w/) g = "the binary, .data (rw-)"
            else if (name == exe) g = "the binary, read-only data (r--: .rodata, .eh_frame; .data.rel.ro is written once at load)"
            else if (name ~ /\.so/) g = "shared libraries"
            else if (name == "[heap]") g = "[heap] (brk: main malloc arena)"
            else if (name == "[stack]") g = "main thread stack"
            else if (name == "") g = "anonymous mappings (thread stacks, per-thread malloc arenas, mmap allocations)"
            else if (index(name, state) == 1) g = "state dir: " substr(name, length(state) + 2)
            else g = name
            next
        }
        /^Rss:/ { rss[g] += $2 }
        /^Anonymous:/ { anon[g] += $2 }
        END { for (g in rss) if (rss[g] > 0) printf "%d\t%d\t%s\n", rss[g], anon[g], g }
    ' "/proc/$pid/smaps" | sort -rn
}

thread_names() {
    cat /proc/"$1"/task/*/comm | sort | uniq -c | awk '{ printf "%s%s×%s", sep, $2, $1; sep = ", " }'
}

declare -A M # M[who,field] = "v1 v2 …" over rounds
add() { M[$1,$2]+="$3 "; }

CONTENDERS=(ours nginx)
[[ $BENCH_BASELINE == 1 ]] && CONTENDERS=(ours base nginx)
for r in $(seq 1 "$ROUNDS"); do
    for t in $(bench_rotate "$r" "${CONTENDERS[@]}"); do
        if [[ $t == ours || $t == base ]]; then
            if [[ $t == base ]]; then
                ours_start "base-$r" "$LOCALHOSTD_BASELINE_BIN"
            else
                ours_start "ours-$r"
            fi
            send_requests "$OURS_PORT"
            visit_pages "$OURS_PORT"
            sleep "$IDLE"
            out="$(bench_mem "$OURS_PID")"
            read -r rss anon file pss thr <<<"$out"
            for f in rss anon file pss thr; do add "$t" "$f" "${!f}"; done
            bench_log "round $r $t: VmRSS ${rss} kB (anon $anon, file $file) PSS $pss kB, $thr threads"
            if [[ $t == base ]]; then
                bench_stop "$OURS_PID"
                continue
            fi
            # Keep the picture of the last round for the notes.
            BREAKDOWN="$(rss_breakdown "$OURS_PID")"
            THREADS="$(thread_names "$OURS_PID")"
            ROLLUP="$(grep -E '^(Rss|Pss|Shared_Clean|Private_Clean|Private_Dirty|Anonymous):' \
                "/proc/$OURS_PID/smaps_rollup" | awk '{ printf "%s%s %s kB", sep, $1, $2; sep = ", " }')"
            bench_stop "$OURS_PID"
        else
            nginx_start "nginx-$r" "default_type application/json; return 200 '{\"status\":\"ok\"}';"
            send_requests "$NGINX_PORT"
            sleep "$IDLE"
            out="$(bench_mem "$NGINX_PID")"
            read -r rss anon file pss _ <<<"$out"
            for f in rss anon file pss; do add master "$f" "${!f}"; done
            out="$(bench_mem_tree "$NGINX_PID")"
            read -r trss tanon tfile tpss procs <<<"$out"
            add workers rss $((trss - rss))
            add workers anon $((tanon - anon))
            add workers file $((tfile - file))
            add workers pss $((tpss - pss))
            add nginx rss "$trss"
            add nginx anon "$tanon"
            add nginx file "$tfile"
            add nginx pss "$tpss"
            add nginx procs "$procs"
            bench_log "round $r nginx: VmRSS ${trss} kB summed over $procs processes (master $rss) PSS $tpss kB"
            bench_stop "$NGINX_PID"
        fi
    done
done

med() {
    # shellcheck disable=SC2086
    bench_median ${M[$1,$2]}
}
row() { # row LABEL WHO COUNT
    printf '| %s | %s | %s | %s | %s | %s |\n' "$1" \
        "$(bench_kb "$(med "$2" rss)")" "$(bench_kb "$(med "$2" anon)")" \
        "$(bench_kb "$(med "$2" file)")" "$(bench_kb "$(med "$2" pss)")" "$3"
}

ours_rss="$(med ours rss)"
verdict="$(awk -v k="$ours_rss" -v l="$LIMIT_MB" 'BEGIN {
    if (k * 1024 < l * 1e6) print "under"; else print "NOT under" }')"
workers=$(($(med nginx procs | cut -d. -f1) - 1))

entry="$BENCH_TMP/entry.md"
{
    echo "- peer: $(nginx -v 2>&1 | sed 's/^nginx version: //'), worker_processes ${NGINX_WORKERS:-auto}" \
        "(= $workers workers), \`return 200\` of the same JSON for every path, access_log off"
    echo "- $ROUNDS rounds, each a fresh process; $REQUESTS requests (${PATHS[*]} in turn, one" \
        "connection each)$([[ $UI_PAGES == 1 ]] && echo ", then every UI page loaded once in headless Chromium (builds with a UI)"), then ${IDLE}s idle; median over rounds; VmRSS per round: ours" \
        "${M[ours,rss]% } kB, nginx (sum) ${M[nginx,rss]% } kB"
    echo
    echo "| process | VmRSS | RssAnon | RssFile | PSS | threads / processes |"
    echo "|---|---:|---:|---:|---:|---|"
    row "**localhostd**" ours "$(med ours thr | cut -d. -f1) threads"
    if [[ $BENCH_BASELINE == 1 ]]; then
        row "localhostd baseline \`$BASELINE_NAME\`" base "$(med base thr | cut -d. -f1) threads"
    fi
    row "nginx master" master "1 process"
    row "nginx workers (sum)" workers "$workers processes"
    row "**nginx total**" nginx "$(med nginx procs | cut -d. -f1) processes, 1 thread each"
    echo
    echo "- acceptance: idle VmRSS $(bench_kb "$ours_rss") is **$verdict** ${LIMIT_MB} MB"
    echo "- localhostd threads (last round): $THREADS"
    echo "- localhostd smaps_rollup (last round): $ROLLUP"
    echo "- localhostd RSS by mapping (last round; kB RSS / of it anonymous):"
    while IFS=$'\t' read -r k a g; do
        echo "  - $k / $a kB — $g"
    done <<<"$BREAKDOWN"
    if [[ $BENCH_BASELINE == 1 ]]; then
        echo
        bench_compare_head
        for f in rss:VmRSS anon:RssAnon file:RssFile pss:PSS; do
            bench_compare_row "${f#*:}" lower bench_kb "${M[ours,${f%%:*}]}" "${M[base,${f%%:*}]}"
        done
        bench_compare_row threads lower bench_int "${M[ours,thr]}" "${M[base,thr]}"
    fi
} >"$entry"

echo
cat "$entry"
echo
bench_record "Idle RSS — memory of the idle daemon (benches/idle-rss.sh)" "$entry"
