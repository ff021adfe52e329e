//! The end-to-end mode: producers and consumers in one run. Consumers start at the topic's
//! end offsets, so they see only this run's records, and time each batch from the send stamp
//! it carries (its first message's arrival under --rate) to the moment its fetch answer arrives.
//! Only consumers record samples; producers count what the broker accepted, and the run ends
//! when every producer is done and the consumers have read all of that.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::args::EndToEndArgs;
use crate::cluster::{self, Routes};
use crate::consume::{self, Limit};
use crate::error::BenchError;
use crate::harness::{self, Options};
use crate::produce;
use crate::stats::{Mode, Summary, Value};

/// What producers and consumers of one run tell each other.
#[derive(Debug)]
pub struct Flow {
    producers_running: AtomicUsize,
    /// Records the broker accepted (or that were sent, under acks=0), warm-up included.
    produced: AtomicU64,
    /// Records consumers counted, warm-up included.
    consumed: AtomicU64,
    /// Produce requests answered with an error.
    produce_errors: AtomicU64,
}

impl Flow {
    pub fn new(producers: usize) -> Self {
        Self {
            producers_running: AtomicUsize::new(producers),
            produced: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            produce_errors: AtomicU64::new(0),
        }
    }

    /// Marks one producer done when dropped, however the producer ends.
    pub fn producer_guard(self: &Arc<Self>) -> ProducerGuard {
        ProducerGuard(Arc::clone(self))
    }

    pub fn produced(&self, records: u64) {
        self.produced.fetch_add(records, Ordering::Release);
    }

    pub fn produce_failed(&self) {
        self.produce_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn consumed(&self, records: u64) {
        self.consumed.fetch_add(records, Ordering::Relaxed);
    }

    pub fn producers_done(&self) -> bool {
        self.producers_running.load(Ordering::Acquire) == 0
    }

    /// Every producer is done and everything they sent has been consumed.
    pub fn finished(&self) -> bool {
        self.producers_done()
            && self.consumed.load(Ordering::Relaxed) >= self.produced.load(Ordering::Acquire)
    }

    pub fn produce_errors(&self) -> u64 {
        self.produce_errors.load(Ordering::Relaxed)
    }
}

pub struct ProducerGuard(Arc<Flow>);

impl Drop for ProducerGuard {
    fn drop(&mut self) {
        self.0.producers_running.fetch_sub(1, Ordering::AcqRel);
    }
}

pub fn run(args: &EndToEndArgs) -> Result<Summary, BenchError> {
    let produce_args = &args.produce;
    let common = &produce_args.common;
    let addr = common.bootstrap_addr()?;
    let (versions, layout, routes) = produce::setup(addr, produce_args)?;
    let cursors = start_cursors(addr, &common.topic, &routes)?;
    let consumers = args.consumers.min(cursors.len());
    let flow = Arc::new(Flow::new(produce_args.producers));
    let producers = Arc::new(produce::plan(
        produce_args,
        routes.clone(),
        &versions,
        &layout,
        Some(Arc::clone(&flow)),
    ));
    let fetchers = Arc::new(consume::plan(
        routes,
        &common.topic,
        &versions,
        &args.fetch,
        Limit::Follow(Arc::clone(&flow)),
        consume::deal(&cursors, consumers),
        Some(produce_args.message_size),
    ));
    let mut settings = producers.settings.clone();
    settings.push(("consumers", Value::from(consumers as u64)));
    settings.extend(consume::fetch_settings(&fetchers));
    let options = Options {
        mode: Mode::EndToEnd,
        workers: producers.producers + consumers,
        interval: common.interval(),
        warmup: common.warmup,
    };
    let (producing, fetching) = (Arc::clone(&producers), Arc::clone(&fetchers));
    let outcome = harness::run(&options, move |worker| {
        let id = worker.id;
        match id.checked_sub(producing.producers) {
            None => produce::produce(worker, id, &producing),
            Some(index) => consume::consume(worker, index, &fetching),
        }
    })?;
    let mut stats = outcome.total;
    stats.errors += flow.produce_errors();
    Ok(Summary {
        mode: Mode::EndToEnd,
        settings,
        stats,
        elapsed: outcome.elapsed,
    })
}

/// The high watermarks before any producer starts: where consumers begin.
fn start_cursors(
    addr: std::net::SocketAddr,
    topic: &str,
    routes: &Routes,
) -> Result<Vec<consume::Cursor>, BenchError> {
    let runtime = compio::runtime::Runtime::new().map_err(BenchError::Runtime)?;
    runtime.block_on(async {
        let mut client = cluster::connect(addr, "sluice-bench-setup".to_owned()).await?;
        let versions = cluster::negotiate(&mut client).await?;
        let cursors = consume::end_cursors(&mut client, addr, &versions, topic, routes).await?;
        let _ = client.close().await;
        Ok(cursors)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finishes_only_when_producers_are_done_and_caught_up() {
        let flow = Arc::new(Flow::new(2));
        let first = flow.producer_guard();
        let second = flow.producer_guard();
        flow.produced(10);
        flow.consumed(10);
        assert!(!flow.finished(), "producers still running");
        drop(first);
        drop(second);
        assert!(flow.finished());
        flow.produced(5);
        assert!(!flow.finished(), "5 records not consumed yet");
        flow.consumed(5);
        assert!(flow.finished());
    }
}
