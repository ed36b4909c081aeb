#!/bin/bash
# Checks the shipped default config against the binary it ships with:
#   1. `localhostd check-config` accepts it as it is (all comments);
#   2. with every "# key = value" and "# [table]" line uncommented it is still valid and gives exactly the
#      built-in defaults (the commented values are the real defaults);
#   3. every key the binary knows (check-config --config /dev/null) is shown in it.
# A new config key therefore fails this check until packaging/config.toml documents it.
# Usage: packaging/check-config.sh [BINARY] [CONFIG]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-$here/../target/release/localhostd}
conf=${2:-$here/config.toml}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

keys() { # "section.key" for each "key = value" line of a TOML file (tables, no arrays of tables)
    awk '/^\[/{s=$0; gsub(/[][ ]/, "", s); next} /^[a-z][a-z0-9-]* =/{print (s == "" ? "" : s ".") $1}' "$1" | sort
}

"$bin" check-config --config "$conf" >/dev/null 2>"$tmp/err" || { cat "$tmp/err" >&2; echo "check-config: FAIL: $conf is refused" >&2; exit 1; }
sed -E 's/^# ([a-z][a-z0-9-]* = .*)$/\1/; s/^# (\[[a-z][a-z0-9.-]*\])$/\1/' "$conf" >"$tmp/uncommented.toml"
"$bin" check-config --config "$tmp/uncommented.toml" >"$tmp/shown" 2>"$tmp/err" || { cat "$tmp/err" >&2; echo "check-config: FAIL: $conf with its defaults uncommented is refused" >&2; exit 1; }
"$bin" check-config --config /dev/null >"$tmp/defaults" 2>/dev/null
if ! diff -u "$tmp/defaults" "$tmp/shown" >&2; then
    echo "check-config: FAIL: a value shown in $conf is not the built-in default (diff above: - built-in, + file)" >&2
    exit 1
fi
keys "$tmp/defaults" >"$tmp/k-defaults"
keys "$tmp/uncommented.toml" >"$tmp/k-shown"
missing=$(comm -23 "$tmp/k-defaults" "$tmp/k-shown")
if [ -n "$missing" ]; then
    echo "check-config: FAIL: $conf does not show these settings:" $missing >&2
    exit 1
fi
echo "check-config: ok: $conf is valid, shows every setting ($(wc -l <"$tmp/k-defaults")) with its built-in default"
