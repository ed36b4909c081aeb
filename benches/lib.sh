# shellcheck shell=bash
# Shared helpers for the benchmark scripts in benches/. Source it, then call bench_init NAME.
#
# What every benchmark gets from here (see benches/README.md for the convention):
#   bench_need_tools   install missing tools with apt-get (apt-get update once, first)
#   bench_build        cargo build --release --locked, once; sets LOCALHOSTD_BIN
#   bench_baseline     LOCALHOSTD_BASELINE_BIN: an earlier build as a further contender
#   bench_rotate       a round's order of the contenders (rotated one further every round)
#   ours_start NAME    our daemon on a free loopback port in a temp dir, waited for on /health
#   nginx_start NAME   nginx as the peer, temp config/pid/logs, its own free loopback port
#   bench_stop PID     SIGTERM one process we started (and its children), wait for it
#   bench_wrk          one bounded wrk run against loopback; prints "rps p50_us p99_us errors"
#   bench_median       median of numbers
#   bench_compare_*    the after ÷ baseline table (ratio per measure beside the run's spread)
#   bench_record       write the run's dated entry (date, commit, machine, command) into the
#                      benchmark's section of docs/benchmarks.md, replacing the entry there
#                      (everything from the section's marker to the next "## " heading)
# Everything runs on 127.0.0.1, every process started here is tracked by PID, and an EXIT trap
# stops exactly those PIDs and removes the temp dir. Nothing is written outside the temp dir
# except the entry in docs/benchmarks.md (skip it with BENCH_RECORD=0).
#
# Knobs (environment): BENCH_RECORD=0 (print only), LOCALHOSTD_BIN=path (skip the build),
# BENCH_KEEP_TMP=1 (keep the temp dir for inspection), LOCALHOSTD_BASELINE_BIN=path and
# LOCALHOSTD_BASELINE_REV=rev (the scripts that call bench_baseline: kv, exec, idle-rss).

set -euo pipefail

BENCH_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH_DOC="$BENCH_REPO/docs/benchmarks.md"
BENCH_PIDS=()
BENCH_PORTS=()
BENCH_TMP=""
BENCH_NAME=""
BENCH_APT_UPDATED=0
BENCH_BASELINE=0
BASELINE_NAME=""

bench_log() { printf '[%s %s] %s\n' "$BENCH_NAME" "$(date +%T)" "$*" >&2; }
bench_die() {
    bench_log "error: $*"
    exit 1
}

