#!/usr/bin/env bash
# Backups: `POST /api/v1/backups` (create) and `POST /api/v1/backups/{id}/verify?read_data=true`
# of a state holding DATA_MB MiB of files, beside `tar czf` of the same state directory and
# `tar xzOf … | sha256sum` of its archive, in the same run.
#
#   create          MB/s of state bytes (database + blobs + program files) into a .tar.gz:
#                   ours at backup.compression-level OURS_LEVELS (set by SIGHUP; 2 is the
#                   default), GNU tar + gzip at TAR_LEVELS (6 is tar czf's) of the same files
#   verify          MB/s re-reading every byte: ours (inflate + SHA-256 of every entry against
#                   the manifest), tar xzOf | sha256sum (inflate + one hash of the stream)
#   size            archive bytes / state bytes
#
# The state: half random bytes (like media or archives: incompressible), half base64 text
# (compressible to about 3/4), in 64 MiB files, plus the database. ROUNDS rounds; in each the
# contenders run back to back, the first one swapped every round; the table shows medians.
# Replaces its entry in docs/benchmarks.md (BENCH_RECORD=0 to only print).
#
#   benches/backup.sh                                   # 3 rounds of 1 GiB
#   ROUNDS=1 DATA_MB=256 BENCH_RECORD=0 benches/backup.sh   # quick look
#
# The state and archives live in $TMPDIR (default /tmp): point it at the disk you want measured.
set -euo pipefail
# shellcheck source=benches/lib.sh
source "$(dirname "$0")/lib.sh"

ROUNDS="${ROUNDS:-3}"
DATA_MB="${DATA_MB:-1024}"
# gzip levels: ours (backup.compression-level) and the peer's.
OURS_LEVELS="${OURS_LEVELS:-1 2 6}"
TAR_LEVELS="${TAR_LEVELS:-1 6}"
bench_init backup "ROUNDS=$ROUNDS DATA_MB=$DATA_MB OURS_LEVELS='$OURS_LEVELS' TAR_LEVELS='$TAR_LEVELS'"

bench_need_tools curl:curl tar:tar gzip:gzip sha256sum:coreutils awk:gawk python3:python3
bench_build

load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
fs_type="$(stat -f -c %T "$BENCH_TMP")"

OURS_CONFIG_EXTRA="[rate-limit]
enabled = false
[files]
max-file-size = \"1GiB\"
max-total-size = \"$((DATA_MB * 2 + 1024))MiB\"
[backup]
compression-level = 2"
ours_start ours
TOKEN="$(cat "$OURS_DIR/state/initial-admin-token")"
AUTH="Authorization: Bearer $TOKEN"
API="http://127.0.0.1:$OURS_PORT/api/v1"
STATE="$OURS_DIR/state"

# The data: uploaded through the API, so the database knows every file.
FILE_MB=64
n_files=$(((DATA_MB + FILE_MB - 1) / FILE_MB))
bench_log "uploading $n_files files of $FILE_MB MiB (half random, half base64)"
for i in $(seq 1 "$n_files"); do
    if ((i % 2)); then
        head -c $((FILE_MB << 20)) /dev/urandom >"$BENCH_TMP/src.bin"
    else
        # base64 of 3/4 of the size, in 76-column lines: about FILE_MB MiB.
        head -c $((FILE_MB * 3 << 18)) /dev/urandom | base64 -w 76 >"$BENCH_TMP/src.bin"
    fi
    curl -fsS -o /dev/null -H "$AUTH" -T "$BENCH_TMP/src.bin" "$API/files/data/$i.bin"
done
rm -f "$BENCH_TMP/src.bin"
for i in $(seq 1 200); do
    curl -fsS -o /dev/null -H "$AUTH" -H 'Content-Type: application/json' -X PUT \
        -d "{\"n\":$i,\"text\":\"some value number $i\"}" "$API/data/bench/$i"
done

# ours_create: one backup through the API; prints "seconds state_bytes archive_bytes id".
ours_create() {
    local out code t body
    out="$(curl -sS -w '\n%{http_code} %{time_total}' --max-time 3600 -H "$AUTH" -X POST "$API/backups")"
    body="$(head -n 1 <<<"$out")"
    read -r code t <<<"$(tail -n 1 <<<"$out")"
    [[ "$code" == 201 ]] || bench_die "create answered $code: $body"
    python3 -c 'import json,sys; b=json.loads(sys.argv[1]); print(sys.argv[2], b["data_bytes"], b["size"], b["id"])' "$body" "$t"
}

# ours_verify ID: verify --read-data through the API; prints seconds.
ours_verify() {
    local out code t
    out="$(curl -sS -o "$BENCH_TMP/verify.json" -w '%{http_code} %{time_total}' --max-time 3600 -H "$AUTH" \
        -X POST "$API/backups/$1/verify?read_data=true")"
    read -r code t <<<"$out"
    [[ "$code" == 200 ]] || bench_die "verify answered $code: $(cat "$BENCH_TMP/verify.json")"
    echo "$t"
}

