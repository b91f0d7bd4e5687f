#!/usr/bin/env bash
# Image build, step 2: the droplet's firewall admits SSH (rate limited) and ztka's HTTPS
# port, nothing else.
set -euo pipefail

ufw --force reset >/dev/null
ufw default deny incoming
ufw default allow outgoing
ufw limit 22/tcp comment 'SSH'
ufw allow 443/tcp comment 'ztka console, API, kubectl relay and agents'
ufw --force enable
ufw status verbose
