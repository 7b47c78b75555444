//! The retry schedule: the delay before each attempt of a delivery, counted from the
//! failure of the one before (the first from when the event was queued). The default is the
//! Standard Webhooks / Svix schedule: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h —
//! eight attempts over about 27.6 hours.
//!
//! Jitter only ever *adds* to a delay (up to a percentage of it), so a receiver never sees a
//! retry earlier than the schedule promises; it spreads retries of many deliveries that
//! failed together. A receiver's `Retry-After` can lengthen a delay, up to a bound.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule {
    delays: Vec<Duration>,
}

impl Default for RetrySchedule {
    fn default() -> Self {
        let (s, m, h) = (1, 60, 3600);
        Self {
            delays: [0, 5 * s, 5 * m, 30 * m, 2 * h, 5 * h, 10 * h, 10 * h]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
        }
    }
}

impl RetrySchedule {
    /// A comma-separated list of delays, each a whole number with a unit (`ms`, `s`, `m`,
    /// `h`, `d`; `0` alone is allowed), e.g. `0,5s,5m,30m,2h,5h,10h,10h`. At most 50 attempts,
    /// each delay at most 7 days.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut delays = Vec::new();
        for raw in text.split(',') {
            let item = raw.trim();
            if item.is_empty() {
                return Err("empty entry: write delays like 0,5s,5m,2h".to_owned());
            }
            delays.push(parse_delay(item)?);
        }
        if delays.len() > 50 {
            return Err("at most 50 attempts".to_owned());
        }
        Ok(Self { delays })
    }

    /// How many attempts a delivery gets.
    pub fn attempts(&self) -> u32 {
        u32::try_from(self.delays.len()).unwrap_or(u32::MAX)
    }

    /// The delay before attempt `n` (1-based), or `None` past the last.
    pub fn delay_before(&self, attempt: u32) -> Option<Duration> {
        let i = usize::try_from(attempt.checked_sub(1)?).ok()?;
        self.delays.get(i).copied()
    }

    pub fn delays(&self) -> &[Duration] {
        &self.delays
    }
}

fn parse_delay(item: &str) -> Result<Duration, String> {
    if item == "0" {
        return Ok(Duration::ZERO);
    }
    let split = item
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{item:?} has no unit (ms, s, m, h, d)"))?;
    let (number, unit) = item.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{item:?} does not start with a whole number"))?;
    let ms_per = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{item:?}: unit must be ms, s, m, h or d")),
    };
    let ms = n
        .checked_mul(ms_per)
        .filter(|ms| *ms <= 7 * 86_400_000)
        .ok_or_else(|| format!("{item:?}: at most 7 days"))?;
    Ok(Duration::from_millis(ms))
}

/// `delay` plus a random extra of up to `percent` % of it: never earlier than scheduled.
pub fn with_jitter(delay: Duration, percent: u32, random: u64) -> Duration {
    let span = delay.as_millis() as u64 * u64::from(percent) / 100;
    if span == 0 {
        return delay;
    }
    delay + Duration::from_millis(random % (span + 1))
}

/// The delay a receiver asked for in `Retry-After` (seconds, or an HTTP date), if any.
pub fn parse_retry_after(value: &str, now_ms: i64) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at =
        time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822).ok()?;
    let at_ms = rl_contract::time_fmt::to_ms(at);
    Some(Duration::from_millis(
        u64::try_from(at_ms.saturating_sub(now_ms)).unwrap_or(0),
    ))
}

/// The delay before the next attempt: the schedule's, lengthened (never shortened) by a
/// `Retry-After` up to `max`.
pub fn next_delay(scheduled: Duration, retry_after: Option<Duration>, max: Duration) -> Duration {
    match retry_after {
        Some(asked) => scheduled.max(asked.min(max)),
        None => scheduled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_the_standard_schedule() {
        let s = RetrySchedule::default();
        let parsed = RetrySchedule::parse("0, 5s, 5m, 30m, 2h, 5h, 10h, 10h").expect("parses");
        assert_eq!(s, parsed);
        assert_eq!(s.attempts(), 8);
        assert_eq!(s.delay_before(1), Some(Duration::ZERO));
        assert_eq!(s.delay_before(2), Some(Duration::from_secs(5)));
        assert_eq!(s.delay_before(8), Some(Duration::from_secs(36_000)));
        assert_eq!(s.delay_before(9), None);
        assert_eq!(s.delay_before(0), None);
    }

    #[test]
    fn compressed_schedules_and_bad_ones() {
        let s = RetrySchedule::parse("0,100ms,1s").expect("parses");
        assert_eq!(
            s.delays(),
            [
                Duration::ZERO,
                Duration::from_millis(100),
                Duration::from_secs(1)
            ]
        );
        for bad in [
            "",
            "5",
            "5x",
            "1,,2s",
            "-1s",
            "8d",
            "s",
            "1.5s",
            &vec!["1s"; 51].join(","),
        ] {
            assert!(RetrySchedule::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn jitter_only_delays() {
        let d = Duration::from_secs(10);
        for r in [0, 1, 999, 1000, u64::MAX] {
            let j = with_jitter(d, 10, r);
            assert!(j >= d && j <= d + Duration::from_secs(1), "{j:?}");
        }
        assert_eq!(with_jitter(Duration::ZERO, 10, 5), Duration::ZERO);
    }

    #[test]
    fn retry_after_is_bounded_and_never_shortens() {
        let max = Duration::from_secs(3600);
        let five = Duration::from_secs(5);
        assert_eq!(next_delay(five, Some(Duration::from_secs(2)), max), five);
        assert_eq!(
            next_delay(five, Some(Duration::from_secs(60)), max),
            Duration::from_secs(60)
        );
        assert_eq!(
            next_delay(five, Some(Duration::from_secs(86_400)), max),
            max
        );
        assert_eq!(parse_retry_after(" 7 ", 0), Some(Duration::from_secs(7)));
        let now = rl_contract::time_fmt::now_ms();
        let later = time::OffsetDateTime::from_unix_timestamp(now / 1000 + 30).expect("ts");
        let date = later
            .format(&time::format_description::well_known::Rfc2822)
            .expect("fmt");
        let d = parse_retry_after(&date, now).expect("date");
        assert!(
            d <= Duration::from_secs(30) && d >= Duration::from_secs(28),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
