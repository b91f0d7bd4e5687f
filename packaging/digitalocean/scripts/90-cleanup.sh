#!/usr/bin/env bash
# Image build, step 3: remove everything that belongs to the build droplet rather than to
# the image: its SSH keys and host keys, shell history, logs, caches, cloud-init state and
# machine identity. Every droplet made from the image creates its own on first boot.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

apt-get -q -y autoremove --purge
apt-get -q -y clean
rm -rf /var/lib/apt/lists/*

# Access: the key Packer logged in with, and any other key or password.
rm -f /root/.ssh/authorized_keys /home/*/.ssh/authorized_keys
passwd --lock root >/dev/null
# Host keys are generated anew on the first boot of every droplet (cloud-init).
rm -f /etc/ssh/ssh_host_*

# ztka must start from nothing on each droplet: its own CA, keys and admin password.
find /var/lib/ztka -mindepth 1 -delete

# cloud-init runs again on the first boot of each droplet.
cloud-init clean --logs

# History, temporary files and logs of the build.
rm -f /root/.bash_history /home/*/.bash_history /root/.lesshst /root/.viminfo
rm -rf /tmp/* /var/tmp/*
find /var/log -type f \( -name '*.gz' -o -name '*.[0-9]' -o -name '*.old' \) -delete
find /var/log -type f -exec truncate --size 0 {} +
journalctl --rotate >/dev/null 2>&1 || true
journalctl --vacuum-time=1s >/dev/null 2>&1 || true

# An empty machine-id makes systemd create a new one on first boot.
truncate --size 0 /etc/machine-id
rm -f /var/lib/dbus/machine-id

# Zeroed free space makes the snapshot smaller.
dd if=/dev/zero of=/zerofill bs=1M status=none 2>/dev/null || true
rm -f /zerofill
sync
