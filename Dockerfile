# The hyper2kvm image for compose.yaml: Debian 12 with qemu, libguestfs and hivex from Debian.
FROM debian:12
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        qemu-utils qemu-system-x86 libguestfs-tools python3-guestfs python3-hivex linux-image-amd64 \
        python3-venv libxml2-utils e2fsprogs fdisk ovmf && rm -rf /var/lib/apt/lists/*
COPY . /opt/hyper2kvm
RUN python3 -m venv --system-site-packages /opt/venv && /opt/venv/bin/pip install --no-cache-dir '/opt/hyper2kvm[flower]'
ENV PATH=/opt/venv/bin:$PATH LIBGUESTFS_BACKEND=direct
