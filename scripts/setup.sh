# Shared install steps for scripts/serve and scripts/test (sourced, not run).
# Idempotent: each step checks before it installs, so a second run costs seconds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMPS="$ROOT/.stamps"
mkdir -p "$STAMPS"

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# apt_ensure PKG... : install the Debian packages that are not installed yet.
apt_ensure() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "installing Debian packages: ${missing[*]}"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

# python_env EXTRAS : a virtualenv with openxapi installed (editable) and its extras.
python_env() {
    local extras="$1"
    if ! command -v python3 >/dev/null || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
        apt_ensure python3 python3-venv python3-pip
    fi
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    local want
    want="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)-$extras"
    if [ "$(cat "$STAMPS/pip" 2>/dev/null)" != "$want" ]; then
        "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
        "$VENV/bin/python" -m pip install -q -e "$ROOT[$extras]"
        echo "$want" > "$STAMPS/pip"
    fi
}

# node_env : Node.js, npm and the npm xen-api client used by the end-to-end tests.
node_env() {
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        apt_ensure nodejs npm
    fi
    local dir="$ROOT/tests/e2e/node"
    local want
    want="$(cat "$dir/package.json" "$dir/package-lock.json" 2>/dev/null | sha256sum | cut -c1-16)"
    if [ ! -d "$dir/node_modules/xen-api" ] || [ "$(cat "$STAMPS/npm" 2>/dev/null)" != "$want" ]; then
        (cd "$dir" && if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --silent; else npm install --no-audit --no-fund --silent; fi)
        echo "$want" > "$STAMPS/npm"
    fi
}
