//! Where shard replicas go: a pure function from the cluster's members and
//! each shard's replicas now to the replicas and leader each shard should
//! have. Moves are few: replicas stay where they are while that keeps the
//! spread even, so a join or a leave moves only what it must.

use std::collections::{BTreeMap, BTreeSet};

use crate::state::ShardTarget;

use super::types::NodeId;

/// Replicas of each shard when the cluster does not choose: three, or
/// every node of a smaller cluster.
pub const DEFAULT_REPLICATION_FACTOR: usize = 3;

/// Replicas per shard for a cluster of `nodes`: the configured factor (or
/// the default), never more than there are nodes.
pub fn replication_factor(configured: Option<usize>, nodes: usize) -> usize {
    configured.unwrap_or(DEFAULT_REPLICATION_FACTOR).min(nodes).max(1)
}

/// The target of every shard in `current` (shard id → replicas now; a new
/// shard has none) over `members`, with `factor` replicas each. `leading`
/// holds each shard's preferred leader now: kept where evenness allows,
/// since every move of a leadership pauses the shard's writes.
pub fn place(
    members: &BTreeSet<NodeId>,
    factor: usize,
    current: &BTreeMap<u32, BTreeSet<NodeId>>,
    leading: &BTreeMap<u32, NodeId>,
) -> BTreeMap<u32, ShardTarget> {
    if members.is_empty() {
        return BTreeMap::new();
    }
    let factor = factor.clamp(1, members.len());
    let mut sets: BTreeMap<u32, BTreeSet<NodeId>> = current
        .iter()
        .map(|(shard, replicas)| (*shard, replicas.intersection(members).copied().collect()))
        .collect();
    let mut load = Load::new(members, &sets);
    for set in sets.values_mut() {
        while set.len() > factor {
            let busiest = load.busiest(set.iter().copied());
            set.remove(&busiest);
            load.take(busiest);
        }
        while set.len() < factor {
            let idlest = load.idlest(members.iter().copied().filter(|n| !set.contains(n)));
            set.insert(idlest);
            load.give(idlest);
        }
    }
    even_out(members, &mut sets, &mut load, leading);
    leaders(members, sets, leading)
}

/// Replicas held per member.
struct Load(BTreeMap<NodeId, usize>);

impl Load {
    fn new(members: &BTreeSet<NodeId>, sets: &BTreeMap<u32, BTreeSet<NodeId>>) -> Self {
        let mut load: BTreeMap<NodeId, usize> = members.iter().map(|n| (*n, 0)).collect();
        for node in sets.values().flatten() {
            *load.get_mut(node).expect("sets hold members only") += 1;
        }
        Self(load)
    }

    fn of(&self, node: NodeId) -> usize {
        self.0[&node]
    }

    /// The candidate holding the most replicas; the highest id on a tie.
    fn busiest(&self, candidates: impl Iterator<Item = NodeId>) -> NodeId {
        candidates
            .max_by_key(|n| (self.of(*n), *n))
            .expect("a set over the factor is not empty")
    }

    /// The candidate holding the fewest replicas; the lowest id on a tie.
    fn idlest(&self, candidates: impl Iterator<Item = NodeId>) -> NodeId {
        candidates
            .min_by_key(|n| (self.of(*n), *n))
            .expect("the factor is at most the number of members")
    }

    fn give(&mut self, node: NodeId) {
        *self.0.get_mut(&node).expect("a member") += 1;
    }

    fn take(&mut self, node: NodeId) {
        *self.0.get_mut(&node).expect("a member") -= 1;
    }
}

