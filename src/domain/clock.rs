//! Wall-clock helpers in the two clocks Kazoo uses: Unix seconds (JWT `exp`) and Gregorian
//! seconds (every `pvt_created`/`pvt_modified`), see auth-contract preamble; and [`Clock`], the
//! monotonic time of what refills over time (the rate limiter's buckets).
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Seconds between 0000-01-01 and 1970-01-01 in Erlang's calendar.
pub const GREGORIAN_OFFSET: i64 = 62_167_219_200;

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

pub fn gregorian_now() -> i64 {
    unix_now() + GREGORIAN_OFFSET
}

/// Gregorian microseconds, the AMQP `timestamp` Kazoo stamps on its messages (amqp-notices §4).
pub fn gregorian_now_micros() -> u64 {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default();
    unix + GREGORIAN_OFFSET as u64 * 1_000_000
}

/// `YYYY-MM-DDTHH:MM:SSZ`, the envelope `timestamp` (groups-contract §3.1).
pub fn iso8601_now() -> String {
    let now = time::OffsetDateTime::now_utc();
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    now.format(&format).unwrap_or_default()
}

/// Monotonic time: the system's `Instant` in production; a [`ManualClock`] in tests, so what
/// depends on elapsed time does not depend on the machine's speed.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    #[default]
    System,
    Manual(ManualClock),
}

impl Clock {
    pub fn now(&self) -> Instant {
        match self {
            Clock::System => Instant::now(),
            Clock::Manual(manual) => manual.now(),
        }
    }
}

/// A clock that stands still until [`advance`](Self::advance)d; its clones share one time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<Instant>>);

impl ManualClock {
    /// Starts at the moment it is made.
    pub fn new() -> Self {
        Self(Arc::new(Mutex::new(Instant::now())))
    }

    pub fn now(&self) -> Instant {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn advance(&self, by: Duration) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) += by;
    }

    /// This clock as the [`Clock`] a component is given.
    pub fn clock(&self) -> Clock {
        Clock::Manual(self.clone())
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced_and_its_clones_share_it() {
        let manual = ManualClock::new();
        let clock = manual.clock();
        let start = clock.now();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(clock.now(), start);
        manual.advance(Duration::from_secs(3));
        assert_eq!(clock.now() - start, Duration::from_secs(3));
    }

    #[test]
    fn gregorian_is_unix_plus_offset() {
        let g = gregorian_now();
        assert!(g > 63_000_000_000);
        assert!((g - GREGORIAN_OFFSET - unix_now()).abs() <= 1);
    }

    #[test]
    fn timestamp_is_iso8601_utc() {
        let ts = iso8601_now();
        assert_eq!(ts.len(), 20);
        assert!(ts.ends_with('Z'));
        assert_eq!(&ts[4..5], "-");
        assert_eq!(&ts[10..11], "T");
    }
}
