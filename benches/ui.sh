#!/usr/bin/env bash
# The web UI beside Cockpit (issue 26's Budget): bytes transferred and the time from navigation
# until the usage figures are drawn, in the same headless Chromium, in the same run.
#
# Peer: Debian's `cockpit` (bookworm), which needs systemd and D-Bus, so it runs in a booted
# systemd-nspawn container (../shared/e2e-nspawn.md; the container shares the host's network,
# Cockpit on 127.0.0.1:9090, plain HTTP as for loopback). Ours: the release binary on the host,
# on a free loopback port, empty state. benches/ui_driver.py (CDP) logs in to both first (not
# timed; Cockpit with a local user and password made for the run, ours with the initial admin
# token in the login form), then per round and per peer (the order alternates every round)
# loads the page twice:
#   cold  the browser cache cleared (cookies kept: still logged in), then the page;
#   warm  the page again, its cache as the cold load left it.
# What is timed: from the navigation's start (performance.now() = 0 of the new document) until
# the figures are drawn. Ours: `<main>` has data-ready="dashboard" and every chart canvas has
# pixels. Cockpit: its overview (/system, in an iframe) shows the usage card's CPU and memory
# bars with their figures. Bytes: the encoded (compressed, as on the wire) bodies and headers of
# every response that finished until then, WebSocket frames (Cockpit's channel) included.
# Medians over ROUNDS, and ours ÷ Cockpit.
#
# Run as root:  benches/ui.sh                     # 5 rounds
#   ROUNDS=3 BENCH_RECORD=0 LOCALHOSTD_BIN=target/debug/localhostd benches/ui.sh
# Env: LOCALHOSTD_BENCH_CACHE (default /var/cache/localhostd-bench) keeps the container's rootfs
# tarball (debootstrap + cockpit once, about a minute); delete it to build it again.
set -euo pipefail
# shellcheck source=benches/lib.sh
source "$(dirname "$0")/lib.sh"

ROUNDS="${ROUNDS:-5}"
SUITE=bookworm
INCLUDE=systemd,systemd-sysv,dbus
# Installed with apt in the new root after debootstrap (debootstrap's own dependency order
# fails on Cockpit's GLib stack); the metapackage without its recommendations is ws, bridge and
# system (the overview).
PEER_PACKAGES="cockpit"
COCKPIT_PORT=9090
CACHE="${LOCALHOSTD_BENCH_CACHE:-/var/cache/localhostd-bench}"
MACHINE=lhd-bench-ui
bench_init ui "ROUNDS=$ROUNDS"

[[ $EUID -eq 0 ]] || bench_die "run as root (systemd-nspawn boots the Cockpit container)"
bench_need_tools debootstrap:debootstrap systemd-nspawn:systemd-container zstd:zstd \
    chromium:chromium curl:curl python3:python3 nsenter:util-linux
bench_build

NSPAWN_PID=""
CT_PID=""
ROOT_DIR=""

ui_cleanup() {
    local rc=$?
    set +e
    if [[ -n $CT_PID && -d /proc/$CT_PID ]]; then
        timeout 30 nsenter -t "$CT_PID" -a systemctl poweroff >/dev/null 2>&1
        for _ in $(seq 100); do [[ -d /proc/$NSPAWN_PID ]] || break; sleep 0.2; done
    fi
    if [[ -n $NSPAWN_PID && -d /proc/$NSPAWN_PID ]]; then
        kill "$NSPAWN_PID" 2>/dev/null
        sleep 2
        kill -9 "$NSPAWN_PID" 2>/dev/null
    fi
    [[ -n $ROOT_DIR ]] && rm -rf --one-file-system "$ROOT_DIR"
    (exit "$rc")
    bench_cleanup
}
trap ui_cleanup EXIT

in_ct() { nsenter -t "$CT_PID" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }

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
PY="$(ui_python)"

if curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$COCKPIT_PORT/"; then
    bench_die "something already listens on 127.0.0.1:$COCKPIT_PORT; the container shares the host's network and needs it"
fi

