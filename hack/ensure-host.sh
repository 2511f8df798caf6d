#!/usr/bin/env bash
# What the end-to-end tier and `make demo` need from the host besides what the project builds:
# a Docker engine (to build the images), debootstrap (their base, made from Debian's packages
# when no registry is reachable), runc, iptables and iproute2 (the local node), tmux (a real
# terminal for the test of `twlegal watch`).
#
# On Debian as root, installs what is missing and starts dockerd in the background (there is no
# systemd on these machines). Elsewhere it only says what is missing; the e2e tests then skip
# (or fail with CI=true).
set -euo pipefail
log() { echo "[ensure-host] $*" >&2; }
cache=${TWLEGAL_CACHE:-$HOME/.cache/twlegal}
docker=/usr/bin/docker

need=()
[ -x "$docker" ] || need+=(docker.io)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v runc >/dev/null || need+=(runc)
command -v iptables >/dev/null || need+=(iptables)
command -v ip >/dev/null || need+=(iproute2)
command -v tmux >/dev/null || need+=(tmux)  # the terminal test of `twlegal watch`
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing ${need[*]}"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
  else
    log "missing: ${need[*]} (install them, or the e2e tier is skipped)"
    exit 0
  fi
fi

if ! "$docker" info >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    mkdir -p "$cache"
    log "starting dockerd (log: $cache/dockerd.log)"
    nohup dockerd >>"$cache/dockerd.log" 2>&1 &
    for _ in $(seq 60); do "$docker" info >/dev/null 2>&1 && break; sleep 1; done
    "$docker" info >/dev/null 2>&1 || { log "dockerd did not start; see $cache/dockerd.log"; exit 1; }
  else
    log "no Docker engine is running; start one to build the images"
  fi
fi
