//! Pacing `run`'s re-maps. With v3, refresh times fall on UTC midnights,
//! so about 1/30 of all identities come due at the same instant. Sending
//! them in one burst would make every identity-map request of the day at
//! once; instead each pass of the day's first `spread_over` sends its share
//! of what is still due, so the work ends with the window. New identities
//! are never held back, and `remap` itself is not paced.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// How many re-maps a pass starting at `now` may send, when `due` are due
/// and a pass runs every `interval`: what is due divided over the passes
/// left in the window, at least one full batch (small requests would only
/// multiply requests). `None`: no limit (no window, or past its end).
pub(crate) fn remap_budget(
    due: u64,
    now: DateTime<Utc>,
    interval: Duration,
    spread_over: Duration,
    batch_size: usize,
) -> Option<u64> {
    let midnight = now.date_naive().and_time(chrono::NaiveTime::MIN).and_utc();
    let window_end = midnight + chrono::Duration::from_std(spread_over).ok()?;
    if now >= window_end || interval.is_zero() {
        return None;
    }
    let left = (window_end - now).to_std().ok()?;
    let passes_left = left.as_secs_f64() / interval.as_secs_f64();
    let share = if passes_left <= 1.0 {
        due
    } else {
        (due as f64 / passes_left).ceil() as u64
    };
    Some(share.max(batch_size as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);
    const HOUR: Duration = Duration::from_secs(3600);

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        chrono::NaiveDate::from_ymd_opt(2026, 11, 25)
            .unwrap()
            .and_hms_opt(h, m, 0)
            .unwrap()
            .and_utc()
    }

    #[test]
    fn at_midnight_a_pass_sends_its_share_of_the_window() {
        // 20 h of 5-minute passes: 240 passes share 2,400,000 re-maps.
        let budget = remap_budget(2_400_000, at(0, 0), 5 * MINUTE, 20 * HOUR, 5_000);
        assert_eq!(budget, Some(10_000));
    }

    #[test]
    fn later_in_the_window_what_is_left_is_shared_by_the_passes_left() {
        // 10 h left: 120 passes for 1,200,000.
        let budget = remap_budget(1_200_000, at(10, 0), 5 * MINUTE, 20 * HOUR, 5_000);
        assert_eq!(budget, Some(10_000));
    }

    #[test]
    fn a_small_share_is_rounded_up_to_one_full_batch() {
        let budget = remap_budget(30_000, at(0, 0), 5 * MINUTE, 20 * HOUR, 5_000);
        assert_eq!(budget, Some(5_000));
    }

    #[test]
    fn the_last_pass_of_the_window_sends_everything_left() {
        let budget = remap_budget(77_777, at(19, 58), 5 * MINUTE, 20 * HOUR, 5_000);
        assert_eq!(budget, Some(77_777));
    }

    #[test]
    fn past_the_window_or_without_one_nothing_is_held_back() {
        assert_eq!(
            remap_budget(1_000_000, at(21, 0), 5 * MINUTE, 20 * HOUR, 5_000),
            None
        );
        assert_eq!(
            remap_budget(1_000_000, at(0, 0), 5 * MINUTE, Duration::ZERO, 5_000),
            None
        );
    }
}
