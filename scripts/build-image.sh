#!/usr/bin/env bash
# Build the Debian bookworm image the molecule scenarios run in.
#
# No container registry is reachable here, so the image is made with
# debootstrap from the machine's own Debian mirror and loaded with
# `podman import`. It boots systemd as PID 1 (`/sbin/init`) and carries what
# Ansible and the roles need up front, so scenarios stay fast and offline.
#
# Cached: does nothing when the image already exists (FORCE=1 rebuilds).
#
#   --download-only   fetch the image's Debian packages into a temporary
#                     folder and stop (CI's fresh-fetch check,
#                     scripts/check-fetch.sh); builds and imports nothing
set -euo pipefail

# shellcheck source=lib/flag.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/flag.sh"
DOWNLOAD_ONLY=$(flag_given --download-only "$@")

IMAGE="${TWIN_TEST_IMAGE:-localhost/twin-debian:bookworm}"
SUITE="${TWIN_TEST_SUITE:-bookworm}"
CACHE_DIR="${TWIN_CACHE_DIR:-${HOME}/.cache/twin-cluster}"
PACKAGES="systemd,systemd-sysv,dbus,python3,python3-apt,ca-certificates,curl,unzip,sudo,iproute2,procps,gnupg,libcap2-bin"

if ((!DOWNLOAD_ONLY)) && [[ "${FORCE:-0}" != 1 ]] && podman image exists "${IMAGE}"; then
  echo "image ${IMAGE} already present"
  exit 0
fi

mirror() {
  # The first Debian mirror the host's apt uses (deb822 or one-line format).
  local uri
  uri=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '{print $2}' | grep -v security | head -n1 || true)
  if [[ -z "${uri}" ]]; then
    uri=$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
          | grep -v security | awk '{print $2}' | head -n1 || true)
  fi
  echo "${uri}"
}

MIRROR="${TWIN_DEBIAN_MIRROR:-$(mirror)}"
if [[ -z "${MIRROR}" ]]; then
  echo "no Debian mirror found in /etc/apt; set TWIN_DEBIAN_MIRROR" >&2
  exit 1
fi

mkdir -p "${CACHE_DIR}"
ROOTFS=$(mktemp -d "${CACHE_DIR}/rootfs.XXXXXX")
trap 'rm -rf "${ROOTFS}"' EXIT

if ((DOWNLOAD_ONLY)); then
  echo "debootstrap --download-only ${SUITE} from ${MIRROR}"
  debootstrap --download-only --variant=minbase --include="${PACKAGES}" "${SUITE}" "${ROOTFS}" "${MIRROR}" \
    > "${CACHE_DIR}/debootstrap.log" 2>&1 || { tail -n 30 "${CACHE_DIR}/debootstrap.log" >&2; exit 1; }
  echo "downloaded $(find "${ROOTFS}/var/cache/apt/archives" -name '*.deb' | wc -l) packages for ${IMAGE}"
  exit 0
fi

echo "debootstrap ${SUITE} into ${ROOTFS}"
debootstrap --variant=minbase --include="${PACKAGES}" "${SUITE}" "${ROOTFS}" "${MIRROR}" \
  > "${CACHE_DIR}/debootstrap.log" 2>&1 || { tail -n 30 "${CACHE_DIR}/debootstrap.log" >&2; exit 1; }

# Make the rootfs a well-behaved container: no getty, machine-id made at boot,
# apt lists kept so roles can query packages offline.
rm -f "${ROOTFS}/etc/machine-id" && touch "${ROOTFS}/etc/machine-id"
chroot "${ROOTFS}" systemctl mask getty@tty1.service console-getty.service \
  systemd-udevd.service systemd-modules-load.service sys-kernel-config.mount \
  > /dev/null 2>&1 || true
chroot "${ROOTFS}" apt-get clean

tar -C "${ROOTFS}" -c . | podman import \
  --change 'CMD ["/sbin/init"]' --change 'ENV container=podman' \
  --change 'STOPSIGNAL SIGRTMIN+3' - "${IMAGE}"
echo "built ${IMAGE}"