# The rootfs with Cockpit, built once (keyed by suite and package list), cached as a tarball.
prepare_rootfs() {
    local key tarball mirror tmp
    key=$(echo "$SUITE $INCLUDE $PEER_PACKAGES" | sha256sum | cut -c1-12)
    tarball="$CACHE/rootfs-cockpit-$SUITE-$key.tar.zst"
    mkdir -p "$CACHE"
    if [[ ! -s $tarball ]]; then
        # The mirror this machine's apt already uses; never written into any file of ours.
        mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
        [[ -n $mirror ]] || mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
        [[ -n $mirror ]] || bench_die "no Debian mirror in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list"
        tmp=$(mktemp -d /var/tmp/localhostd-bench-debootstrap.XXXXXX)
        bench_log "debootstrap $SUITE (minbase + $INCLUDE, then $PEER_PACKAGES) → $tarball"
        if ! timeout 1200 debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$tmp/root" "$mirror" \
            >"$tmp/debootstrap.log" 2>&1; then
            tail -n 40 "$tmp/debootstrap.log" >&2
            rm -rf --one-file-system "$tmp"
            bench_die "debootstrap failed"
        fi
        bench_log "apt-get install --no-install-recommends $PEER_PACKAGES in the new root"
        # No services started while installing (the policy-rc.d convention), /proc for the
        # maintainer scripts; both undone before the tarball is made.
        printf '#!/bin/sh\nexit 101\n' >"$tmp/root/usr/sbin/policy-rc.d"
        chmod +x "$tmp/root/usr/sbin/policy-rc.d"
        mount -t proc proc "$tmp/root/proc"
        local ok=1
        # shellcheck disable=SC2086 # a list of package names
        timeout 1200 chroot "$tmp/root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -q --no-install-recommends $PEER_PACKAGES >"$tmp/apt.log" 2>&1 || ok=0
        umount "$tmp/root/proc"
        rm -f "$tmp/root/usr/sbin/policy-rc.d"
        if [[ $ok == 0 ]]; then
            tail -n 40 "$tmp/apt.log" >&2
            rm -rf --one-file-system "$tmp"
            bench_die "apt-get install $PEER_PACKAGES in the new root failed"
        fi
        rm -f "$tmp/root/etc/apt/sources.list"
        rm -rf "$tmp/root/var/cache/apt/archives/"*.deb "$tmp/root/var/lib/apt/lists/"*_Packages
        tar --numeric-owner --xattrs --acls -C "$tmp/root" -cf - . | zstd -q -T0 -3 >"$tarball.tmp"
        mv "$tarball.tmp" "$tarball"
        rm -rf --one-file-system "$tmp"
    else
        bench_log "cached rootfs: $tarball"
    fi
    ROOT_DIR=$(mktemp -d /var/tmp/localhostd-bench-ui.XXXXXX)
    mkdir "$ROOT_DIR/rootfs"
    zstd -q -dc "$tarball" | tar --numeric-owner --xattrs --acls -C "$ROOT_DIR/rootfs" -xf -
}

boot_container() {
    local console="$BENCH_TMP/console.log" p comm found=""
    bench_log "booting the Cockpit container (console log $console)"
    SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 setsid systemd-nspawn -D "$ROOT_DIR/rootfs" -b -M "$MACHINE" \
        --register=no --keep-unit --volatile=overlay >"$console" 2>&1 </dev/null &
    NSPAWN_PID=$!
    # nspawn is found by its command line (this run's own rootfs directory).
    for _ in $(seq 300); do
        for p in $(pgrep -f -- "-D $ROOT_DIR/rootfs -b -M $MACHINE" || true); do
            comm=$(cat "/proc/$p/comm" 2>/dev/null || true)
            [[ $comm == systemd-nspawn ]] && found=$p && break 2
        done
        sleep 0.1
    done
    [[ -n $found ]] || bench_die "systemd-nspawn did not start: $(cat "$console")"
    NSPAWN_PID=$found
    for _ in $(seq 150); do
        CT_PID=$(cut -d' ' -f1 "/proc/$NSPAWN_PID/task/$NSPAWN_PID/children" 2>/dev/null || true)
        [[ -n $CT_PID && $(cat "/proc/$CT_PID/comm" 2>/dev/null) == systemd ]] && break
        CT_PID=
        [[ -d /proc/$NSPAWN_PID ]] || bench_die "systemd-nspawn exited during boot: $(tail -n 30 "$console")"
        sleep 0.2
    done
    [[ -n $CT_PID ]] || bench_die "no systemd as the container's PID 1 after 30 s"
    for _ in $(seq 300); do in_ct test -S /run/systemd/private && break; sleep 0.2; done
    local state
    state=$(timeout 120 nsenter -t "$CT_PID" -a systemctl is-system-running --wait 2>/dev/null || true)
    [[ $state == running || $state == degraded ]] || bench_die "the container did not boot (state: ${state:-timeout})"
    bench_log "container up (systemd PID $CT_PID, $state)"
}

