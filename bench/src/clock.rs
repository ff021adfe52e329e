//! Send stamps: moments as microseconds since the Unix epoch, so a batch can carry its send
//! time to whoever consumes it. One process-wide anchor pairs a monotonic instant with the
//! wall clock, so stamps taken in one run compare without the wall clock's jumps.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

struct Anchor {
    instant: Instant,
    unix_us: u64,
}

fn anchor() -> &'static Anchor {
    static ANCHOR: OnceLock<Anchor> = OnceLock::new();
    ANCHOR.get_or_init(|| Anchor {
        instant: Instant::now(),
        unix_us: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_micros() as u64),
    })
}

/// `at` as microseconds since the Unix epoch.
pub fn unix_us(at: Instant) -> u64 {
    let anchor = anchor();
    if at >= anchor.instant {
        anchor.unix_us + (at - anchor.instant).as_micros() as u64
    } else {
        anchor
            .unix_us
            .saturating_sub((anchor.instant - at).as_micros() as u64)
    }
}

/// The instant a stamp names, as this process's monotonic clock counts.
pub fn instant_of(unix_us: u64) -> Instant {
    let anchor = anchor();
    if unix_us >= anchor.unix_us {
        anchor.instant + Duration::from_micros(unix_us - anchor.unix_us)
    } else {
        let before = Duration::from_micros(anchor.unix_us - unix_us);
        anchor.instant.checked_sub(before).unwrap_or(anchor.instant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_to_the_microsecond() {
        let now = Instant::now();
        for at in [
            now,
            now + Duration::from_millis(1500),
            now - Duration::from_millis(3),
        ] {
            let back = instant_of(unix_us(at));
            let diff = if back > at { back - at } else { at - back };
            assert!(diff < Duration::from_micros(2), "{diff:?}");
        }
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64;
        assert!(unix_us(Instant::now()).abs_diff(wall) < 1_000_000);
    }
}
