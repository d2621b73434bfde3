//! The per-partition manifest: the authority on which Parquet objects hold which offsets.
//!
//! Layout under the store root, for topic `t` partition 0:
//! - `t/0/<base:020>-<next:020>-<nonce>.parquet`: data objects, written once;
//! - `t/0/manifest/<version:020>.json`: manifest versions, each written once; the highest
//!   version is the current one.
//!
//! Protocol: write the data object, then manifest version n+1 naming it, and only then let the
//! broker delete the local segment. Deleting (retention) writes the manifest without the
//! objects first, then deletes them. A data object that the current manifest does not name is
//! an orphan (a crash between the two writes, or a deletion cut short) and is removed when the
//! manifest is loaded. A rewrite (typed value columns added to an old object) writes the new
//! object, then the version naming it in place of the old one, and only later deletes the old
//! object.

use serde::{Deserialize, Serialize};

use crate::convert::ObjectStats;
use crate::store::{StoreError, TierStore};

/// Manifest versions kept behind the current one (for someone reading while it moves on).
const OLD_VERSIONS_KEPT: u64 = 2;

/// One data object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectEntry {
    pub key: String,
    /// Size of the Parquet object.
    pub size_bytes: u64,
    /// The typed value columns the object carries beside the raw value, if any
    /// (`convert::ValueColumns::describe`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_schema: Option<String>,
    #[serde(flatten)]
    pub stats: ObjectStats,
}

impl ObjectEntry {
    pub fn base_offset(&self) -> i64 {
        self.stats.base_offset
    }

    pub fn next_offset(&self) -> i64 {
        self.stats.next_offset
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u64,
    /// The id of the topic the objects belong to: a topic deleted and created again under the
    /// same name does not inherit the old one's objects.
    #[serde(default)]
    pub topic_id: String,
    /// The first offset not uploaded yet. It stays when retention deletes objects, so what was
    /// uploaded and then expired is never uploaded again.
    #[serde(default)]
    pub end_offset: i64,
    /// Sorted by offset, not overlapping.
    pub objects: Vec<ObjectEntry>,
}

impl Manifest {
    /// The first offset held in the cold tier.
    pub fn start_offset(&self) -> Option<i64> {
        self.objects.first().map(ObjectEntry::base_offset)
    }

    /// The first offset after everything uploaded to the cold tier (some of which retention
    /// may have deleted since); `None` if nothing ever was.
    pub fn next_offset(&self) -> Option<i64> {
        match self.objects.last() {
            Some(last) => Some(last.next_offset().max(self.end_offset)),
            None => (self.end_offset > 0).then_some(self.end_offset),
        }
    }

    /// The object holding `offset`, or after a gap the next object; `None` past the end.
    pub fn find(&self, offset: i64) -> Option<&ObjectEntry> {
        let at = self
            .objects
            .partition_point(|object| object.next_offset() <= offset);
        self.objects.get(at)
    }

    /// The object after `entry`.
    pub fn after(&self, entry: &ObjectEntry) -> Option<&ObjectEntry> {
        self.find(entry.next_offset())
    }

    /// The first object (in offset order) holding a record with a timestamp at least
    /// `timestamp_ms`: the first record at or after that time is in it.
    pub fn find_timestamp(&self, timestamp_ms: i64) -> Option<&ObjectEntry> {
        self.objects.iter().find(|object| {
            object.stats.record_count > 0 && object.stats.max_timestamp >= timestamp_ms
        })
    }

    /// The object holding the largest timestamp.
    pub fn max_timestamp(&self) -> Option<&ObjectEntry> {
        self.objects
            .iter()
            .filter(|object| object.stats.record_count > 0)
            .max_by_key(|object| object.stats.max_timestamp)
    }

    pub fn size_bytes(&self) -> u64 {
        self.objects.iter().map(|object| object.size_bytes).sum()
    }

    pub fn log_bytes(&self) -> u64 {
        self.objects
            .iter()
            .map(|object| object.stats.log_bytes)
            .sum()
    }

    /// The next version with `entry` appended.
    pub fn with_object(&self, entry: ObjectEntry) -> Manifest {
        let mut objects = self.objects.clone();
        objects.push(entry);
        Manifest {
            version: self.version + 1,
            topic_id: self.topic_id.clone(),
            end_offset: objects
                .last()
                .map_or(self.end_offset, ObjectEntry::next_offset),
            objects,
        }
    }

