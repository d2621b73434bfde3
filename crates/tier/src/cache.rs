//! Cold reads: objects fetched from the store, re-encoded as record batches once, and kept in a
//! cache bounded in bytes (least recently used out). Concurrent readers of one object share
//! one load.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::OnceCell;

use crate::convert::{ColdBatches, parquet_to_batches};
use crate::manifest::ObjectEntry;
use crate::store::{StoreError, TierStore};

#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadError {
    #[error("cold object {key} cannot be read: {reason}")]
    Unavailable { key: String, reason: String },
    #[error("cold object {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
}

struct Cached {
    batches: Arc<ColdBatches>,
    last_used: u64,
}

#[derive(Default)]
struct Entries {
    cached: HashMap<String, Cached>,
    bytes: usize,
}

type Loading = Arc<OnceCell<Result<Arc<ColdBatches>, ReadError>>>;

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Cold reads served from the cache.
    pub hits: AtomicU64,
    /// Objects loaded from the store (a read's miss or a prefetch).
    pub misses: AtomicU64,
    pub fetched_bytes: AtomicU64,
    pub errors: AtomicU64,
}

pub struct ColdCache {
    store: TierStore,
    max_bytes: usize,
    entries: Mutex<Entries>,
    loading: Mutex<HashMap<String, Loading>>,
    clock: AtomicU64,
    pub stats: CacheStats,
}

impl ColdCache {
    pub fn new(store: TierStore, max_bytes: usize) -> ColdCache {
        ColdCache {
            store,
            max_bytes,
            entries: Mutex::new(Entries::default()),
            loading: Mutex::new(HashMap::new()),
            clock: AtomicU64::new(0),
            stats: CacheStats::default(),
        }
    }

    pub fn store(&self) -> &TierStore {
        &self.store
    }

    /// The object's batches if they are cached.
    pub fn get(&self, key: &str) -> Option<Arc<ColdBatches>> {
        let tick = self.clock.fetch_add(1, Ordering::Relaxed);
        let mut entries = self.entries.lock();
        let found = entries.cached.get_mut(key).map(|cached| {
            cached.last_used = tick;
            Arc::clone(&cached.batches)
        });
        if found.is_some() {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    /// Fetches and re-encodes `entry` unless it is cached; one load per object at a time.
    /// The result is checked against the manifest entry: an object whose offsets disagree is
    /// corrupt, and is never served.
    pub async fn load(&self, entry: &ObjectEntry) -> Result<Arc<ColdBatches>, ReadError> {
        if let Some(batches) = self.peek(&entry.key) {
            return Ok(batches);
        }
        let cell = Arc::clone(
            self.loading
                .lock()
                .entry(entry.key.clone())
                .or_insert_with(|| Arc::new(OnceCell::new())),
        );
        let result = cell
            .get_or_init(|| async {
                let result = self.fetch(entry).await;
                match &result {
                    Ok(batches) => self.insert(&entry.key, Arc::clone(batches)),
                    Err(error) => {
                        self.stats.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(%error, "cold read failed");
                    }
                }
                result
            })
            .await
            .clone();
        let mut loading = self.loading.lock();
        if loading
            .get(&entry.key)
            .is_some_and(|current| Arc::ptr_eq(current, &cell))
        {
            loading.remove(&entry.key);
        }
        result
    }

    fn peek(&self, key: &str) -> Option<Arc<ColdBatches>> {
        self.entries
            .lock()
            .cached
            .get(key)
            .map(|cached| Arc::clone(&cached.batches))
    }

    async fn fetch(&self, entry: &ObjectEntry) -> Result<Arc<ColdBatches>, ReadError> {
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        let key = entry.key.clone();
        let bytes: Bytes = self.store.get(&key).await.map_err(|error| match error {
            StoreError::NotFound { .. } => ReadError::Corrupt {
                key: key.clone(),
                reason: "the manifest names it but the store does not have it".into(),
            },
            other => ReadError::Unavailable {
                key: key.clone(),
                reason: other.to_string(),
            },
        })?;
        self.stats
            .fetched_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let decoded = tokio::task::spawn_blocking(move || parquet_to_batches(bytes))
            .await
            .map_err(|error| ReadError::Unavailable {
                key: key.clone(),
                reason: error.to_string(),
            })?
            .map_err(|error| ReadError::Corrupt {
                key: key.clone(),
                reason: error.to_string(),
            })?;
        if decoded.base_offset() != entry.base_offset()
            || decoded.next_offset() != entry.next_offset()
        {
            return Err(ReadError::Corrupt {
                key,
                reason: format!(
                    "it holds offsets {}..{} but the manifest says {}..{}",
                    decoded.base_offset(),
                    decoded.next_offset(),
                    entry.base_offset(),
                    entry.next_offset()
                ),
            });
        }
        Ok(Arc::new(decoded))
    }

    fn insert(&self, key: &str, batches: Arc<ColdBatches>) {
        let tick = self.clock.fetch_add(1, Ordering::Relaxed);
        let size = batches.size_bytes();
        let mut entries = self.entries.lock();
        if let Some(previous) = entries.cached.insert(
            key.to_string(),
            Cached {
                batches,
                last_used: tick,
            },
        ) {
            entries.bytes -= previous.batches.size_bytes();
        }
        entries.bytes += size;
        // Least recently used out, but never the object just loaded.
        while entries.bytes > self.max_bytes && entries.cached.len() > 1 {
            let oldest = entries
                .cached
                .iter()
                .filter(|(cached_key, _)| cached_key.as_str() != key)
                .min_by_key(|(_, cached)| cached.last_used)
                .map(|(cached_key, _)| cached_key.clone());
            let Some(oldest) = oldest else { break };
            if let Some(evicted) = entries.cached.remove(&oldest) {
                entries.bytes -= evicted.batches.size_bytes();
            }
        }
    }

    /// Moves a cached object to a new name (a rewrite: the same batches in a new object).
    pub fn rename(&self, from: &str, to: &str) {
        let mut entries = self.entries.lock();
        if let Some(cached) = entries.cached.remove(from)
            && let Some(previous) = entries.cached.insert(to.to_string(), cached)
        {
            entries.bytes -= previous.batches.size_bytes();
        }
    }

    /// Drops a deleted object from the cache.
    pub fn forget(&self, key: &str) {
        let mut entries = self.entries.lock();
        if let Some(evicted) = entries.cached.remove(key) {
            entries.bytes -= evicted.batches.size_bytes();
        }
    }

    pub fn cached_bytes(&self) -> usize {
        self.entries.lock().bytes
    }
}
