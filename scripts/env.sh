# Sourced by scripts/demo and scripts/test: make the project's virtual environment current.
# Idempotent: the venv is created once, and packages are reinstalled only when a pyproject.toml changes.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
PYTHON=${PYTHON:-python3}

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "error: fleetflow needs Python 3.11 or newer as '$PYTHON' (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
    # Debian's python3 ships venv separately.
    rm -rf "$VENV"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
      "$PYTHON" -m venv "$VENV"
    else
      echo "error: '$PYTHON -m venv' failed; install your distribution's python3-venv package" >&2
      exit 1
    fi
  fi
fi
stamp="$VENV/.fleetflow-installed"
want=$(cat "$ROOT/pyproject.toml" "$ROOT/dev/pyproject.toml" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "installing fleetflow and its dependencies into $VENV ..." >&2
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # The product and, as its own distribution, the local development fleet (dev/).
  # setuptools' editable-install warnings are noise to a user: shown only if the install fails.
  if ! out=$("$VENV/bin/python" -m pip install -q -e "$ROOT[dev]" -e "$ROOT/dev" 2>&1); then
    echo "$out" >&2
    echo "error: installing fleetflow into $VENV failed (above)" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"

# PostgreSQL from Debian's packages: the local fleet's CloudNativePG stand-in runs real servers.
ensure_postgres() {
  if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v psql >/dev/null; then
    return 0
  fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing PostgreSQL from Debian's packages ..." >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    echo "error: PostgreSQL is missing: run 'sudo apt-get install postgresql'" >&2
    exit 1
  fi
}

# What real nodes need from Debian's packages: the container runtime, CNI plugins, and the tools
# that build images without Docker (umoci, mmdebstrap, busybox-static, gcc for the pause image).
NODE_PACKAGES="containerd runc containernetworking-plugins iproute2 iptables umoci mmdebstrap busybox-static gcc libc6-dev util-linux"
ensure_node_runtime() {
  local missing=""
  for pkg in $NODE_PACKAGES; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
  done
  [ -z "$missing" ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing what nodes need from Debian's packages:$missing ..." >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    echo "error: nodes need:$missing; run 'sudo apt-get install$missing'" >&2
    exit 1
  fi
}
