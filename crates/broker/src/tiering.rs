//! The broker's side of the cold tier: when sealed segments are uploaded, when local segments
//! and remote objects are deleted, and how a fetch below the local log start is served.
//!
//! A tokio task visits every partition each `interval`: it loads the partition's manifest (once),
//! uploads the sealed segments above the manifest's end (in objects of at most
//! `object_bytes` of log), then deletes the local segments that are both uploaded and outside
//! the hot window (`local.retention.*`), and the remote objects outside `retention.*`. A
//! segment is never deleted locally before the manifest naming its last offset is written.
//!
//! Rewrites: when a topic declares a `value.schema`, objects that lack its typed columns (older
//! than the schema, or uploaded under another one) are rewritten to gain them, at low priority:
//! at most one object per pass, and only in a partition with no segment waiting for upload. The
//! new object replaces the old one in a new manifest version; the old object is deleted at the
//! first pass `rewrite_grace` after that, so a fetch or SQL scan that was handed the old entry
//! can still read it (after a crash, the load removes it as an orphan).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use tier::{ColdBatches, ColdCache, ConvertOptions, Manifest, ObjectEntry, PartitionPrefix};

use crate::Broker;
use crate::error::KafkaError;
use crate::partition::{Partition, ReadResult, now_ms};
use crate::topics::Topic;

/// How long an object whose rewrite failed is left alone (a store outage, or a bad object that
/// must not hold back the others).
const REWRITE_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Settings of the cold tier (`serve --cold-*`).
#[derive(Clone, Debug)]
pub struct TieringConfig {
    pub store: tier::StoreLocation,
    pub store_options: tier::StoreOptions,
    /// How often uploads and deletions run.
    pub interval: Duration,
    /// Bytes of cold data (re-encoded batches) kept in memory.
    pub cache_bytes: usize,
    /// Largest run of log bytes turned into one Parquet object.
    pub object_bytes: usize,
    pub convert: ConvertOptions,
    /// How long an object replaced by a rewrite stays in the store for readers that were
    /// handed it before the swap.
    pub rewrite_grace: Duration,
}

impl TieringConfig {
    pub fn new(store: tier::StoreLocation) -> TieringConfig {
        TieringConfig {
            store,
            store_options: tier::StoreOptions::default(),
            interval: Duration::from_secs(1),
            cache_bytes: 512 << 20,
            object_bytes: 32 << 20,
            convert: ConvertOptions::default(),
            rewrite_grace: Duration::from_secs(300),
        }
    }
}

/// Counters and gauges for `/metrics`.
#[derive(Debug, Default)]
pub struct TierMetrics {
    pub uploaded_objects: AtomicU64,
    pub uploaded_log_bytes: AtomicU64,
    pub uploaded_object_bytes: AtomicU64,
    pub upload_errors: AtomicU64,
    pub pending_segments: AtomicI64,
    pub deleted_local_segments: AtomicU64,
    pub deleted_objects: AtomicU64,
    pub manifest_errors: AtomicU64,
    pub rewrites: AtomicU64,
    pub rewrite_errors: AtomicU64,
    /// Objects lacking their topic's declared typed columns.
    pub rewrite_pending_objects: AtomicI64,
    /// Replaced objects waiting out the grace period before deletion.
    pub retired_objects: AtomicI64,
}

