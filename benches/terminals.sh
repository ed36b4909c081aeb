#!/usr/bin/env bash
# Terminals (issue 25): keystroke round trip over our WebSocket beside `ssh localhost`, and the
# idle daemon's memory with 10 sessions open.
#
#   ours  our daemon on loopback; /bin/sh sessions (POST /api/v1/terminals, the default
#         profile) attached over WebSocket (GET …/attach)
#   ssh   Debian's openssh-server (OpenSSH's sshd) on a free loopback port, started here with
#         its own config, host key, authorized key and pid file in $BENCH_TMP, as the invoking
#         user, or as root as a temporary user made for the run (userdel at exit; sshd needs
#         no root to log in the user it runs as); the session is a pty with /bin/sh
# One Python driver (benches/terminals.py, asyncio; websockets for ours, asyncssh for ssh, in a
# virtual environment in $BENCH_TMP) measures all the same way: a byte typed, its whole echo
# received, every INTERVAL_MS per session, with 1 session and with 50 at once (SESSIONS);
# p50 and p99 over all keystrokes of a round, median over ROUNDS rounds. Three contenders, in
# an order rotated every round: ours, sshd with asyncssh as the client (the same kind of
# client as ours: Python, asyncio, the same driver), and sshd with OpenSSH's own client (`ssh -tt`
# on a pty of the driver's: what a user types into; one more terminal hop each way). The goal
# (issue 25): ours at most ssh's p50 and p99, shown against each.
# Memory: ours with IDLE_SESSIONS sessions attached and idle for IDLE s: the daemon's VmRSS and
# PSS beside a fresh daemon's with none; the session processes (the sandboxes under the
# daemon) summed as PSS; sshd's listener, per-connection processes and shells the same way.
#
# sshd is not installed system-wide: installing openssh-server starts and enables a system
# ssh service (port 22) on most hosts. If /usr/sbin/sshd is missing, the package (and libwrap0,
# its one library a minimal system may lack) is fetched with apt-get download and unpacked
# into $BENCH_TMP.
#
#   benches/terminals.sh                                   # 3 rounds, a few minutes
#   ROUNDS=1 KEYS=50 SESSIONS="1 5" IDLE=2 BENCH_RECORD=0 benches/terminals.sh
# Knobs: ROUNDS (3), KEYS (300 measured keystrokes per session and round), WARMUP (20),
# INTERVAL_MS (20), SESSIONS ("1 50"), DRIVER_PROCS (nproc: driver processes the sessions are
# split over), IDLE_SESSIONS (10), IDLE (10), BENCH_RECORD, LOCALHOSTD_BIN.
set -euo pipefail
# shellcheck source=benches/lib.sh
source "$(dirname "$0")/lib.sh"

ROUNDS="${ROUNDS:-3}"
KEYS="${KEYS:-300}"
WARMUP="${WARMUP:-20}"
INTERVAL_MS="${INTERVAL_MS:-20}"
SESSIONS="${SESSIONS:-1 50}"
IDLE_SESSIONS="${IDLE_SESSIONS:-10}"
IDLE="${IDLE:-10}"
DRIVER_PROCS="${DRIVER_PROCS:-$(nproc)}"
# The pins of the driver's packages (websockets: the one the e2e client uses).
WEBSOCKETS_PIN="$(grep -E '^websockets==' "$BENCH_REPO/tests/e2e/requirements.txt")"
ASYNCSSH_PIN="asyncssh==2.24.1"
bench_init terminals "ROUNDS=$ROUNDS KEYS=$KEYS INTERVAL_MS=$INTERVAL_MS SESSIONS=\"$SESSIONS\" DRIVER_PROCS=$DRIVER_PROCS IDLE_SESSIONS=$IDLE_SESSIONS IDLE=$IDLE"

