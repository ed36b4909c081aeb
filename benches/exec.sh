#!/usr/bin/env bash
# Confined starts of a job and the POST /api/v1/exec round trip, beside bwrap and a plain
# spawn (issue 5, benchmark acceptance point).
#
# Part 1, starts: one timing loop (benches/spawnloop.py: python3, no shell) starts the same
# job in each variant: a static probe (built here, installed for the run under
# /usr/local/libexec, which both sandboxes see through their read-only /usr) that prints
# CLOCK_MONOTONIC first thing in main(). Two times per sample, both from the loop's
# CLOCK_MONOTONIC reading just before the request:
#   request → main   until the probe's own reading: the issue's "request to exec of the job"
#                    (plus the probe's execve, the same static binary everywhere);
#   spawn + reap     until the variant has ended and been reaped.
# Variants:
#   plain      os.posix_spawn of the probe + wait4
#   bwrap      bwrap --unshare-all --die-with-parent --ro-bind /usr /usr --symlink usr/bin /bin
#              … --proc /proc --dev /dev --tmpfs /tmp PROBE  (user, mount, PID, net, IPC, UTS,
#              cgroup namespaces, like ours)
#   ours       what the daemon does for a job built on demand: a request to our sandbox zygote
#              (started once, as the daemon does, `localhostd sandbox-zygote` with a
#              SOCK_SEQPACKET socket on fd 3) carrying the five descriptors (0–2, the policy
#              pipe on 3, the report pipe on 4); the zygote forks a helper and answers with its
#              pidfd; the loop writes the policy, waits until the pidfd says the helper has
#              exited and reads its report to EOF.
#   ours-warm  what the daemon does for a command when its warm pool has one ready
#              (sandbox.warm-pool): the sandbox was built before the sample's clock started
#              (the loop waits until its init sits in the policy pipe's read, as a pooled one
#              does); the request is writing the policy. Built again after each sample.
#   Every ours/ours-warm report is checked to be {"kind":"exit","code":0}. Their helpers are
#   the zygote's children, not the loop's: CPU is the zygote's (own + reaped children) over
#   the run divided by the samples, a mean that includes the warm builds.
# and, as stage references (spawn + reap of the same probe):
#   helper-reexec localhostd sandbox-helper started directly with the same policy: the path
#                 before the zygote (fork+exec of our binary per job)
#   helper-floor  localhostd sandbox-helper with an empty policy: exec of our binary, startup,
#                 the error report; no namespace, no fork
#   unshare-7ns   unshare(1) --user --map-root-user --mount --pid --fork --net --ipc --uts
#                 --cgroup /bin/true: the seven namespaces, one fork, nothing mounted
#   unshare-6ns   the same without --net (the network namespace is the known slow one)
# ROUNDS rounds of SPAWNS samples of each; inside a round the variants take turns sample by
# sample (A B C A B C …), the order rotated every round. Medians and p90 of all samples, the
# spread of the round medians.
#
# Part 2, end to end: our daemon (rate limits off, exec.max-concurrent 16, max-queue 256)
# answers POST /api/v1/exec {"argv":["/bin/true"]} and {"command":"echo hi"}; wrk with a Lua
# script (bearer token, JSON body) at CONNS connections, DURATION s each, E2E_ROUNDS rounds,
# the two bodies alternating. req/s, p50, p99 and the share of responses with status ≥ 400
# (must be 0). There is no HTTP peer: the peer row "bwrap per request" = 1000 / median bwrap
# spawn ms of part 1, the ceiling a server that runs one bwrap per request could reach on one
# core. It is derived, not measured over HTTP.
#
# With LOCALHOSTD_BASELINE_BIN (benches/lib.sh) an earlier build is a further contender in
# both parts: in part 1 its ours, ours-warm, helper-reexec and helper-floor run in the same
# loop as further variants (named *-base, taking turns sample by sample with the rest); in
# part 2 its daemon (same config) answers the same wrk runs, each beside ours, the order of
# the two rotated every round. A further table gives after ÷ baseline per measure beside the
# run's own spread (per-round medians in part 1, per-round figures in part 2).
#
# BENCH_NOTE=text adds a line to the recorded entry (e.g. which tree the binary was built from).
#
# The machine's load average is recorded before each part and at the end: a shared 2-core
# machine where others compile makes these numbers noisy.
#
#   benches/exec.sh                                        # 5 × 200 spawns, 3 × 10 s × 2 × 2
#   ROUNDS=2 SPAWNS=50 E2E_ROUNDS=1 DURATION=3 BENCH_RECORD=0 benches/exec.sh   # quick look
#   LOCALHOSTD_BASELINE_BIN=/path/localhostd-old LOCALHOSTD_BASELINE_REV=01fe5f3 benches/exec.sh
# Backquotes in single quotes are markdown here, not command substitutions.
# shellcheck disable=SC2016
set -euo pipefail
# shellcheck source=benches/lib.sh
source "$(dirname "$0")/lib.sh"

