#!/usr/bin/env bash
# Installs everything meshscope and its tests need on a fresh Debian machine: system tools
# (tshark, tcpdump, iptables, wrk, chromium, prometheus, alertmanager) when root, then a venv in .venv with the project.
# Usage: scripts/setup.sh [test]   (with "test", the test extras too). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[ "${1:-}" = "test" ] && extras="[test]"

need_apt=()
for tool in tshark:tshark editcap:wireshark-common tcpdump:tcpdump iptables:iptables wrk:wrk ip:iproute2 openssl:openssl curl:curl gzip:gzip zstd:zstd lz4:lz4; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need_apt+=("${tool##*:}")
done
if [ -n "$extras" ] && ! command -v chromium >/dev/null 2>&1; then need_apt+=(chromium); fi
# the alerting and metrics tests run Debian's Prometheus (with promtool) and Alertmanager (with amtool)
if [ -n "$extras" ]; then
  # npm fetches Mermaid's one-file build for the picture tests (below)
  for tool in promtool:prometheus prometheus-alertmanager:prometheus-alertmanager npm:npm; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || need_apt+=("${tool##*:}")
  done
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: apt-get install ${need_apt[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "setup: not root; skipping system packages: ${need_apt[*]}" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=".venv/.installed${extras}"
# the C extensions (decoders/, collector/, meshscope/model/ *.c) are built by the install: a changed source installs again
newer_c=$( { [ -f "$stamp" ] && find decoders collector meshscope -name '*.c' -newer "$stamp"; } | head -1 || true )
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ -n "$newer_c" ]; then
  echo "setup: pip install -e .${extras} into .venv (log: .venv/pip.log)" >&2
  # xds-protos ships an old copy of opentelemetry/proto (instrumentation_library_logs, no scope_logs) at the
  # same paths as opentelemetry-proto: whichever installs last wins, so put the published one back last
  if ! { .venv/bin/pip install -q --upgrade pip && .venv/bin/pip install -q -e ".${extras}" \
         && .venv/bin/pip install -q --force-reinstall --no-deps "opentelemetry-proto>=1.45,<2"; } \
      >.venv/pip.log 2>&1; then
    cat .venv/pip.log >&2
    exit 1
  fi
  touch "$stamp"
fi

# the picture tests parse meshscope's Mermaid text with Mermaid's own parser (in Chromium): its one-file
# build, from the npm registry, kept in .venv/js (not in the repository); without npm those tests skip
MERMAID_VERSION=11.17.2
if [ -n "$extras" ] && [ ! -f .venv/js/mermaid-$MERMAID_VERSION.min.js ] && command -v npm >/dev/null 2>&1; then
  tmp=$(mktemp -d)
  if (cd "$tmp" && npm pack -q "mermaid@$MERMAID_VERSION" >/dev/null \
      && tar -xzf "mermaid-$MERMAID_VERSION.tgz" package/dist/mermaid.min.js package/LICENSE); then
    mkdir -p .venv/js
    cp "$tmp/package/dist/mermaid.min.js" ".venv/js/mermaid-$MERMAID_VERSION.min.js"
    cp "$tmp/package/LICENSE" .venv/js/mermaid-LICENSE
  else
    echo "setup: could not fetch mermaid@$MERMAID_VERSION from the npm registry; its tests will skip" >&2
  fi
  rm -rf "$tmp"
fi
