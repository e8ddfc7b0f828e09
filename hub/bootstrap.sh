#!/usr/bin/env bash
# The README's two commands land here.
#
#   bash hub/bootstrap.sh up   [mlrp up options]   install what is missing, then start the platform
#   bash hub/bootstrap.sh test [pytest options]    install what is missing (test tools too), run all tests
#   bash hub/bootstrap.sh install                  install or update the platform, start nothing
#
# Runs as root on Debian with Python 3.11, Node.js and apt. Everything goes under $MLRP_PREFIX
# (default /opt/mlrp), built from Debian's /usr/bin/python3 and world-readable: user servers run
# from these environments as their own accounts, and pyenv's python lives under /root (mode 700).
#
#   $PREFIX/venv                the platform: a normal (non-editable) install of this checkout.
#                               It never refers back to the checkout, which may be deleted or
#                               moved afterwards; `mlrp` is linked into $MLRP_BIN_DIR
#                               (default /usr/local/bin).
#   $PREFIX/venv-test           dependencies and test tools only, for `test`. The code under
#                               test is always the checkout's own (pytest's rootdir; subprocesses
#                               get PYTHONPATH from tests/harness.py), never an installed copy.
#   $PREFIX/venv-jupyterhub5    the same on JupyterHub 5.x, for the second pass of a full run.
#   $PREFIX/node                configurable-http-proxy.
#
# A second run reuses what is there: dependencies are reinstalled only when pyproject.toml or this
# file changed, the platform only when its code changed (stamps beside each venv).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX=${MLRP_PREFIX:-/opt/mlrp}
BIN_DIR=${MLRP_BIN_DIR:-/usr/local/bin}
VENV=$PREFIX/venv
TEST_VENV=$PREFIX/venv-test
JH5_VENV=$PREFIX/venv-jupyterhub5
NODE_DIR=$PREFIX/node
MODE=${1:-}
shift || true

say() { printf 'mlrp-bootstrap: %s\n' "$*" >&2; }
die() { say "$*"; exit 2; }

case "$MODE" in
  up|test|install) ;;
  *) die "usage: bash hub/bootstrap.sh up|test|install [options]  (see README.md)";;
esac
[ "$(id -u)" = 0 ] || die "run this as root: the hub creates one Unix account per user and runs each server as it. For a single-person developer setup without root see README.md (Developer mode)."
command -v node >/dev/null || die "Node.js is missing: install it (apt-get install -y nodejs npm) and run this again; the proxy runs on it."

apt_missing() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

APT=(python3-venv passwd procps)
command -v npm >/dev/null || APT+=(npm)  # Debian ships npm apart from nodejs
[ "$MODE" = test ] && APT+=(chromium git slurmctld slurmd slurm-client munge)  # Slurm: tests/slurm.py
# Podman and a Debian base image for the container tests (tests/containers.py).
[ "$MODE" = test ] && APT+=(podman runc conmon netavark aardvark-dns catatonit iptables debootstrap)
apt_missing "${APT[@]}"

mkdir -p "$PREFIX"
chmod 755 "$PREFIX"

quiet() { grep -v -e "is ignored: it is neither a file nor a directory" >&2 || true; }
digest() { sha256sum | cut -c1-16; }
pip_in() { local venv=$1; shift; "$venv/bin/pip" install -q --disable-pip-version-check "$@" 2> >(quiet); }

new_venv() {  # new_venv DIR: a venv from Debian's python, once
  if [ ! -x "$1/bin/python" ]; then
    say "creating $1 from /usr/bin/python3"
    /usr/bin/python3 -m venv "$1"
  fi
}

# install_deps VENV EXTRAS [more requirements...]: the project's dependencies (plus the named
# extras of pyproject.toml) without the project itself; stamped on pyproject.toml + this file.
install_deps() {
  local venv=$1 extras=$2; shift 2
  local stamp
  stamp="$(cat "$REPO/pyproject.toml" "$REPO/hub/bootstrap.sh" | digest):$extras:$*"
  [ "$(cat "$venv/.mlrp-deps" 2>/dev/null)" = "$stamp" ] && return 0
  say "installing dependencies${extras:+ ($extras)} into $venv (about 90 s the first time)"
  local reqs
  reqs=$(mktemp)
  /usr/bin/python3 - "$REPO/pyproject.toml" "$extras" >"$reqs" <<'EOF'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
wanted = list(project["dependencies"])
for extra in filter(None, sys.argv[2].split(",")):
    wanted += project["optional-dependencies"][extra]
print("\n".join(wanted))
EOF
  printf '%s\n' "$@" >>"$reqs"
  pip_in "$venv" --upgrade pip
  pip_in "$venv" -r "$reqs"
  rm -f "$reqs"
  echo "$stamp" >"$venv/.mlrp-deps"
}

