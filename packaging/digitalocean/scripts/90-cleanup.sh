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

# History and temporary files of the build.
rm -f /root/.*_history /home/*/.*_history \
	/root/.lesshst /home/*/.lesshst /root/.viminfo /home/*/.viminfo
rm -rf /tmp/* /var/tmp/*

# Logs of the build. rsyslog writes syslog, auth.log, kern.log and ufw.log (a droplet on a
# public address logs blocked packets within seconds): stop it for the rest of the build so
# those stay empty until the snapshot. Stopping it here does not disable it in the image.
systemctl stop syslog.socket rsyslog.service >/dev/null 2>&1 || true
# Rotated and compressed logs go; the plain files are emptied. Their writers append
# (O_APPEND), so emptying a file under them is safe. The journal is left to journald below:
# it keeps its files open and mapped, and emptying one under it corrupts it.
find /var/log -path /var/log/journal -prune -o -type f \
	\( -name '*.gz' -o -name '*.xz' -o -name '*.zst' -o -name '*.[0-9]' -o -name '*.old' \
	-o -name '*-[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]' \) -print0 | xargs -0 -r rm -f
find /var/log -path /var/log/journal -prune -o -type f -size +0c -print0 |
	xargs -0 -r truncate --size 0
# The journal: rotation archives the active files (journald starts new, nearly empty ones),
# and vacuuming deletes every archived file (their first entries are older than a second).
if ! { journalctl --rotate && journalctl --vacuum-time=1s; }; then
	echo "warning: could not rotate and vacuum the journal; the image keeps the build's journal" >&2
fi

# An empty machine-id makes systemd create a new one on first boot.
truncate --size 0 /etc/machine-id
rm -f /var/lib/dbus/machine-id

# Zeroed free space makes the snapshot smaller.
dd if=/dev/zero of=/zerofill bs=1M status=none 2>/dev/null || true
rm -f /zerofill
sync
