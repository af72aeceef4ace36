//! The router's result cache: an LRU of search results keyed by everything that determines a
//! result (vector bytes, limit, filter, ef, exact, payload/vector flags), bounded in entries
//! and age. Any write through the router empties it; a generation number keeps a search that
//! was already running when a write passed from storing its (possibly stale) result.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lru::LruCache;
use parking_lot::Mutex;

use vecshard_core::request::{ScoredPoint, SearchRequest};

/// Cache key bytes → (when stored, merged hits).
type Entries = LruCache<Vec<u8>, (Instant, Vec<ScoredPoint>)>;

pub struct ResultCache {
    entries: Option<Mutex<Entries>>,
    ttl: Duration,
    generation: AtomicU64,
}

/// The exact bytes a cached result depends on.
pub fn cache_key(r: &SearchRequest) -> Vec<u8> {
    let mut key = Vec::with_capacity(r.vector.len() * 4 + 64);
    for v in &r.vector {
        key.extend_from_slice(&v.to_le_bytes());
    }
    key.extend_from_slice(&(r.limit as u64).to_le_bytes());
    key.extend_from_slice(&(r.ef.map_or(0, |e| e as u64 + 1)).to_le_bytes());
    key.extend_from_slice(&[
        u8::from(r.exact),
        u8::from(r.with_payload),
        u8::from(r.with_vector),
    ]);
    if let Some(f) = &r.filter {
        key.extend_from_slice(f.to_json().to_string().as_bytes());
    }
    key
}

impl ResultCache {
    /// `capacity` 0 disables the cache.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        ResultCache {
            entries: NonZeroUsize::new(capacity).map(|c| Mutex::new(LruCache::new(c))),
            ttl,
            generation: AtomicU64::new(0),
        }
    }

    /// Whether results are cached at all (`--cache-entries` above 0).
    pub fn enabled(&self) -> bool {
        self.entries.is_some()
    }

    /// The generation to pass to `put` for a search starting now.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn get(&self, key: &[u8]) -> Option<Vec<ScoredPoint>> {
        let mut entries = self.entries.as_ref()?.lock();
        match entries.get(key) {
            Some((at, hits)) if at.elapsed() <= self.ttl => Some(hits.clone()),
            Some(_) => {
                entries.pop(key);
                None
            }
            None => None,
        }
    }

    /// Stores a result unless a write has passed since `generation` was read.
    pub fn put(&self, key: Vec<u8>, generation: u64, hits: Vec<ScoredPoint>) {
        if let Some(entries) = &self.entries {
            let mut entries = entries.lock();
            if self.generation.load(Ordering::Acquire) == generation {
                entries.put(key, (Instant::now(), hits));
            }
        }
    }

    /// Called for every write: drops every cached result.
    pub fn invalidate(&self) {
        if let Some(entries) = &self.entries {
            let mut entries = entries.lock();
            self.generation.fetch_add(1, Ordering::AcqRel);
            entries.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vecshard_core::model::PointId;

    fn request(x: f32) -> SearchRequest {
        SearchRequest {
            vector: vec![x, 1.0],
            limit: 3,
            filter: None,
            ef: None,
            exact: false,
            with_payload: false,
            with_vector: false,
        }
    }

    fn hits() -> Vec<ScoredPoint> {
        vec![ScoredPoint {
            id: PointId::Num(1),
            score: 0.5,
            version: 1,
            payload: None,
            vector: None,
        }]
    }

    #[test]
    fn hits_until_a_write_invalidates() {
        let cache = ResultCache::new(10, Duration::from_secs(60));
        let key = cache_key(&request(0.5));
        cache.put(key.clone(), cache.generation(), hits());
        assert_eq!(cache.get(&key), Some(hits()));
        assert_eq!(
            cache.get(&cache_key(&request(0.25))),
            None,
            "another vector is another key"
        );
        cache.invalidate();
        assert_eq!(cache.get(&key), None);
    }

    #[test]
    fn a_search_that_raced_a_write_does_not_store_its_result() {
        let cache = ResultCache::new(10, Duration::from_secs(60));
        let generation = cache.generation();
        cache.invalidate(); // a write passed while the search ran
        cache.put(cache_key(&request(0.5)), generation, hits());
        assert_eq!(cache.get(&cache_key(&request(0.5))), None);
    }

    #[test]
    fn entries_expire_and_capacity_is_bounded() {
        let cache = ResultCache::new(2, Duration::from_millis(0));
        cache.put(cache_key(&request(1.0)), 0, hits());
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(cache.get(&cache_key(&request(1.0))), None, "expired");
        let cache = ResultCache::new(2, Duration::from_secs(60));
        for x in [1.0, 2.0, 3.0] {
            cache.put(cache_key(&request(x)), 0, hits());
        }
        assert_eq!(
            cache.get(&cache_key(&request(1.0))),
            None,
            "least recently used is evicted"
        );
        assert!(cache.get(&cache_key(&request(3.0))).is_some());
        assert!(ResultCache::new(0, Duration::from_secs(1))
            .get(&[1])
            .is_none());
    }
}
