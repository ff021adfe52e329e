//! Metrics: plain per-core counters and histograms (`cells`, no atomics shared between cores
//! on the hot path), merged on scrape by asking every core for a snapshot (`gather`), rendered
//! as Prometheus text (`text`) and served over HTTP (`http`).
//!
//! Names map Kafka's JMX names one way: `kafka.<domain>:type=<Type>,name=<Name>,<tag>=<v>`
//! becomes `kafka_<domain>_<type>_<name>{<tag>="<v>"}`, all lower case. A `...PerSec` meter
//! becomes a counter named without `PerSec` and ending in `_total` (Prometheus takes the rate);
//! a `...TimeMs` histogram becomes `..._time_seconds` in seconds, Prometheus' base unit. What
//! Kafka has no JMX name for is named `sluice_...`, except consumer-group lag, which the broker
//! serves under the names the common Kafka exporters give it (`kafka_consumergroup_lag`).

pub mod cells;
pub mod gather;
pub mod http;
pub mod snapshot;
pub mod text;
