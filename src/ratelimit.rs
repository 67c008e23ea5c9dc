//! Rate-limited log lines: a flood of bad requests or failing writes must
//! not fill the disk with diagnostics. At most one line per interval gets
//! through, carrying the count of those left out.

use std::time::{Duration, Instant};

pub struct RateLimited {
    what: &'static str,
    level: log::Level,
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimited {
    pub fn new(what: &'static str, level: log::Level, interval: Duration) -> RateLimited {
        RateLimited {
            what,
            level,
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// Logs `msg` unless a line went out less than an interval ago.
    pub fn log(&mut self, msg: impl FnOnce() -> String) {
        let now = Instant::now();
        if let Some(last) = self.last
            && now.duration_since(last) < self.interval
        {
            self.suppressed += 1;
            return;
        }
        if self.suppressed > 0 {
            log::log!(
                self.level,
                "{} ({} similar lines left out)",
                msg(),
                self.suppressed
            );
        } else {
            log::log!(target: "taskd", self.level, "{}", msg());
        }
        self.last = Some(now);
        self.suppressed = 0;
    }

    /// At exit, so the count of left-out lines is not lost.
    pub fn finish(&mut self) {
        if self.suppressed > 0 {
            log::log!(
                self.level,
                "{}: {} more not logged individually",
                self.what,
                self.suppressed
            );
            self.suppressed = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_within_the_interval_are_counted_not_logged() {
        let mut r = RateLimited::new("test", log::Level::Info, Duration::from_secs(60));
        for _ in 0..5 {
            r.log(|| "x".into());
        }
        assert!(r.last.is_some());
        assert_eq!(r.suppressed, 4);
        r.finish();
        assert_eq!(r.suppressed, 0);
    }
}
