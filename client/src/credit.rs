//! A consumer's credit: how many deliveries the broker may send, granted
//! back as the application consumes them; pure bookkeeping, no I/O.

use crate::subscriber::MAX_PREFETCH;

/// Credit bookkeeping, kept apart from the I/O so it can be tested.
///
/// The broker may send as many deliveries as it has been granted. The
/// client grants `prefetch` when a stream opens and then, each time half of
/// it has been consumed, grants that much again; so at most `prefetch`
/// messages wait in the client. With a limit, grants stop at the limit.
#[derive(Debug, Clone)]
pub(crate) struct Credit {
    prefetch: u32,
    limit: Option<u64>,
    /// Deliveries received on every stream so far.
    delivered: u64,
    /// Credit granted and not yet used on the current stream.
    outstanding: u64,
    /// Messages consumed since the last grant.
    consumed: u32,
}

impl Credit {
    pub(crate) fn new(prefetch: u32, limit: Option<u64>) -> Self {
        Self {
            prefetch: prefetch.clamp(1, MAX_PREFETCH),
            limit,
            delivered: 0,
            outstanding: 0,
            consumed: 0,
        }
    }

    /// Deliveries still wanted: unlimited, or the limit minus those received.
    fn wanted(&self) -> u64 {
        self.limit
            .map_or(u64::MAX, |limit| limit.saturating_sub(self.delivered))
    }

    /// Initial credit of a new stream (0: nothing more is wanted).
    pub(crate) fn open_stream(&mut self) -> u32 {
        let initial = u64::from(self.prefetch).min(self.wanted());
        self.outstanding = initial;
        self.consumed = 0;
        initial as u32
    }

    pub(crate) fn delivered(&mut self) {
        self.delivered += 1;
        self.outstanding = self.outstanding.saturating_sub(1);
    }

    /// Records a consumed message; returns credit to grant now, if any.
    pub(crate) fn consumed(&mut self) -> Option<u32> {
        self.consumed += 1;
        let threshold = (self.prefetch / 2).max(1);
        if self.consumed < threshold {
            return None;
        }
        let room = self.wanted().saturating_sub(self.outstanding);
        let grant = u64::from(self.consumed).min(room) as u32;
        self.consumed = 0;
        self.outstanding += u64::from(grant);
        (grant > 0).then_some(grant)
    }

    pub(crate) fn wants_more(&self) -> bool {
        self.wanted() > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_is_granted_back_in_halves() {
        let mut credit = Credit::new(4, None);
        assert_eq!(credit.open_stream(), 4);
        for _ in 0..4 {
            credit.delivered();
        }
        assert_eq!(credit.consumed(), None);
        assert_eq!(credit.consumed(), Some(2));
        assert_eq!(credit.consumed(), None);
        assert_eq!(credit.consumed(), Some(2));
        // A prefetch of 1 grants after every message.
        let mut credit = Credit::new(1, None);
        assert_eq!(credit.open_stream(), 1);
        credit.delivered();
        assert_eq!(credit.consumed(), Some(1));
    }

    #[test]
    fn a_limit_caps_the_credit() {
        let mut credit = Credit::new(256, Some(3));
        assert_eq!(credit.open_stream(), 3);
        credit.delivered();
        credit.delivered();
        // One is still outstanding and only one more is wanted: no grant.
        for _ in 0..200 {
            assert_eq!(credit.consumed(), None);
        }
        credit.delivered();
        assert!(!credit.wants_more());
        assert_eq!(credit.open_stream(), 0);

        let mut credit = Credit::new(2, Some(5));
        assert_eq!(credit.open_stream(), 2);
        credit.delivered();
        assert_eq!(credit.consumed(), Some(1));
        credit.delivered();
        credit.delivered();
        assert_eq!(credit.consumed(), Some(1));
        credit.delivered();
        assert_eq!(credit.consumed(), Some(1));
        credit.delivered();
        // Five delivered: nothing more is granted.
        assert_eq!(credit.consumed(), None);
        assert!(!credit.wants_more());
    }

    #[test]
    fn a_reconnect_starts_with_fresh_credit() {
        let mut credit = Credit::new(10, Some(25));
        assert_eq!(credit.open_stream(), 10);
        for _ in 0..10 {
            credit.delivered();
        }
        assert_eq!(credit.open_stream(), 10);
        for _ in 0..10 {
            credit.delivered();
        }
        assert_eq!(credit.open_stream(), 5);
    }
}