SSH_USER=""
SSH_USER_MADE=0
# The temporary user goes at exit, after every process this run started (its sshd with them).
terminals_cleanup() {
    local rc=$? pid uid
    bench_cleanup
    if [[ $SSH_USER_MADE == 1 ]]; then
        uid="$(id -u "$SSH_USER" 2>/dev/null || true)"
        # Its sessions' processes were started by this run (through its sshd): end them by PID.
        if [[ -n "$uid" ]]; then
            awk -v u="$uid" '/^Uid:/ && $2 == u { split(FILENAME, p, "/"); print p[3] }' \
                /proc/[0-9]*/status 2>/dev/null | while read -r pid; do
                kill -KILL "$pid" 2>/dev/null || true
            done
        fi
        userdel "$SSH_USER" 2>/dev/null || bench_log "could not remove the temporary user $SSH_USER"
    fi
    return "$rc"
}
trap terminals_cleanup EXIT

bench_need_tools curl:curl python3:python3 ssh:openssh-client ssh-keygen:openssh-client setpriv:util-linux
# `python3 -m venv` needs ensurepip, which Debian ships apart (python3-venv); the name before
# the colon is only what bench_need_tools looks for on PATH.
python3 -c 'import ensurepip' 2>/dev/null || bench_need_tools "python3-venv-ensurepip:python3-venv"
bench_build

bench_log "python venv: $WEBSOCKETS_PIN $ASYNCSSH_PIN"
python3 -m venv "$BENCH_TMP/venv" >&2
"$BENCH_TMP/venv/bin/pip" install -q --disable-pip-version-check "$WEBSOCKETS_PIN" "$ASYNCSSH_PIN" >&2
PY="$BENCH_TMP/venv/bin/python3"
DRIVER="$BENCH_REPO/benches/terminals.py"

# ---- sshd -------------------------------------------------------------------------------------

