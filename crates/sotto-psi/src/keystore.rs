//! Distinct keys stored back to back in one buffer (with their end offsets),
//! and the de-duplicating index used while reading them: about 8 bytes of
//! overhead per key instead of two heap allocations, which is what lets a
//! party hold 10^7 keys in a few hundred MiB.

use std::hash::BuildHasher;

use hashbrown::HashTable;

/// Keys in insertion order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyStore {
    bytes: Vec<u8>,
    ends: Vec<u64>,
}

impl KeyStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store of `keys`, in order (not de-duplicated).
    pub fn from_keys<K: AsRef<[u8]>>(keys: impl IntoIterator<Item = K>) -> Self {
        let mut store = Self::new();
        for k in keys {
            store.push(k.as_ref());
        }
        store
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Key `i`; empty when out of range.
    pub fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 {
            0
        } else {
            self.ends.get(i - 1).copied().unwrap_or(0)
        };
        let end = self.ends.get(i).copied().unwrap_or(start);
        &self.bytes[start as usize..end as usize]
    }

    /// Every key, in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    /// Appends a key; returns its index.
    pub fn push(&mut self, key: &[u8]) -> usize {
        self.bytes.extend_from_slice(key);
        self.ends.push(self.bytes.len() as u64);
        self.ends.len() - 1
    }

    /// Releases spare capacity once the store is complete.
    pub fn shrink_to_fit(&mut self) {
        self.bytes.shrink_to_fit();
        self.ends.shrink_to_fit();
    }
}

/// Adds keys to a [`KeyStore`] once each.
pub struct Deduplicator {
    store: KeyStore,
    index: HashTable<u32>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for Deduplicator {
    fn default() -> Self {
        Self {
            store: KeyStore::new(),
            index: HashTable::new(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }
}

impl Deduplicator {
    /// An empty de-duplicator.
    pub fn new() -> Self {
        Self::default()
    }

    /// The index of `key`, and whether it was new. `None` past 2^32 keys.
    pub fn insert(&mut self, key: &[u8]) -> Option<(u32, bool)> {
        let hash = self.hasher.hash_one(key);
        let store = &self.store;
        if let Some(&i) = self.index.find(hash, |&i| store.get(i as usize) == key) {
            return Some((i, false));
        }
        let i = u32::try_from(self.store.len()).ok()?;
        self.store.push(key);
        let (store, hasher) = (&self.store, &self.hasher);
        self.index
            .insert_unique(hash, i, |&j| hasher.hash_one(store.get(j as usize)));
        Some((i, true))
    }

    /// The distinct keys, in order of first insertion.
    pub fn finish(self) -> KeyStore {
        let mut store = self.store;
        store.shrink_to_fit();
        store
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_back_in_order_and_once() {
        let mut d = Deduplicator::new();
        assert_eq!(d.insert(b"a"), Some((0, true)));
        assert_eq!(d.insert(b""), Some((1, true)));
        assert_eq!(d.insert(b"bc"), Some((2, true)));
        assert_eq!(d.insert(b"a"), Some((0, false)));
        assert_eq!(d.insert(b"bc"), Some((2, false)));
        let store = d.finish();
        assert_eq!(store.len(), 3);
        assert_eq!(
            store.iter().collect::<Vec<_>>(),
            vec![&b"a"[..], b"", b"bc"]
        );
        assert_eq!(store.get(7), b"");
        assert_eq!(KeyStore::from_keys([b"a", b"a"]).len(), 2);
    }
}