start_cockpit() {
    COCKPIT_PASSWORD="$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
    export COCKPIT_PASSWORD
    in_ct useradd -m -s /bin/bash bench
    printf 'bench:%s\n' "$COCKPIT_PASSWORD" | in_ct chpasswd
    in_ct systemctl start cockpit.socket
    for _ in $(seq 150); do
        curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$COCKPIT_PORT/" && break
        sleep 0.2
    done
    curl -s -o /dev/null --max-time 5 "http://127.0.0.1:$COCKPIT_PORT/" \
        || bench_die "Cockpit does not answer on 127.0.0.1:$COCKPIT_PORT"
    COCKPIT_VERSION="$(in_ct dpkg-query -W -f '${Version}' cockpit-ws)"
    bench_log "Cockpit $COCKPIT_VERSION on 127.0.0.1:$COCKPIT_PORT"
}

prepare_rootfs
boot_container
start_cockpit
ours_start ours
TOKEN="$(cat "$OURS_DIR/state/initial-admin-token")"

RESULTS="$BENCH_TMP/results.jsonl"
LOCALHOSTD_TOKEN="$TOKEN" timeout $((120 + ROUNDS * 120)) "$PY" "$BENCH_REPO/benches/ui_driver.py" bench \
    --rounds "$ROUNDS" --base "http://127.0.0.1:$OURS_PORT" \
    --cockpit "http://127.0.0.1:$COCKPIT_PORT" --cockpit-user bench >"$RESULTS" \
    || { cat "$RESULTS" >&2; bench_die "the browser run failed"; }

entry="$BENCH_TMP/entry.md"
"$PY" - "$RESULTS" "$COCKPIT_VERSION" "$ROUNDS" "$(chromium --version 2>/dev/null || echo chromium)" >"$entry" <<'EOF'
import json, statistics, sys
path, cockpit, rounds, chromium = sys.argv[1:5]
loads, summary = [], None
text = open(path).read()
head, _, tail = text.partition('{\n  "summary"')
for line in head.splitlines():
    if line.startswith("{"):
        loads.append(json.loads(line))
summary = json.loads('{\n  "summary"' + tail)["summary"]
kb = lambda b: f"{b / 1024:.1f} KiB"
print(f"- peer: Cockpit {cockpit} (Debian bookworm, booted systemd-nspawn container, plain HTTP on loopback); ours: the daemon on the host, loopback")
print(f"- browser: {chromium}, headless, over CDP (benches/ui_driver.py); {rounds} rounds, the peers' order alternating; logins not timed")
print("- timed: navigation start → figures drawn (ours: every chart canvas has pixels; Cockpit: the overview's usage card shows CPU and memory); bytes: encoded, until then")
print()
print("| page | cache | time to figures (median, min–max) | bytes (median) |")
print("|---|---|---:|---:|")
for peer in ("localhostd", "cockpit"):
    for cache in ("cold", "warm"):
        s = summary[f"{peer}/{cache}"]
        print(f"| {peer} | {cache} | {s['ms_median']:.0f} ms ({s['ms_min']:.0f}–{s['ms_max']:.0f}) | {kb(s['bytes_median'])} |")
print()
for cache in ("cold", "warm"):
    r = summary.get(f"ratio/{cache}", {})
    print(f"- ours ÷ Cockpit, {cache}: time {r.get('ms')}, bytes {r.get('bytes')} (below 1: ours better)")
EOF

echo
cat "$entry"
echo
bench_record "Web UI — localhostd's dashboard beside Cockpit's overview (benches/ui.sh)" "$entry"
