#!/usr/bin/env bash
# Image build, step 1: bring the Ubuntu base up to date and install ztka from the .deb that
# the template uploaded, with the first-boot unit that configures each new droplet.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

# The build droplet runs cloud-init itself on boot; wait so apt is not locked under us.
cloud-init status --wait >/dev/null 2>&1 || true

apt_opts=(-q -y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
apt-get -q update
apt-get "${apt_opts[@]}" dist-upgrade
apt-get "${apt_opts[@]}" install ufw unattended-upgrades curl
apt-get "${apt_opts[@]}" install /tmp/ztka.deb
rm -f /tmp/ztka.deb

install -D -m 0755 /tmp/ztka-first-boot /usr/lib/ztka/first-boot
install -D -m 0644 /tmp/ztka-first-boot.service /etc/systemd/system/ztka-first-boot.service
rm -f /tmp/ztka-first-boot /tmp/ztka-first-boot.service

# The package enables ztka.service. In the image it stays off: a droplet's first boot must
# first learn its address, and the first-boot unit enables and starts the server then.
systemctl disable ztka.service
systemctl enable ztka-first-boot.service

# Security updates keep arriving after the image is published.
systemctl enable unattended-upgrades.service

# Nothing may be left to upgrade in a published image.
pending="$(apt-get -s dist-upgrade | grep -c '^Inst ' || true)"
if [ "$pending" != "0" ]; then
	echo "still $pending packages to upgrade" >&2
	exit 1
fi
