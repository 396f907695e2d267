#!/usr/bin/env bash
# Installs promtool (from Debian's `prometheus` package) into <repo>/.test-broker/bin/promtool
# for tests/observability.rs, which checks infra/prometheus with it. Needs no root: the
# package is downloaded with `apt-get download` and unpacked with `dpkg -x`; nothing is
# installed system-wide and no service starts. Idempotent.
# If promtool cannot be obtained this prints a warning and exits 0: the test then falls
# back to its own structural checks and says so in its output.
# Usage: scripts/install-promtool.sh [--force]
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target_dir="${repo_root}/.test-broker/bin"
target="${target_dir}/promtool"

if [[ "${1:-}" != "--force" && -x "${target}" ]] && "${target}" --version >/dev/null 2>&1; then
    echo "promtool already installed at ${target}: $("${target}" --version 2>&1 | head -n 1)"
    exit 0
fi

warn() {
    echo "warning: $*; tests/observability.rs will fall back to structural checks" >&2
    exit 0
}

command -v apt-get >/dev/null 2>&1 || warn "apt-get is not available to fetch Debian's prometheus package"
command -v dpkg >/dev/null 2>&1 || warn "dpkg is not available to unpack Debian's prometheus package"

work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT

download() {
    (cd "${work}" && apt-get download prometheus >/dev/null 2>&1)
}

echo "downloading Debian's prometheus package (for promtool)"
if ! download; then
    # A fresh machine may have no package lists yet; refreshing them needs root.
    if [[ "$(id -u)" == "0" ]]; then
        apt-get update -qq >/dev/null 2>&1 || true
    elif sudo -n true 2>/dev/null; then
        sudo -n apt-get update -qq >/dev/null 2>&1 || true
    fi
    download || warn "apt-get download prometheus failed"
fi

deb="$(ls "${work}"/prometheus_*.deb 2>/dev/null | head -n 1)"
[[ -n "${deb}" ]] || warn "the prometheus package was not downloaded"
dpkg -x "${deb}" "${work}/root"
[[ -x "${work}/root/usr/bin/promtool" ]] || warn "the prometheus package holds no usr/bin/promtool"

mkdir -p "${target_dir}"
cp "${work}/root/usr/bin/promtool" "${target}.partial"
mv "${target}.partial" "${target}"
echo "installed ${target}: $("${target}" --version 2>&1 | head -n 1)"
