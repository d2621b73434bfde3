//! Turning a run of sealed log batches into one Parquet object and a new manifest version.

use bytes::Bytes;

use crate::convert::{ConvertError, ConvertOptions, batches_to_parquet};
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
