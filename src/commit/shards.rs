//! A hash map cut into shards, for the key index's millions of keys.
//!
//! A hash table that grows holds its old and its new slots at once while it moves its
//! entries: half again its size, at the moment it is largest. Of many shards only one grows
//! at a time, so the index grows without that spike (about 70 MiB at 4 million keys).

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};

use hashbrown::HashTable;

/// 2^6 shards: the spike is a 64th of the map's size, and an empty map costs 64 empty tables.
const SHARD_BITS: u32 = 6;

/// Spreads a hash whose top bits are fixed (they chose the shard) over all 64 bits: the table
/// takes a slot from the low bits and a tag from the top ones. An odd multiplier keeps the low
/// bits as varied as they were and mixes every bit into the top ones.
const SPREAD: u64 = 0x9E37_79B9_7F4A_7C15;

pub struct Shards<K, V> {
    hasher: foldhash::fast::RandomState,
    shards: Box<[HashTable<(K, V)>]>,
}

impl<K: Hash + Eq, V: Copy> Default for Shards<K, V> {
    fn default() -> Self {
        Shards {
            hasher: foldhash::fast::RandomState::default(),
            shards: (0..1 << SHARD_BITS).map(|_| HashTable::new()).collect(),
        }
    }
}

impl<K: Hash + Eq, V: Copy> Shards<K, V> {
    /// The key's shard, and its hash within the shard.
    fn place<Q: Hash + ?Sized>(&self, key: &Q) -> (usize, u64) {
        let hash = self.hasher.hash_one(key);
        (
            (hash >> (64 - SHARD_BITS)) as usize,
            hash.wrapping_mul(SPREAD),
        )
    }

    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (shard, hash) = self.place(key);
        self.shards[shard]
            .find(hash, |(k, _)| k.borrow() == key)
            .map(|(_, v)| *v)
    }

    /// Adds a key the map does not hold (the caller has looked it up).
    pub fn insert_new(&mut self, key: K, value: V) {
        let (shard, hash) = self.place(&key);
        let hasher = &self.hasher;
        self.shards[shard].insert_unique(hash, (key, value), |(k, _)| {
            hasher.hash_one(k).wrapping_mul(SPREAD)
        });
    }

    /// Removes a key; returns the key as the map held it.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<K>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (shard, hash) = self.place(key);
        let entry = self.shards[shard]
            .find_entry(hash, |(k, _)| k.borrow() == key)
            .ok()?;
        Some(entry.remove().0.0)
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(HashTable::len).sum()
    }

    /// Entries the shards hold room for without growing.
    pub fn capacity(&self) -> usize {
        self.shards.iter().map(HashTable::capacity).sum()
    }

    /// Removes every entry, keeping the room.
    pub fn clear(&mut self) {
        self.shards.iter_mut().for_each(HashTable::clear);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;
    use smallvec::SmallVec;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u16, u32),
        Remove(u16),
        Clear,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (0u16..512, any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            4 => (0u16..512).prop_map(Op::Remove),
            1 => Just(Op::Clear),
        ]
    }

    /// A key as the index holds keys that are not one integer: bytes, some longer than the
    /// inline 16, looked up as a slice.
    fn bytes(k: u16) -> SmallVec<[u8; 16]> {
        let mut key = SmallVec::from_slice(&k.to_be_bytes());
        key.extend(std::iter::repeat_n(b'x', usize::from(k % 40)));
        key
    }

    proptest! {
        /// Both key forms behave as std's map under any sequence of inserts, removes and
        /// clears.
        #[test]
        fn shards_hold_what_a_map_holds(ops in prop::collection::vec(op(), 0..2_000)) {
            let mut longs: Shards<i64, u32> = Shards::default();
            let mut byte_keys: Shards<SmallVec<[u8; 16]>, u32> = Shards::default();
            let mut model: HashMap<u16, u32> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        if model.contains_key(&k) {
                            continue;
                        }
                        model.insert(k, v);
                        longs.insert_new(i64::from(k), v);
                        byte_keys.insert_new(bytes(k), v);
                    }
                    Op::Remove(k) => {
                        let held = model.remove(&k).is_some();
                        prop_assert_eq!(longs.remove(&i64::from(k)), held.then_some(i64::from(k)));
                        prop_assert_eq!(byte_keys.remove(bytes(k).as_slice()), held.then(|| bytes(k)));
                    }
                    Op::Clear => {
                        model.clear();
                        longs.clear();
                        byte_keys.clear();
                    }
                }
                prop_assert_eq!(longs.len(), model.len());
                prop_assert_eq!(byte_keys.len(), model.len());
            }
            for k in 0..512 {
                prop_assert_eq!(longs.get(&i64::from(k)), model.get(&k).copied());
                prop_assert_eq!(byte_keys.get(bytes(k).as_slice()), model.get(&k).copied());
            }
            prop_assert!(longs.capacity() >= longs.len());
        }
    }

    /// Sequential keys, the common primary key, spread over every shard: no shard holds more
    /// than twice its share.
    #[test]
    fn sequential_keys_spread_over_the_shards() {
        let mut map: Shards<i64, ()> = Shards::default();
        let n = 1 << 16;
        for k in 0..n {
            map.insert_new(k, ());
        }
        let share = n as usize >> SHARD_BITS;
        for (i, shard) in map.shards.iter().enumerate() {
            assert!(
                shard.len() < 2 * share && shard.len() > share / 2,
                "shard {i} holds {} of {n} keys",
                shard.len()
            );
        }
    }
}
