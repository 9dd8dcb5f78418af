# shellcheck shell=bash
# Sourced by the scripts that take one optional flag (build-image.sh,
# build-llama-server.sh).

# flag_given FLAG [ARG]: prints 1 when ARG is FLAG and 0 when there is no ARG;
# anything else (another word, more than one) is a usage error: the usage
# goes to stderr and the status is 2, which ends the caller under `set -e`.
flag_given() {
  local flag="$1"
  shift
  if (($# == 0)); then
    echo 0
  elif (($# == 1)) && [[ "$1" == "${flag}" ]]; then
    echo 1
  else
    echo "usage: $(basename "$0") [${flag}]" >&2
    return 2
  fi
}