# install_platform VENV: this checkout as a normal package (a copy, not a link back here);
# stamped on the contents of everything that goes into it.
# The packages of the distribution (pyproject.toml's packages.find): a new one goes here too.
CODE=(pyproject.toml README.md hub spawners config images)

install_platform() {
  local venv=$1 stamp
  stamp=$(cd "$REPO" && find "${CODE[@]}" \
            -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 | sort -z \
          | xargs -0 sha256sum | digest)
  [ "$(cat "$venv/.mlrp-code" 2>/dev/null)" = "$stamp" ] && return 0
  say "installing mlrp from $REPO into $venv"
  local build
  build=$(mktemp -d)
  # Built from a copy: the checkout may be read-only, and setuptools leaves build/ behind.
  (cd "$REPO" && tar -c --exclude=__pycache__ --exclude='*.egg-info' --exclude=build \
     "${CODE[@]}") | tar -x -C "$build"
  pip_in "$venv" --no-deps --force-reinstall "$build"
  rm -rf "$build"
  echo "$stamp" >"$venv/.mlrp-code"
}

install_proxy() {
  if [ ! -x "$NODE_DIR/node_modules/.bin/configurable-http-proxy" ]; then
    say "installing configurable-http-proxy into $NODE_DIR"
    mkdir -p "$NODE_DIR"
    (cd "$NODE_DIR" && npm install --silent --no-audit --no-fund configurable-http-proxy@^4.6 >/dev/null)
  fi
}

install_proxy
case "$MODE" in
  up|install)
    new_venv "$VENV"
    install_deps "$VENV" ""
    install_platform "$VENV"
    chmod -R a+rX "$PREFIX"
    mkdir -p "$BIN_DIR"
    ln -sf "$VENV/bin/mlrp" "$BIN_DIR/mlrp"  # so `mlrp user add NAME` works as printed
    export PATH="$VENV/bin:$NODE_DIR/node_modules/.bin:$PATH"
    if [ "$MODE" = up ]; then exec "$VENV/bin/mlrp" up "$@"; fi
    say "installed under $PREFIX; start it with: mlrp up";;
  test)
    new_venv "$TEST_VENV"
    install_deps "$TEST_VENV" test
    chmod -R a+rX "$PREFIX"
    export PATH="$TEST_VENV/bin:$NODE_DIR/node_modules/.bin:$PATH"
    cd "$REPO"
    "$TEST_VENV/bin/ruff" check hub spawners config images tests
    "$TEST_VENV/bin/ruff" format --check --quiet hub spawners config images tests
    "$TEST_VENV/bin/mypy"
    "$TEST_VENV/bin/pytest" "$@"
    # A full run (no pytest options) also proves JupyterHub 5.x support: hub and user servers
    # on JupyterHub 5 for the unit tests and the end-to-end tests marked hub_versions (what
    # differs between versions: API errors, pages, forms, login, restart). Not again: what only
    # our code or Slurm decides (containment, the cluster, the doctor), the benchmarks, the
    # install test and the mutants. MLRP_TEST_JUPYTERHUB5=0 skips it.
    if [ $# -eq 0 ] && [ "${MLRP_TEST_JUPYTERHUB5:-1}" = 1 ]; then
      new_venv "$JH5_VENV"
      install_deps "$JH5_VENV" test "jupyterhub>=5,<6"
      chmod -R a+rX "$JH5_VENV"
      say "the suite again on $("$JH5_VENV/bin/python" -c 'import jupyterhub; print("JupyterHub", jupyterhub.__version__)')"
      exec "$JH5_VENV/bin/pytest" -m "(unit or hub_versions) and not benchmark and not install and not mutants"
    fi;;
esac