SSHD=/usr/sbin/sshd
SSHD_ENV=()
if [[ ! -x $SSHD ]]; then
    bench_log "no /usr/sbin/sshd: unpacking Debian's openssh-server into $BENCH_TMP (not installed)"
    mkdir -p "$BENCH_TMP/debs" "$BENCH_TMP/sshroot"
    (cd "$BENCH_TMP/debs" && apt-get download -q openssh-server libwrap0 >&2) \
        || bench_die "apt-get download openssh-server libwrap0 failed (apt-get update first?)"
    for deb in "$BENCH_TMP"/debs/*.deb; do dpkg-deb -x "$deb" "$BENCH_TMP/sshroot"; done
    SSHD="$BENCH_TMP/sshroot/usr/sbin/sshd"
    SSHD_ENV=(env "LD_LIBRARY_PATH=$BENCH_TMP/sshroot/usr/lib/x86_64-linux-gnu:$BENCH_TMP/sshroot/lib/x86_64-linux-gnu")
    nolibs="$("${SSHD_ENV[@]}" ldd "$SSHD" | awk '/not found/ { print $1 }' | tr '\n' ' ')"
    [[ -z "$nolibs" ]] || bench_die "the unpacked sshd lacks: $nolibs"
fi
SSH_DIR="$BENCH_TMP/ssh"
mkdir -p "$SSH_DIR/home"
if [[ $EUID -eq 0 ]]; then
    SSH_USER="lhdbench$$"
    # A password of "*" matches nothing but, unlike useradd's default "!", is not a locked
    # account, which sshd (without PAM) would refuse even with a key.
    useradd -M -d "$SSH_DIR/home" -s /bin/sh -p '*' "$SSH_USER" || bench_die "useradd $SSH_USER failed"
    SSH_USER_MADE=1
    # The temporary user must reach its files through the run's directory (mode 0700).
    chmod 0711 "$BENCH_TMP"
else
    SSH_USER="$(id -un)"
fi
ssh-keygen -q -t ed25519 -N '' -f "$SSH_DIR/host_key" -C bench-host
ssh-keygen -q -t ed25519 -N '' -f "$BENCH_TMP/client_key" -C bench-client
cp "$BENCH_TMP/client_key.pub" "$SSH_DIR/authorized_keys"
bench_free_port SSH_PORT
# MaxStartups: 50 sessions connect within a moment; the default (10:30:100) drops
# unauthenticated connections past 10.
cat >"$SSH_DIR/sshd_config" <<EOF
ListenAddress 127.0.0.1:$SSH_PORT
HostKey $SSH_DIR/host_key
PidFile $SSH_DIR/sshd.pid
AuthorizedKeysFile $SSH_DIR/authorized_keys
AllowUsers $SSH_USER
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin no
PrintMotd no
PrintLastLog no
UseDNS no
MaxStartups 200
LogLevel ERROR
EOF
if [[ $SSH_USER_MADE == 1 ]]; then chown -R "$SSH_USER:" "$SSH_DIR"; fi
# As root, sshd runs as the temporary user (setpriv execs it: the PID tracked is sshd's). sshd
# gives a session's pty to the group tty; a devpts mounted without gid=5 (as on some VMs) makes
# the pty the opener's group, and only a member of tty may change it to tty: so the user gets
# tty as its one supplementary group, for this process tree only.
SSHD_RUN=("${SSHD_ENV[@]}")
if [[ $SSH_USER_MADE == 1 ]]; then
    SSHD_RUN=(setpriv --reuid="$SSH_USER" --regid="$SSH_USER" --groups="$(getent group tty | cut -d: -f3)" -- "${SSHD_ENV[@]}")
fi
"${SSHD_RUN[@]}" "$SSHD" -t -f "$SSH_DIR/sshd_config" || bench_die "sshd -t refused $SSH_DIR/sshd_config"
bench_spawn SSHD_PID "$SSH_DIR/sshd.log" "${SSHD_RUN[@]}" "$SSHD" -D -e -f "$SSH_DIR/sshd_config"
for _ in $(seq 1 100); do
    grep -qE "^ *[0-9]+: 0100007F:$(printf '%04X' "$SSH_PORT") [0-9A-F:]+ 0A " /proc/net/tcp && break
    kill -0 "$SSHD_PID" 2>/dev/null || { cat "$SSH_DIR/sshd.log" >&2; bench_die "sshd exited"; }
    sleep 0.1
done
bench_log "sshd ($("${SSHD_ENV[@]}" "$SSHD" -V 2>&1 | head -n 1)) pid $SSHD_PID on 127.0.0.1:$SSH_PORT as $SSH_USER"
export BENCH_SSH_PORT="$SSH_PORT" BENCH_SSH_USER="$SSH_USER" BENCH_SSH_KEY="$BENCH_TMP/client_key"

# ---- ours -------------------------------------------------------------------------------------

# 50 sessions from one token, created within a moment: no request rate limit, room for them
# (terminals.max-per-token is 8 by default). Everything else as shipped (recording on).
# shellcheck disable=SC2034 # read by ours_start
OURS_CONFIG_EXTRA="${OURS_CONFIG_EXTRA:-[rate-limit]
enabled = false
[terminals]
max-total = 128
max-per-token = 128}"
ours_start ours
export BENCH_BASE="http://127.0.0.1:$OURS_PORT"
BENCH_TOKEN="$(cat "$OURS_DIR/state/initial-admin-token")"
export BENCH_TOKEN

# rtt KIND N: one measurement; prints "p50_us p99_us n errors".
rtt() {
    local out
    out="$("$PY" "$DRIVER" rtt --kind "$1" --sessions "$2" --keys "$KEYS" --warmup "$WARMUP" \
        --interval-ms "$INTERVAL_MS" --procs "$DRIVER_PROCS" 2>>"$BENCH_TMP/driver.log")" \
        || { tail -n 20 "$BENCH_TMP/driver.log" >&2; bench_die "driver failed: $1, $2 sessions"; }
    echo "$out" >>"$BENCH_TMP/driver.log"
    "$PY" -c 'import json, sys; r = json.loads(sys.argv[1]); print(r["p50_us"], r["p99_us"], r["n"], r["errors"])' "$out"
}

bench_log "warm-up and check: one session each"
rtt ours 1 >/dev/null
rtt ssh 1 >/dev/null
rtt openssh 1 >/dev/null

declare -A M # M[kind,sessions,field] = "v1 v2 …" over rounds
for r in $(seq 1 "$ROUNDS"); do
    for n in $SESSIONS; do
        for kind in $(bench_rotate "$r" ours ssh openssh); do
            read -r p50 p99 cnt err <<<"$(rtt "$kind" "$n")"
            M[$kind,$n,p50]+="$p50 "
            M[$kind,$n,p99]+="$p99 "
            M[$kind,$n,n]+="$cnt "
            M[$kind,$n,err]+="$err "
            bench_log "round $r, $n sessions, $kind: p50 ${p50} µs p99 ${p99} µs ($cnt keys, $err errors)"
        done
    done
done

# ---- memory: sessions held open and idle ------------------------------------------------------

# descendants PID: every process under PID (children, theirs, …).
descendants() {
    local p
    for p in $(bench_children "$1"); do
        echo "$p"
        descendants "$p"
    done
}
# pss_sum PID…: summed PSS (kB) and the count of processes.
pss_sum() {
    local p s=0 n=0 k
    for p in "$@"; do
        k="$(awk '/^Pss:/ { print $2 }' "/proc/$p/smaps_rollup" 2>/dev/null || true)"
        [[ -n "$k" ]] || continue
        s=$((s + k))
        n=$((n + 1))
    done
    echo "$s $n"
}
# hold KIND: IDLE_SESSIONS sessions opened by the driver, left idle for IDLE s; then reads
# memory (ours: the daemon itself, and its descendants; ssh: the listener and the rest).
hold() {
    local kind="$1" ready="$BENCH_TMP/ready.$1" stop="$BENCH_TMP/stop.$1" pid
    rm -f "$ready" "$stop"
    bench_spawn HOLD_PID "$BENCH_TMP/hold.$kind.log" "$PY" "$DRIVER" hold --kind "$kind" \
        --sessions "$IDLE_SESSIONS" --ready-file "$ready" --stop-file "$stop"
    for _ in $(seq 1 600); do
        [[ -s "$ready" ]] && break
        kill -0 "$HOLD_PID" 2>/dev/null || { cat "$BENCH_TMP/hold.$kind.log" >&2; bench_die "the driver exited before its sessions were open"; }
        sleep 0.1
    done
    [[ -s "$ready" ]] || bench_die "$IDLE_SESSIONS $kind sessions not open within 60 s"
    sleep "$IDLE"
    if [[ $kind == ours ]]; then
        pid="$OURS_PID"
    else
        pid="$SSHD_PID"
    fi
    MEM[$kind,self]="$(bench_mem "$pid")"
    # shellcheck disable=SC2046 # one PID per word
    MEM[$kind,kids]="$(pss_sum $(descendants "$pid"))"
    touch "$stop"
    for _ in $(seq 1 300); do kill -0 "$HOLD_PID" 2>/dev/null || break; sleep 0.1; done
    bench_stop "$HOLD_PID"
}
declare -A MEM
# A fresh daemon (no session ever made) for the reading with none.
bench_stop "$OURS_PID"
ours_start ours-idle
BENCH_TOKEN="$(cat "$OURS_DIR/state/initial-admin-token")"
export BENCH_BASE="http://127.0.0.1:$OURS_PORT" BENCH_TOKEN
sleep "$IDLE"
for k in ours:"$OURS_PID" ssh:"$SSHD_PID"; do
    MEM[${k%%:*},none]="$(bench_mem "${k#*:}")"
    # shellcheck disable=SC2046 # one PID per word
    MEM[${k%%:*},nonekids]="$(pss_sum $(descendants "${k#*:}"))"
done
hold ours
hold ssh

# ---- report -----------------------------------------------------------------------------------

med() {
    # shellcheck disable=SC2086
    bench_median ${M[$1,$2,$3]}
}
goal() { # goal KIND N FIELD: "met" when ours ≤ KIND's, else by how much ours is above
    awk -v o="$(med ours "$2" "$3")" -v s="$(med "$1" "$2" "$3")" 'BEGIN {
        if (o <= s) print "met"; else printf "**not met** (ours +%.0f%%)", 100 * (o - s) / s }'
}
errs() { echo "${M[$1,$2,err]}" | awk '{ for (i = 1; i <= NF; i++) s += $i } END { print s + 0 }'; }
field() { awk -v i="$2" '{ print $i }' <<<"$1"; }

entry="$BENCH_TMP/entry.md"
{
    echo "- peer: $("${SSHD_ENV[@]}" "$SSHD" -V 2>&1 | head -n 1), own config on loopback, as" \
        "$(if [[ $SSH_USER_MADE == 1 ]]; then echo "a temporary user"; else echo "the invoking user"; fi);" \
        "clients asyncssh ($ASYNCSSH_PIN) and OpenSSH's \`$(ssh -V 2>&1)\` on a pty of the driver's;" \
        "ours with $WEBSOCKETS_PIN; every one /bin/sh on an 80x24 pty"
    echo "- $ROUNDS rounds; per session $KEYS keystrokes measured (after $WARMUP), one every" \
        "${INTERVAL_MS} ms at most; \"a\" and DEL alternating (echo \"a\" / \"\\b \\b\"); p50 and p99" \
        "over all keystrokes of a round, median over rounds; the three contenders in an order" \
        "rotated every round; the driver's sessions split over $DRIVER_PROCS processes (OpenSSH's" \
        "client row: also one ssh process per session)"
    echo
    echo "| sessions at once | contender | p50 | p99 | errors | goal: ours ≤ this, p50 / p99 |"
    echo "|---:|---|---:|---:|---:|---|"
    for n in $SESSIONS; do
        printf '| %s | **localhostd**, WebSocket | %s | %s | %s | |\n' "$n" \
            "$(bench_us "$(med ours "$n" p50)")" "$(bench_us "$(med ours "$n" p99)")" "$(errs ours "$n")"
        printf '| %s | sshd, client asyncssh | %s | %s | %s | %s / %s |\n' "$n" \
            "$(bench_us "$(med ssh "$n" p50)")" "$(bench_us "$(med ssh "$n" p99)")" "$(errs ssh "$n")" \
            "$(goal ssh "$n" p50)" "$(goal ssh "$n" p99)"
        printf '| %s | %s | %s | %s | %s | %s / %s |\n' "$n" "sshd, client OpenSSH \`ssh -tt\` on a pty" \
            "$(bench_us "$(med openssh "$n" p50)")" "$(bench_us "$(med openssh "$n" p99)")" "$(errs openssh "$n")" \
            "$(goal openssh "$n" p50)" "$(goal openssh "$n" p99)"
    done
    echo
    echo "Per round, µs: $(for n in $SESSIONS; do for k in ours ssh openssh; do
        printf '%s×%s p50 %s, p99 %s; ' "$k" "$n" "${M[$k,$n,p50]% }" "${M[$k,$n,p99]% }"; done; done | sed 's/; $//')"
    echo
    echo "Memory, $IDLE_SESSIONS sessions attached and idle for ${IDLE} s (one reading):"
    echo
    echo "| | the process itself: VmRSS | its PSS | its descendants: PSS summed (processes) |"
    echo "|---|---:|---:|---:|"
    printf '| **localhostd**, no session | %s | %s | %s in %s processes |\n' \
        "$(bench_kb "$(field "${MEM[ours,none]}" 1)")" "$(bench_kb "$(field "${MEM[ours,none]}" 4)")" \
        "$(bench_kb "$(field "${MEM[ours,nonekids]}" 1)")" "$(field "${MEM[ours,nonekids]}" 2)"
    printf '| **localhostd**, %s sessions | %s | %s | %s in %s processes |\n' "$IDLE_SESSIONS" \
        "$(bench_kb "$(field "${MEM[ours,self]}" 1)")" "$(bench_kb "$(field "${MEM[ours,self]}" 4)")" \
        "$(bench_kb "$(field "${MEM[ours,kids]}" 1)")" "$(field "${MEM[ours,kids]}" 2)"
    printf '| sshd listener, no session | %s | %s | %s in %s processes |\n' \
        "$(bench_kb "$(field "${MEM[ssh,none]}" 1)")" "$(bench_kb "$(field "${MEM[ssh,none]}" 4)")" \
        "$(bench_kb "$(field "${MEM[ssh,nonekids]}" 1)")" "$(field "${MEM[ssh,nonekids]}" 2)"
    printf '| sshd listener, %s sessions | %s | %s | %s in %s processes |\n' "$IDLE_SESSIONS" \
        "$(bench_kb "$(field "${MEM[ssh,self]}" 1)")" "$(bench_kb "$(field "${MEM[ssh,self]}" 4)")" \
        "$(bench_kb "$(field "${MEM[ssh,kids]}" 1)")" "$(field "${MEM[ssh,kids]}" 2)"
} >"$entry"

echo
cat "$entry"
echo
bench_record "Terminals — keystroke round trip and idle sessions (benches/terminals.sh)" "$entry"