# set_level N: backup.compression-level N, applied by SIGHUP (the config is re-read live).
set_level() {
    sed -i "s/^compression-level = .*/compression-level = $1/" "$OURS_DIR/config.toml"
    kill -HUP "$OURS_PID"
    sleep 0.5
}

# tar_create LEVEL: tar + gzip -LEVEL of the state's database, files and programs; prints
# "seconds archive_bytes". (The daemon keeps serving; its database is checkpointed and idle.)
tar_create() {
    local t0 t1
    t0="$(date +%s.%N)"
    tar -C "$STATE" -cf - localhostd.db files programs | gzip "-$1" >"$BENCH_TMP/peer.tar.gz"
    sync -f "$BENCH_TMP/peer.tar.gz"
    t1="$(date +%s.%N)"
    echo "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }') $(stat -c %s "$BENCH_TMP/peer.tar.gz")"
}

tar_verify() {
    local t0 t1
    t0="$(date +%s.%N)"
    tar -xzOf "$BENCH_TMP/peer.tar.gz" | sha256sum >/dev/null
    t1="$(date +%s.%N)"
    awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }'
}

mbps() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.0f", b / s / 1e6 }'; }

declare -A R
add() { R[$1]="${R[$1]:-} $2"; }

state_bytes=0
for round in $(seq 1 "$ROUNDS"); do
    order=(ours tar)
    ((round % 2 == 0)) && order=(tar ours)
    bench_log "round $round/$ROUNDS: ${order[*]}"
    for who in "${order[@]}"; do
        if [[ $who == ours ]]; then
            for level in $OURS_LEVELS; do
                set_level "$level"
                read -r t bytes size id <<<"$(ours_create)"
                state_bytes="$bytes"
                add "create_ours_$level" "$(mbps "$bytes" "$t")"
                add "ratio_ours_$level" "$(awk -v a="$size" -v b="$bytes" 'BEGIN { printf "%.3f", a / b }')"
                vt="$(ours_verify "$id")"
                add "verify_ours_$level" "$(mbps "$bytes" "$vt")"
                rm -f "$STATE/backups/$id.tar.gz"
            done
        else
            [[ $state_bytes -gt 0 ]] || state_bytes="$(du -sb "$STATE/localhostd.db" "$STATE/files" "$STATE/programs" | awk '{ s += $1 } END { print s }')"
            for level in $TAR_LEVELS; do
                read -r t size <<<"$(tar_create "$level")"
                add "create_tar_$level" "$(mbps "$state_bytes" "$t")"
                add "ratio_tar_$level" "$(awk -v a="$size" -v b="$state_bytes" 'BEGIN { printf "%.3f", a / b }')"
                vt="$(tar_verify)"
                add "verify_tar_$level" "$(mbps "$state_bytes" "$vt")"
                rm -f "$BENCH_TMP/peer.tar.gz"
            done
        fi
    done
done
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

med() {
    # shellcheck disable=SC2086
    bench_median ${R[$1]}
}
spread() {
    # shellcheck disable=SC2086
    bench_minmax ${R[$1]}
}

entry="$BENCH_TMP/entry.md"
{
    echo "- state: $(awk -v b="$state_bytes" 'BEGIN { printf "%.0f MiB", b / 1048576 }') (database + $n_files files of $FILE_MB MiB, half random, half base64), on $fs_type"
    echo "- load average before / after: $load_before / $load_after (the machine is shared with other builds)"
    echo "- tools: $(tar --version | head -n 1), $(gzip --version | head -n 1); ours: flate2 on zlib-rs, sha2"
    echo
    echo "| | create MB/s (median, spread) | verify, every byte MB/s | archive / state |"
    echo "|---|---|---|---|"
    for level in $OURS_LEVELS; do
        echo "| localhostd, level $level | $(med "create_ours_$level") ($(spread "create_ours_$level")) | $(med "verify_ours_$level") ($(spread "verify_ours_$level")) | $(med "ratio_ours_$level") |"
    done
    for level in $TAR_LEVELS; do
        echo "| tar + gzip -$level | $(med "create_tar_$level") ($(spread "create_tar_$level")) | $(med "verify_tar_$level") ($(spread "verify_tar_$level")) | $(med "ratio_tar_$level") |"
    done
    echo
    echo "MB/s are state bytes (10^6) per second of wall time, $ROUNDS rounds. Ours: create = the API call (online SQLite backup, fsync, rename); verify = \`verify?read_data=true\` (inflate, SHA-256 of every entry, manifest check). tar: \`tar -cf - | gzip -N\` then \`sync\`; verify = \`tar xzOf | sha256sum\`."
} >"$entry"
cat "$entry"
bench_record "Backups (benches/backup.sh)" "$entry"
