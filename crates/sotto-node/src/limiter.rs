//! Per-caller rate limit: a token bucket per caller (a KMS participant,
//! a gateway user), refilled at a steady rate up to a burst size. Time is
//! passed in, so the limiter is deterministic under test.

use std::collections::HashMap;
use std::time::Instant;

/// Token buckets by participant name.
pub struct RateLimiter {
    rate: u32,
    burst: u32,
    buckets: HashMap<String, (f64, Instant)>,
}

impl RateLimiter {
    /// At most `rate` per second sustained, `burst` at once (both at least 1).
    pub fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate: rate.max(1),
            burst: burst.max(1),
            buckets: HashMap::new(),
        }
    }

    /// The sustained rate and burst.
    pub fn limits(&self) -> (u32, u32) {
        (self.rate, self.burst)
    }

    /// Takes one token for `participant` at `now`; false when none is left.
    pub fn try_take(&mut self, participant: &str, now: Instant) -> bool {
        let burst = f64::from(self.burst);
        let rate = f64::from(self.rate);
        let (tokens, last) = self
            .buckets
            .entry(participant.to_owned())
            .or_insert((burst, now));
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * rate).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_then_refills_per_participant() {
        let mut limiter = RateLimiter::new(10, 3);
        let t0 = Instant::now();
        assert!((0..3).all(|_| limiter.try_take("a", t0)));
        assert!(!limiter.try_take("a", t0));
        assert!(limiter.try_take("b", t0), "buckets are per participant");
        assert!(limiter.try_take("a", t0 + Duration::from_millis(100)));
        assert!(!limiter.try_take("a", t0 + Duration::from_millis(100)));
    }
}
