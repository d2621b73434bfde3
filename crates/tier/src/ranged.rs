//! Reading parts of a cold Parquet object: its footer (parsed once per object, with the Arrow
//! schema it is read with, and kept, since objects never change once written) and the column
//! chunks of chosen row groups, fetched with ranged reads, so a query reads neither the columns
//! nor the row groups it does not need.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef};
use bytes::{Buf, Bytes};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::errors::ParquetError;
use parquet::file::FOOTER_SIZE;
use parquet::file::metadata::{FooterTail, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::reader::{ChunkReader, Length};

use crate::store::{StoreError, TierStore};

/// Bytes read from an object's end in one go: most footers fit.
const FOOTER_PREFETCH: u64 = 64 << 10;
/// Ranges closer than this are fetched as one (the store may coalesce further: remote stores
/// do, by their own rule; a local folder reads each range).
const COALESCE_GAP: u64 = 0;

/// Parsed footers and their Arrow schemas by object key, bounded by their in-memory size; the
/// oldest go first.
pub(crate) struct Footers {
    capacity_bytes: usize,
    state: parking_lot::Mutex<FooterState>,
}

#[derive(Default)]
struct FooterState {
    by_key: HashMap<String, (ArrowReaderMetadata, usize)>,
    order: VecDeque<String>,
    bytes: usize,
}

impl Footers {
    pub(crate) fn new(capacity_bytes: usize) -> Footers {
        Footers {
            capacity_bytes,
            state: parking_lot::Mutex::new(FooterState::default()),
        }
    }

    fn get(&self, key: &str) -> Option<ArrowReaderMetadata> {
        self.state
            .lock()
            .by_key
            .get(key)
            .map(|(metadata, _)| metadata.clone())
    }

    fn put(&self, key: &str, metadata: ArrowReaderMetadata) {
        let size = metadata.metadata().memory_size();
        let mut state = self.state.lock();
        if size > self.capacity_bytes || state.by_key.contains_key(key) {
            return;
        }
        while state.bytes + size > self.capacity_bytes {
            let Some(oldest) = state.order.pop_front() else {
                break;
            };
            if let Some((_, freed)) = state.by_key.remove(&oldest) {
                state.bytes -= freed;
            }
        }
        state.by_key.insert(key.to_string(), (metadata, size));
        state.order.push_back(key.to_string());
        state.bytes += size;
    }
}

pub(crate) fn corrupt(key: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key: key.to_string(),
        reason: error.to_string(),
    }
}

/// The schema a cold file is read with: its own, with the text fields of the typed value
/// columns read as string views (the SQL table's type for them); `None` when that changes
/// nothing.
fn string_views(schema: &SchemaRef) -> Option<SchemaRef> {
    let index = schema.index_of(crate::convert::FIELDS_COLUMN).ok()?;
    let DataType::Struct(children) = schema.field(index).data_type() else {
        return None;
    };
    if !children
        .iter()
        .any(|child| child.data_type() == &DataType::Utf8)
    {
        return None;
    }
    let children: Fields = children
        .iter()
        .map(|child| {
            if child.data_type() == &DataType::Utf8 {
                Arc::new(child.as_ref().clone().with_data_type(DataType::Utf8View))
            } else {
                Arc::clone(child)
            }
        })
        .collect();
    let mut fields: Vec<Arc<Field>> = schema.fields().iter().cloned().collect();
    fields[index] = Arc::new(
        schema
            .field(index)
            .as_ref()
            .clone()
            .with_data_type(DataType::Struct(children)),
    );
    Some(Arc::new(Schema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    )))
}

impl TierStore {
    /// The footer of the Parquet object `key` of `size` bytes.
    pub async fn parquet_footer(
        &self,
        key: &str,
        size: u64,
    ) -> Result<Arc<ParquetMetaData>, StoreError> {
        Ok(Arc::clone(
            self.reader_metadata(key, size).await?.metadata(),
        ))
    }