ROUNDS="${ROUNDS:-5}"
SPAWNS="${SPAWNS:-200}"
E2E_ROUNDS="${E2E_ROUNDS:-3}"
DURATION="${DURATION:-10}"
CONNS="${CONNS:-1 16}"
WARMUP="${WARMUP:-2}"
bench_init exec "ROUNDS=$ROUNDS SPAWNS=$SPAWNS E2E_ROUNDS=$E2E_ROUNDS DURATION=$DURATION CONNS=\"$CONNS\""

bench_need_tools curl:curl wrk:wrk bwrap:bubblewrap python3:python3 unshare:util-linux awk:gawk
bench_build
bench_baseline

load_avg() { awk '{ print $1, $2, $3 }' /proc/loadavg; }
LOAD_START="$(load_avg)"

# ---------------------------------------------------------------- part 1: spawn + reap
# As root the helper must be told an unprivileged uid to become (it refuses uid 0 outside);
# the daemon takes one from sandbox.uid-range, here nobody's.
if [[ $EUID -eq 0 ]]; then run_as="[65534,65534]"; else run_as="null"; fi
# The job of every variant: a static probe that prints CLOCK_MONOTONIC first thing in main(),
# so "request → the job runs" is read off one clock for all of them. It must be inside both
# sandboxes, which show the host's /usr read-only: it is installed under /usr/local/libexec
# for the run and removed at exit.
STAMP=/usr/local/libexec/localhostd-bench-stamp
cat >"$BENCH_TMP/stamp.c" <<'EOF'
#include <stdio.h>
#include <time.h>
int main(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    printf("%lld\n", (long long)t.tv_sec * 1000000000LL + t.tv_nsec);
    return 0;
}
EOF
[[ -e "$STAMP" ]] && bench_die "$STAMP exists: another run in progress? (remove it if not)"
mkdir -p "$(dirname "$STAMP")"
gcc -O2 -static -o "$BENCH_TMP/stamp" "$BENCH_TMP/stamp.c" || bench_die "cannot build the probe (gcc, libc6-dev)"
install -m 0755 "$BENCH_TMP/stamp" "$STAMP"
trap 'rm -f "$STAMP"; bench_cleanup' EXIT
POLICY="$BENCH_TMP/policy.json"
cat >"$POLICY" <<EOF
{"argv":["$STAMP"],"env":[["PATH","/usr/bin:/bin"]],"cwd":"/work","limits":{"cpu_s":10,"data_bytes":1073741824,"stack_bytes":1073741824,"processes":64,"file_size_bytes":67108864,"open_files":256,"tmpfs_bytes":67108864,"tmpfs_inodes":4096},"network":false,"run_as":$run_as,"ro_binds":[],"allow_degraded":false}
EOF
: >"$BENCH_TMP/empty.json"
# Issue 27: a program run with one read-only mount of a folder of 1,000 files, as the daemon
# gives it to the sandbox: the program's view at /program (the probe is its main file) and
# the folder's view at /data, both beneath a mount root (`$STATE_DIRECTORY/mounts/` in the
# daemon: trees of hard links, built once per change of the folder, so not part of a start).
# bwrap binds the same two directories (--ro-bind) into its otherwise identical root.
MROOT="$BENCH_TMP/mounts"
mkdir -p "$MROOT/program" "$MROOT/folder"
install -m 0755 "$BENCH_TMP/stamp" "$MROOT/program/stamp"
python3 -c 'import sys
for i in range(1000):
    open("%s/f%04d.csv" % (sys.argv[1], i), "w").write("n\n%d\n" % i)' "$MROOT/folder"
