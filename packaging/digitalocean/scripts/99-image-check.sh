#!/usr/bin/env bash
# Image build, last step: refuse to finish an image that breaks the marketplace's rules or
# leaks something of the build droplet. Prints every problem and exits 1 if there was one.
#
# Failures are what DigitalOcean's own image check fails on, or what would be shared by every
# droplet made from the image: a way in (keys, passwords, host keys), shell history,
# cloud-init state or machine identity of the build droplet, the firewall, and ztka's state.
# Log content is only a warning, as it is in DigitalOcean's check: journald and the kernel
# keep logging until the droplet powers off for the snapshot, so logs are never quite empty.
set -uo pipefail
shopt -s nullglob

problems=0
warnings=0
fail() { echo "IMAGE CHECK FAILED: $*" >&2; problems=$((problems + 1)); }
warn() { echo "warning: $*" >&2; warnings=$((warnings + 1)); }
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
# Left-over state would make cloud-init treat a new droplet as the build droplet.
if [ -e /var/lib/cloud/instance ] ||
	[ -n "$(find /var/lib/cloud/instances -mindepth 1 -print -quit 2>/dev/null)" ]; then
	fail "cloud-init state of the build droplet is left in /var/lib/cloud (run cloud-init clean)"
fi
if [ -d /var/opt/digitalocean/do-agent ] ||
	dpkg-query -W -f '${Status}' do-agent 2>/dev/null | grep -q 'ok installed'; then
	fail "the DigitalOcean monitoring agent is installed (droplets add it themselves)"
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
for f in /root/.ssh/* /home/*/.ssh/*; do
	case "$f" in */authorized_keys) continue ;; esac
	[[ -f $f && -s $f ]] || continue
	if [[ $f == */id_* && $f != *.pub ]] || grep -q 'PRIVATE KEY' "$f" 2>/dev/null; then
		fail "$f is a private key"
	else
		warn "$f is left from the build"
	fi
done
while IFS=: read -r user hash _; do
	case "$hash" in
	'' | '*'* | '!'*) ;;
	*) fail "user $user has a password" ;;
	esac
done </etc/shadow
compgen -G '/etc/ssh/ssh_host_*' >/dev/null && fail "SSH host keys are still in the image"

for f in /root/.*_history /home/*/.*_history; do
	[ -s "$f" ] && fail "$f is not empty"
done
[ -s /etc/machine-id ] && fail "/etc/machine-id is set"

# Logs: warnings only (see above). Archives should be gone; the journal's active files and
# what was logged after the cleanup are expected.
archives=(-name '*.gz' -o -name '*.xz' -o -name '*.zst' -o -name '*.[0-9]' -o -name '*.old'
	-o -name '*-[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]')
while IFS= read -r f; do
	warn "log archive $f is left"
done < <(find /var/log -type f \( "${archives[@]}" -o -name '*@*.journal' -o -name '*.journal~' \))
while IFS= read -r f; do
	warn "log file $f is not empty ($(stat -c %s "$f") bytes)"
done < <(find /var/log -path /var/log/journal -prune -o -type f -size +0c ! \( "${archives[@]}" \) -print)

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
	echo "$problems problem(s), $warnings warning(s); the image is not ready" >&2
	exit 1
fi
echo "image check passed ($warnings warning(s))"
