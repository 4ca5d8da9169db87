#!/usr/bin/env bash
# Build a minimal Debian base image with Python from Debian's packages, without any image
# registry: mmdebstrap writes a bookworm root filesystem as a tarball and `docker import` loads it.
# Use it as deploy/Dockerfile's BASE_IMAGE where Docker Hub is unreachable (CI does):
#   deploy/base-image.sh streamwatch-base:bookworm
#   docker build -f deploy/Dockerfile --build-arg BASE_IMAGE=streamwatch-base:bookworm -t streamwatch .
# Needs root (or fakeroot), mmdebstrap and a Debian mirror (MIRROR, default deb.debian.org).
set -euo pipefail
tag="${1:-streamwatch-base:bookworm}"
suite="${SUITE:-bookworm}"
mirror="${MIRROR:-http://deb.debian.org/debian}"
mmdebstrap --variant=apt --format=tar \
  --include=python3,python3-venv,ca-certificates \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  "$suite" - "$mirror" \
  | docker import --change 'CMD ["python3"]' - "$tag" >/dev/null
echo "$tag"
