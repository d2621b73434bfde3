//! Turning a run of sealed log batches into one Parquet object and a new manifest version, and
//! rewriting an object with typed value columns under a new version.

use bytes::Bytes;

use crate::convert::{
    ConvertError, ConvertOptions, batches_to_parquet, parquet_to_batches, rewrite_value_columns,
};
use crate::manifest::{self, Manifest, ManifestError, ObjectEntry, PartitionPrefix};
use crate::store::TierStore;

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("converting offsets from {offset} to Parquet: {source}")]
    Convert {
        offset: i64,
        #[source]
        source: ConvertError,
    },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("the conversion task failed: {0}")]
    Task(String),
    #[error("rewriting {key}: {reason}")]
    Rewrite { key: String, reason: String },
}

/// Converts `log_bytes` (whole stored batches that continue the manifest), writes the object,
/// then the manifest version that names it. Returns the new manifest; on error the current
/// one still holds (at worst an orphan object is left, removed at the next load).
pub async fn upload(
    store: &TierStore,
    prefix: &PartitionPrefix,
    current: &Manifest,
    log_bytes: Bytes,
    options: ConvertOptions,
) -> Result<(Manifest, ObjectEntry), UploadError> {
    let offset = records::BatchHeader::parse(&log_bytes)
        .map(|header| header.base_offset)
        .unwrap_or(-1);
    let value_schema = options
        .value_columns
        .as_ref()
        .map(|columns| columns.describe());
    let (parquet, stats) =
        tokio::task::spawn_blocking(move || batches_to_parquet(&log_bytes, &options))
            .await
            .map_err(|error| UploadError::Task(error.to_string()))?
            .map_err(|source| UploadError::Convert { offset, source })?;
    let entry = ObjectEntry {
        key: prefix.data_key(&stats),
        size_bytes: parquet.len() as u64,
        value_schema,
        stats,
    };
    store
        .put_new(&entry.key, Bytes::from(parquet))
        .await
        .map_err(ManifestError::from)?;
    let next = current.with_object(entry.clone());
    manifest::commit(store, prefix, &next).await?;
    Ok((next, entry))
}

/// Rewrites the object at `index` of `current` with the typed columns of
/// `options.value_columns`: reads it, writes a new object (a new name) holding the same rows
/// plus the typed columns, checks that both re-encode to the same Kafka batches, then writes
/// the manifest version naming the new object in its place. Returns the new manifest and the
/// replaced entry; the caller deletes the old object once no reader can still want it. On error
/// the current manifest still holds (at worst an orphan is left, removed at the next load).
pub async fn rewrite(
    store: &TierStore,
    prefix: &PartitionPrefix,
    current: &Manifest,
    index: usize,
    options: ConvertOptions,
) -> Result<(Manifest, ObjectEntry), UploadError> {
    let old = current
        .objects
        .get(index)
        .ok_or_else(|| UploadError::Rewrite {
            key: String::new(),
            reason: format!("the manifest has no object {index}"),
        })?
        .clone();
    let value_schema = options
        .value_columns
        .as_ref()
        .map(|columns| columns.describe());
    let bytes = store.get(&old.key).await.map_err(ManifestError::from)?;
    let key = old.key.clone();
    let rewritten = tokio::task::spawn_blocking(move || {
        let (file, stats) = rewrite_value_columns(bytes.clone(), &options)?;
        let file = Bytes::from(file);
        // Checked twice on the storage path: Kafka reads must not change.
        let before = parquet_to_batches(bytes)?;
        let after = parquet_to_batches(file.clone())?;
        Ok::<_, ConvertError>((file, stats, before.bytes() == after.bytes()))
    })
    .await
    .map_err(|error| UploadError::Task(error.to_string()))?;
    let (file, stats, same) = rewritten.map_err(|source| UploadError::Convert {
        offset: old.base_offset(),
        source,
    })?;
    if !same || stats != old.stats {
        return Err(UploadError::Rewrite {
            key,
            reason: "the rewritten object would not read back the same".into(),
        });
    }
    let entry = ObjectEntry {
        key: prefix.data_key(&stats),
        size_bytes: file.len() as u64,
        value_schema,
        stats,
    };
    store
        .put_new(&entry.key, file)
        .await
        .map_err(ManifestError::from)?;
    let next = current
        .with_replaced(index, entry)
        .ok_or_else(|| UploadError::Rewrite {
            key: old.key.clone(),
            reason: "the new object's offsets differ".into(),
        })?;
    manifest::commit(store, prefix, &next).await?;
    Ok((next, old))
}
