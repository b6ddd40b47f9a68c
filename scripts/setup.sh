#!/usr/bin/env bash
# Installs what canaryd's demo and tests need on Debian, from Debian's packages: one line per
# package below, with the binary that shows it is already there. Uses sudo when not root. Says
# what it does; does nothing when everything is present.
set -euo pipefail

# package             binary that proves it is installed
wanted=(
  "prometheus              /usr/bin/prometheus"
  "prometheus-alertmanager /usr/bin/prometheus-alertmanager"
  "postgresql              /usr/bin/pg_ctlcluster"
  "chromium-driver  /usr/bin/chromedriver"
  "chromium  /usr/bin/chromium"
  "haproxy  /usr/sbin/haproxy"
  "nginx  /usr/sbin/nginx"
)

need=()
for line in "${wanted[@]}"; do
  read -r pkg bin <<<"$line"
  [ -x "$bin" ] || need+=("$pkg")
done
if [ ${#need[@]} -eq 0 ]; then
  echo "setup: already installed: $(for l in "${wanted[@]}"; do read -r p _ <<<"$l"; printf '%s ' "$p"; done)"
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
    echo "setup: need root or sudo to install: ${need[*]}" >&2; exit 1
  fi
fi
echo "setup: installing Debian packages ${need[*]} (with ${sudo:-root})"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian starts the packaged services; canaryd's demo and tests start their own on free loopback
# ports, so stop those.
for svc in prometheus prometheus-alertmanager prometheus-node-exporter postgresql haproxy nginx; do
  $sudo systemctl stop "$svc" >/dev/null 2>&1 || true
done
echo "setup: done ($(prometheus --version 2>&1 | head -n1))"
