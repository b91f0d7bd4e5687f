#!/usr/bin/env bash
# Image build, last step: refuse to finish an image that breaks the marketplace's rules or
# leaks something of the build droplet. Prints every problem, exits 1 if there was one.
set -uo pipefail

problems=0
fail() { echo "IMAGE CHECK FAILED: $*" >&2; problems=$((problems + 1)); }
ok() { echo "ok: $*"; }

# shellcheck source=/dev/null
. /etc/os-release
case "${ID}:${VERSION_ID}" in
ubuntu:22.04 | ubuntu:24.04) ok "base is Ubuntu ${VERSION_ID} LTS" ;;
*) fail "base is ${PRETTY_NAME}, not a supported Ubuntu LTS" ;;
esac

if command -v cloud-init >/dev/null; then
	ok "cloud-init present"
else
	fail "cloud-init is not installed"
fi

if ufw status | grep -q '^Status: active'; then
	ok "ufw active"
	ufw status | grep -Eq '^22/tcp +LIMIT' || fail "ufw does not admit SSH (22/tcp)"
	ufw status | grep -Eq '^443/tcp +ALLOW' || fail "ufw does not admit HTTPS (443/tcp)"
else
	fail "ufw is not active"
fi

# No way in that belongs to the builder: no keys, no passwords.
for f in /root/.ssh/authorized_keys /home/*/.ssh/authorized_keys; do
	[ -s "$f" ] && fail "$f is not empty"
done
while IFS=: read -r user hash _; do
	case "$hash" in
	'' | '*'* | '!'*) ;;
	*) fail "user $user has a password" ;;
	esac
done </etc/shadow
ls /etc/ssh/ssh_host_* >/dev/null 2>&1 && fail "SSH host keys are still in the image"

for f in /root/.bash_history /home/*/.bash_history; do
	[ -s "$f" ] && fail "$f is not empty"
done
while IFS= read -r f; do
	fail "log file $f is not empty"
done < <(find /var/log -type f -size +0c)
[ -s /etc/machine-id ] && fail "/etc/machine-id is set"

# ztka: installed, off until first boot, and without any key material yet.
if version="$(/usr/bin/ztka version)"; then
	ok "$version"
else
	fail "ztka does not run"
fi
/usr/bin/ztka --config /etc/ztka/ztka.toml config check >/dev/null ||
	fail "/etc/ztka/ztka.toml does not pass ztka config check"
systemctl is-enabled --quiet ztka.service && fail "ztka.service is enabled before first boot"
systemctl is-enabled --quiet ztka-first-boot.service || fail "ztka-first-boot.service is not enabled"
[ -x /usr/lib/ztka/first-boot ] || fail "/usr/lib/ztka/first-boot is missing"
if [ -n "$(find /var/lib/ztka -mindepth 1 -print -quit)" ]; then
	fail "/var/lib/ztka is not empty (keys or a database would be shared by every droplet)"
fi
getent passwd ztka >/dev/null || fail "the ztka user is missing"

if [ "$problems" -gt 0 ]; then
	echo "$problems problem(s); the image is not ready" >&2
	exit 1
fi
echo "image check passed"
