#!/usr/bin/env bash
# Runs everything CI runs: installs the real Kafka clients the tests drive when they are
# missing (kcat, confluent-kafka in a virtualenv, kafkajs, promtool), then fmt, clippy and
# every test. Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
env_dir="$root/target/test-env"
mkdir -p "$env_dir"

step() { printf '\n==> %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root (or sudo) to run: $*" >&2; return 1; fi
}

apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    step "apt-get update"
    as_root apt-get update -qq
    apt_updated=1
  fi
  step "apt-get install $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

command -v kcat >/dev/null || apt_install kcat
command -v promtool >/dev/null || apt_install prometheus
# sluice-bench's sweep test draws PNG plots, whose text needs a TrueType font.
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || apt_install fonts-dejavu-core

venv="$env_dir/venv"
if ! "$venv/bin/python" -c 'import confluent_kafka' 2>/dev/null; then
  step "python virtualenv with confluent-kafka ($venv)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check 'confluent-kafka>=2.6'
fi

node_dir="$env_dir/node"
if [ ! -d "$node_dir/node_modules/kafkajs" ]; then
  step "kafkajs from npm ($node_dir)"
  mkdir -p "$node_dir"
  (cd "$node_dir" && npm install --silent --no-audit --no-fund kafkajs@2 >/dev/null)
fi

export SLUICE_TEST_PYTHON="$venv/bin/python"
export SLUICE_TEST_NODE_PATH="$node_dir/node_modules"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "cargo test (unit, property and real-client integration tests)"
cargo test --workspace --quiet