# bench_init NAME [ENV_PREFIX]: temp dir, traps; ENV_PREFIX (the knobs, as VAR=value) goes into
# the recorded command line. Call once, at the top of a benchmark script.
bench_init() {
    BENCH_NAME="$1"
    BENCH_CMDLINE="${2:+$2 }benches/$(basename "$0")"
    BENCH_TMP="$(mktemp -d "${TMPDIR:-/tmp}/localhostd-bench-$BENCH_NAME.XXXXXX")"
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# Stops every process this run started (children first found by parent PID, never by name),
# then removes the temp dir.
bench_cleanup() {
    local rc=$? pid
    set +e
    for pid in "${BENCH_PIDS[@]}"; do
        bench_stop "$pid"
    done
    if [[ -n "$BENCH_TMP" && -d "$BENCH_TMP" ]]; then
        if [[ "${BENCH_KEEP_TMP:-0}" == 1 ]]; then
            bench_log "kept $BENCH_TMP"
        else
            rm -rf -- "$BENCH_TMP"
        fi
    fi
    return "$rc"
}

# bench_need_tools CMD:PACKAGE...  e.g. bench_need_tools wrk:wrk nginx:nginx-light
# A PACKAGE may be "a|b": the first one apt knows is installed.
bench_need_tools() {
    local spec cmd pkgs missing=() p chosen
    for spec in "$@"; do
        cmd="${spec%%:*}"
        pkgs="${spec#*:}"
        # nginx lives in /usr/sbin, which a non-login PATH may lack.
        if command -v "$cmd" >/dev/null 2>&1 || [[ -x "/usr/sbin/$cmd" ]]; then
            continue
        fi
        missing+=("$pkgs")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    command -v apt-get >/dev/null || bench_die "missing tools (${missing[*]}) and no apt-get: install them"
    local sudo=()
    if [[ $EUID -ne 0 ]]; then
        command -v sudo >/dev/null || bench_die "missing tools (${missing[*]}): run as root or install them"
        sudo=(sudo)
    fi
    if [[ $BENCH_APT_UPDATED -eq 0 ]]; then
        bench_log "apt-get update"
        "${sudo[@]}" apt-get update -qq >&2
        BENCH_APT_UPDATED=1
    fi
    local install=()
    for pkgs in "${missing[@]}"; do
        chosen=""
        IFS='|' read -ra alts <<<"$pkgs"
        for p in "${alts[@]}"; do
            if apt-cache show "$p" >/dev/null 2>&1; then
                chosen="$p"
                break
            fi
        done
        [[ -n "$chosen" ]] || bench_die "no package for $pkgs"
        install+=("$chosen")
    done
    bench_log "apt-get install ${install[*]}"
    # nginx's postinst may try to start the distro's nginx.service; the policy-rc.d
    # convention is not ours to change, so we only install and never rely on that service.
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${install[@]}" >&2
}

# bench_build: the release binary, built once (cargo waits for the build lock if someone else
# is building). Set LOCALHOSTD_BIN to use an existing binary instead.
bench_build() {
    if [[ -n "${LOCALHOSTD_BIN:-}" ]]; then
        [[ -x "$LOCALHOSTD_BIN" ]] || bench_die "LOCALHOSTD_BIN=$LOCALHOSTD_BIN is not executable"
        return 0
    fi
    bench_log "cargo build --release --locked"
    (cd "$BENCH_REPO" && cargo build --release --locked >&2)
    LOCALHOSTD_BIN="$BENCH_REPO/target/release/localhostd"
}

# bench_baseline: when LOCALHOSTD_BASELINE_BIN is set (a release binary built from an earlier
# commit), checks it, sets BENCH_BASELINE=1 and BASELINE_NAME, and adds both knobs to the
# recorded command line; the script then runs that binary as one more contender in every
# round, so a change is judged by after ÷ before measured side by side on the same machine
# state, not by figures of two runs hours apart. BASELINE_NAME is `git describe --always` of
# LOCALHOSTD_BASELINE_REV (the rev as given when this repository does not know it); without a
# rev, the binary's file name. Unset, BENCH_BASELINE stays 0 and nothing changes.
bench_baseline() {
    [[ -n "${LOCALHOSTD_BASELINE_BIN:-}" ]] || return 0
    [[ -x "$LOCALHOSTD_BASELINE_BIN" ]] \
        || bench_die "LOCALHOSTD_BASELINE_BIN=$LOCALHOSTD_BASELINE_BIN is not executable"
    local rev="${LOCALHOSTD_BASELINE_REV:-}"
    if [[ -n "$rev" ]]; then
        BASELINE_NAME="$(git -C "$BENCH_REPO" describe --always "$rev^{commit}" 2>/dev/null || echo "$rev")"
    else
        BASELINE_NAME="$(basename "$LOCALHOSTD_BASELINE_BIN")"
        bench_log "LOCALHOSTD_BASELINE_REV unset: the baseline is named by its file, $BASELINE_NAME"
    fi
    BENCH_BASELINE=1
    BENCH_CMDLINE="LOCALHOSTD_BASELINE_BIN=$LOCALHOSTD_BASELINE_BIN${rev:+ LOCALHOSTD_BASELINE_REV=$rev} $BENCH_CMDLINE"
    bench_log "baseline: $BASELINE_NAME ($LOCALHOSTD_BASELINE_BIN)"
}

# bench_rotate ROUND ITEM...: the items on one line, starting ROUND - 1 further along the list
# (round 1 as given): the README's rule 5 for any number of contenders, so each one goes first
# (and follows each other) equally often. For two it is the old swap every round.
bench_rotate() {
    local r="$1" n i
    shift
    n=$#
    local items=("$@") rotated=()
    for ((i = 0; i < n; i++)); do rotated+=("${items[$(((i + r - 1) % n))]}"); done
    echo "${rotated[*]}"
}

# bench_free_port VAR: a loopback TCP port nobody uses now (per /proc/net/tcp{,6}) and that this
# run has not handed out yet.
bench_free_port() {
    local -n _out="$1"
    local port hex used p
    for _ in $(seq 1 500); do
        port=$((20000 + RANDOM % 30000))
        hex="$(printf '%04X' "$port")"
        used=0
        for p in "${BENCH_PORTS[@]}"; do [[ "$p" == "$port" ]] && used=1; done
        [[ $used -eq 1 ]] && continue
        if grep -qE "^ *[0-9]+: [0-9A-F]+:$hex " /proc/net/tcp /proc/net/tcp6 2>/dev/null; then
            continue
        fi
        BENCH_PORTS+=("$port")
        # shellcheck disable=SC2034
        _out="$port"
        return 0
    done
    bench_die "no free loopback port found"
}

# bench_spawn VAR LOGFILE CMD...: start CMD in the background, remember its PID.
bench_spawn() {
    local -n _pid="$1"
    local log="$2"
    shift 2
    "$@" >"$log" 2>&1 &
    # shellcheck disable=SC2034
    _pid=$!
    BENCH_PIDS+=("$!")
}

# bench_wait_http URL PID LOG: wait (at most 15 s) until URL answers 2xx; fail if PID died.
bench_wait_http() {
    local url="$1" pid="$2" log="$3" i
    for i in $(seq 1 150); do
        if curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null; then
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            cat "$log" >&2 || true
            bench_die "process $pid exited before $url answered"
        fi
        sleep 0.1
    done
    cat "$log" >&2 || true
    bench_die "$url did not answer within 15 s"
}

# bench_children PID: direct children of PID (by parent PID, from /proc).
bench_children() {
    local parent="$1" f line fields
    for f in /proc/[0-9]*/stat; do
        read -r line 2>/dev/null <"$f" || continue
        # Field 4 is the parent PID; the name (field 2) may hold spaces, so split after ") ".
        read -ra fields <<<"${line##*) }"
        if [[ "${fields[1]:-}" == "$parent" ]]; then
            f="${f%/stat}"
            echo "${f#/proc/}"
        fi
    done
}

# bench_stop PID: SIGTERM PID (a process this run started) and wait up to 10 s, then SIGKILL it
# and the children it had. Removes it from the tracked list.
bench_stop() {
    local pid="$1" kids i
    local keep=()
    for i in "${BENCH_PIDS[@]}"; do [[ "$i" != "$pid" ]] && keep+=("$i"); done
    BENCH_PIDS=("${keep[@]+"${keep[@]}"}")
    kill -0 "$pid" 2>/dev/null || {
        wait "$pid" 2>/dev/null || true
        return 0
    }
    kids="$(bench_children "$pid" | tr '\n' ' ')"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        bench_log "process $pid ignored SIGTERM for 10 s; SIGKILL"
        # shellcheck disable=SC2086
        kill -KILL "$pid" $kids 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# ours_start NAME [BINARY]: start our daemon (LOCALHOSTD_BIN, or BINARY: the baseline) in
# $BENCH_TMP/NAME. Sets OURS_PID, OURS_PORT, OURS_DIR. OURS_CONFIG_EXTRA (TOML, appended
# after [server]) lets a benchmark set more keys.
ours_start() {
    local name="$1" bin="${2:-$LOCALHOSTD_BIN}"
    OURS_DIR="$BENCH_TMP/$name"
    mkdir -p "$OURS_DIR"
    bench_free_port OURS_PORT
    cat >"$OURS_DIR/config.toml" <<EOF
state-dir = "$OURS_DIR/state"
[server]
listen = ["127.0.0.1:$OURS_PORT"]
${OURS_CONFIG_EXTRA:-}
EOF
    bench_spawn OURS_PID "$OURS_DIR/stderr.log" \
        "$bin" serve --config "$OURS_DIR/config.toml" --log-level warn
    # shellcheck disable=SC2153 # set by bench_spawn through its name
    bench_wait_http "http://127.0.0.1:$OURS_PORT/health" "$OURS_PID" "$OURS_DIR/stderr.log"
    bench_log "localhostd pid $OURS_PID on 127.0.0.1:$OURS_PORT"
}

# nginx_start NAME LOCATION_BODY: start nginx (master in the foreground, so its PID is ours)
# with a config, pid file, error log and temp paths all in $BENCH_TMP/NAME, listening on a
# free loopback port. LOCATION_BODY is the inside of `location / { … }`.
# Sets NGINX_PID (the master), NGINX_PORT, NGINX_DIR. NGINX_WORKERS (default auto) sets
# worker_processes.
nginx_start() {
    local name="$1" body="$2" nginx user_line=""
    nginx="$(command -v nginx || echo /usr/sbin/nginx)"
    NGINX_DIR="$BENCH_TMP/$name"
    mkdir -p "$NGINX_DIR/tmp"
    bench_free_port NGINX_PORT
    # As root nginx switches workers to `nobody`; Debian's group for it is nogroup.
    if [[ $EUID -eq 0 ]]; then user_line="user nobody nogroup;"; fi
    cat >"$NGINX_DIR/nginx.conf" <<EOF
$user_line
worker_processes ${NGINX_WORKERS:-auto};
pid $NGINX_DIR/nginx.pid;
error_log $NGINX_DIR/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $NGINX_DIR/tmp/body;
    proxy_temp_path $NGINX_DIR/tmp/proxy;
    fastcgi_temp_path $NGINX_DIR/tmp/fastcgi;
    uwsgi_temp_path $NGINX_DIR/tmp/uwsgi;
    scgi_temp_path $NGINX_DIR/tmp/scgi;
    # hyper keeps a keep-alive connection open for any number of requests; nginx closes it
    # after 1000 by default, which would make wrk reconnect on the peer side only.
    keepalive_requests 100000000;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / { $body }
    }
}
EOF
    "$nginx" -t -q -p "$NGINX_DIR/" -c "$NGINX_DIR/nginx.conf" -e "$NGINX_DIR/error.log" \
        || bench_die "nginx rejected $NGINX_DIR/nginx.conf"
    bench_spawn NGINX_PID "$NGINX_DIR/stderr.log" \
        "$nginx" -p "$NGINX_DIR/" -c "$NGINX_DIR/nginx.conf" -e "$NGINX_DIR/error.log" \
        -g 'daemon off;'
    # shellcheck disable=SC2153 # set by bench_spawn through its name
    bench_wait_http "http://127.0.0.1:$NGINX_PORT/health" "$NGINX_PID" "$NGINX_DIR/error.log"
    bench_log "nginx master pid $NGINX_PID on 127.0.0.1:$NGINX_PORT"
}

