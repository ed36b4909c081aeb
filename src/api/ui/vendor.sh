#!/bin/sh
# Vendored front-end code: fetches the exact package versions in vendor.lock from the npm
# registry (through npm itself, so the registry is whatever `npm config get registry` says),
# checks each tarball's SHA-512 against the lock, and copies only the listed files.
#
#   vendor.sh fetch                 replace the vendored files with the locked versions' files
#   vendor.sh check                 fetch again into a temporary directory and compare byte for
#                                   byte with the committed files (CI runs this); no extra files
#   vendor.sh relock NAME VERSION   pin NAME to VERSION (integrity from the registry), then fetch
#
# Needs: npm, tar, openssl, base64, cmp. Runs from any directory.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../../.." && pwd)
lock="$here/vendor.lock"

die() {
    echo "vendor.sh: $*" >&2
    exit 1
}

for tool in npm tar openssl base64 cmp; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is needed and was not found"
done

# The lock's entries without comments: name version integrity destination files...
entries() {
    grep -v '^[[:space:]]*#' "$lock" | grep -v '^[[:space:]]*$'
}

# sri FILE: the file's integrity string, as npm writes it (sha512-<base64>).
sri() {
    printf 'sha512-%s' "$(openssl dgst -sha512 -binary "$1" | base64 | tr -d '\n')"
}

# unpack NAME VERSION INTEGRITY WORKDIR: downloads the tarball into WORKDIR, checks it against
# INTEGRITY and unpacks it into WORKDIR/x; prints nothing.
unpack() {
    u_name=$1 u_version=$2 u_integrity=$3 u_work=$4
    mkdir -p "$u_work/x"
    # A private cache, so the check really downloads and a poisoned shared cache cannot pass.
    u_tgz=$(cd "$u_work" && npm pack "$u_name@$u_version" --silent --ignore-scripts \
        --cache "$u_work/npm-cache" --pack-destination "$u_work") ||
        die "npm pack $u_name@$u_version failed"
    u_tgz="$u_work/$(printf '%s\n' "$u_tgz" | tail -n 1)"
    [ -f "$u_tgz" ] || die "npm pack $u_name@$u_version gave no tarball"
    u_got=$(sri "$u_tgz")
    [ "$u_got" = "$u_integrity" ] ||
        die "$u_name@$u_version: the tarball's integrity is $u_got, the lock says $u_integrity"
    tar -xzf "$u_tgz" -C "$u_work/x" --no-same-owner --no-same-permissions
}

# place WORKDIR DEST FILES...: copies the unpacked FILES into DEST (by base name).
place() {
    p_work=$1 p_dest=$2
    shift 2
    mkdir -p "$p_dest"
    for p_f in "$@"; do
        [ -f "$p_work/x/$p_f" ] || die "the tarball has no $p_f"
        cp "$p_work/x/$p_f" "$p_dest/$(basename "$p_f")"
        chmod 0644 "$p_dest/$(basename "$p_f")"
    done
}

cmd_fetch() {
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    entries | while read -r name version integrity dest files; do
        work="$tmp/$(printf '%s' "$name" | tr '/@' '__')"
        # shellcheck disable=SC2086 # files is a list
        unpack "$name" "$version" "$integrity" "$work"
        rm -rf "${top:?}/$dest"
        # shellcheck disable=SC2086
        place "$work" "$top/$dest" $files
        echo "vendored $name@$version into $dest"
    done
}

cmd_check() {
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    status=0
    entries >"$tmp/entries"
    while read -r name version integrity dest files; do
        work="$tmp/$(printf '%s' "$name" | tr '/@' '__')"
        unpack "$name" "$version" "$integrity" "$work"
        # shellcheck disable=SC2086
        place "$work" "$tmp/want/$dest" $files
        if [ ! -d "$top/$dest" ] || ! diff -r "$tmp/want/$dest" "$top/$dest" >/dev/null 2>&1; then
            echo "vendor.sh: $dest differs from $name@$version:" >&2
            diff -rq "$tmp/want/$dest" "$top/$dest" >&2 || true
            status=1
        else
            echo "ok $name@$version ($dest)"
        fi
    done <"$tmp/entries"
    # Nothing vendored outside the lock: every directory under vendor/ is some entry's.
    for d in "$top"/src/api/ui/vendor/* "$top"/tests/ui/vendor/*; do
        [ -e "$d" ] || continue
        rel=${d#"$top"/}
        if ! awk -v d="$rel" '$4 == d { found = 1 } END { exit !found }' "$tmp/entries"; then
            echo "vendor.sh: $rel is not in vendor.lock" >&2
            status=1
        fi
    done
    [ "$status" = 0 ] || die "the vendored files do not match vendor.lock (run: $0 fetch)"
    echo "every vendored file matches vendor.lock"
}

cmd_relock() {
    [ $# = 2 ] || die "usage: vendor.sh relock NAME VERSION"
    name=$1 version=$2
    entries | awk -v n="$name" '$1 == n { found = 1 } END { exit !found }' ||
        die "$name is not in vendor.lock (add its line by hand: name version integrity destination files)"
    integrity=$(npm view "$name@$version" dist.integrity --silent) ||
        die "npm view $name@$version failed"
    case $integrity in
    sha512-*) ;;
    *) die "the registry gave no sha512 integrity for $name@$version: '$integrity'" ;;
    esac
    tmp=$(mktemp)
    awk -v n="$name" -v v="$version" -v i="$integrity" '
        /^[[:space:]]*#/ || NF == 0 { print; next }
        $1 == n { $2 = v; $3 = i }
        { print }' "$lock" >"$tmp"
    mv "$tmp" "$lock"
    echo "locked $name@$version ($integrity)"
    cmd_fetch
}

case ${1:-} in
fetch) cmd_fetch ;;
check) cmd_check ;;
relock)
    shift
    cmd_relock "$@"
    ;;
*) die "usage: vendor.sh fetch | check | relock NAME VERSION" ;;
esac
