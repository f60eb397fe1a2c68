#!/usr/bin/env bash
# The main job on the lab: bring up examples/three-tier as network namespaces, plan and apply its
# policies node by node, then prove enforcement with real connections. Leaves the lab running;
# `meshctl lab down -C examples/three-tier` removes it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
example=examples/three-tier

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "meshctl lab up -C $example"
meshctl lab up -C "$example"

step "meshctl plan -C $example"
meshctl plan -C "$example"

step "meshctl apply -C $example --auto-approve"
meshctl apply -C "$example" --auto-approve

step "meshctl connectivity test -C $example"
meshctl connectivity test -C "$example"

step "meshctl policy trace -C $example --from demo/frontend --to demo/database --port 5432/TCP"
meshctl policy trace -C "$example" --from demo/frontend --to demo/database --port 5432/TCP || true

step "meshctl plan -C $example --detailed-exitcode"
meshctl plan -C "$example" --detailed-exitcode

printf '\nThe lab is up. Try: meshctl observe -C %s --verdict DROPPED --last 20\n' "$example"
printf 'Remove it with:  meshctl lab down -C %s\n' "$example"