    /// The footer of the Parquet object `key` of `size` bytes and the Arrow schema to read it
    /// with (text fields of typed value columns as string views), parsed once and kept.
    pub async fn reader_metadata(
        &self,
        key: &str,
        size: u64,
    ) -> Result<ArrowReaderMetadata, StoreError> {
        if let Some(metadata) = self.footers().get(key) {
            return Ok(metadata);
        }
        if size < FOOTER_SIZE as u64 {
            return Err(corrupt(key, format!("{size} bytes cannot hold a footer")));
        }
        let start = size.saturating_sub(FOOTER_PREFETCH);
        let mut tail = self
            .get_ranges(key, std::slice::from_ref(&(start..size)))
            .await?
            .pop()
            .unwrap_or_default();
        if tail.len() as u64 != size - start {
            return Err(corrupt(key, "shorter than the manifest says"));
        }
        let footer = FooterTail::try_from(&tail[tail.len() - FOOTER_SIZE..])
            .map_err(|error| corrupt(key, error))?;
        let needed = (footer.metadata_length() + FOOTER_SIZE) as u64;
        if needed > size {
            return Err(corrupt(key, "footer longer than the object"));
        }
        if needed > tail.len() as u64 {
            tail = self
                .get_ranges(key, std::slice::from_ref(&(size - needed..size)))
                .await?
                .pop()
                .unwrap_or_default();
        }
        let metadata_bytes = &tail[tail.len() - needed as usize..tail.len() - FOOTER_SIZE];
        let metadata = Arc::new(
            ParquetMetaDataReader::decode_metadata(metadata_bytes).map_err(|e| corrupt(key, e))?,
        );
        let mut reader =
            ArrowReaderMetadata::try_new(Arc::clone(&metadata), ArrowReaderOptions::new())
                .map_err(|error| corrupt(key, error))?;
        if let Some(schema) = string_views(reader.schema()) {
            reader = ArrowReaderMetadata::try_new(
                metadata,
                ArrowReaderOptions::new().with_schema(schema),
            )
            .map_err(|error| corrupt(key, error))?;
        }
        self.footers().put(key, reader.clone());
        Ok(reader)
    }

    /// The column chunks of `row_groups` that `mask` selects, fetched with ranged reads, as a
    /// [`ChunkReader`] for parquet's readers (which must ask only for those chunks).
    pub async fn parquet_chunks(
        &self,
        key: &str,
        size: u64,
        metadata: &ParquetMetaData,
        row_groups: &[usize],
        mask: &ProjectionMask,
    ) -> Result<ObjectParts, StoreError> {
        let mut wanted: Vec<Range<u64>> = Vec::new();
        for &index in row_groups {
            let group = metadata.row_group(index);
            for (column, chunk) in group.columns().iter().enumerate() {
                if mask.leaf_included(column) {
                    let (start, length) = chunk.byte_range();
                    if start + length > size {
                        return Err(corrupt(key, "a column chunk runs past the object's end"));
                    }
                    wanted.push(start..start + length);
                }
            }
        }
        wanted.sort_by_key(|range| range.start);
        let mut merged: Vec<Range<u64>> = Vec::with_capacity(wanted.len());
        for range in wanted {
            match merged.last_mut() {
                Some(last) if range.start <= last.end + COALESCE_GAP => {
                    last.end = last.end.max(range.end);
                }
                _ => merged.push(range),
            }
        }
        let parts = if merged.is_empty() {
            Vec::new()
        } else {
            self.get_ranges(key, &merged).await?
        };
        let fetched = parts.iter().map(Bytes::len).sum();
        Ok(ObjectParts {
            size,
            fetched,
            parts: merged
                .into_iter()
                .map(|range| range.start)
                .zip(parts)
                .collect(),
        })
    }
}

/// Byte ranges of one object, served to parquet's readers.
pub struct ObjectParts {
    size: u64,
    /// Bytes fetched.
    pub fetched: usize,
    parts: Vec<(u64, Bytes)>,
}