# bench_wrk URL CONNECTIONS SECONDS: one wrk run (bounded by -d and --timeout) on loopback.
# Prints one line: "rps p50_us p99_us errors" (errors = socket errors + non-2xx/3xx).
# The raw wrk output goes to $BENCH_TMP/wrk.log.
bench_wrk() {
    local url="$1" conns="$2" secs="$3" threads cores
    case "$url" in http://127.0.0.1:*) ;; *) bench_die "load only on loopback: $url" ;; esac
    cores="$(nproc)"
    threads=$((conns < cores ? conns : cores))
    if [[ ! -f "$BENCH_TMP/report.lua" ]]; then
        cat >"$BENCH_TMP/report.lua" <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %.1f %d %d %d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout + e.status))
end
EOF
    fi
    {
        echo "== wrk -t$threads -c$conns -d${secs}s $url"
        wrk --latency -t"$threads" -c"$conns" -d"${secs}s" --timeout 5s \
            -s "$BENCH_TMP/report.lua" "$url"
    } >>"$BENCH_TMP/wrk.log" 2>&1 || bench_die "wrk failed: see $BENCH_TMP/wrk.log"
    tail -n 1 "$BENCH_TMP/wrk.log" | awk '$1 == "BENCH" { print $2, $3, $4, $5; ok = 1 }
        END { if (!ok) exit 1 }' || bench_die "no result from wrk"
}

