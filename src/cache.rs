//! A bounded cache: least recently used entries leave first, once either bound is reached —
//! a number of entries or a number of bytes (each entry's weight as its owner measures it). A
//! bound of 0 entries turns the cache off: every lookup misses and nothing is kept. Hits and
//! misses are counted. What keeps each cache's entries true is said where it is used.
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use lru::LruCache;

pub struct Bounded<K: Hash + Eq, V: Clone> {
    inner: Mutex<Inner<K, V>>,
    max_entries: usize,
    max_bytes: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

struct Inner<K: Hash + Eq, V> {
    entries: LruCache<K, (V, usize)>,
    bytes: usize,
}

/// How a cache is doing, for `/metrics` and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub entries: usize,
    pub bytes: usize,
    pub hits: u64,
    pub misses: u64,
}

impl<K: Hash + Eq, V: Clone> Bounded<K, V> {
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                entries: LruCache::unbounded(),
                bytes: 0,
            }),
            max_entries,
            max_bytes,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn is_on(&self) -> bool {
        self.max_entries > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K, V>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, key: &K) -> Option<V> {
        let found = if self.is_on() {
            self.lock().entries.get(key).map(|(v, _)| v.clone())
        } else {
            None
        };
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Keeps `value` (weighing `bytes`), evicting the least recently used entries beyond the
    /// bounds. An entry heavier than the whole byte bound is not kept.
    pub fn insert(&self, key: K, value: V, bytes: usize) {
        self.insert_if(key, value, bytes, || true);
    }

    /// [`Self::insert`], if `still_true()` holds at the moment the entry goes in. It is asked
    /// under the cache's lock, which every removal takes too: a value read before a change is
    /// either refused here or removed by that change's removal, never kept after it (the change
    /// is announced where `still_true` looks before its entries are removed).
    pub fn insert_if(&self, key: K, value: V, bytes: usize, still_true: impl FnOnce() -> bool) {
        if !self.is_on() || bytes > self.max_bytes {
            self.remove(&key);
            return;
        }
        let mut inner = self.lock();
        if !still_true() {
            return;
        }
        if let Some((_, old)) = inner.entries.put(key, (value, bytes)) {
            inner.bytes -= old;
        }
        inner.bytes += bytes;
        while inner.entries.len() > self.max_entries || inner.bytes > self.max_bytes {
            match inner.entries.pop_lru() {
                Some((_, (_, weight))) => inner.bytes -= weight,
                None => break,
            }
        }
    }

    pub fn remove(&self, key: &K) {
        let mut inner = self.lock();
        if let Some((_, weight)) = inner.entries.pop(key) {
            inner.bytes -= weight;
        }
    }

    /// Drops every entry whose key `matches`.
    pub fn remove_where(&self, matches: impl Fn(&K) -> bool)
    where
        K: Clone,
    {
        let mut inner = self.lock();
        let doomed: Vec<K> = inner
            .entries
            .iter()
            .filter(|(key, _)| matches(key))
            .map(|(key, _)| key.clone())
            .collect();
        for key in doomed {
            if let Some((_, weight)) = inner.entries.pop(&key) {
                inner.bytes -= weight;
            }
        }
    }

    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.entries.clear();
        inner.bytes = 0;
    }

    pub fn stats(&self) -> CacheStats {
        let inner = self.lock();
        CacheStats {
            entries: inner.entries.len(),
            bytes: inner.bytes,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_leave_first_at_either_bound() {
        let cache = Bounded::new(3, 100);
        cache.insert("a", 1, 10);
        cache.insert("b", 2, 10);
        cache.insert("c", 3, 10);
        assert_eq!(cache.get(&"a"), Some(1));
        cache.insert("d", 4, 10);
        assert_eq!(cache.get(&"b"), None, "b was the least recently used");
        cache.insert("e", 5, 75);
        let stats = cache.stats();
        assert!(stats.bytes <= 100 && stats.entries <= 3, "{stats:?}");
        assert_eq!(cache.get(&"e"), Some(5));
        cache.insert("f", 6, 101);
        assert_eq!(
            cache.get(&"f"),
            None,
            "heavier than the whole bound: not kept"
        );
    }

    #[test]
    fn replacing_and_removing_keep_the_weight_true() {
        let cache = Bounded::new(10, 100);
        cache.insert(("db", 1), "x", 40);
        cache.insert(("db", 1), "y", 30);
        cache.insert(("other", 2), "z", 20);
        assert_eq!(cache.stats().bytes, 50);
        cache.remove_where(|(db, _)| *db == "db");
        assert_eq!(cache.stats().bytes, 20);
        assert_eq!(cache.get(&("db", 1)), None);
        cache.remove(&("other", 2));
        assert_eq!(cache.stats().bytes, 0);
    }

    #[test]
    fn zero_entries_is_off() {
        let cache = Bounded::new(0, 100);
        cache.insert(1, 1, 1);
        assert_eq!(cache.get(&1), None);
        let stats = cache.stats();
        assert_eq!((stats.entries, stats.hits, stats.misses), (0, 0, 1));
    }
}
