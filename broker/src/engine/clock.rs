//! The proposer's clock: wall time in milliseconds, never going backwards,
//! so publish times within a topic never decrease.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static LAST_MS: AtomicU64 = AtomicU64::new(0);

/// Milliseconds since the Unix epoch, monotonic within this process.
pub fn now_ms() -> u64 {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let previous = LAST_MS.fetch_max(wall, Ordering::Relaxed);
    wall.max(previous)
}

#[cfg(test)]
mod tests {
    #[test]
    fn never_goes_backwards() {
        let mut last = 0;
        for _ in 0..1000 {
            let now = super::now_ms();
            assert!(now >= last);
            last = now;
        }
    }
}
