//! Runs a mode's workers, each on its own thread with its own compio runtime and connection:
//! starts their clock together once every worker has connected, prints one progress line per
//! interval from their windows while they run, and gathers what they measured. When stderr
//! is a terminal, a live status line (elapsed time, messages so far, rate since the last
//! line) is redrawn below the interval lines several times a second.

use std::io::{IsTerminal, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::BenchError;
use crate::stats::{interval_line, Mode, Sample, SharedWindow, Stats, Window};

/// How often the live status line is redrawn.
const LIVE_REFRESH: Duration = Duration::from_millis(200);

pub struct Options {
    pub mode: Mode,
    pub workers: usize,
    pub interval: Duration,
    pub warmup: Duration,
}

/// What all workers measured after the warm-up.
pub struct Outcome {
    pub total: Stats,
    /// From the end of the warm-up to the last measured answer.
    pub elapsed: Duration,
}

/// A worker's handle on the run: its window, the shared stop flag and the start gate.
pub struct Worker {
    pub id: usize,
    window: SharedWindow,
    stop: Arc<AtomicBool>,
    gate: Arc<Gate>,
    warmup: Duration,
    /// Set once the worker has passed the gate.
    origin: Option<Instant>,
}

impl Worker {
    /// Waits until every worker is connected and returns the run's start time, the same for
    /// all workers, so fixed-rate schedules and warm-up ends line up.
    pub fn start(&mut self) -> Instant {
        let origin = self.gate.arrive();
        self.origin = Some(origin);
        origin
    }

    /// When measuring begins: the start plus the warm-up.
    pub fn measure_from(&self) -> Instant {
        let origin = self.origin.expect("a worker measures only after start()");
        origin + self.warmup
    }

    /// Whether the run is being cut short, because a worker failed.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Records one request. `began` decides whether it falls in the warm-up.
    pub fn record(&self, sample: &Sample, began: Instant) {
        let now = Instant::now();
        let measured = began >= self.measure_from();
        lock(&self.window).record(sample, measured, now);
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // A worker that fails (or panics) before its start must still arrive at the gate, or
        // the others would wait for it forever; it stops them too, as its share is missing.
        if self.origin.is_none() {
            self.stop.store(true, Ordering::Relaxed);
            self.gate.arrive();
        }
    }
}

/// The start line: workers arrive after connecting and wait until the reporter has seen all
/// of them arrive and stamped the start time.
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

struct GateState {
    arrived: usize,
    origin: Option<Instant>,
}

impl Gate {
    fn arrive(&self) -> Instant {
        let mut state = lock(&self.state);
        state.arrived += 1;
        self.changed.notify_all();
        loop {
            if let Some(origin) = state.origin {
                return origin;
            }
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn open_when(&self, expected: usize) -> Instant {
        let mut state = lock(&self.state);
        while state.arrived < expected {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        let origin = Instant::now();
        state.origin = Some(origin);
        self.changed.notify_all();
        origin
    }
}

/// A poisoned lock only means a worker panicked mid-record; the counters are still usable,
/// and the panic itself is reported when the thread is joined.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `body` once per worker, each on its own thread, and reports while they run.
pub fn run<F>(options: &Options, body: F) -> Result<Outcome, BenchError>
where
    F: Fn(Worker) -> Result<(), BenchError> + Send + Sync + 'static,
{
    assert!(options.workers >= 1);
    let body = Arc::new(body);
    let stop = Arc::new(AtomicBool::new(false));
    let gate = Arc::new(Gate {
        state: Mutex::new(GateState {
            arrived: 0,
            origin: None,
        }),
        changed: Condvar::new(),
    });
    let windows: Vec<SharedWindow> = (0..options.workers)
        .map(|_| Arc::new(Mutex::new(Window::default())))
        .collect();
    let (done_tx, done_rx) = mpsc::channel::<(usize, Result<(), BenchError>)>();
    let mut handles = Vec::with_capacity(options.workers);
    let mut errors = Vec::new();
    for (id, window) in windows.iter().enumerate() {
        let worker = Worker {
            id,
            window: Arc::clone(window),
            stop: Arc::clone(&stop),
            gate: Arc::clone(&gate),
            warmup: options.warmup,
            origin: None,
        };
        let (body, done_tx) = (Arc::clone(&body), done_tx.clone());
        let spawned = thread::Builder::new()
            .name(format!("{}-{id}", options.mode.name()))
            .spawn(move || {
                let result = body(worker);
                // The reporter may have gone if another worker's failure ended the run.
                let _ = done_tx.send((id, result));
            });
        match spawned {
            Ok(handle) => handles.push(handle),
            Err(error) => {
                stop.store(true, Ordering::Relaxed);
                errors.push(BenchError::Thread(error));
                break;
            }
        }
    }
    // Only the workers' senders remain, so the channel closes when the last worker ends.
    drop(done_tx);
    let origin = gate.open_when(handles.len());
    let reporter = Reporter {
        options,
        windows: &windows,
        origin,
        last_tick: origin,
        lines_printed: 0,
        live: std::io::stderr().is_terminal(),
        live_drawn: false,
    };
    errors.extend(reporter.report_until_done(&done_rx, &stop));
    for (id, handle) in handles.into_iter().enumerate() {
        if handle.join().is_err() {
            errors.push(BenchError::WorkerPanicked(id));
        }
    }
    if let Some(first) = errors.into_iter().next() {
        return Err(first);
    }
    Ok(gather(&windows, origin + options.warmup))
}

struct Reporter<'a> {
    options: &'a Options,
    windows: &'a [SharedWindow],
    origin: Instant,
    last_tick: Instant,
    lines_printed: u64,
    /// Whether to draw the live status line (stderr is a terminal).
    live: bool,
    /// Whether a status line is on screen and must be cleared before the next line.
    live_drawn: bool,
}

impl Reporter<'_> {
    /// Prints a line per interval until every worker has ended; returns their errors.
    fn report_until_done(
        mut self,
        done: &mpsc::Receiver<(usize, Result<(), BenchError>)>,
        stop: &AtomicBool,
    ) -> Vec<BenchError> {
        let mut errors = Vec::new();
        let mut next_tick = self.origin + self.options.interval;
        let mut next_live = self.origin + LIVE_REFRESH;
        loop {
            let wake = if self.live {
                next_tick.min(next_live)
            } else {
                next_tick
            };
            let wait = wake.saturating_duration_since(Instant::now());
            match done.recv_timeout(wait) {
                Ok((id, Err(error))) => {
                    eprintln!("{} {id}: {error}", self.options.mode.name());
                    stop.store(true, Ordering::Relaxed);
                    errors.push(error);
                }
                Ok((_, Ok(()))) => {}
                Err(RecvTimeoutError::Timeout) if Instant::now() < next_tick => {
                    self.draw_live();
                    next_live = Instant::now() + LIVE_REFRESH;
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.print_interval(false);
                    // Skip ticks missed while descheduled rather than print a burst of lines.
                    while next_tick <= Instant::now() {
                        next_tick += self.options.interval;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.print_interval(true);
        self.clear_live();
        errors
    }

    /// Redraws the status line: elapsed time, messages so far and the rate since the last
    /// interval line.
    fn draw_live(&mut self) {
        let now = Instant::now();
        let mut messages_all = 0;
        let mut messages_interval = 0;
        for window in self.windows {
            let window = lock(window);
            messages_all += window.messages_all;
            messages_interval += window.interval.messages;
        }
        let span = (now - self.last_tick).as_secs_f64();
        let rate = if span > 0.0 {
            messages_interval as f64 / span
        } else {
            0.0
        };
        let warmup = now < self.origin + self.options.warmup;
        let mut stderr = std::io::stderr().lock();
        let _ = write!(
            stderr,
            "\r\x1b[2K  {:.1}s {} {} messages, {:.0} msg/s{}",
            (now - self.origin).as_secs_f64(),
            self.options.mode.name(),
            messages_all,
            rate,
            if warmup { " (warm-up)" } else { "" },
        );
        let _ = stderr.flush();
        self.live_drawn = true;
    }

    fn clear_live(&mut self) {
        if self.live_drawn {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r\x1b[2K");
            let _ = stderr.flush();
            self.live_drawn = false;
        }
    }

    fn print_interval(&mut self, last: bool) {
        let now = Instant::now();
        let mut stats = Stats::new();
        let mut messages_all = 0;
        for window in self.windows {
            let mut window = lock(window);
            stats.merge(&std::mem::take(&mut window.interval));
            messages_all += window.messages_all;
        }
        let span = now - self.last_tick;
        // An interval that began before the warm-up ended is (partly) warm-up.
        let warmup = self.last_tick < self.origin + self.options.warmup;
        self.last_tick = now;
        // The closing line covers only the tail since the last tick, often just the drain of
        // the last answers; over so short a span its rates mislead, so it is left out unless
        // it is the only line. The summary counts those requests either way.
        let tail_too_short = self.lines_printed > 0 && span < self.options.interval / 4;
        if last && (stats.requests == 0 || tail_too_short) {
            return;
        }
        self.lines_printed += 1;
        self.clear_live();
        eprintln!(
            "{}",
            interval_line(
                self.options.mode,
                now - self.origin,
                span,
                &stats,
                messages_all,
                warmup,
            )
        );
    }
}

fn gather(windows: &[SharedWindow], measure_from: Instant) -> Outcome {
    let mut total = Stats::new();
    let mut last_completion: Option<Instant> = None;
    for window in windows {
        let window = lock(window);
        total.merge(&window.total);
        last_completion = last_completion.max(window.last_completion);
    }
    let elapsed = last_completion.map_or(Duration::ZERO, |last| {
        last.saturating_duration_since(measure_from)
    });
    Outcome { total, elapsed }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(workers: usize) -> Options {
        Options {
            mode: Mode::Produce,
            workers,
            interval: Duration::from_secs(3600),
            warmup: Duration::ZERO,
        }
    }

    #[test]
    fn gathers_every_workers_samples_from_one_start() {
        let origins = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&origins);
        let outcome = run(&options(3), move |mut worker| {
            let origin = worker.start();
            lock(&seen).push(origin);
            let sample = Sample {
                messages: worker.id as u64 + 1,
                latency: Some(Duration::from_millis(1)),
                ..Sample::default()
            };
            worker.record(&sample, origin);
            Ok(())
        })
        .unwrap();
        assert_eq!(outcome.total.messages, 1 + 2 + 3);
        assert_eq!(outcome.total.requests, 3);
        let origins = lock(&origins);
        assert_eq!(origins.len(), 3);
        assert!(origins.iter().all(|&o| o == origins[0]));
    }

    #[test]
    fn a_worker_failing_before_start_stops_the_others() {
        let result = run(&options(2), |mut worker| {
            if worker.id == 0 {
                return Err(BenchError::NoAddress("nowhere".to_owned()));
            }
            worker.start();
            // The failed worker raised the stop flag before it arrived at the gate.
            assert!(worker.stopped());
            Ok(())
        });
        assert!(matches!(result, Err(BenchError::NoAddress(_))));
    }

    #[test]
    fn a_panicking_worker_is_reported() {
        let result = run(&options(2), |mut worker| {
            worker.start();
            if worker.id == 1 {
                panic!("worker 1 fails on purpose");
            }
            Ok(())
        });
        assert!(matches!(result, Err(BenchError::WorkerPanicked(1))));
    }

    #[test]
    fn warmup_requests_stay_out_of_the_total() {
        let mut options = options(1);
        options.warmup = Duration::from_secs(3600);
        let outcome = run(&options, |mut worker| {
            let origin = worker.start();
            worker.record(
                &Sample {
                    messages: 5,
                    ..Sample::default()
                },
                origin,
            );
            Ok(())
        })
        .unwrap();
        assert_eq!(outcome.total.messages, 0);
        assert_eq!(outcome.elapsed, Duration::ZERO);
    }
}
