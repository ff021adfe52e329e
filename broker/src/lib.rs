//! The Sluice broker: reactors that own partitions, the request handlers that serve Kafka
//! clients, configuration, and start-up. It is the only crate that sees both storage and net,
//! and the only place where storage errors become Kafka error codes.

pub mod apis;
pub mod backend;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod controller;
pub mod core;
pub mod descriptors;
pub mod dynamic;
pub mod error_codes;
pub mod groups;
pub mod handlers;
pub mod ids;
pub mod layout;
pub mod memory;
pub mod metadata;
pub mod metrics;
pub mod order;
pub mod partition;
pub mod region;
pub mod replication;
pub mod server;
pub mod shard;
