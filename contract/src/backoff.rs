//! Capped exponential backoff with jitter, the one every retry loop uses (the gateway's
//! change-feed and Redis subscriptions, keys-service's audit relay, …).
//!
//! "Equal jitter": each delay is half the capped exponential step plus a random part of the
//! other half, so replicas that failed together do not retry in lockstep, and no delay is
//! ever shorter than half its step.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max: max.max(base),
            attempt: 0,
        }
    }

    /// After a success: the next failure starts from `base` again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The step the next delay is drawn from (without jitter).
    pub fn step(&self) -> Duration {
        self.base
            .saturating_mul(2u32.saturating_pow(self.attempt.min(30)))
            .min(self.max)
    }

    /// The delay before the next attempt, in `[step/2, step]`.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step();
        self.attempt = self.attempt.saturating_add(1);
        let half = step / 2;
        half + half.mul_f64(unit_random())
    }
}

/// A uniform value in `[0, 1)` from the OS; `0.5` if it cannot be had (jitter is a nicety,
/// never a reason to fail).
fn unit_random() -> f64 {
    let mut b = [0u8; 8];
    match getrandom::fill(&mut b) {
        Ok(()) => (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 0.5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_with_jitter_inside_each_step() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let steps: Vec<Duration> = (0..8)
            .map(|_| {
                let step = b.step();
                let d = b.next_delay();
                assert!(
                    d >= step / 2 && d <= step,
                    "{d:?} outside [{:?}, {step:?}]",
                    step / 2
                );
                step
            })
            .collect();
        assert_eq!(steps[0], Duration::from_millis(100));
        assert_eq!(steps[1], Duration::from_millis(200));
        assert_eq!(steps[4], Duration::from_millis(1600));
        assert_eq!(steps[5], Duration::from_secs(2));
        assert_eq!(steps[7], Duration::from_secs(2));
        b.reset();
        assert_eq!(b.step(), Duration::from_millis(100));
        // Jitter varies.
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
        let draws: std::collections::HashSet<u128> =
            (0..20).map(|_| b.next_delay().as_nanos()).collect();
        assert!(draws.len() > 1);
    }
}
