#!/bin/bash
# Builds the localhostd .deb from this checkout with dpkg-buildpackage, reusing the release
# build in target/release (debian/rules runs `cargo build --release --locked`, a no-op when it
# is fresh), then checks it with lintian.
#
# Usage: packaging/build-deb.sh [OUTDIR]       (default: target/pkg)
# Env:   LINTIAN=0 skips lintian.
# Needs: dpkg-dev, debhelper (>= 13), lintian; cargo on PATH.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=${1:-target/pkg}
mkdir -p "$out"
out=$(cd "$out" && pwd)

log() { echo "build-deb: $*"; }
die() { echo "build-deb: FAIL: $*" >&2; exit 1; }

for tool in dpkg-buildpackage dh cargo; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install dpkg-dev debhelper; cargo from rustup)"
done

# One version everywhere: Cargo.toml is the source of truth.
cargo_version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
deb_version=$(dpkg-parsechangelog -S Version)
[ "${deb_version%%-*}" = "$cargo_version" ] \
    || die "debian/changelog is at $deb_version but Cargo.toml at $cargo_version: add a changelog entry (dch -v $cargo_version)"
arch=$(dpkg --print-architecture)

# The release build, in this environment: a no-op when target/release is fresh (CI built it
# before the tests). debian/rules then uses it as it is (LOCALHOSTD_PREBUILT=1).
log "cargo build --release --locked"
cargo build --release --locked
export LOCALHOSTD_PREBUILT=1

rm -f "$out"/localhostd_"$deb_version"_"$arch".{deb,buildinfo,changes}
log "dpkg-buildpackage -b (version $deb_version, $arch) → $out"
export DEB_OUTDIR=$out
dpkg-buildpackage -b -us -uc \
    --buildinfo-file="$out/localhostd_${deb_version}_$arch.buildinfo" \
    --changes-file="$out/localhostd_${deb_version}_$arch.changes" \
    --buildinfo-option=-u"$out" --changes-option=-u"$out"
deb=$out/localhostd_${deb_version}_$arch.deb
[ -f "$deb" ] || die "no $deb after the build"

packaging/check-config.sh target/release/localhostd packaging/config.toml

log "contents of $(basename "$deb"):"
dpkg-deb --contents "$deb" | awk '{print "  " $1, $6, $7, $8}'
log "conffiles: $(dpkg-deb --ctrl-tarfile "$deb" | tar -xOf - ./conffiles | tr '\n' ' ')"

if [ "${LINTIAN:-1}" != 0 ]; then
    command -v lintian >/dev/null || die "lintian not found (apt-get install lintian), or LINTIAN=0"
    log "lintian (fails on errors and warnings; overrides in debian/localhostd.lintian-overrides):"
    lintian --fail-on error,warning --display-info --show-overrides \
        "$out/localhostd_${deb_version}_$arch.changes"
    log "lintian: clean"
fi
log "ok: $deb"
