#!/usr/bin/env bash
# The main job on the lab: bring up examples/three-tier as network namespaces, plan and apply its
# policies node by node, then prove enforcement with real connections. Leaves the lab running;
# `meshctl lab down -C examples/three-tier` removes it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
example=examples/three-tier

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
# A real TCP connect from one pod to another pod's port, through the eBPF datapath.
connects() {
  local ip
  ip=$(meshctl lab exec -C "$example" "$2" -- ip -4 -brief addr show dev eth0 | awk '{print $3}' | cut -d/ -f1)
  if meshctl lab exec -C "$example" "$1" -- timeout 2 bash -c "exec 3<>/dev/tcp/$ip/$3" 2>/dev/null; then
    echo "$1 -> $2:$3 connects"
  else
    echo "$1 -> $2:$3 dropped"
  fi
}

step "meshctl lab up -C $example"
meshctl lab up -C "$example"

step "connections before apply (a new lab: every pod has its endpoint, no policy yet, all connect)"
connects demo/frontend demo/api 3000
connects demo/frontend demo/database 5432

step "meshctl plan -C $example"
meshctl plan -C "$example"

step "meshctl apply -C $example --auto-approve"
meshctl apply -C "$example" --auto-approve

step "the policies hold: frontend reaches api, not the database"
connects demo/frontend demo/api 3000
connects demo/frontend demo/database 5432

step "meshctl connectivity test -C $example"
meshctl connectivity test -C "$example"

step "meshctl policy trace -C $example --from demo/frontend --to demo/database --port 5432/TCP"
meshctl policy trace -C "$example" --from demo/frontend --to demo/database --port 5432/TCP || true

step "meshctl plan -C $example --detailed-exitcode"
meshctl plan -C "$example" --detailed-exitcode

printf '\nThe lab is up. Try: meshctl observe -C %s --verdict DROPPED --last 20\n' "$example"
printf 'Remove it with:  meshctl lab down -C %s\n' "$example"
