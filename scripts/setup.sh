#!/usr/bin/env bash
# Installs what canaryd's demo and tests need on Debian: Prometheus and Alertmanager from Debian's
# packages. Uses sudo when not root. Says what it does; does nothing when both are present.
set -euo pipefail

need=()
command -v prometheus >/dev/null 2>&1 || [ -x /usr/bin/prometheus ] || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || [ -x /usr/bin/prometheus-alertmanager ] || need+=(prometheus-alertmanager)
if [ ${#need[@]} -eq 0 ]; then
  echo "setup: prometheus and prometheus-alertmanager already installed"
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
# Debian starts the packaged services; canaryd starts its own on free ports, so stop those.
for svc in prometheus prometheus-alertmanager prometheus-node-exporter; do
  $sudo systemctl stop "$svc" >/dev/null 2>&1 || true
done
echo "setup: done ($(prometheus --version 2>&1 | head -n1))"
