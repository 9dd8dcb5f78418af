#!/usr/bin/env bash
# Install everything the tests and the demo need, idempotently:
# Debian packages, uv, the locked Python environment, the collection link
# and the molecule base image. Safe to run again; it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_LIST=scripts/apt-packages.txt
UV_VERSION=0.13.8

missing=()
while read -r pkg; do
  [[ -z "${pkg}" || "${pkg}" == \#* ]] && continue
  dpkg-query -W -f='${Status}' "${pkg}" 2>/dev/null | grep -q "install ok installed" || missing+=("${pkg}")
done < "${APT_LIST}"
if ((${#missing[@]})); then
  echo "apt: installing ${missing[*]}"
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO=sudo
  ${SUDO} apt-get update -qq
  DEBIAN_FRONTEND=noninteractive ${SUDO} apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
fi

if ! command -v uv > /dev/null || [[ "$(uv --version | awk '{print $2}')" != "${UV_VERSION}" ]]; then
  echo "installing uv ${UV_VERSION}"
  python3 -m pip install --quiet --user --break-system-packages "uv==${UV_VERSION}" 2>/dev/null \
    || python3 -m pip install --quiet --user "uv==${UV_VERSION}"
fi
export PATH="${HOME}/.local/bin:${PATH}"

UV_PYTHON_DOWNLOADS=never uv sync --frozen --quiet

# Let `twin.cluster.*` names resolve to this checkout.
mkdir -p .cache/collections/ansible_collections/twin
ln -sfn ../../../.. .cache/collections/ansible_collections/twin/cluster

CONTAINERS_CONF="${PWD}/molecule/_shared/containers.conf" scripts/build-image.sh
