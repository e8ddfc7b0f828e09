#!/usr/bin/env bash
# The README's two commands land here.
#
#   bash hub/bootstrap.sh up   [mlrp up options]   install what is missing, then start the platform
#   bash hub/bootstrap.sh test [pytest options]    install what is missing (test tools too), run all tests
#
# Runs as root on Debian with Python 3.11, Node.js and apt. Everything goes under $MLRP_PREFIX
# (default /opt/mlrp): the venv user servers run from must be world-readable and built from
# Debian's /usr/bin/python3 (pyenv's python lives under /root, mode 700: other Unix users cannot run
# it). A second run reuses what is there: pip runs only when pyproject.toml or this file changed.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX=${MLRP_PREFIX:-/opt/mlrp}
VENV=$PREFIX/venv
NODE_DIR=$PREFIX/node
MODE=${1:-}
shift || true

say() { printf 'mlrp-bootstrap: %s\n' "$*" >&2; }
die() { say "$*"; exit 2; }

case "$MODE" in
  up|test|install) ;;
  *) die "usage: bash hub/bootstrap.sh up|test [options]  (see README.md)";;
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
[ "$MODE" = test ] && APT+=(chromium)
apt_missing "${APT[@]}"

mkdir -p "$PREFIX"
chmod 755 "$PREFIX"
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV from /usr/bin/python3"
  /usr/bin/python3 -m venv "$VENV"
fi

# pip runs only when pyproject.toml or this script changed, or the test extras are wanted and
# missing. (An install with test extras also serves `up`.)
EXTRAS=""
[ "$MODE" = test ] && EXTRAS="[test]"
STAMP=$VENV/.mlrp-stamp
quiet() { grep -v -e "is ignored: it is neither a file nor a directory" >&2 || true; }
base="$(cat "$REPO/pyproject.toml" "$REPO/hub/bootstrap.sh" | sha256sum | cut -c1-16):$REPO"
have=$(cat "$STAMP" 2>/dev/null || true)
if [ "$have" != "$base[test]" ] && [ "$have" != "$base$EXTRAS" ]; then
  say "installing mlrp$EXTRAS and its dependencies into $VENV (about 90 s the first time)"
  "$VENV/bin/pip" install -q --upgrade pip 2> >(quiet) >/dev/null
  "$VENV/bin/pip" install -q -e "$REPO$EXTRAS" 2> >(quiet)
  echo "$base$EXTRAS" > "$STAMP"
fi

if [ ! -x "$NODE_DIR/node_modules/.bin/configurable-http-proxy" ]; then
  say "installing configurable-http-proxy into $NODE_DIR"
  mkdir -p "$NODE_DIR"
  (cd "$NODE_DIR" && npm install --silent --no-audit --no-fund configurable-http-proxy@^4.6 >/dev/null)
fi
chmod -R a+rX "$PREFIX"
ln -sf "$VENV/bin/mlrp" /usr/local/bin/mlrp  # so `mlrp user add NAME` works as printed
export PATH="$VENV/bin:$NODE_DIR/node_modules/.bin:$PATH"

case "$MODE" in
  up) exec "$VENV/bin/mlrp" up "$@";;
  install) say "installed under $PREFIX";;
  test)
    cd "$REPO"
    "$VENV/bin/ruff" check hub spawners config tests
    "$VENV/bin/mypy"
    "$VENV/bin/pytest" "$@"
    # A full run (no pytest options) also proves JupyterHub 5.x support: everything but the
    # benchmarks again, hub and user servers on JupyterHub 5. MLRP_TEST_JUPYTERHUB5=0 skips it.
    if [ $# -eq 0 ] && [ "${MLRP_TEST_JUPYTERHUB5:-1}" = 1 ]; then
      JH5=$PREFIX/venv-jupyterhub5
      [ -x "$JH5/bin/python" ] || /usr/bin/python3 -m venv "$JH5"
      if [ "$(cat "$JH5/.mlrp-stamp" 2>/dev/null)" != "$base[test]" ]; then
        say "installing a JupyterHub 5.x environment into $JH5"
        "$JH5/bin/pip" install -q -e "$REPO[test]" "jupyterhub>=5,<6" 2> >(quiet)
        echo "$base[test]" > "$JH5/.mlrp-stamp"
      fi
      chmod -R a+rX "$JH5"
      say "the suite again on $("$JH5/bin/python" -c 'import jupyterhub; print("JupyterHub", jupyterhub.__version__)')"
      exec "$JH5/bin/pytest" -m "not benchmark"
    fi;;
esac