chmod 0711 "$MROOT"
chmod -R a+rX "$MROOT/program" "$MROOT/folder"
POLICY_MOUNT="$BENCH_TMP/policy-mount.json"
cat >"$POLICY_MOUNT" <<EOF
{"argv":["/program/stamp"],"env":[["PATH","/usr/bin:/bin"]],"cwd":"/work","limits":{"cpu_s":10,"data_bytes":1073741824,"stack_bytes":1073741824,"processes":64,"file_size_bytes":67108864,"open_files":256,"tmpfs_bytes":67108864,"tmpfs_inodes":4096},"network":false,"run_as":$run_as,"ro_binds":[],"allow_degraded":false,"mount_root":"$MROOT","mounts":[{"source":"program","inside":"/program","writable":false},{"source":"folder","inside":"/data","writable":false}]}
EOF

# bwrap's root: /usr read-only and the merged-/usr symlinks, a private /proc, /dev and /tmp.
BWRAP=(bwrap --unshare-all --die-with-parent --ro-bind /usr /usr --symlink usr/bin /bin
    --symlink usr/lib /lib)
[[ -e /usr/lib64 ]] && BWRAP+=(--symlink usr/lib64 /lib64)
BWRAP_MOUNT=("${BWRAP[@]}" --proc /proc --dev /dev --tmpfs /tmp --ro-bind "$MROOT/program" /program
    --ro-bind "$MROOT/folder" /data /program/stamp)
BWRAP+=(--proc /proc --dev /dev --tmpfs /tmp "$STAMP")