pub struct Tiering {
    pub config: TieringConfig,
    pub cache: Arc<ColdCache>,
    pub metrics: TierMetrics,
    /// Topics deleted while their objects still need removing.
    deleted: parking_lot::Mutex<Vec<(String, i32)>>,
    /// Sealed segments waiting for upload, per partition.
    pending: parking_lot::Mutex<std::collections::HashMap<(String, i32), usize>>,
    value_columns: parking_lot::RwLock<Option<Arc<ValueColumnsFor>>>,
    /// Objects replaced by rewrites, and when they may be deleted.
    retired: parking_lot::Mutex<Vec<(String, std::time::Instant)>>,
    /// Objects whose rewrite failed, and when: skipped for `REWRITE_RETRY_AFTER`, so one bad
    /// object does not hold back the others.
    rewrite_failed: parking_lot::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

/// The next object to rewrite: a partition, the object's index in its manifest, and the
/// columns it should gain.
struct RewriteCandidate {
    topic: Arc<Topic>,
    partition: Arc<Partition>,
    index: usize,
    columns: Arc<dyn tier::convert::ValueColumns>,
}

/// Gives the typed value columns to write for a topic (the SQL layer knows value formats).
pub type ValueColumnsFor =
    dyn Fn(&Topic) -> Option<Arc<dyn tier::convert::ValueColumns>> + Send + Sync;

/// A cold read: served from the cache, or waiting for an object to load.
pub enum ColdRead {
    Ready(ReadResult),
    Load(ObjectEntry),
}

impl Tiering {
    pub fn open(config: TieringConfig) -> Result<Tiering, KafkaError> {
        let store = tier::TierStore::open(&config.store, config.store_options.clone())
            .map_err(|error| KafkaError::storage(error.to_string()))?;
        tracing::info!(store = %store, "cold tier");
        Ok(Tiering {
            cache: Arc::new(ColdCache::new(store, config.cache_bytes)),
            config,
            metrics: TierMetrics::default(),
            deleted: parking_lot::Mutex::new(Vec::new()),
            pending: parking_lot::Mutex::new(std::collections::HashMap::new()),
            value_columns: parking_lot::RwLock::new(None),
            retired: parking_lot::Mutex::new(Vec::new()),
            rewrite_failed: parking_lot::Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// Lets uploads write typed value columns (see `tier::convert::ValueColumns`).
    pub fn set_value_columns(&self, columns_for: Arc<ValueColumnsFor>) {
        *self.value_columns.write() = Some(columns_for);
    }

    fn store(&self) -> &tier::TierStore {
        self.cache.store()
    }

    /// Whether `topic`'s sealed segments move to the cold tier.
    pub fn uploads(topic: &Topic) -> bool {
        !topic.is_internal() && topic.config().remote_storage_enabled()
    }

    /// Runs uploads and deletions every `interval` until the runtime stops.
    pub async fn run(broker: Arc<Broker>) {
        let Some(tiering) = broker.tiering.as_ref() else {
            return;
        };
        let mut ticker = tokio::time::interval(tiering.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            tiering.tick(&broker).await;
        }
    }

    /// One pass over every partition. The pending-segments gauge follows each partition as it
    /// is visited, so an outage shows at once.
    pub async fn tick(&self, broker: &Broker) {
        self.remove_deleted_topics().await;
        let mut seen = std::collections::HashSet::new();
        let mut candidate = None;
        let mut stale_total = 0;
        for topic in broker.topics.all() {
            if topic.is_internal() {
                continue;
            }
            let rewrite_columns = self.rewrite_columns(&topic);
            for partition in topic.partitions() {
                let key = (topic.name.to_string(), partition.index);
                let waiting = match self.tick_partition(&topic, &partition).await {
                    Ok(waiting) => waiting,
                    Err(error) => {
                        tracing::warn!(
                            topic = %topic.name,
                            partition = partition.index,
                            %error,
                            "cold tier: upload or cleanup failed; local segments stay until it succeeds"
                        );
                        self.waiting_segments(&partition)
                    }
                };
                if let (Some(columns), Some(manifest)) =
                    (&rewrite_columns, partition.cold_manifest())
                {
                    let stale = stale_objects(&manifest, columns.as_ref());
                    stale_total += stale.len();
                    // Uploads first: only a partition with nothing waiting is rewritten.
                    if candidate.is_none()
                        && waiting == 0
                        && let Some(&index) = stale
                            .iter()
                            .find(|&&index| self.may_rewrite(&manifest.objects[index].key))
                    {
                        candidate = Some(RewriteCandidate {
                            topic: Arc::clone(&topic),
                            partition: Arc::clone(&partition),
                            index,
                            columns: Arc::clone(columns),
                        });
                    }
                }
                self.set_pending(key.clone(), waiting);
                seen.insert(key);
            }
        }
        self.delete_retired().await;
        if let Some(candidate) = candidate
            && self.rewrite(candidate).await
        {
            stale_total -= 1;
        }
        self.metrics
            .rewrite_pending_objects
            .store(stale_total as i64, Ordering::Relaxed);
        // Deleted topics wait for nothing.
        let mut pending = self.pending.lock();
        pending.retain(|key, _| seen.contains(key));
        self.metrics
            .pending_segments
            .store(pending.values().sum::<usize>() as i64, Ordering::Relaxed);
    }

    fn set_pending(&self, key: (String, i32), waiting: usize) {
        let mut pending = self.pending.lock();
        pending.insert(key, waiting);
        self.metrics
            .pending_segments
            .store(pending.values().sum::<usize>() as i64, Ordering::Relaxed);
    }

    /// Sealed segments not (fully) uploaded yet.
    fn waiting_segments(&self, partition: &Partition) -> usize {
        let cold_next = partition
            .cold_manifest()
            .and_then(|manifest| manifest.next_offset())
            .unwrap_or(i64::MIN);
        partition
            .sealed_segments()
            .iter()
            .filter(|segment| segment.next_offset > cold_next && segment.size > 0)
            .count()
    }

    async fn tick_partition(
        &self,
        topic: &Topic,
        partition: &Partition,
    ) -> Result<usize, KafkaError> {
        let manifest = match partition.cold_manifest() {
            Some(manifest) => manifest,
            None => self.load_manifest(topic, partition).await?,
        };
        let manifest = if Self::uploads(topic) {
            self.upload_sealed(topic, partition, manifest).await?
        } else {
            manifest
        };
        let manifest = self
            .apply_remote_retention(topic, partition, manifest)
            .await?;
        if Self::uploads(topic) {
            self.apply_local_retention(topic, partition, &manifest)?;
        }
        Ok(self.waiting_segments(partition))
    }

    async fn load_manifest(
        &self,
        topic: &Topic,
        partition: &Partition,
    ) -> Result<Arc<Manifest>, KafkaError> {
        let prefix = PartitionPrefix::new(&topic.name, partition.index);
        let topic_id = topic.id.simple().to_string();
        let mut manifest = tier::manifest::load(self.store(), &prefix)
            .await
            .map_err(|error| {
                self.metrics.manifest_errors.fetch_add(1, Ordering::Relaxed);
                KafkaError::storage(error.to_string())
            })?;
        if manifest.version > 0 && manifest.topic_id != topic_id {
            tracing::info!(topic = %topic.name, partition = partition.index, "removing the objects of an older topic of the same name");
            tier::manifest::delete_all(self.store(), &prefix)
                .await
                .map_err(|error| KafkaError::storage(error.to_string()))?;
            manifest = Manifest::default();
        }
        manifest.topic_id = topic_id;
        let manifest = Arc::new(manifest);
        partition.set_cold_manifest(Arc::clone(&manifest));
        Ok(manifest)
    }

    /// Uploads the sealed, durable segments above the manifest's end, oldest first.
    async fn upload_sealed(
        &self,
        topic: &Topic,
        partition: &Partition,
        mut manifest: Arc<Manifest>,
    ) -> Result<Arc<Manifest>, KafkaError> {
        let prefix = PartitionPrefix::new(&topic.name, partition.index);
        loop {
            let from = manifest
                .next_offset()
                .unwrap_or(i64::MIN)
                .max(partition.local_start_offset());
            let Some(slice) = partition.sealed_slice(from)? else {
                return Ok(manifest);
            };
            if slice.segment_next_offset() > partition.high_watermark() {
                // Sealed but not yet fsynced: the next pass takes it.
                return Ok(manifest);
            }
            let object_bytes = self.config.object_bytes;
            let log_bytes: Bytes = tokio::task::spawn_blocking(move || slice.read(object_bytes))
                .await
                .map_err(KafkaError::storage)??;
            if log_bytes.is_empty() {
                return Ok(manifest);
            }
            let mut convert = self.config.convert.clone();
            convert.value_columns = self
                .value_columns
                .read()
                .as_ref()
                .and_then(|columns_for| columns_for(topic));
            let (next, entry) =
                tier::upload::upload(self.store(), &prefix, &manifest, log_bytes, convert)
                    .await
                    .map_err(|error| {
                        self.metrics.upload_errors.fetch_add(1, Ordering::Relaxed);
                        KafkaError::storage(error.to_string())
                    })?;
            self.metrics
                .uploaded_objects
                .fetch_add(1, Ordering::Relaxed);
            self.metrics
                .uploaded_log_bytes
                .fetch_add(entry.stats.log_bytes, Ordering::Relaxed);
            self.metrics
                .uploaded_object_bytes
                .fetch_add(entry.size_bytes, Ordering::Relaxed);
            tracing::debug!(key = %entry.key, log_bytes = entry.stats.log_bytes, "uploaded");
            manifest = Arc::new(next);
            partition.set_cold_manifest(Arc::clone(&manifest));
        }
    }

    /// The typed columns `topic`'s objects should have, if it declares a `value.schema` (an
    /// inferred schema may differ after a restart, so it is no reason to rewrite).
    fn rewrite_columns(&self, topic: &Topic) -> Option<Arc<dyn tier::convert::ValueColumns>> {
        if !Self::uploads(topic) || topic.config().value_of("value.schema").trim().is_empty() {
            return None;
        }
        self.value_columns
            .read()
            .as_ref()
            .and_then(|columns_for| columns_for(topic))
    }

    /// Objects of `topic`'s partition lacking the typed columns of its declared schema.
    pub fn rewrite_pending(&self, topic: &Topic, manifest: &Manifest) -> usize {
        self.rewrite_columns(topic)
            .map_or(0, |columns| stale_objects(manifest, columns.as_ref()).len())
    }

    /// Whether `key` did not fail a rewrite recently.
    fn may_rewrite(&self, key: &str) -> bool {
        let mut failed = self.rewrite_failed.lock();
        failed.retain(|_, at| at.elapsed() < REWRITE_RETRY_AFTER);
        !failed.contains_key(key)
    }

    /// Rewrites one object with typed columns and swaps it into the manifest; the old object
    /// is retired (deleted after the grace period). Returns whether it did.
    async fn rewrite(&self, candidate: RewriteCandidate) -> bool {
        let RewriteCandidate {
            topic,
            partition,
            index,
            columns,
        } = candidate;
        let Some(manifest) = partition.cold_manifest() else {
            return false;
        };
        let prefix = PartitionPrefix::new(&topic.name, partition.index);
        let mut convert = self.config.convert.clone();
        convert.value_columns = Some(columns);
        match tier::upload::rewrite(self.store(), &prefix, &manifest, index, convert).await {
            Ok((next, old)) => {
                let new_key = next.objects[index].key.clone();
                // Retired before the swap shows, so the gauges never say "done" too early.
                {
                    let mut retired = self.retired.lock();
                    retired.push((
                        old.key.clone(),
                        std::time::Instant::now() + self.config.rewrite_grace,
                    ));
                    self.metrics
                        .retired_objects
                        .store(retired.len() as i64, Ordering::Relaxed);
                }
                self.metrics.rewrites.fetch_add(1, Ordering::Relaxed);
                partition.set_cold_manifest(Arc::new(next));
                // Same Kafka bytes under the new name: cached reads stay cached.
                self.cache.rename(&old.key, &new_key);
                tracing::debug!(old = %old.key, new = %new_key, "rewrote a cold object with typed columns");
                true
            }
            Err(error) => {
                self.metrics.rewrite_errors.fetch_add(1, Ordering::Relaxed);
                self.rewrite_failed.lock().insert(
                    manifest.objects[index].key.clone(),
                    std::time::Instant::now(),
                );
                tracing::warn!(topic = %topic.name, partition = partition.index, %error, "cold tier: rewriting an object failed; it is retried later");
                false
            }
        }
    }

    /// Deletes the objects replaced by rewrites whose grace period is over.
    async fn delete_retired(&self) {
        let now = std::time::Instant::now();
        let due: Vec<String> = self
            .retired
            .lock()
            .iter()
            .filter(|(_, after)| *after <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for key in due {
            self.cache.forget(&key);
            // Left behind, it is an orphan that the next load removes; retried meanwhile.
            if let Err(error) = self.store().delete(&key).await {
                tracing::warn!(%error, %key, "could not delete an object replaced by a rewrite");
                continue;
            }
            let mut retired = self.retired.lock();
            retired.retain(|(retired_key, _)| *retired_key != key);
            self.metrics
                .retired_objects
                .store(retired.len() as i64, Ordering::Relaxed);
        }
    }

    /// Deletes uploaded local segments outside the hot window (or outside retention).
    fn apply_local_retention(
        &self,
        topic: &Topic,
        partition: &Partition,
        manifest: &Manifest,
    ) -> Result<(), KafkaError> {
        let config = topic.config();
        let uploaded_end = manifest.next_offset().unwrap_or(i64::MIN);
        let segments = partition.sealed_segments();
        let hot_window = local_cut(
            &segments,
            partition.local_bytes(),
            uploaded_end,
            config.local_retention_ms(),
            config.local_retention_bytes(),
            now_ms(),
        );
        // What retention deleted from the cold tier is gone from the log: local copies of it go
        // too, so the log start moves.
        let expired_below = manifest.start_offset().unwrap_or(uploaded_end);
        let expired = segments
            .iter()
            .take_while(|segment| {
                segment.next_offset <= expired_below && segment.next_offset <= uploaded_end
            })
            .last()
            .map(|segment| segment.next_offset);
        let cut = hot_window.max(expired);
        if let Some(offset) = cut {
            let deleted = partition.delete_segments_below(offset)?;
            self.metrics
                .deleted_local_segments
                .fetch_add(deleted, Ordering::Relaxed);
            tracing::debug!(topic = %topic.name, partition = partition.index, deleted, "local segments moved out of the hot window");
        }
        Ok(())
    }

    /// Deletes the oldest objects past `retention.ms` / `retention.bytes`: manifest first, then
    /// the objects.
    async fn apply_remote_retention(
        &self,
        topic: &Topic,
        partition: &Partition,
        manifest: Arc<Manifest>,
    ) -> Result<Arc<Manifest>, KafkaError> {
        let config = topic.config();
        let (retention_ms, retention_bytes) = (config.retention_ms(), config.retention_bytes());
        if manifest.objects.is_empty() || (retention_ms < 0 && retention_bytes < 0) {
            return Ok(manifest);
        }
        let cutoff = now_ms().saturating_sub(retention_ms);
        // The whole log once: the cold objects, plus what is only on local disk.
        let uploaded_end = manifest.next_offset().unwrap_or(i64::MIN);
        let local_copies: u64 = partition
            .sealed_segments()
            .iter()
            .filter(|segment| segment.next_offset <= uploaded_end)
            .map(|segment| segment.size)
            .sum();
        let mut total = manifest.log_bytes() + partition.local_bytes().saturating_sub(local_copies);
        let mut count = 0;
        for object in &manifest.objects {
            let expired = retention_ms >= 0 && object.stats.max_timestamp < cutoff;
            let over =
                retention_bytes >= 0 && total - object.stats.log_bytes >= retention_bytes as u64;
            if !(expired || over) {
                break;
            }
            total -= object.stats.log_bytes;
            count += 1;
        }
        if count == 0 {
            return Ok(manifest);
        }
        let prefix = PartitionPrefix::new(&topic.name, partition.index);
        let next = Arc::new(manifest.without_first(count));
        tier::manifest::commit(self.store(), &prefix, &next)
            .await
            .map_err(|error| KafkaError::storage(error.to_string()))?;
        partition.set_cold_manifest(Arc::clone(&next));
        for object in &manifest.objects[..count] {
            self.cache.forget(&object.key);
            // An object left behind here is an orphan, removed at the next manifest load.
            if let Err(error) = self.store().delete(&object.key).await {
                tracing::warn!(%error, "could not delete an object past retention");
            } else {
                self.metrics.deleted_objects.fetch_add(1, Ordering::Relaxed);
            }
        }
        tracing::info!(topic = %topic.name, partition = partition.index, deleted = count, "retention deleted cold objects");
        Ok(next)
    }

    /// Remembers a deleted topic's partitions: their objects go at the next pass.
    pub fn topic_deleted(&self, name: &str, partitions: i32) {
        let mut deleted = self.deleted.lock();
        for index in 0..partitions {
            deleted.push((name.to_string(), index));
        }
    }

    async fn remove_deleted_topics(&self) {
        let pending: Vec<(String, i32)> = self.deleted.lock().clone();
        for (name, index) in pending {
            let prefix = PartitionPrefix::new(&name, index);
            match tier::manifest::delete_all(self.store(), &prefix).await {
                Ok(()) => self
                    .deleted
                    .lock()
                    .retain(|entry| entry != &(name.clone(), index)),
                Err(error) => {
                    tracing::warn!(%error, topic = %name, "could not yet delete a deleted topic's objects");
                    return;
                }
            }
        }
    }

    /// Serves a fetch at `offset` below the local log start from the cold tier.
    pub fn read(
        &self,
        partition: &Partition,
        offset: i64,
        max_bytes: usize,
    ) -> Result<ColdRead, KafkaError> {
        let manifest = partition.cold_manifest().ok_or_else(|| {
            KafkaError::new(
                ResponseError::KafkaStorageError,
                format!(
                    "offset {offset} of {}-{} is in the cold tier, whose manifest is not loaded yet (is the object store reachable?)",
                    partition.topic, partition.index
                ),
            )
        })?;
        let log_start_offset = partition.log_start_offset();
        if offset < log_start_offset {
            return Err(KafkaError::new(
                ResponseError::OffsetOutOfRange,
                format!(
                    "offset {offset} is below the log start {log_start_offset} of {}-{}",
                    partition.topic, partition.index
                ),
            ));
        }
        let Some(entry) = manifest.find(offset) else {
            // Past the cold tier: the local log serves it.
            return partition.read(offset, max_bytes).map(ColdRead::Ready);
        };
        let Some(batches) = self.cache.get(&entry.key) else {
            return Ok(ColdRead::Load(entry.clone()));
        };
        if let Some(next) = manifest.after(entry) {
            self.prefetch(next);
        }
        let records = batches.read(offset, max_bytes, i64::MAX);
        Ok(ColdRead::Ready(ReadResult {
            records,
            high_watermark: partition.high_watermark(),
            log_start_offset: partition.log_start_offset(),
        }))
    }

    /// Loads an object in the background, for a sequential reader's next fetch.
    fn prefetch(&self, entry: &ObjectEntry) {
        if self.cache.get(&entry.key).is_some() {
            return;
        }
        let cache = Arc::clone(&self.cache);
        let entry = entry.clone();
        tokio::spawn(async move {
            let _ = cache.load(&entry).await;
        });
    }

    /// Loads an object (a cold read's miss).
    pub async fn load(&self, entry: &ObjectEntry) -> Result<Arc<ColdBatches>, KafkaError> {
        self.cache
            .load(entry)
            .await
            .map_err(|error| KafkaError::new(ResponseError::KafkaStorageError, error.to_string()))
    }

    /// The first record at or after `timestamp_ms` in the cold tier, if the cold tier holds one.
    pub async fn offset_for_timestamp(
        &self,
        partition: &Partition,
        timestamp_ms: i64,
    ) -> Result<Option<(i64, i64)>, KafkaError> {
        let Some(manifest) = partition.cold_manifest() else {
            return Ok(None);
        };
        let Some(entry) = manifest.find_timestamp(timestamp_ms) else {
            return Ok(None);
        };
        Ok(self.load(entry).await?.offset_for_timestamp(timestamp_ms))
    }

    /// The cold tier's largest timestamp and the offset of its record.
    pub async fn max_timestamp(
        &self,
        partition: &Partition,
    ) -> Result<Option<(i64, i64)>, KafkaError> {
        let Some(manifest) = partition.cold_manifest() else {
            return Ok(None);
        };
        let Some(entry) = manifest.max_timestamp() else {
            return Ok(None);
        };
        let max = entry.stats.max_timestamp;
        Ok(self
            .load(entry)
            .await?
            .offset_for_timestamp(max)
            .map(|(offset, _)| (max, offset)))
    }
}

/// The indexes of the objects whose typed columns are not `columns`.
fn stale_objects(manifest: &Manifest, columns: &dyn tier::convert::ValueColumns) -> Vec<usize> {
    let wanted = columns.describe();
    manifest
        .objects
        .iter()
        .enumerate()
        .filter(|(_, object)| object.value_schema.as_deref() != Some(wanted.as_str()))
        .map(|(index, _)| index)
        .collect()
}

/// Where the local log may be cut: the end of the longest run of oldest sealed segments that
/// are uploaded (end at or below `uploaded_end`) and outside the hot window (older than
/// `retention_ms`, or beyond `retention_bytes` of local log). `None` if nothing goes.
pub fn local_cut(
    sealed: &[log::SegmentInfo],
    local_bytes: u64,
    uploaded_end: i64,
    retention_ms: i64,
    retention_bytes: i64,
    now_ms: i64,
) -> Option<i64> {
    let mut remaining = local_bytes;
    let mut cut = None;
    for segment in sealed {
        if segment.next_offset > uploaded_end {
            break;
        }
        let expired =
            retention_ms >= 0 && segment.max_timestamp < now_ms.saturating_sub(retention_ms);
        let over = retention_bytes >= 0 && remaining - segment.size >= retention_bytes as u64;
        if !(expired || over) {
            break;
        }
        remaining -= segment.size;
        cut = Some(segment.next_offset);
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(base: i64, next: i64, size: u64, max_timestamp: i64) -> log::SegmentInfo {
        log::SegmentInfo {
            base_offset: base,
            next_offset: next,
            size,
            max_timestamp,
        }
    }

    #[test]
    fn local_cut_keeps_what_is_not_uploaded_and_the_hot_window() {
        let sealed = [
            segment(0, 10, 100, 1_000),
            segment(10, 20, 100, 2_000),
            segment(20, 30, 100, 3_000),
        ];
        // 100 bytes of active segment on top of the sealed ones.
        let local = 400;
        // Nothing uploaded: nothing goes, however old.
        assert_eq!(local_cut(&sealed, local, i64::MIN, 0, 0, 10_000), None);
        // Keep 200 bytes: two segments go, but only as far as the upload reached.
        assert_eq!(local_cut(&sealed, local, 30, -1, 200, 0), Some(20));
        assert_eq!(local_cut(&sealed, local, 15, -1, 200, 0), Some(10));
        assert_eq!(local_cut(&sealed, local, 30, -1, 201, 0), Some(10));
        // By time: segments whose newest record is older than now - 1500.
        assert_eq!(local_cut(&sealed, local, 30, 1_500, -1, 4_000), Some(20));
        // Unlimited hot window: nothing goes.
        assert_eq!(local_cut(&sealed, local, 30, -1, -1, 4_000), None);
    }
}