# bench_median NUMBER...: the median (mean of the two middle values for an even count).
bench_median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
        END { if (NR == 0) exit 1
              if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# bench_minmax NUMBER...: "min–max".
bench_minmax() {
    printf '%s\n' "$@" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { print lo "–" hi }'
}

# bench_int NUMBER: rounded to a whole number (a bench_compare_row FORMAT for rates).
bench_int() {
    awk -v n="$1" 'BEGIN { printf "%.0f", n }'
}

# bench_compare_head: what the after ÷ baseline table shows, and its header. Print it, then one
# bench_compare_row per measure, into the entry after the usual table (BENCH_BASELINE=1 only).
bench_compare_head() {
    echo "After ÷ baseline: this tree's binary (after, commit \`$(bench_commit)\`) against the" \
        "baseline \`$BASELINE_NAME\`, both in every round beside the peer, the order rotated every" \
        "round. *after* and *baseline* are medians over rounds; *per-round ratios*: min–max of" \
        "after ÷ baseline within each round; *spread*: how far each one moved from round to round:" \
        "(max − min) ÷ median. The ratio is *within* the run's own spread when |ratio − 1| is at" \
        "most the larger of the two spreads, or when the per-round ratios lie on both sides of 1 (the" \
        "rounds disagree on which is faster); with one round there is no spread to judge by (–)."
    echo
    echo "| measure | better | after | baseline | after ÷ baseline | per-round ratios | spread after / baseline | within |"
    echo "|---|:-:|---:|---:|---:|---:|---:|:-:|"
}

# bench_compare_row MEASURE higher|lower FORMAT "AFTER_VALUES" "BASELINE_VALUES": one row of
# that table. The values are per round, in round order (the i-th of each list from the same
# round); FORMAT is a command that prints one value (bench_int, bench_us, bench_kb, …).
bench_compare_row() {
    local what="$1" better="$2" fmt="$3" after="$4" base="$5" ma mb ratio rr sa sb within
    read -r ma mb ratio rr sa sb within < <(awk -v a="$after" -v b="$base" '
        function med(v, n,   i, j, t) {
            for (i = 2; i <= n; i++) for (j = i; j > 1 && v[j - 1] > v[j]; j--) {
                t = v[j]; v[j] = v[j - 1]; v[j - 1] = t
            }
            return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
        }
        function spread(v, n, m,   i, lo, hi) {
            lo = hi = v[1]
            for (i = 2; i <= n; i++) { if (v[i] < lo) lo = v[i]; if (v[i] > hi) hi = v[i] }
            return m != 0 ? (hi - lo) / m : 0
        }
        BEGIN {
            na = split(a, va, " "); nb = split(b, vb, " ")
            if (na == 0 || nb == 0) { print "- - - - - - -"; exit }
            n = na < nb ? na : nb
            for (i = 1; i <= n; i++) if (vb[i] != 0) {
                r = va[i] / vb[i]; k++
                if (k == 1 || r < rlo) rlo = r
                if (k == 1 || r > rhi) rhi = r
            }
            ma = med(va, na); mb = med(vb, nb)
            pa = spread(va, na, ma); pb = spread(vb, nb, mb)
            ratio = mb != 0 ? ma / mb : 0
            rr = k >= 2 ? sprintf("%.2f–%.2f", rlo, rhi) : "–"
            within = "–"
            if (n >= 2 && mb != 0) {
                lim = pa > pb ? pa : pb
                d = ratio - 1; if (d < 0) d = -d
                within = (d <= lim || (k >= 2 && rlo <= 1 && rhi >= 1)) ? "yes" : "**no**"
            }
            printf "%s %s %s %s %s %s %s\n", ma, mb, (mb != 0 ? sprintf("%.3f", ratio) : "–"), rr,
                (n >= 2 ? sprintf("%.1f%%", 100 * pa) : "–"),
                (n >= 2 ? sprintf("%.1f%%", 100 * pb) : "–"), within
        }')
    if [[ "$ma" == - ]]; then
        printf '| %s | – | – | – | – | – | – | – |\n' "$what"
        return 0
    fi
    printf '| %s | %s | %s | %s | %s | %s | %s / %s | %s |\n' "$what" \
        "$(if [[ $better == higher ]]; then echo ↑; else echo ↓; fi)" \
        "$("$fmt" "$ma")" "$("$fmt" "$mb")" "$ratio" "$rr" "$sa" "$sb" "$within"
}

# bench_us MICROSECONDS: human latency (µs below 1 ms, else ms with 2 decimals).
bench_us() {
    awk -v u="$1" 'BEGIN { if (u < 1000) printf "%d µs", u; else printf "%.2f ms", u / 1000 }'
}

# bench_machine: one line describing this machine.
bench_machine() {
    local cpu cores ram
    cpu="$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
    cores="$(nproc)"
    ram="$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "${cpu:-unknown CPU}, $cores cores, $ram RAM, Linux $(uname -r)"
}

# bench_commit: short commit of the code measured, "+dirty" when src/ or Cargo.* differ from it.
bench_commit() {
    local c
    c="$(git -C "$BENCH_REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    if [[ -n "$(git -C "$BENCH_REPO" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]]; then
        c="$c+dirty"
    fi
    echo "$c"
}

# bench_binary [PATH]: which build was measured (version, size, build time), since "+dirty"
# alone does not say which working tree it was built from. PATH defaults to LOCALHOSTD_BIN.
bench_binary() {
    local bin="${1:-$LOCALHOSTD_BIN}" v
    v="$("$bin" --version 2>/dev/null | head -n 1 || true)"
    echo "${v:-localhostd}, $(stat -c %s "$bin") bytes, built" \
        "$(date -u -r "$bin" +'%Y-%m-%d %H:%M UTC')"
}

# bench_record SECTION_TITLE ENTRY_FILE: write the entry (a markdown fragment: table + notes),
# under a header line (date, commit, machine, command, binary), into docs/benchmarks.md as the
# current entry of the section marked <!-- bench:$BENCH_NAME -->: everything after the marker
# line up to the next "## " heading (or the end of the file) is replaced, so the section keeps
# its title and the text above the marker and shows the latest run only; the earlier entries
# stay in git. An entry must not contain a "## " heading of its own (### is fine). A section
# missing from the document is created at its end with SECTION_TITLE.
bench_record() {
    local title="$1" entry="$2" block="$BENCH_TMP/record.md"
    if [[ "${BENCH_RECORD:-1}" == 0 ]]; then
        bench_log "BENCH_RECORD=0: not writing docs/benchmarks.md"
        return 0
    fi
    {
        echo "### $(date -u +'%Y-%m-%d %H:%M UTC') · commit \`$(bench_commit)\`"
        echo
        echo "- machine: $(bench_machine)"
        echo "- command: \`$BENCH_CMDLINE\`"
        echo "- binary: $(bench_binary)"
        if [[ $BENCH_BASELINE == 1 ]]; then
            echo "- baseline: \`$BASELINE_NAME\`, $(bench_binary "$LOCALHOSTD_BASELINE_BIN")"
        fi
        cat "$entry"
    } >"$block"
    [[ -f "$BENCH_DOC" ]] || bench_die "$BENCH_DOC is missing"
    local marker="<!-- bench:$BENCH_NAME -->"
    # The marker must be a line of its own: that is what the awk below looks for.
    if ! grep -qxF -- "$marker" "$BENCH_DOC"; then
        printf '\n## %s\n\n%s\n' "$title" "$marker" >>"$BENCH_DOC"
    fi
    # Print everything up to and including the (first) marker line, then the new block; drop
    # the old entry after the marker up to the next "## " heading, and print the rest from that
    # heading on, after a blank line.
    awk -v marker="$marker" -v blockfile="$block" '
        function emit(   line) { while ((getline line < blockfile) > 0) print line; close(blockfile) }
        skipping && /^## / { skipping = 0; print "" }
        skipping { next }
        { print }
        $0 == marker && !done { print ""; emit(); skipping = 1; done = 1 }
        END { if (!done) exit 1 }
    ' "$BENCH_DOC" >"$BENCH_TMP/benchmarks.md.new" || bench_die "no $marker line in $BENCH_DOC"
    # Squeeze runs of blank lines that the replacement may leave.
    cat -s "$BENCH_TMP/benchmarks.md.new" >"$BENCH_DOC"
    bench_log "recorded in docs/benchmarks.md ($title), replacing the previous entry"
}

# bench_mem PID: "vmrss_kb rssanon_kb rssfile_kb pss_kb threads" of one process, from
# /proc/PID/status and /proc/PID/smaps_rollup (PSS splits shared pages between the sharers).
bench_mem() {
    local pid="$1" pss
    pss="$(awk '/^Pss:/ { print $2 }' "/proc/$pid/smaps_rollup" 2>/dev/null || true)"
    awk -v pss="${pss:-0}" '
        /^VmRSS:/ { rss = $2 } /^RssAnon:/ { anon = $2 } /^RssFile:/ { file = $2 }
        /^Threads:/ { thr = $2 }
        END { print rss + 0, anon + 0, file + 0, pss + 0, thr + 0 }' "/proc/$pid/status"
}

# bench_mem_tree PID: bench_mem of PID plus its direct children, summed (nginx: master +
# workers). The 5th field is then the number of processes; VmRSS sums count pages shared by
# master and workers more than once, PSS does not.
bench_mem_tree() {
    local pid="$1" p
    {
        bench_mem "$pid"
        for p in $(bench_children "$pid"); do bench_mem "$p"; done
    } | awk '{ r += $1; a += $2; f += $3; s += $4; n++ } END { print r, a, f, s, n }'
}

# bench_kb KB: "7.9 MB"-style size (MB = 10^6 bytes, as in the acceptance criteria).
bench_kb() {
    awk -v k="$1" 'BEGIN { printf "%.1f MB", k * 1024 / 1e6 }'
}