impl ObjectParts {
    fn slice(&self, start: u64, length: Option<usize>) -> parquet::errors::Result<Bytes> {
        let at = self.parts.partition_point(|(part, _)| *part <= start);
        let missing = || {
            ParquetError::General(format!(
                "cold read of bytes {start}..{} that were not fetched",
                start + length.unwrap_or(0) as u64
            ))
        };
        let (part_start, bytes) = self
            .parts
            .get(at.checked_sub(1).ok_or_else(missing)?)
            .ok_or_else(missing)?;
        let from = (start - part_start) as usize;
        let to = match length {
            Some(length) => from + length,
            None => bytes.len(),
        };
        if to > bytes.len() || from > bytes.len() {
            return Err(missing());
        }
        Ok(bytes.slice(from..to))
    }
}

impl Length for ObjectParts {
    fn len(&self) -> u64 {
        self.size
    }
}

impl ChunkReader for ObjectParts {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(self.slice(start, None)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.slice(start, Some(length))
    }
}

#[cfg(test)]
mod tests {
    use arrow_array::{Int64Array, RecordBatch, StringArray};
    use parquet::arrow::ArrowWriter;
    use parquet::arrow::arrow_reader::{
        ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
    };
    use parquet::file::properties::WriterProperties;

    use super::*;
    use crate::store::{StoreLocation, StoreOptions};

    /// 10,000 rows in row groups of 1,000: `n` and a wide `text`.
    fn object() -> Bytes {
        let n: Int64Array = (0..10_000).collect();
        let text: StringArray = (0..10_000).map(|i| Some(format!("{i:0>200}"))).collect();
        let batch = RecordBatch::try_from_iter([
            ("n", Arc::new(n) as arrow_array::ArrayRef),
            ("text", Arc::new(text)),
        ])
        .unwrap();
        let properties = WriterProperties::builder()
            .set_max_row_group_row_count(Some(1_000))
            .build();
        let mut out = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut out, batch.schema(), Some(properties)).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        Bytes::from(out)
    }

    #[tokio::test]
    async fn reads_only_the_chosen_column_chunks_and_keeps_the_footer() {
        let dir = tempfile::tempdir().unwrap();
        let location = StoreLocation::Local(dir.path().to_path_buf());
        let store = TierStore::open(&location, StoreOptions::default()).unwrap();
        let bytes = object();
        let size = bytes.len() as u64;
        store.put_new("t/0/a.parquet", bytes.clone()).await.unwrap();

        let footer = store.parquet_footer("t/0/a.parquet", size).await.unwrap();
        assert_eq!(footer.num_row_groups(), 10);
        // Parsed once: the second call is the same footer, even with the object gone.
        store.delete("t/0/a.parquet").await.unwrap();
        let again = store.parquet_footer("t/0/a.parquet", size).await.unwrap();
        assert!(Arc::ptr_eq(&footer, &again));
        store.put_new("t/0/a.parquet", bytes).await.unwrap();

        // Column `n` of row groups 3 and 7: far fewer bytes than the object, and the right rows.
        let metadata =
            ArrowReaderMetadata::try_new(Arc::clone(&footer), ArrowReaderOptions::new()).unwrap();
        let mask = ProjectionMask::roots(metadata.parquet_schema(), [0]);
        let parts = store
            .parquet_chunks("t/0/a.parquet", size, &footer, &[3, 7], &mask)
            .await
            .unwrap();
        assert!(
            parts.fetched > 0 && (parts.fetched as u64) < size / 10,
            "{}",
            parts.fetched
        );
        let rows: Vec<i64> = ParquetRecordBatchReaderBuilder::new_with_metadata(parts, metadata)
            .with_row_groups(vec![3, 7])
            .with_projection(mask)
            .build()
            .unwrap()
            .flat_map(|batch| {
                let batch = batch.unwrap();
                let n = batch
                    .column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap();
                n.values().to_vec()
            })
            .collect();
        let want: Vec<i64> = (3_000..4_000).chain(7_000..8_000).collect();
        assert_eq!(rows, want);

        // An object that is not Parquet, or shorter than the manifest says, is an error.
        store
            .put_new("t/0/b.parquet", Bytes::from(vec![7u8; 100]))
            .await
            .unwrap();
        for size in [100, 3] {
            let error = store
                .parquet_footer("t/0/b.parquet", size)
                .await
                .unwrap_err();
            assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
        }
        assert!(store.parquet_footer("t/0/b.parquet", 1_000).await.is_err());
    }
}
