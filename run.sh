#!/usr/bin/env bash
# BoneMet one-command entry point.
#   ./run.sh demo [bonemet demo options]   set up the environment, then run the demo (the main job)
#   ./run.sh test [pytest options]         set up the environment (with test extras), then run the test suite
#   ./run.sh bonemet ARGS...               set up the environment, then run any bonemet command
#   ./run.sh setup                         only set up the environment
# Environment variables:
#   PYTHON         interpreter used to create the environment (default: python3; needs 3.10-3.12)
#   BONEMET_VENV   where the environment lives (default: .venv beside this script)
#   BONEMET_TORCH  pip requirement for PyTorch, installed first (default: torch==2.13.0, the CPU build;
#                  e.g. BONEMET_TORCH="torch==2.5.1 --index-url https://download.pytorch.org/whl/cu124" on GPU servers)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${BONEMET_VENV:-$here/.venv}"
torch_req="${BONEMET_TORCH:-torch==2.13.0}"
py="${PYTHON:-python3}"

die() { echo "run.sh: $*" >&2; exit 2; }

setup() {
  local extras="$1"
  if [ ! -x "$venv/bin/python" ]; then
    command -v "$py" >/dev/null || die "no '$py' found; install Python 3.10-3.12 or set PYTHON"
    "$py" - <<'PY' || die "Python 3.10-3.12 is required (found $("$py" --version 2>&1))"
import sys
sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 12) else 1)
PY
    echo "run.sh: creating environment in $venv" >&2
    "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
  fi
  # Re-install only when the requirements changed (stamp = hash of pyproject, torch pin and extras).
  local stamp="$venv/.bonemet-stamp"
  local want
  want="$( (cat "$here/pyproject.toml"; echo "$torch_req"; echo "$extras") | sha256sum | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "run.sh: installing dependencies ($torch_req, bonemet[$extras])" >&2
    # shellcheck disable=SC2086
    "$venv/bin/python" -m pip install --quiet $torch_req >&2
    "$venv/bin/python" -m pip install --quiet -e "$here[$extras]" >&2
    echo "$want" > "$stamp"
  fi
}

# The report test opens the HTML in headless Chromium (Debian package). Install it when missing and we may
# (root with apt-get, as in CI); otherwise that one test reports why it cannot run.
ensure_browser() {
  command -v chromium >/dev/null 2>&1 && return 0
  [ "${BONEMET_NO_BROWSER_INSTALL:-}" = 1 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "run.sh: installing chromium (Debian package) for the report rendering test" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1 \
      || echo "run.sh: could not install chromium; the browser test will say so" >&2
  fi
}

# Text files are UTF-8 whatever the locale (some libraries reset the C locale at import).
export PYTHONUTF8=1

cmd="${1:-}"
[ -n "$cmd" ] && shift || true
case "$cmd" in
  setup) setup test ;;
  demo) setup test; exec "$venv/bin/bonemet" demo "$@" ;;
  bonemet) setup test; exec "$venv/bin/bonemet" "$@" ;;
  test)
    setup test
    ensure_browser
    cd "$here"
    exec "$venv/bin/python" -m pytest "$@" ;;
  *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; [ -z "$cmd" ] && exit 0 || exit 2 ;;
esac