/// Moves replicas from the busiest member to the idlest until no two
/// members differ by more than one replica. Each move narrows the gap, so
/// it ends within one move per replica.
fn even_out(
    members: &BTreeSet<NodeId>,
    sets: &mut BTreeMap<u32, BTreeSet<NodeId>>,
    load: &mut Load,
    leading: &BTreeMap<u32, NodeId>,
) {
    let moves_at_most: usize = sets.values().map(BTreeSet::len).sum();
    for _ in 0..moves_at_most {
        let busiest = load.busiest(members.iter().copied());
        let idlest = load.idlest(members.iter().copied());
        if load.of(busiest) <= load.of(idlest) + 1 {
            return;
        }
        let movable = |set: &BTreeSet<NodeId>| set.contains(&busiest) && !set.contains(&idlest);
        // A replica that does not lead its shard moves first: moving a
        // leader moves the leadership too.
        let chosen = sets
            .iter()
            .find(|(shard, set)| movable(set) && leading.get(*shard) != Some(&busiest))
            .or_else(|| sets.iter().find(|(_, set)| movable(set)))
            .map(|(shard, _)| *shard);
        let Some(shard) = chosen else { return };
        let set = sets.get_mut(&shard).expect("chosen among the sets");
        set.remove(&busiest);
        set.insert(idlest);
        load.take(busiest);
        load.give(idlest);
    }
}

/// Gives each shard a leader among its replicas so that no node leads two
/// shards more than another could: first each shard keeps the leader it
/// has while that leader leads no more than its fair share; then every
/// other shard, in order, gets the replica leading the fewest so far (the
/// lowest id on a tie); then leaderships move along chains of shards from
/// a node that leads too many to one that leads too few.
fn leaders(
    members: &BTreeSet<NodeId>,
    sets: BTreeMap<u32, BTreeSet<NodeId>>,
    leading: &BTreeMap<u32, NodeId>,
) -> BTreeMap<u32, ShardTarget> {
    let fair_share = sets.len().div_ceil(members.len());
    let mut leads: BTreeMap<NodeId, usize> = members.iter().map(|n| (*n, 0)).collect();
    let mut leader: BTreeMap<u32, NodeId> = BTreeMap::new();
    for (shard, replicas) in &sets {
        if let Some(now) = leading.get(shard).filter(|n| replicas.contains(n))
            && leads[now] < fair_share
        {
            *leads.get_mut(now).expect("a member") += 1;
            leader.insert(*shard, *now);
        }
    }
    let unled: Vec<u32> = sets.keys().filter(|s| !leader.contains_key(s)).copied().collect();
    for shard in unled {
        let replicas = &sets[&shard];
        let chosen = *replicas
            .iter()
            .min_by_key(|n| (leads[*n], **n))
            .expect("every shard has a replica");
        *leads.get_mut(&chosen).expect("a member") += 1;
        leader.insert(shard, chosen);
    }
    // Each move lowers the sum of squared leads, so this ends; the bound
    // only makes that plain.
    for _ in 0..sets.len() * members.len() {
        let Some(moves) = members
            .iter()
            .find_map(|from| relief(*from, &sets, &leader, &leads))
        else {
            break;
        };
        for (shard, to) in moves {
            let from = leader.insert(shard, to).expect("every shard has a leader");
            *leads.get_mut(&from).expect("a member") -= 1;
            *leads.get_mut(&to).expect("a member") += 1;
        }
    }
    sets.into_iter()
        .map(|(shard, replicas)| {
            let leader = leader[&shard];
            (shard, ShardTarget { replicas, leader })
        })
        .collect()
}
/// A chain of leadership moves that takes one leadership off `from` and
/// gives one to a node leading at least two fewer: `from` hands a shard to
/// one of its replicas, which hands one of its own on, and so on (a
/// breadth-first search over "leads a shard that also lives on"). `None`
/// when no such node can be reached.
fn relief(
    from: NodeId,
    sets: &BTreeMap<u32, BTreeSet<NodeId>>,
    leader: &BTreeMap<u32, NodeId>,
    leads: &BTreeMap<NodeId, usize>,
) -> Option<Vec<(u32, NodeId)>> {
    let mut reached: BTreeMap<NodeId, Option<(NodeId, u32)>> = BTreeMap::from([(from, None)]);
    let mut queue = std::collections::VecDeque::from([from]);
    while let Some(node) = queue.pop_front() {
        for (shard, _) in leader.iter().filter(|(_, l)| **l == node) {
            for next in &sets[shard] {
                if reached.contains_key(next) {
                    continue;
                }
                reached.insert(*next, Some((node, *shard)));
                if leads[next] + 1 < leads[&from] {
                    return Some(chain(*next, &reached));
                }
                queue.push_back(*next);
            }
        }
    }
    None
}

