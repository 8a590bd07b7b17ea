#!/usr/bin/env bash
# The project's front door. Two commands do all the setup on a fresh Debian or Ubuntu machine:
#   bash dev.sh run     the main job: the demo ERP host with the Email tabs
#   bash dev.sh test    the whole test suite, with ruff and mypy
# Both install what they need: system packages through apt (as root or with sudo), and a
# virtual environment in .venv with the package.
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
SYSTEM_PACKAGES_RUN=(postgresql postgresql-contrib libegl1 libgl1 libxkbcommon0 libfontconfig1
  libfreetype6 libglib2.0-0 libdbus-1-3 libx11-6 libxcb1 python3-venv
  gcc python3-dev)  # gcc and the headers build the optional C text loops (sync/mail/_speedups.c)
SYSTEM_PACKAGES_TEST=("${SYSTEM_PACKAGES_RUN[@]}" dovecot-imapd openssl designer-qt6
  python3-pyqt6.qtdesigner poppler-utils
  # A real English word list for bench/attach_search.py's mail (220 KB).
  wamerican
  # The email package's own test messages (tests/sync/test_corpus.py), for the venv's Python.
  "libpython$(for py in "$VENV/bin/python" python3; do
    "$py" -c 'import sys; print(*sys.version_info[:2], sep=".")' 2>/dev/null && break; done
  )-testsuite")

log() { printf '==> %s\n' "$*" >&2; }

need_packages() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
      || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local apt=()
  if [ "$(id -u)" -eq 0 ]; then apt=(apt-get)
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then apt=(sudo apt-get)
  else
    log "missing system packages: ${missing[*]}"
    log "install them with: sudo apt-get install ${missing[*]}"
    exit 1
  fi
  log "installing system packages: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive "${apt[@]}" update -qq
  # policy-rc.d may forbid starting services in containers; we start our own instances anyway.
  DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
}

python_bin() {
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null \
       && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"; return
    fi
  done
  log "Python 3.11 or newer is required: apt-get install python3"; exit 1
}

make_venv() {
  local extras=$1
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    "$(python_bin)" -m venv "$VENV"
  fi
  local stamp="$VENV/.installed-$extras"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ] \
     || [ sync/mail/_speedups.c -nt "$stamp" ]; then
    log "installing xtmail${extras:+[$extras]} into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".${extras:+[$extras]}"
    touch "$stamp"
  fi
}

mypy_tree() {
  # The import name xtmail maps to several top-level folders; mypy reads a symlinked tree.
  local tree=build/mypy/xtmail
  mkdir -p "$tree"
  for pkg in sync widgets dialogs designer_plugins app; do ln -sfn "../../../$pkg" "$tree/$pkg"; done
  echo build/mypy
}

case "${1:-}" in
  run)
    need_packages "${SYSTEM_PACKAGES_RUN[@]}"
    make_venv ""
    shift
    exec "$VENV/bin/xtmail" demo --folder .xtmail-data "$@"
    ;;
  test)
    need_packages "${SYSTEM_PACKAGES_TEST[@]}"
    make_venv test
    shift
    log "ruff"
    "$VENV/bin/ruff" check .
    log "mypy"
    MYPYPATH="$(mypy_tree)" "$VENV/bin/mypy" -p xtmail
    log "import layers (lint-imports)"
    "$VENV/bin/lint-imports" --no-cache
    log "pytest"
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  *)
    echo "usage: bash dev.sh run|test [arguments]" >&2
    exit 2
    ;;
esac
