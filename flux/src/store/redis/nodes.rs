//! Which master of a Redis Cluster serves each hash slot, so that the breaker keeps one
//! circuit per master.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Instant;

/// Circuits a cluster's masters map to; more masters than this share circuits.
pub(crate) const NODE_CIRCUITS: usize = 256;

/// Which master serves each hash slot, as an index per master address: the breaker keeps one
/// circuit per master, so a lost master opens one circuit for all of its slots at once and
/// its clients stop waiting for it, while other masters' slots keep calling Redis. Learned
/// from `CLUSTER SLOTS` after connecting and again (at most once a second) after a failure,
/// so a failover moves the slots to the promoted replica's circuit.
pub(super) struct NodeMap {
    slots: Box<[AtomicU16]>,
    addresses: Mutex<HashMap<String, u16>>,
    /// When the map was last refreshed, in ms since `origin` (0: never).
    refreshed: AtomicU64,
    origin: Instant,
}

impl NodeMap {
    pub(super) fn new() -> NodeMap {
        NodeMap {
            slots: (0..crate::model::key::SLOTS)
                .map(|_| AtomicU16::new(0))
                .collect(),
            addresses: Mutex::new(HashMap::new()),
            refreshed: AtomicU64::new(0),
            origin: Instant::now(),
        }
    }

    /// Claims the right to refresh: never refreshed, or the last one over a second ago.
    pub(super) fn due(&self) -> bool {
        let now = self.origin.elapsed().as_millis() as u64 + 1_000;
        let last = self.refreshed.load(Ordering::Acquire);
        (last == 0 || now - last >= 1_000)
            && self
                .refreshed
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    /// Whether the map was ever read from the cluster.
    pub(super) fn is_known(&self) -> bool {
        self.refreshed.load(Ordering::Relaxed) != 0
    }

    /// The circuit of hash slot `slot`: an index per master.
    pub(super) fn circuit(&self, slot: usize) -> usize {
        self.slots
            .get(slot)
            .map_or(0, |n| usize::from(n.load(Ordering::Relaxed)))
    }

    /// The address (`host:port`) of the master of circuit `index`, if known.
    pub(super) fn address(&self, index: usize) -> Option<String> {
        let addresses = self
            .addresses
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        addresses
            .iter()
            .find(|(_, i)| usize::from(**i) == index)
            .map(|(address, _)| address.clone())
    }

    /// Takes in a `CLUSTER SLOTS` reply; returns the circuits that no slot maps to any more.
    pub(super) fn apply(&self, reply: &redis::Value) -> Vec<usize> {
        let redis::Value::Array(ranges) = reply else {
            return Vec::new();
        };
        let mut addresses = self
            .addresses
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for range in ranges {
            let redis::Value::Array(fields) = range else {
                continue;
            };
            let (Some(start), Some(end), Some(redis::Value::Array(master))) =
                (fields.first(), fields.get(1), fields.get(2))
            else {
                continue;
            };
            let (Ok(start), Ok(end)) = (
                redis::from_redis_value_ref::<usize>(start),
                redis::from_redis_value_ref::<usize>(end),
            ) else {
                continue;
            };
            let address = master
                .iter()
                .take(2)
                .filter_map(|v| redis::from_redis_value_ref::<String>(v).ok())
                .collect::<Vec<_>>()
                .join(":");
            let next = addresses.len();
            let index = *addresses
                .entry(address)
                .or_insert((next % NODE_CIRCUITS) as u16);
            for slot in self.slots.iter().take(end.saturating_add(1)).skip(start) {
                slot.store(index, Ordering::Relaxed);
            }
        }
        let mut owning = vec![false; NODE_CIRCUITS];
        for slot in self.slots.iter() {
            owning[usize::from(slot.load(Ordering::Relaxed)) % NODE_CIRCUITS] = true;
        }
        addresses
            .values()
            .map(|&i| usize::from(i))
            .filter(|&i| !owning[i])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_slots_map_each_slot_to_its_master() {
        use redis::Value::{Array, BulkString, Int};
        let master = |port: i64| {
            Array(vec![
                BulkString(b"127.0.0.1".to_vec()),
                Int(port),
                BulkString(b"id".to_vec()),
            ])
        };
        let reply = Array(vec![
            Array(vec![Int(0), Int(5460), master(7000), master(7003)]),
            Array(vec![Int(5461), Int(10922), master(7001)]),
            Array(vec![Int(10923), Int(16383), master(7002)]),
        ]);
        let map = NodeMap::new();
        assert!(map.apply(&reply).is_empty());
        let circuit = |slot: usize| map.slots[slot].load(Ordering::Relaxed);
        assert_eq!(circuit(0), circuit(5460));
        assert_ne!(circuit(5460), circuit(5461));
        assert_eq!(circuit(5461), circuit(10922));
        assert_ne!(circuit(10922), circuit(10923));
        assert_ne!(circuit(0), circuit(16383));
        // A failover moves slots to another master: the map follows.
        let orphans = map.apply(&Array(vec![Array(vec![Int(0), Int(5460), master(7003)])]));
        assert_eq!(
            orphans.len(),
            1,
            "the replaced master's circuit has no slot left"
        );
        assert_ne!(circuit(0), circuit(5461));
        assert_ne!(circuit(0), circuit(16383));
        assert_eq!(map.addresses.lock().map(|a| a.len()).unwrap_or(0), 4);
    }
}
