//! Smooth weighted round-robin over the four priorities, so a `weighted` subscription starves none.

use crate::domain::Priority;

/// Each priority's share of deliveries when all of them have ready messages.
pub fn priority_weight(priority: Priority) -> i64 {
    match priority {
        Priority::Critical => 8,
        Priority::High => 4,
        Priority::Normal => 2,
        Priority::Low => 1,
    }
}

/// Credits are kept within this bound. The smooth algorithm keeps them within
/// a few total weights on its own; the clamp only guarantees that no sequence
/// of calls, however odd, can overflow.
const CREDIT_BOUND: i64 = 1 << 20;

/// The smooth weighted round-robin used by nginx: every pick, each eligible
/// priority earns its weight in credit, the richest one is chosen and pays
/// the total weight of the eligible priorities. Over any window the choices
/// follow the weights closely (8:4:2:1) and are interleaved rather than
/// bursty.
///
/// Only priorities that have ready messages take part, so an empty priority
/// neither earns credit nor blocks the others; a priority that has messages
/// is chosen at least once every few picks, which is why none is starved.
/// The state is a handful of integers and every step is deterministic, so
/// replicas that apply the same picks make the same choices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WeightedRoundRobin {
    credit: [i64; 4],
}

impl WeightedRoundRobin {
    pub fn new() -> Self {
        Self::default()
    }

    /// Chooses among the priorities for which `is_ready` is true, or returns
    /// `None` when none is. Ties go to the higher priority.
    pub fn pick(&mut self, mut is_ready: impl FnMut(Priority) -> bool) -> Option<Priority> {
        let mut total = 0;
        let mut best: Option<Priority> = None;
        for priority in Priority::DESCENDING {
            if !is_ready(priority) {
                continue;
            }
            let weight = priority_weight(priority);
            let credit = &mut self.credit[priority.index()];
            *credit = credit.saturating_add(weight).min(CREDIT_BOUND);
            total += weight;
            let richer = |b: Priority| self.credit[priority.index()] > self.credit[b.index()];
            if best.is_none_or(richer) {
                best = Some(priority);
            }
        }
        let chosen = best?;
        let credit = &mut self.credit[chosen.index()];
        *credit = credit.saturating_sub(total).max(-CREDIT_BOUND);
        Some(chosen)
    }

    /// Forgets the accumulated credit (used when a subscription's policy changes).
    pub fn reset(&mut self) {
        self.credit = [0; 4];
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn tally(picker: &mut WeightedRoundRobin, picks: usize, ready: &[Priority]) -> [usize; 4] {
        let mut counts = [0; 4];
        for _ in 0..picks {
            let chosen = picker
                .pick(|p| ready.contains(&p))
                .expect("some priority is ready");
            counts[chosen.index()] += 1;
        }
        counts
    }

    #[test]
    fn shares_follow_the_weights_when_all_are_ready() {
        let mut picker = WeightedRoundRobin::new();
        let counts = tally(&mut picker, 1500, &Priority::DESCENDING);
        assert_eq!(counts, [100, 200, 400, 800], "low, normal, high, critical");
    }

    #[test]
    fn only_ready_priorities_share() {
        let mut picker = WeightedRoundRobin::new();
        let counts = tally(&mut picker, 900, &[Priority::Critical, Priority::Low]);
        assert_eq!(counts, [100, 0, 0, 800]);
        let mut picker = WeightedRoundRobin::new();
        let counts = tally(&mut picker, 600, &[Priority::Normal, Priority::High]);
        assert_eq!(counts, [0, 200, 400, 0]);
    }

    #[test]
    fn nothing_ready_picks_nothing_and_changes_nothing() {
        let mut picker = WeightedRoundRobin::new();
        picker.pick(|_| true);
        let before = picker.clone();
        assert_eq!(picker.pick(|_| false), None);
        assert_eq!(picker, before);
    }

    #[test]
    fn picks_are_interleaved_not_bursty() {
        // Within every cycle of 15 picks the low priority is served exactly
        // once, so it never waits more than about one cycle.
        let mut picker = WeightedRoundRobin::new();
        let picks: Vec<Priority> = (0..150)
            .map(|_| picker.pick(|_| true).unwrap_or_default())
            .collect();
        for cycle in picks.chunks(15) {
            assert_eq!(cycle.iter().filter(|p| **p == Priority::Low).count(), 1);
        }
        // Critical never takes more than two picks in a row when others wait.
        let longest_run = picks
            .split(|p| *p != Priority::Critical)
            .map(<[Priority]>::len)
            .max()
            .unwrap_or(0);
        assert!(longest_run <= 2, "longest run of critical picks: {longest_run}");
    }

    #[test]
    fn ties_go_to_the_higher_priority() {
        let mut picker = WeightedRoundRobin::new();
        assert_eq!(picker.pick(|_| true), Some(Priority::Critical));
    }

    #[test]
    fn credit_stays_small_and_no_ready_priority_starves_under_churn() {
        // Readiness changes at random on every pick. Whichever priority is
        // ready must still be served within a bounded number of the picks it
        // takes part in (14 for Low in the steady state; churn stretches
        // that a little, never without bound), and credit stays within one
        // total weight.
        for (seed, p_ready) in [(1, 0.2), (2, 0.5), (3, 0.9)] {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut picker = WeightedRoundRobin::new();
            let mut waited = [0u32; 4];
            for _ in 0..100_000 {
                let ready: [bool; 4] = std::array::from_fn(|_| rng.random_bool(p_ready));
                let Some(chosen) = picker.pick(|p| ready[p.index()]) else {
                    continue;
                };
                for p in Priority::DESCENDING {
                    let wait = &mut waited[p.index()];
                    if p == chosen {
                        *wait = 0;
                    } else if ready[p.index()] {
                        *wait += 1;
                        assert!(*wait <= 30, "{p:?} waited {wait} picks");
                    }
                }
                assert!(picker.credit.iter().all(|c| c.abs() <= 15), "{:?}", picker.credit);
            }
        }
    }

    #[test]
    fn reset_forgets_credit() {
        let mut picker = WeightedRoundRobin::new();
        picker.pick(|_| true);
        picker.reset();
        assert_eq!(picker, WeightedRoundRobin::new());
    }
}
