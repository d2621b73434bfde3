//! The server-side assignors of the consumer group protocol (KIP-848): they turn the members'
//! subscriptions and the subscribed topics' partition counts into a target assignment.
//!
//! Both are deterministic functions of their input (member ids, subscriptions, topic metadata and,
//! for `uniform`, the previous target), so a target never depends on arrival order or hashing.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::consumer::{Assignment, PartitionId, TopicId};

/// A server-side assignor, by the name clients pass in `group.remote.assignor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Assignor {
    /// Spreads every subscribed partition so member loads differ by at most one (when
    /// subscriptions allow), keeping each member's partitions of the previous target where it can.
    Uniform,
    /// Per topic, contiguous ranges of partitions to the subscribed members in member-id order
    /// (the first `partitions % members` get one more), so equally sized topics are
    /// co-partitioned.
    Range,
}

impl Assignor {
    /// Kafka's default: the first of `group.consumer.assignors` (uniform, range).
    pub const DEFAULT: Assignor = Assignor::Uniform;

    pub fn from_name(name: &str) -> Option<Assignor> {
        match name {
            "uniform" => Some(Assignor::Uniform),
            "range" => Some(Assignor::Range),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Assignor::Uniform => "uniform",
            Assignor::Range => "range",
        }
    }
}

/// What an assignor sees.
pub(crate) struct AssignmentSpec<'a> {
    /// The subscribed topics that exist: name → (id, partition count > 0).
    pub topics: &'a BTreeMap<String, (TopicId, i32)>,
    /// Every member's subscribed topic names, by member id.
    pub members: BTreeMap<&'a str, &'a BTreeSet<String>>,
    /// The previous target assignment, by member id (`uniform` keeps what it can of it).
    pub previous: &'a BTreeMap<String, Assignment>,
}

/// The target assignment: an entry (possibly empty) for every member, every partition of a
/// subscribed topic given to exactly one member subscribed to it.
pub(crate) fn assign(
    assignor: Assignor,
    spec: &AssignmentSpec<'_>,
) -> BTreeMap<String, Assignment> {
    let owned = match assignor {
        Assignor::Uniform => uniform(spec),
        Assignor::Range => range(spec),
    };
    spec.members
        .keys()
        .zip(owned)
        .map(|(member_id, partitions)| {
            let mut assignment = Assignment::new();
            for (topic_id, partition) in partitions {
                assignment.entry(topic_id).or_default().insert(partition);
            }
            ((*member_id).to_owned(), assignment)
        })
        .collect()
}

type TopicPartition = (TopicId, PartitionId);

/// Per member (in member-id order), the topic ids it subscribes to; topics that nobody
/// subscribes to, or whose id repeats an earlier name's, are left out.
fn subscriptions(spec: &AssignmentSpec<'_>) -> (Vec<HashSet<TopicId>>, Vec<(TopicId, i32)>) {
    let mut subscribed = vec![HashSet::new(); spec.members.len()];
    let mut topics = Vec::new();
    let mut seen = HashSet::new();
    for (name, &(topic_id, partition_count)) in spec.topics {
        let mut any = false;
        for (index, names) in spec.members.values().enumerate() {
            if names.contains(name) {
                subscribed[index].insert(topic_id);
                any = true;
            }
        }
        if any && partition_count > 0 && seen.insert(topic_id) {
            topics.push((topic_id, partition_count));
        }
    }
    (subscribed, topics)
}

/// Sticky and balanced: (1) every member keeps its previous partitions that still exist and
/// that it still subscribes to; (2) each unowned partition goes to the least-loaded subscribed
/// member; (3) while some member holds at least two more partitions than another member that
/// subscribes to one of them, the most-loaded gives its last such partition to the least-loaded.
/// Step 3 only moves partitions from a member with load L to one with load <= L - 2, so the sum
/// of squared loads falls with every move and the loop ends; with equal subscriptions it ends
/// with loads differing by at most one after at most `partitions` moves. With different
/// subscriptions it is a good, not always optimal, balance.
fn uniform(spec: &AssignmentSpec<'_>) -> Vec<BTreeSet<TopicPartition>> {
    let (subscribed, topics) = subscriptions(spec);
    let counts: BTreeMap<TopicId, i32> = topics.iter().copied().collect();
    let mut owned: Vec<BTreeSet<TopicPartition>> = vec![BTreeSet::new(); spec.members.len()];
    let mut taken: HashSet<TopicPartition> = HashSet::new();

    // 1. Stickiness.
    for (index, member_id) in spec.members.keys().enumerate() {
        let Some(previous) = spec.previous.get(*member_id) else {
            continue;
        };
        for (topic_id, partitions) in previous {
            let Some(&count) = counts.get(topic_id) else {
                continue;
            };
            if !subscribed[index].contains(topic_id) {
                continue;
            }
            for &partition in partitions {
                if (0..count).contains(&partition) && taken.insert((*topic_id, partition)) {
                    owned[index].insert((*topic_id, partition));
                }
            }
        }
    }

    // 2. Unowned partitions, in topic-name then partition order, to the least loaded.
    for &(topic_id, count) in &topics {
        for partition in 0..count {
            if taken.contains(&(topic_id, partition)) {
                continue;
            }
            let least_loaded = (0..owned.len())
                .filter(|&index| subscribed[index].contains(&topic_id))
                .min_by_key(|&index| (owned[index].len(), index));
            if let Some(index) = least_loaded {
                owned[index].insert((topic_id, partition));
                taken.insert((topic_id, partition));
            }
        }
    }

    // 3. Balance.
    loop {
        let mut by_load_desc: Vec<usize> = (0..owned.len()).collect();
        by_load_desc.sort_by_key(|&index| (Reverse(owned[index].len()), index));
        let mut by_load_asc = by_load_desc.clone();
        by_load_asc.sort_by_key(|&index| (owned[index].len(), index));
        let mut moved = None;
        'search: for &from in &by_load_desc {
            for &to in &by_load_asc {
                if owned[to].len() + 1 >= owned[from].len() {
                    break;
                }
                let movable = owned[from]
                    .iter()
                    .rev()
                    .find(|(topic_id, _)| subscribed[to].contains(topic_id));
                if let Some(&partition) = movable {
                    moved = Some((from, to, partition));
                    break 'search;
                }
            }
        }
        let Some((from, to, partition)) = moved else {
            break;
        };
        owned[from].remove(&partition);
        owned[to].insert(partition);
    }
    owned
}

/// Kafka's range assignment, per topic, over the members subscribed to it in member-id order.
fn range(spec: &AssignmentSpec<'_>) -> Vec<BTreeSet<TopicPartition>> {
    let (subscribed, topics) = subscriptions(spec);
    let mut owned: Vec<BTreeSet<TopicPartition>> = vec![BTreeSet::new(); spec.members.len()];
    for (topic_id, count) in topics {
        let members: Vec<usize> = (0..owned.len())
            .filter(|&index| subscribed[index].contains(&topic_id))
            .collect();
        let Ok(member_count) = i32::try_from(members.len()) else {
            continue;
        };
        if member_count == 0 {
            continue;
        }
        let (base, extra) = (count / member_count, count % member_count);
        let mut start = 0;
        for (rank, index) in (0..member_count).zip(members) {
            let length = base + i32::from(rank < extra);
            owned[index].extend((start..start + length).map(|partition| (topic_id, partition)));
            start += length;
        }
    }
    owned
}