# One JSON spec for the loop: name, argv, policy file for fd 3. The baseline's variants (our
# binary's ones again, from the other build) come right after their after-twins.
MAIN_NAMES=(plain bwrap ours ours-warm bwrap-mount ours-warm-mount)
STAGE_NAMES=(helper-reexec helper-floor unshare-7ns unshare-6ns)
MAIN_BASE="" STAGES_BASE=""
if [[ $BENCH_BASELINE == 1 ]]; then
    B="$LOCALHOSTD_BASELINE_BIN"
    MAIN_BASE=",
  [\"ours-base\", [\"@zygote\", \"$B\"], \"$POLICY\"],
  [\"ours-warm-base\", [\"@zygote-warm\", \"$B\"], \"$POLICY\"]"
    STAGES_BASE="
  [\"helper-reexec-base\", [\"$B\", \"sandbox-helper\"], \"$POLICY\"],
  [\"helper-floor-base\", [\"$B\", \"sandbox-helper\"], \"$BENCH_TMP/empty.json\"],"
    MAIN_NAMES+=(ours-base ours-warm-base)
    STAGE_NAMES+=(helper-reexec-base helper-floor-base)
fi
cat >"$BENCH_TMP/variants.json" <<EOF
{"main": [
  ["plain", ["$STAMP"], "$POLICY"],
  ["bwrap", $(printf '%s\n' "${BWRAP[@]}" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read().split()))'), "$POLICY"],
  ["ours", ["@zygote", "$LOCALHOSTD_BIN"], "$POLICY"],
  ["ours-warm", ["@zygote-warm", "$LOCALHOSTD_BIN"], "$POLICY"],
  ["bwrap-mount", $(printf '%s\n' "${BWRAP_MOUNT[@]}" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read().split()))'), "$POLICY"],
  ["ours-warm-mount", ["@zygote-warm", "$LOCALHOSTD_BIN"], "$POLICY_MOUNT"]$MAIN_BASE
],
"stages": [
  ["helper-reexec", ["$LOCALHOSTD_BIN", "sandbox-helper"], "$POLICY"],
  ["helper-floor", ["$LOCALHOSTD_BIN", "sandbox-helper"], "$BENCH_TMP/empty.json"],$STAGES_BASE
  ["unshare-7ns", ["unshare", "--user", "--map-root-user", "--mount", "--pid", "--fork", "--net", "--ipc", "--uts", "--cgroup", "/bin/true"], "$POLICY"],
  ["unshare-6ns", ["unshare", "--user", "--map-root-user", "--mount", "--pid", "--fork", "--ipc", "--uts", "--cgroup", "/bin/true"], "$POLICY"]
]}
EOF


# One checked run of each first: a benchmark of a failing spawn measures nothing.
check_report() {
    local file="$1" want="$2" got
    # grep finds nothing when every job failed: that must reach the message below, not set -e.
    got="$( (grep -o '"kind":"exit","code":0,' "$file" || true) | wc -l)"
    [[ "$got" == "$want" ]] || {
        head -c 600 "$file" >&2
        bench_die "the helper reported $got successful jobs of $want (report above)"
    }
}
bench_log "checking each variant once"
"${BWRAP[@]}" </dev/null >/dev/null || bench_die "bwrap --unshare-all failed here (user namespaces?)"
unshare --user --map-root-user --mount --pid --fork --net --ipc --uts --cgroup /bin/true \
    || bench_die "unshare with seven namespaces failed"
"$LOCALHOSTD_BIN" sandbox-helper 3<"$POLICY" 4>"$BENCH_TMP/report.check" </dev/null >/dev/null
check_report "$BENCH_TMP/report.check" 1
bench_log "ours reports: $(cat "$BENCH_TMP/report.check")"
if [[ $BENCH_BASELINE == 1 ]]; then
    "$LOCALHOSTD_BASELINE_BIN" sandbox-helper 3<"$POLICY" 4>"$BENCH_TMP/report.check" </dev/null >/dev/null
    check_report "$BENCH_TMP/report.check" 1
    bench_log "the baseline reports: $(cat "$BENCH_TMP/report.check")"
fi

declare -A MED P90 SMED SP90 CPU RMED FAIL WRMED
run_loop() {
    local group="$1" n="$2" name med p90 smed sp90 cpu rmed fail wrmed
    while read -r name med p90 smed sp90 cpu rmed fail wrmed; do
        MED[$name]="$med" P90[$name]="$p90" SMED[$name]="$smed" SP90[$name]="$sp90"
        CPU[$name]="$cpu" RMED[$name]="$rmed" FAIL[$name]="$fail" WRMED[$name]="$wrmed"
        bench_log "$name: spawn+reap median ${med}µs p90 ${p90}µs; request→main median ${smed}µs p90 ${sp90}µs (round medians $rmed); cpu ${cpu}µs; failures $fail"
    done < <(python3 "$(dirname "$0")/spawnloop.py" "$BENCH_TMP/variants.json" "$group" "$ROUNDS" "$n" \
        "$BENCH_TMP/report.$group")
}
LOAD_SPAWN="$(load_avg)"
ZYGOTE_VARIANTS=$((BENCH_BASELINE == 1 ? 5 : 3)) # ours, ours-warm, ours-warm-mount (and -base twins)
bench_log "spawns: $ROUNDS rounds × $SPAWNS × $(IFS=/; echo "${MAIN_NAMES[*]}"), interleaved"
run_loop main "$SPAWNS"
check_report "$BENCH_TMP/report.main" "$((ZYGOTE_VARIANTS * ROUNDS * SPAWNS))"
STAGE_N=$(((SPAWNS + 1) / 2))
bench_log "stage references: $ROUNDS rounds × $STAGE_N × $(IFS=/; echo "${STAGE_NAMES[*]}")"
run_loop stages "$STAGE_N"
for n in "${MAIN_NAMES[@]}" "${STAGE_NAMES[@]}"; do
    [[ "${FAIL[$n]}" == 0 ]] || bench_die "$n failed ${FAIL[$n]} times"
done

# ---------------------------------------------------------------- part 2: end to end
# shellcheck disable=SC2034 # read by ours_start
OURS_CONFIG_EXTRA='[rate-limit]
enabled = false
[exec]
max-concurrent = 16
max-queue = 256'
# The daemons: ours and, with a baseline, the baseline's (same config), by name.
DAEMONS=(ours)
declare -A D_PID D_TOKEN D_URL
ours_start ours
D_PID[ours]="$OURS_PID"
D_TOKEN[ours]="$(cat "$OURS_DIR/state/initial-admin-token")"
D_URL[ours]="http://127.0.0.1:$OURS_PORT/api/v1/exec"
if [[ $BENCH_BASELINE == 1 ]]; then
    ours_start base "$LOCALHOSTD_BASELINE_BIN"
    D_PID[base]="$OURS_PID"
    D_TOKEN[base]="$(cat "$OURS_DIR/state/initial-admin-token")"
    D_URL[base]="http://127.0.0.1:$OURS_PORT/api/v1/exec"
    DAEMONS+=(base)
fi
declare -A BODY=([argv]='{"argv":["/bin/true"]}' [command]='{"command":"echo hi"}')
# key DAEMON BODY CONNS: the key of a cell in the result arrays (ours' keys are "BODY,CONNS").
key() { if [[ $1 == ours ]]; then echo "$2,$3"; else echo "$1,$2,$3"; fi; }

for d in "${DAEMONS[@]}"; do
    for b in argv command; do
        resp="$(curl -fsS --max-time 10 -H "Authorization: Bearer ${D_TOKEN[$d]}" \
            -H 'Content-Type: application/json' -d "${BODY[$b]}" "${D_URL[$d]}")" \
            || bench_die "POST /api/v1/exec ${BODY[$b]} to $d failed"
        python3 -c 'import json,sys; r=json.loads(sys.argv[1]); want={"argv":"","command":"hi\n"}[sys.argv[2]]
sys.exit(0 if r["status"] == "ok" and r["exit_code"] == 0 and r["stdout"] == want else 1)' \
            "$resp" "$b" || bench_die "unexpected answer of $d to ${BODY[$b]}: $resp"
        bench_log "sample $d $b: $resp"
    done
done

cat >"$BENCH_TMP/exec.lua" <<'EOF'
wrk.method = "POST"
wrk.body = os.getenv("EXEC_BODY")
wrk.headers["Authorization"] = "Bearer " .. os.getenv("EXEC_TOKEN")
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %.1f %d %d %d %d %d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status, summary.requests))
end
EOF
# exec_wrk DAEMON BODY CONNS SECONDS: "rps p50_us p99_us socket_errors status_ge_400 requests".
exec_wrk() {
    local d="$1" body="$2" conns="$3" secs="$4" threads cores
    cores="$(nproc)"
    threads=$((conns < cores ? conns : cores))
    {
        echo "== $d: wrk -t$threads -c$conns -d${secs}s POST ${D_URL[$d]} $body"
        EXEC_BODY="$body" EXEC_TOKEN="${D_TOKEN[$d]}" wrk --latency -t"$threads" -c"$conns" \
            -d"${secs}s" --timeout 5s -s "$BENCH_TMP/exec.lua" "${D_URL[$d]}"
    } >>"$BENCH_TMP/wrk.log" 2>&1 || bench_die "wrk failed: see $BENCH_TMP/wrk.log"
    tail -n 1 "$BENCH_TMP/wrk.log" | awk '$1 == "BENCH" { print $2, $3, $4, $5, $6, $7; ok = 1 }
        END { if (!ok) exit 1 }' || bench_die "no result from wrk"
}

LOAD_E2E="$(load_avg)"
bench_log "warm-up (${WARMUP}s, 16 connections)"
for d in "${DAEMONS[@]}"; do exec_wrk "$d" "${BODY[argv]}" 16 "$WARMUP" >/dev/null; done
# tree_cpu PID: "own_ticks job_ticks" from /proc/PID/stat (utime+stime) and, for the jobs, the
# daemon's reaped children plus its sandbox zygote (own + reaped children: the helpers and
# their sandboxes).
tree_cpu() {
    local own kids z zt=0
    read -r own kids < <(awk '{ sub(/^.*\) /, ""); print $12 + $13, $14 + $15 }' "/proc/$1/stat")
    for z in $(cat /proc/"$1"/task/*/children 2>/dev/null); do
        if tr '\0' ' ' <"/proc/$z/cmdline" 2>/dev/null | grep -q sandbox-zygote; then
            zt=$((zt + $(awk '{ sub(/^.*\) /, ""); print $12 + $13 + $14 + $15 }' "/proc/$z/stat")))
        fi
    done
    echo "$own" "$((kids + zt))"
}
TCK="$(getconf CLK_TCK)"
declare -A RPS EP50 EP99 SOCK NON2XX REQS DCPU KCPU
for c in $CONNS; do
    for r in $(seq 1 "$E2E_ROUNDS"); do
        if ((r % 2)); then order="argv command"; else order="command argv"; fi
        for b in $order; do
            # With a baseline, each body runs on both daemons back to back, which one first
            # rotated every round.
            for d in $(bench_rotate "$r" "${DAEMONS[@]}"); do
                k="$(key "$d" "$b" "$c")"
                read -r cpu0 kids0 <<<"$(tree_cpu "${D_PID[$d]}")"
                read -r rps p50 p99 sock st reqs <<<"$(exec_wrk "$d" "${BODY[$b]}" "$c" "$DURATION")"
                read -r cpu1 kids1 <<<"$(tree_cpu "${D_PID[$d]}")"
                DCPU[$k]=$((${DCPU[$k]:-0} + cpu1 - cpu0))
                KCPU[$k]=$((${KCPU[$k]:-0} + kids1 - kids0))
                tag=""
                [[ $d == base ]] && tag=" (baseline)"
                bench_log "c=$c round $r $b$tag: $rps req/s p50 ${p50}µs p99 ${p99}µs socket errors $sock status≥400 $st of $reqs"
                RPS[$k]+="$rps " EP50[$k]+="$p50 " EP99[$k]+="$p99 "
                SOCK[$k]=$((${SOCK[$k]:-0} + sock))
                NON2XX[$k]=$((${NON2XX[$k]:-0} + st))
                REQS[$k]=$((${REQS[$k]:-0} + reqs))
            done
        done
    done
done
for d in "${DAEMONS[@]}"; do
    after="$(curl -fsS --max-time 10 -H "Authorization: Bearer ${D_TOKEN[$d]}" \
        -H 'Content-Type: application/json' -d "${BODY[argv]}" "${D_URL[$d]}")"
    [[ "$after" == *'"status":"ok"'* ]] || bench_die "after the load, /api/v1/exec of $d answered $after"
done
LOAD_END="$(load_avg)"

# ---------------------------------------------------------------- table
ms() { awk -v u="$1" 'BEGIN { printf "%.2f", u / 1000 }'; }
spread() { tr ',' '\n' <<<"$1" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 }
    END { printf "%.2f–%.2f", lo / 1000, hi / 1000 }'; }
ms_unit() { echo "$(ms "$1") ms"; }
yes_no() { if awk "BEGIN { exit !($1) }"; then echo "**yes**"; else echo "**no**"; fi; }

declare -A WHAT=(
    [plain]='plain spawn of the probe'
    [bwrap]='bwrap `--unshare-all` (7 namespaces, /usr ro, own /proc /dev /tmp)'
    [ours]='**ours, built on demand**: request to the sandbox zygote → fork → helper (7 namespaces, mounts, pivot_root, 2 forks, rlimits, caps, landlock, seccomp) → job; CPU is a mean'
    [ours-warm]='**ours, warm sandbox** (`sandbox.warm-pool`): the policy written to a sandbox built beforehand → scratch mounts, fork, rlimits, caps, landlock, seccomp → job; CPU is a mean including the build'
    [bwrap-mount]='bwrap as above, plus `--ro-bind` of a program directory at /program and of a 1,000-file folder at /data; the probe run as /program/stamp'
    [ours-warm-mount]='**ours, warm, a program run with one read-only mount** (issue 27): as ours-warm, plus the program view at /program and a 1,000-file folder view at /data bound from the hidden mount root, which is then detached; the probe run as /program/stamp'
    [helper-reexec]='stage: `localhostd sandbox-helper` started directly (the per-job fork+exec of our binary the zygote replaced)'
    [helper-floor]='stage: `localhostd sandbox-helper` with an empty policy (exec of our binary + startup only)'
    [unshare-7ns]='stage: `unshare` user+mount+pid+net+ipc+uts+cgroup, `--fork`, no mounts'
    [unshare-6ns]='stage: the same without `--net`'
)
ROWS=(plain bwrap ours ours-warm bwrap-mount ours-warm-mount helper-reexec helper-floor unshare-7ns unshare-6ns)
if [[ $BENCH_BASELINE == 1 ]]; then
    for n in ours ours-warm helper-reexec helper-floor; do
        WHAT[$n-base]="baseline \`$BASELINE_NAME\`: the same as the row above"
    done
    ROWS=(plain bwrap ours ours-base ours-warm ours-warm-base bwrap-mount ours-warm-mount helper-reexec helper-reexec-base
        helper-floor helper-floor-base unshare-7ns unshare-6ns)
fi
bw_ceiling="$(awk -v m="${MED[bwrap]}" 'BEGIN { printf "%.0f", 1e6 / m }')"
ours_ceiling="$(awk -v m="${MED[ours]}" 'BEGIN { printf "%.0f", 1e6 / m }')"
best_rps=0
entry="$BENCH_TMP/entry.md"
{
    [[ -n "${BENCH_NOTE:-}" ]] && echo "- note: $BENCH_NOTE"
    echo "- load average (1/5/15 min): $LOAD_START at the start, $LOAD_SPAWN before the spawns," \
        "$LOAD_E2E before the HTTP runs, $LOAD_END at the end ($(nproc) cores; others were" \
        "building and benchmarking on this machine: noisy)"
    echo "- peers: $(bwrap --version) and util-linux $(unshare --version | awk '{ print $NF }'); ours ran as" \
        "$(if [[ $EUID -eq 0 ]]; then echo 'root, the job as uid 65534 (`run_as`)'; else echo "uid $EUID"; fi);" \
        "timing loop: benches/spawnloop.py (python3 \`os.posix_spawn\` + \`wait4\`; ours: a request to the" \
        "zygote, a poll of the helper's pidfd, its report read to EOF), no shell; the job everywhere is a" \
        "static probe printing CLOCK_MONOTONIC in main(); $ROUNDS rounds × $SPAWNS samples each (stage" \
        "rows: × $STAGE_N), variants taking turns sample by sample, order rotated per round; all" \
        "$((ZYGOTE_VARIANTS * ROUNDS * SPAWNS)) helper reports of ours checked: \`{\"kind\":\"exit\",\"code\":0,…}\`"
    echo
    echo "Starts of the probe (ms). *request → main*: from the request to the probe's first reading of" \
        "the clock. *spawn + reap*: until the variant has ended and been reaped (bwrap exits without" \
        "reaping its sandbox's PID 1, so its wall time ends before its sandbox is torn down and its CPU" \
        "is undercounted; ours waits for its init). CPU = user+sys of what the variant reaps:"
    echo
    echo "| variant | request → main: median | p90 | round medians | spawn + reap: median | p90 | CPU |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    for n in "${ROWS[@]}"; do
        if [[ "${SMED[$n]}" == - ]]; then
            printf '| %s | – | – | – | %s | %s | %s |\n' "${WHAT[$n]}" "$(ms "${MED[$n]}")" \
                "$(ms "${P90[$n]}")" "$(ms "${CPU[$n]}")"
        else
            printf '| %s | %s | %s | %s | %s | %s | %s |\n' "${WHAT[$n]}" "$(ms "${SMED[$n]}")" \
                "$(ms "${SP90[$n]}")" "$(spread "${RMED[$n]}")" "$(ms "${MED[$n]}")" \
                "$(ms "${P90[$n]}")" "$(ms "${CPU[$n]}")"
        fi
    done
    echo
    echo "End to end: \`POST /api/v1/exec\` through our daemon (rate limits off, exec.max-concurrent 16," \
        "max-queue 256), wrk + Lua (bearer token, JSON body), keep-alive, threads = min(connections, cores)," \
        "$E2E_ROUNDS rounds × ${DURATION}s per cell, the two bodies alternating; median over rounds" \
        "(req/s: median, then min–max)."
    echo
    echo "| body | connections | req/s | p50 | p99 | status ≥ 400 | socket errors | CPU per request: daemon + helpers |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    for d in "${DAEMONS[@]}"; do
        label=""
        [[ $d == base ]] && label="baseline \`$BASELINE_NAME\`: "
        for b in argv command; do
            for c in $CONNS; do
                k="$(key "$d" "$b" "$c")"
                # shellcheck disable=SC2086
                {
                    rps="$(bench_median ${RPS[$k]})"
                    if [[ $d == ours && $b == argv ]] && awk "BEGIN { exit !($rps > $best_rps) }"; then best_rps="$rps"; fi
                    printf '| %s`%s` | %s | %.0f (%s) | %s | %s | %s of %s (%s %%) | %s | %s + %s ms |\n' "$label" "${BODY[$b]}" "$c" \
                        "$rps" "$(bench_minmax ${RPS[$k]} | awk -F– '{ printf "%.0f–%.0f", $1, $2 }')" \
                        "$(bench_us "$(bench_median ${EP50[$k]})")" \
                        "$(bench_us "$(bench_median ${EP99[$k]})")" \
                        "${NON2XX[$k]}" "${REQS[$k]}" \
                        "$(awk -v a="${NON2XX[$k]}" -v n="${REQS[$k]}" 'BEGIN { printf "%.2f", n ? 100 * a / n : 0 }')" \
                        "${SOCK[$k]}" \
                        "$(awk -v t="${DCPU[$k]}" -v n="${REQS[$k]}" -v hz="$TCK" 'BEGIN { printf "%.2f", n ? 1000 * t / hz / n : 0 }')" \
                        "$(awk -v t="${KCPU[$k]}" -v n="${REQS[$k]}" -v hz="$TCK" 'BEGIN { printf "%.2f", n ? 1000 * t / hz / n : 0 }')"
                }
            done
        done
    done
    printf '| peer: bwrap per request (**derived**: 1000 / median bwrap spawn ms, one core; not measured over HTTP) | – | %s | – | – | – | – | %s ms (bwrap, undercounted: see above) |\n' "$bw_ceiling" "$(ms "${CPU[bwrap]}")"
    printf '| for scale: ours per request from the helper alone (derived the same way) | – | %s | – | – | – | – | %s ms (helper tree) |\n' "$ours_ceiling" "$(ms "${CPU[ours]}")"
    echo
    echo "Goals (issue 5):"
    echo
    echo "| goal | measured | met |"
    echo "|---|---|---|"
    echo "| confined spawn (request → the job runs) median ≤ 1.5 ms | warm $(ms "${SMED[ours-warm]}") ms; built on demand $(ms "${SMED[ours]}") ms | warm $(yes_no "${SMED[ours-warm]} <= 1500"), on demand $(yes_no "${SMED[ours]} <= 1500") |"
    echo "| confined spawn faster than bwrap in the same run (request → main) | warm $(ms "${SMED[ours-warm]}") ms, on demand $(ms "${SMED[ours]}") ms vs bwrap $(ms "${SMED[bwrap]}") ms | warm $(yes_no "${SMED[ours-warm]} < ${SMED[bwrap]}"), on demand $(yes_no "${SMED[ours]} < ${SMED[bwrap]}") |"
    echo "| ≥ 300 exec requests/s end to end (\`argv\`, best connection count) | $(printf '%.0f' "$best_rps") req/s | $(yes_no "$best_rps >= 300") |"
    echo
    echo "Goal (issue 27): a program run with one read-only mount of a 1,000-file folder reaches main within 1.3× of the warm command, and faster than bwrap binding the same folder:"
    echo
    echo "| goal | measured | met |"
    echo "|---|---|---|"
    echo "| mounted program run ≤ 1.3 × warm command (request → main, medians) | $(ms "${SMED[ours-warm-mount]}") ms vs $(ms "${SMED[ours-warm]}") ms: $(awk -v a="${SMED[ours-warm-mount]}" -v b="${SMED[ours-warm]}" 'BEGIN { printf "%.2f×", a / b }') | $(yes_no "${SMED[ours-warm-mount]} <= 1.3 * ${SMED[ours-warm]}") |"
    echo "| mounted program run faster than bwrap binding the same folder | $(ms "${SMED[ours-warm-mount]}") ms vs $(ms "${SMED[bwrap-mount]}") ms | $(yes_no "${SMED[ours-warm-mount]} < ${SMED[bwrap-mount]}") |"
    nz=0
    for k in "${!NON2XX[@]}"; do
        [[ $k == base,* ]] && continue # the goal is ours; the baseline's errors are in its rows
        nz=$((nz + NON2XX[$k] + SOCK[$k]))
    done
    echo "| no error responses under load | $nz errors (status ≥ 400 + socket) | $(yes_no "$nz == 0") |"
    if [[ $BENCH_BASELINE == 1 ]]; then
        echo
        bench_compare_head
        # Part 1 by the medians of each round (the loop's rounds); CPU is one mean per run.
        for n in ours ours-warm; do
            what="on demand"
            [[ $n == ours-warm ]] && what="warm"
            bench_compare_row "start, $what: request → main" lower ms_unit "${RMED[$n]//,/ }" "${RMED[$n-base]//,/ }"
            bench_compare_row "start, $what: spawn + reap" lower ms_unit "${WRMED[$n]//,/ }" "${WRMED[$n-base]//,/ }"
            bench_compare_row "start, $what: CPU (mean of the run)" lower ms_unit "${CPU[$n]}" "${CPU[$n-base]}"
        done
        for n in helper-reexec helper-floor; do
            bench_compare_row "stage $n: spawn + reap" lower ms_unit "${WRMED[$n]//,/ }" "${WRMED[$n-base]//,/ }"
        done
        for b in argv command; do
            for c in $CONNS; do
                bench_compare_row "HTTP \`$b\` c=$c req/s" higher bench_int "${RPS[$b,$c]}" "${RPS[base,$b,$c]}"
                bench_compare_row "HTTP \`$b\` c=$c p50" lower bench_us "${EP50[$b,$c]}" "${EP50[base,$b,$c]}"
                bench_compare_row "HTTP \`$b\` c=$c p99" lower bench_us "${EP99[$b,$c]}" "${EP99[base,$b,$c]}"
            done
        done
        echo
        echo "(in the start rows, *after* and *baseline* are medians of the round medians, which may" \
            "differ a little from the median of all samples in the first table)"
    fi
} >"$entry"

echo
cat "$entry"
echo
bench_record "exec — confined spawn and POST /api/v1/exec (benches/exec.sh)" "$entry"