/// The moves that lead back from `end` to the search's start.
fn chain(end: NodeId, reached: &BTreeMap<NodeId, Option<(NodeId, u32)>>) -> Vec<(u32, NodeId)> {
    let mut moves = Vec::new();
    let mut node = end;
    while let Some(Some((previous, shard))) = reached.get(&node) {
        moves.push((*shard, node));
        node = *previous;
    }
    moves
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Places with no leaders to keep.
    fn place(
        members: &BTreeSet<NodeId>,
        factor: usize,
        current: &BTreeMap<u32, BTreeSet<NodeId>>,
    ) -> BTreeMap<u32, ShardTarget> {
        super::place(members, factor, current, &BTreeMap::new())
    }

    fn leading(targets: &BTreeMap<u32, ShardTarget>) -> BTreeMap<u32, NodeId> {
        targets.iter().map(|(s, t)| (*s, t.leader)).collect()
    }

    fn nodes(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    fn fresh(shards: u32) -> BTreeMap<u32, BTreeSet<NodeId>> {
        (1..=shards).map(|s| (s, BTreeSet::new())).collect()
    }

    fn current(targets: &BTreeMap<u32, ShardTarget>) -> BTreeMap<u32, BTreeSet<NodeId>> {
        targets.iter().map(|(s, t)| (*s, t.replicas.clone())).collect()
    }

    /// Replicas and leaderships per member.
    fn spread(targets: &BTreeMap<u32, ShardTarget>, members: &BTreeSet<NodeId>) -> (Vec<usize>, Vec<usize>) {
        let count = |f: &dyn Fn(&ShardTarget, NodeId) -> bool| {
            members
                .iter()
                .map(|n| targets.values().filter(|t| f(t, *n)).count())
                .collect::<Vec<_>>()
        };
        (
            count(&|t, n| t.replicas.contains(&n)),
            count(&|t, n| t.leader == n),
        )
    }

    fn assert_even(counts: &[usize], what: &str) {
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(max - min <= 1, "{what} spread unevenly: {counts:?}");
    }

    fn assert_valid(targets: &BTreeMap<u32, ShardTarget>, members: &BTreeSet<NodeId>, factor: usize) {
        for (shard, target) in targets {
            assert_eq!(target.replicas.len(), factor, "shard {shard}");
            assert!(
                target.replicas.is_subset(members),
                "shard {shard} on members only"
            );
            assert!(
                target.replicas.contains(&target.leader),
                "shard {shard} led by a replica"
            );
        }
        let (replicas, leaders) = spread(targets, members);
        assert_even(&replicas, "replicas");
        assert_even(&leaders, "leaderships");
    }

    #[test]
    fn the_factor_is_three_or_every_node_of_a_smaller_cluster() {
        assert_eq!(replication_factor(None, 1), 1);
        assert_eq!(replication_factor(None, 2), 2);
        assert_eq!(replication_factor(None, 5), 3);
        assert_eq!(replication_factor(Some(5), 3), 3);
        assert_eq!(replication_factor(Some(1), 5), 1);
        assert_eq!(replication_factor(Some(0), 5), 1);
    }

    #[test]
    fn a_new_cluster_spreads_replicas_and_leaders_evenly() {
        for (count, shards) in [(1, 8), (3, 8), (5, 8), (4, 3), (7, 256)] {
            let members: BTreeSet<NodeId> = (1..=count).collect();
            let factor = replication_factor(None, members.len());
            let targets = place(&members, factor, &fresh(shards));
            assert_eq!(targets.len(), shards as usize);
            assert_valid(&targets, &members, factor);
        }
    }

    #[test]
    fn growing_from_one_to_three_nodes_raises_every_shard_to_three_replicas() {
        let one = place(&nodes(&[1]), replication_factor(None, 1), &fresh(8));
        assert!(one.values().all(|t| t.replicas == nodes(&[1]) && t.leader == 1));
        let members = nodes(&[1, 2, 3]);
        let three = place(&members, replication_factor(None, 3), &current(&one));
        assert_valid(&three, &members, 3);
        assert!(three.values().all(|t| t.replicas == members));
    }

    #[test]
    fn a_joining_node_takes_a_fair_share_and_little_else_moves() {
        let before_members = nodes(&[1, 2, 3]);
        let before = place(&before_members, 3, &fresh(8));
        let members = nodes(&[1, 2, 3, 4]);
        let after = place(&members, 3, &current(&before));
        assert_valid(&after, &members, 3);
        let moved: usize = after
            .iter()
            .map(|(s, t)| t.replicas.difference(&before[s].replicas).count())
            .sum();
        // 24 replicas over 4 nodes: the new node takes 6, nothing else moves.
        assert_eq!(moved, 6);
    }

    #[test]
    fn a_join_moves_only_the_leaderships_the_new_node_takes() {
        let before = place(&nodes(&[1, 2, 3]), 3, &fresh(8));
        let members = nodes(&[1, 2, 3, 4]);
        let after = super::place(&members, 3, &current(&before), &leading(&before));
        assert_valid(&after, &members, 3);
        let moved: Vec<u32> = after
            .iter()
            .filter(|(s, t)| t.leader != before[*s].leader)
            .map(|(s, _)| *s)
            .collect();
        assert!(
            moved.iter().all(|s| after[s].leader == 4),
            "only to the new node: {moved:?}"
        );
        assert_eq!(moved.len(), 2, "8 leaderships over 4 nodes: the new node takes 2");
    }

    #[test]
    fn a_leaving_node_hands_its_replicas_to_the_others() {
        let before = place(&nodes(&[1, 2, 3, 4, 5]), 3, &fresh(8));
        let members = nodes(&[1, 2, 3, 5]);
        let after = place(&members, 3, &current(&before));
        assert_valid(&after, &members, 3);
        assert!(after.values().all(|t| !t.replicas.contains(&4) && t.leader != 4));
        for (shard, target) in &after {
            let kept: BTreeSet<_> = before[shard]
                .replicas
                .iter()
                .filter(|n| **n != 4)
                .copied()
                .collect();
            assert!(
                kept.is_subset(&target.replicas),
                "shard {shard} keeps the replicas it had"
            );
        }
    }

    #[test]
    fn placing_is_stable_and_shrinks_an_oversized_shard() {
        let members = nodes(&[1, 2, 3, 4, 5]);
        let once = place(&members, 3, &fresh(16));
        assert_eq!(
            place(&members, 3, &current(&once)),
            once,
            "a placed cluster stays put"
        );
        let mut oversized = current(&once);
        oversized.insert(1, members.clone());
        let trimmed = place(&members, 3, &oversized);
        assert_valid(&trimmed, &members, 3);
        assert!(trimmed[&1].replicas.is_subset(&members));
        assert!(place(&BTreeSet::new(), 3, &fresh(2)).is_empty());
    }

    #[test]
    fn seeded_sequences_of_joins_and_leaves_keep_every_shard_placed_evenly() {
        let mut seed: u64 = 0x5eed_1234_abcd_0001;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _round in 0..50 {
            let mut members: BTreeSet<NodeId> = (1..=3).collect();
            let mut shards = fresh(1 + (next() % 12) as u32);
            let mut leaders_now = BTreeMap::new();
            let mut next_id = 4;
            for _step in 0..20 {
                if members.len() > 1 && next() % 2 == 0 {
                    let gone = *members
                        .iter()
                        .nth((next() % members.len() as u64) as usize)
                        .unwrap();
                    members.remove(&gone);
                } else {
                    members.insert(next_id);
                    next_id += 1;
                }
                let factor = replication_factor(None, members.len());
                let targets = super::place(&members, factor, &shards, &leaders_now);
                assert_valid(&targets, &members, factor);
                shards = current(&targets);
                leaders_now = leading(&targets);
            }
        }
    }
}
