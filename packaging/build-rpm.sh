#!/bin/bash
# Builds the localhostd .rpm from this checkout with rpmbuild (here: Debian's rpm package),
# reusing the release build in target/release (the spec runs `cargo build --release --locked`,
# a no-op when it is fresh); prints its file list and scriptlets and runs rpmlint.
#
# The .rpm is built and inspected here, never installed. Debian's rpm has no
# systemd-rpm-macros: the spec carries fallback definitions, and --nodeps skips the
# BuildRequires check (no rpm database of build dependencies on a Debian host).
#
# Usage: packaging/build-rpm.sh [OUTDIR]       (default: target/pkg)
# Env:   RPMLINT=0 skips rpmlint.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=${1:-target/pkg}
mkdir -p "$out"
out=$(cd "$out" && pwd)

log() { echo "build-rpm: $*"; }
die() { echo "build-rpm: FAIL: $*" >&2; exit 1; }

for tool in rpmbuild cargo; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install rpm; cargo from rustup)"
done

cargo_version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
spec_version=$(sed -n 's/^Version: *//p' rpm/localhostd.spec)
[ "$spec_version" = "$cargo_version" ] \
    || die "rpm/localhostd.spec is at $spec_version but Cargo.toml at $cargo_version: update Version: and %changelog"

# The release build, in this environment: a no-op when target/release is fresh. The spec then
# uses it as it is (localhostd_prebuilt): rpmbuild's %build environment (CFLAGS,
# SOURCE_DATE_EPOCH…) would otherwise make cargo rebuild the bundled SQLite and relink.
log "cargo build --release --locked"
cargo build --release --locked

top=$(mktemp -d "${TMPDIR:-/tmp}/localhostd-rpmbuild.XXXXXX")
trap 'rm -rf "$top"' EXIT
log "rpmbuild -bb --build-in-place (version $spec_version) → $out"
rpmbuild -bb --build-in-place --nodeps \
    --define "_topdir $top" \
    --define "_sourcedir $root/rpm" \
    --define "localhostd_prebuilt 1" \
    --define "_rpmdir $out" \
    --define "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm" \
    rpm/localhostd.spec
rpm_file=$(ls "$out"/localhostd-"$spec_version"-*.rpm | grep -v '\.src\.rpm$' | sort -V | tail -1)
[ -f "$rpm_file" ] || die "no .rpm after the build"

log "rpm -qpl $(basename "$rpm_file"):"
rpm -qpl "$rpm_file" | sed 's/^/  /'
log "rpm -qp --scripts:"
rpm -qp --scripts "$rpm_file" | sed 's/^/  /'
log "rpm -qp --requires / --provides:"
rpm -qp --requires "$rpm_file" | sed 's/^/  requires: /'
rpm -qp --provides "$rpm_file" | sed 's/^/  provides: /'
log "config files: $(rpm -qpc "$rpm_file" | tr '\n' ' ')"
# The socket's group must be rewritten for nginx's group on RPM distributions.
rpm2cpio "$rpm_file" | (cd "$top" && cpio -idm --quiet ./usr/lib/systemd/system/localhostd.socket)
grep -q '^SocketGroup=nginx$' "$top/usr/lib/systemd/system/localhostd.socket" || die "localhostd.socket in the .rpm has no SocketGroup=nginx"

if [ "${RPMLINT:-1}" != 0 ]; then
    command -v rpmlint >/dev/null || die "rpmlint not found (apt-get install rpmlint), or RPMLINT=0"
    log "rpmlint (config and reasons for every filtered finding: rpm/rpmlint.toml):"
    rpmlint_out=$(rpmlint -c rpm/rpmlint.toml rpm/localhostd.spec "$rpm_file" 2>&1) && rc=0 || rc=$?
    echo "$rpmlint_out" | sed 's/^/  /'
    # rpmlint exits 64 when it found errors, 66 when the error count went over the badness limit.
    [ "$rc" = 0 ] || die "rpmlint reports errors (exit $rc)"
    log "rpmlint: no errors"
fi
log "ok: $rpm_file"