    /// The next version with `entry` in place of the object at `index`, which holds the same
    /// offsets (a rewrite). `None` if it does not.
    pub fn with_replaced(&self, index: usize, entry: ObjectEntry) -> Option<Manifest> {
        let old = self.objects.get(index)?;
        if (old.base_offset(), old.next_offset()) != (entry.base_offset(), entry.next_offset()) {
            return None;
        }
        let mut objects = self.objects.clone();
        objects[index] = entry;
        Some(Manifest {
            version: self.version + 1,
            topic_id: self.topic_id.clone(),
            end_offset: self.end_offset,
            objects,
        })
    }

    /// The next version without the first `count` objects.
    pub fn without_first(&self, count: usize) -> Manifest {
        Manifest {
            version: self.version + 1,
            topic_id: self.topic_id.clone(),
            end_offset: self.next_offset().unwrap_or(self.end_offset),
            objects: self.objects[count.min(self.objects.len())..].to_vec(),
        }
    }
}

/// Where one partition's objects live in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionPrefix(String);

impl PartitionPrefix {
    pub fn new(topic: &str, partition: i32) -> PartitionPrefix {
        PartitionPrefix(format!("{topic}/{partition}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn manifest_key(&self, version: u64) -> String {
        format!("{}/manifest/{version:020}.json", self.0)
    }

    /// A fresh name for a data object: the nonce keeps a retried or repeated upload of the same
    /// offsets from ever overwriting an object.
    pub fn data_key(&self, stats: &ObjectStats) -> String {
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or(0);
        format!(
            "{}/{:020}-{:020}-{nonce:x}.parquet",
            self.0, stats.base_offset, stats.next_offset
        )
    }

    fn manifest_version(&self, key: &str) -> Option<u64> {
        let name = key.strip_prefix(&self.0)?.strip_prefix("/manifest/")?;
        let stem = name.strip_suffix(".json")?;
        (stem.len() == 20).then(|| stem.parse().ok())?
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("manifest {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
}

/// Loads the current manifest of a partition (an empty one if there is none) and removes
/// orphans: data objects it does not name and manifest versions too old to keep.
pub async fn load(store: &TierStore, prefix: &PartitionPrefix) -> Result<Manifest, ManifestError> {
    let listed = store.list(prefix.as_str()).await?;
    let latest = listed
        .iter()
        .filter_map(|object| prefix.manifest_version(&object.key))
        .max();
    let manifest = match latest {
        None => Manifest::default(),
        Some(version) => {
            let key = prefix.manifest_key(version);
            let bytes = store.get(&key).await?;
            let manifest: Manifest =
                serde_json::from_slice(&bytes).map_err(|error| ManifestError::Corrupt {
                    key: key.clone(),
                    reason: error.to_string(),
                })?;
            if manifest.version != version {
                return Err(ManifestError::Corrupt {
                    key,
                    reason: format!("it says it is version {}", manifest.version),
                });
            }
            manifest
        }
    };
    for object in &listed {
        let orphan = match prefix.manifest_version(&object.key) {
            Some(version) => version + OLD_VERSIONS_KEPT < manifest.version,
            None => {
                object.key.ends_with(".parquet")
                    && !manifest.objects.iter().any(|entry| entry.key == object.key)
            }
        };
        if orphan {
            tracing::info!(key = %object.key, "removing an object the manifest does not name");
            store.delete(&object.key).await?;
        }
    }
    Ok(manifest)
}

/// Writes `manifest` as the partition's next version (never overwriting one), then removes the
/// version that falls out of the kept window.
pub async fn commit(
    store: &TierStore,
    prefix: &PartitionPrefix,
    manifest: &Manifest,
) -> Result<(), ManifestError> {
    let bytes = serde_json::to_vec(manifest).expect("a manifest always serializes");
    store
        .put_new(&prefix.manifest_key(manifest.version), bytes.into())
        .await?;
    if let Some(old) = manifest.version.checked_sub(OLD_VERSIONS_KEPT + 1)
        && let Err(error) = store.delete(&prefix.manifest_key(old)).await
    {
        tracing::warn!(%error, "could not remove an old manifest version");
    }
    Ok(())
}

/// Deletes every object of a partition (its topic was deleted).
pub async fn delete_all(store: &TierStore, prefix: &PartitionPrefix) -> Result<(), StoreError> {
    for object in store.list(prefix.as_str()).await? {
        store.delete(&object.key).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::store::{StoreLocation, StoreOptions};

    fn entry(base: i64, next: i64, max_timestamp: i64) -> ObjectEntry {
        ObjectEntry {
            key: format!("t/0/{base:020}-{next:020}-0.parquet"),
            size_bytes: 10,
            value_schema: None,
            stats: ObjectStats {
                base_offset: base,
                next_offset: next,
                min_timestamp: 0,
                max_timestamp,
                record_count: (next - base) as u64,
                batch_count: 1,
                log_bytes: 100,
            },
        }
    }

    #[test]
    fn find_serves_an_offset_or_the_next_object_after_a_gap() {
        let manifest = Manifest::default()
            .with_object(entry(0, 10, 5))
            .with_object(entry(20, 30, 50));
        assert_eq!(manifest.find(0).unwrap().base_offset(), 0);
        assert_eq!(manifest.find(9).unwrap().base_offset(), 0);
        assert_eq!(manifest.find(10).unwrap().base_offset(), 20);
        assert_eq!(manifest.find(29).unwrap().base_offset(), 20);
        assert!(manifest.find(30).is_none());
        assert_eq!(manifest.find_timestamp(6).unwrap().base_offset(), 20);
        assert_eq!(manifest.find_timestamp(5).unwrap().base_offset(), 0);
        assert!(manifest.find_timestamp(51).is_none());
        assert_eq!(
            (manifest.start_offset(), manifest.next_offset()),
            (Some(0), Some(30))
        );
        assert_eq!(manifest.without_first(1).start_offset(), Some(20));
        // Deleting every object keeps where uploads stopped.
        let emptied = manifest.without_first(2);
        assert_eq!(
            (emptied.start_offset(), emptied.next_offset()),
            (None, Some(30))
        );
        assert!(emptied.find(29).is_none());
        assert_eq!(manifest.version, 2);
        // A rewrite replaces one entry with one of the same offsets.
        let mut rewritten = entry(20, 30, 50);
        rewritten.key = "t/0/rewritten.parquet".into();
        let replaced = manifest.with_replaced(1, rewritten.clone()).unwrap();
        assert_eq!(replaced.version, 3);
        assert_eq!(replaced.objects[1], rewritten);
        assert_eq!(replaced.objects[0], manifest.objects[0]);
        assert_eq!(replaced.next_offset(), manifest.next_offset());
        assert!(manifest.with_replaced(0, rewritten).is_none());
    }

    #[tokio::test]
    async fn load_takes_the_newest_version_and_removes_orphans() {
        let dir = tempfile::tempdir().unwrap();
        let store = TierStore::open(
            &StoreLocation::Local(dir.path().to_path_buf()),
            StoreOptions::default(),
        )
        .unwrap();
        let prefix = PartitionPrefix::new("t", 0);
        assert_eq!(load(&store, &prefix).await.unwrap(), Manifest::default());

        let mut manifest = Manifest::default();
        for base in 0..5 {
            let object = entry(base * 10, base * 10 + 10, base);
            store
                .put_new(&object.key, Bytes::from_static(b"x"))
                .await
                .unwrap();
            manifest = manifest.with_object(object);
            commit(&store, &prefix, &manifest).await.unwrap();
        }
        // A crash between the data object and its manifest: an orphan.
        let orphan = entry(50, 60, 0);
        store
            .put_new(&orphan.key, Bytes::from_static(b"x"))
            .await
            .unwrap();

        let loaded = load(&store, &prefix).await.unwrap();
        assert_eq!(loaded, manifest);
        let keys: Vec<String> = store
            .list("t/0")
            .await
            .unwrap()
            .into_iter()
            .map(|listed| listed.key)
            .collect();
        assert!(!keys.contains(&orphan.key));
        for object in &manifest.objects {
            assert!(keys.contains(&object.key));
        }
        let versions = keys.iter().filter(|key| key.contains("/manifest/")).count();
        assert_eq!(versions as u64, OLD_VERSIONS_KEPT + 1);
        // Committing an existing version with other content is refused, never overwritten.
        assert!(
            commit(&store, &prefix, &manifest.without_first(1))
                .await
                .is_ok()
        );
        let stale = Manifest {
            version: manifest.version + 1,
            ..Manifest::default()
        };
        assert!(commit(&store, &prefix, &stale).await.is_err());
    }
}
