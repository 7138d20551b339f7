#!/usr/bin/env bash
# Prometheus's promtool, which checks and unit-tests the shipped alert rules
# (deploy/prometheus/). Without arguments it prints promtool's path; with arguments it runs
# promtool with them. One on the PATH is used as it is; otherwise it is taken from Debian's
# `prometheus` package, downloaded (not installed: the package would start a Prometheus server)
# and unpacked once into .run/tools. Safe to run again.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tools=$root/.run/tools
promtool=$tools/promtool

if [ ! -x "$promtool" ]; then
  if command -v promtool >/dev/null 2>&1; then
    promtool=$(command -v promtool)
  else
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    if ! (cd "$work" && apt-get download -qq prometheus >/dev/null 2>&1); then
      $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
      (cd "$work" && apt-get download -qq prometheus >/dev/null)
    fi
    dpkg-deb -x "$work"/prometheus_*.deb "$work/root"
    mkdir -p "$tools"
    install -m 0755 "$work/root/usr/bin/promtool" "$promtool.partial"
    mv "$promtool.partial" "$promtool"
    rm -rf "$work"
    trap - EXIT
  fi
fi

if [ "$#" -eq 0 ]; then
  echo "$promtool"
else
  exec "$promtool" "$@"
fi
