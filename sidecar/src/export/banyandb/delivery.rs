//! Retry policy: exponential backoff with full jitter and a cap, behind a circuit breaker.

use std::time::{Duration, Instant};

/// Full jitter: each delay is uniform in `0..=min(cap, base * 2^attempt)`.
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
    rng: u64,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9E37_79B9_7F4A_7C15, |d| d.as_nanos() as u64)
            | 1;
        Backoff {
            base,
            cap: cap.max(base),
            attempt: 0,
            rng: seed,
        }
    }

    /// The ceiling of the next delay.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        // xorshift64*: jitter needs no cryptographic quality.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let random = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let nanos = ceiling.as_nanos() as u64;
        Duration::from_nanos(if nanos == 0 { 0 } else { random % (nanos + 1) })
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// The breaker's state (a type of `export`: the sinks show it).
pub use crate::export::CircuitState;

#[derive(Debug)]
pub struct Breaker {
    state: CircuitState,
    failures: u32,
    threshold: u32,
    cooldown: Duration,
    opened_at: Option<Instant>,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker {
            state: CircuitState::Closed,
            failures: 0,
            threshold: threshold.max(1),
            cooldown,
            opened_at: None,
        }
    }

    pub fn state(&self) -> CircuitState {
        self.state
    }

    /// Whether a write may go now; an open breaker past its cool-down turns half-open.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.state {
            CircuitState::Closed | CircuitState::HalfOpen => true,
            CircuitState::Open => {
                if self.reopens_at().is_some_and(|at| now >= at) {
                    self.state = CircuitState::HalfOpen;
                    true
                } else {
                    false
                }
            }
        }
    }

    /// When an open breaker lets a probe through.
    pub fn reopens_at(&self) -> Option<Instant> {
        match self.state {
            CircuitState::Open => self.opened_at.map(|at| at + self.cooldown),
            _ => None,
        }
    }

    pub fn success(&mut self) {
        self.state = CircuitState::Closed;
        self.failures = 0;
        self.opened_at = None;
    }

    pub fn failure(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        if self.state == CircuitState::HalfOpen || self.failures >= self.threshold {
            self.state = CircuitState::Open;
            self.opened_at = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_exponential_and_capped() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut ceilings = Vec::new();
        for _ in 0..8 {
            let ceiling = backoff.ceiling();
            let delay = backoff.next_delay();
            assert!(delay <= ceiling);
            ceilings.push(ceiling.as_millis());
        }
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000, 1000, 1000]);
        backoff.reset();
        assert_eq!(backoff.ceiling(), Duration::from_millis(100));
        let delays: std::collections::HashSet<_> = (0..20)
            .map(|_| {
                backoff.reset();
                backoff.next_delay()
            })
            .collect();
        assert!(delays.len() > 1, "jitter varies the delays");
    }

    #[test]
    fn breaker_opens_half_opens_and_closes() {
        let start = Instant::now();
        let mut breaker = Breaker::new(3, Duration::from_secs(5));
        breaker.failure(start);
        breaker.failure(start);
        assert_eq!(breaker.state(), CircuitState::Closed);
        breaker.failure(start);
        assert_eq!(breaker.state(), CircuitState::Open);
        assert!(!breaker.allow(start + Duration::from_secs(1)));
        assert!(breaker.allow(start + Duration::from_secs(5)));
        assert_eq!(breaker.state(), CircuitState::HalfOpen);
        // A failed probe opens it again at once.
        breaker.failure(start + Duration::from_secs(5));
        assert_eq!(breaker.state(), CircuitState::Open);
        assert!(breaker.allow(start + Duration::from_secs(10)));
        breaker.success();
        assert_eq!(breaker.state(), CircuitState::Closed);
    }
}
