//! Exponential redelivery backoff: how long a failed delivery waits before it is offered again.

/// The wait before redelivering a message whose delivery has failed
/// `failed_attempts` times: `initial_ms * 2^(failed_attempts - 1)`, capped at
/// `max_ms`.
///
/// The arithmetic saturates, so no input overflows or panics: a huge attempt
/// count simply yields `max_ms`. Zero failed attempts is treated like one,
/// because a redelivery is only ever scheduled after a failure. A `max_ms`
/// below `initial_ms` wins, as a ceiling should.
pub fn redelivery_delay_ms(initial_ms: u64, max_ms: u64, failed_attempts: u32) -> u64 {
    let exponent = failed_attempts.saturating_sub(1);
    // A shift of 64 or more bits does not fit in a u64, so such factors are
    // treated as "infinitely large" and the cap takes over.
    let factor = 1u64.checked_shl(exponent).unwrap_or(u64::MAX);
    initial_ms.saturating_mul(factor).min(max_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_the_initial_delay() {
        let delays: Vec<u64> = (1..=6).map(|n| redelivery_delay_ms(100, 1_000_000, n)).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200]);
    }

    #[test]
    fn is_capped_at_the_maximum() {
        assert_eq!(redelivery_delay_ms(1_000, 60_000, 6), 32_000);
        assert_eq!(redelivery_delay_ms(1_000, 60_000, 7), 60_000);
        assert_eq!(redelivery_delay_ms(1_000, 60_000, 8), 60_000);
        assert_eq!(redelivery_delay_ms(1_000, 60_000, 1_000), 60_000);
    }

    #[test]
    fn zero_failed_attempts_counts_as_the_first() {
        assert_eq!(redelivery_delay_ms(250, 10_000, 0), 250);
        assert_eq!(redelivery_delay_ms(250, 10_000, 1), 250);
    }

    #[test]
    fn a_ceiling_below_the_initial_delay_wins() {
        assert_eq!(redelivery_delay_ms(5_000, 1_000, 1), 1_000);
        assert_eq!(redelivery_delay_ms(5_000, 0, 3), 0);
    }

    #[test]
    fn never_overflows() {
        for attempts in [0, 1, 2, 63, 64, 65, 100, u32::MAX - 1, u32::MAX] {
            for initial in [0, 1, 3, u64::MAX / 2, u64::MAX] {
                let delay = redelivery_delay_ms(initial, u64::MAX, attempts);
                assert!(delay >= initial, "{initial} {attempts}");
                assert!(redelivery_delay_ms(initial, 7, attempts) <= 7);
            }
        }
        assert_eq!(redelivery_delay_ms(u64::MAX, u64::MAX, u32::MAX), u64::MAX);
        assert_eq!(redelivery_delay_ms(2, u64::MAX, 64), u64::MAX);
        assert_eq!(redelivery_delay_ms(1, u64::MAX, 64), 1 << 63);
        assert_eq!(redelivery_delay_ms(0, u64::MAX, u32::MAX), 0);
    }

    #[test]
    fn grows_monotonically_with_attempts() {
        let mut previous = 0;
        for attempts in 1..200 {
            let delay = redelivery_delay_ms(7, 3_600_000, attempts);
            assert!(delay >= previous);
            previous = delay;
        }
    }
}
