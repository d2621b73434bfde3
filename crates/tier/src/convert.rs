//! Log batches to Parquet and back: pure functions, no I/O.
//!
//! [`batches_to_parquet`] turns a run of stored v2 batches (bytes as read from a sealed log
//! segment) into one Parquet file with a row per record; [`parquet_to_batches`] turns such a
//! file back into uncompressed v2 batches that a Kafka consumer reads like the originals, in a
//! [`ColdBatches`] that answers the log's reads (`read`, `offset_for_timestamp`).
//!
//! # The Parquet layout
//! One row per record, in offset order. Column names are a stable interface (DuckDB and the SQL
//! layer read these files directly); they are in [`mod@column`].
//!
//! | column | Arrow type | |
//! |---|---|---|
//! | `offset` | Int64 | the record's offset |
//! | `timestamp` | Timestamp(ms, UTC) | effective timestamp: CreateTime: batch first timestamp + record delta; LogAppendTime: the batch's max timestamp |
//! | `key`, `value` | BinaryView, nullable | |
//! | `headers` | LargeList<Struct<key: BinaryView, value: BinaryView nullable>> | exact bytes, in order |
//! | `batch_base_offset`, `batch_last_offset_delta`, `batch_first_timestamp`, `batch_max_timestamp`, `batch_attributes`, `producer_id`, `producer_epoch`, `base_sequence`, `partition_leader_epoch` | Int64, Int32, Int64, Int64, Int16, Int64, Int16, Int32, Int32 | the batch header (attributes as stored, codec bits included), repeated on each row of the batch (RLE keeps it cheap) |
//! | `record_attributes` | Int8 | |
//! | `raw_batch` | BinaryView, nullable | null, except for a batch kept verbatim |
//!
//! In Parquet the binary columns are plain `BYTE_ARRAY` and the list a standard 3-level `LIST`;
//! the Arrow types (view types, 64-bit list offsets) matter only to Arrow readers: views let the
//! reader skip a copy of every value, and nothing overflows 32-bit offsets however large a row
//! group gets. `value` and `raw_batch` are written without dictionary encoding; every column has
//! page and row-group statistics, so `offset` and `timestamp` ranges are in the footer.
//!
//! A batch that cannot be decoded (decompression fails or exceeds the limit, corrupt records)
//! and a batch without records are stored as one row whose `raw_batch` holds the exact batch
//! bytes (offset = base offset, timestamp = the batch's max timestamp, key, value null, no
//! headers); re-encoding returns those bytes verbatim. The footer's key-value metadata holds
//! [`ObjectStats`] as JSON under [`STATS_KEY`].
//!
//! # Re-encoding
//! Each batch becomes one uncompressed v2 batch with the original header fields (attributes
//! with the codec bits cleared), record offsets and record fields. An uncompressed CreateTime
//! batch comes back byte for byte; a compressed one comes back with its records section
//! decompressed (and its length and CRC recomputed). A LogAppendTime batch comes back with
//! every record's timestamp delta 0: consumers take the batch's max timestamp for every record
//! of such a batch, and the Parquet file keeps only that effective timestamp.
//!
//! ```
//! use tier::convert::{ConvertOptions, batches_to_parquet, parquet_to_batches};
//!
//! let batch = records::BatchBuilder::new(0).record(Some(b"k"), Some(b"v"), 1_000).build();
//! let (file, stats) = batches_to_parquet(&batch, &ConvertOptions::default()).unwrap();
//! assert_eq!((stats.base_offset, stats.next_offset, stats.record_count), (0, 1, 1));
//! let cold = parquet_to_batches(bytes::Bytes::from(file)).unwrap();
//! assert_eq!(&cold.read(0, 1 << 20, i64::MAX)[..], &batch[..]);
//! ```

use std::sync::Arc;

use arrow_array::builder::BinaryViewBuilder;
use arrow_array::cast::AsArray;
use arrow_array::types::{
    ArrowPrimitiveType, Int8Type, Int16Type, Int32Type, Int64Type, TimestampMillisecondType,
};
use arrow_array::{
    Array, ArrayRef, BinaryViewArray, Int8Array, Int16Array, Int32Array, Int64Array,
    LargeListArray, RecordBatch, StructArray, TimestampMillisecondArray,
};
use arrow_buffer::{OffsetBuffer, ScalarBuffer};
use arrow_schema::{ArrowError, DataType, Field, FieldRef, Fields, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression as ParquetCompression, Encoding, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::{FileMetaData, KeyValue, ParquetMetaDataReader};
use parquet::file::properties::{DEFAULT_CREATED_BY, WriterProperties};
use parquet::schema::types::ColumnPath;
use records::codecs::decompress_into;
use records::{
    BATCH_HEADER_LEN, BatchEncoder, BatchHeader, Compression, Header, MAGIC_V2, Record,
    RecordError, RecordFields, TimestampType, records_in_section,
};

/// The footer key-value metadata key of [`ObjectStats`] (JSON).
pub const STATS_KEY: &str = "lakestream.stats";
/// The footer key-value metadata key of the layout version, [`FORMAT_VERSION`].
pub const FORMAT_VERSION_KEY: &str = "lakestream.format_version";
/// The layout described in the module docs. A reader refuses other versions.
pub const FORMAT_VERSION: &str = "1";

/// About this many bytes per Arrow batch when reading Parquet back: large enough to amortise
/// per-batch work, small enough to stay in cache and out of the allocator's mmap path.
const READ_BATCH_BYTES: usize = 4 << 20;
/// Bounds on the rows per Arrow batch, whatever the records' size.
const READ_BATCH_ROWS_MIN: usize = 64;
const READ_BATCH_ROWS_MAX: usize = 64 * 1024;
/// Upper bound on the output buffer reserved up front from a footer's size claims (it grows past
/// this as needed): a lying footer must not make us allocate terabytes.
const PRESIZE_BYTES_MAX: usize = 1 << 30;

/// The Parquet column names.
pub mod column {
    pub const OFFSET: &str = "offset";
    pub const TIMESTAMP: &str = "timestamp";
    pub const KEY: &str = "key";
    pub const VALUE: &str = "value";
    pub const HEADERS: &str = "headers";
    /// The struct fields of one header, inside the `headers` list.
    pub const HEADER_KEY: &str = "key";
    pub const HEADER_VALUE: &str = "value";
    /// The list's item field.
    pub const HEADER_ELEMENT: &str = "element";
    pub const BATCH_BASE_OFFSET: &str = "batch_base_offset";
    pub const BATCH_LAST_OFFSET_DELTA: &str = "batch_last_offset_delta";
    pub const BATCH_FIRST_TIMESTAMP: &str = "batch_first_timestamp";
    pub const BATCH_MAX_TIMESTAMP: &str = "batch_max_timestamp";
    pub const BATCH_ATTRIBUTES: &str = "batch_attributes";
    pub const PRODUCER_ID: &str = "producer_id";
    pub const PRODUCER_EPOCH: &str = "producer_epoch";
    pub const BASE_SEQUENCE: &str = "base_sequence";
    pub const PARTITION_LEADER_EPOCH: &str = "partition_leader_epoch";
    pub const RECORD_ATTRIBUTES: &str = "record_attributes";
    pub const RAW_BATCH: &str = "raw_batch";
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParquetCodec {
    /// Zstandard level 1.
    Zstd,
    Snappy,
}

/// The footer key of the typed value columns' description ([`ValueColumns::describe`]).
pub const VALUE_SCHEMA_KEY: &str = "lakestream.value_schema";
/// The struct column of typed value fields, and the column saying why a value did not decode.
pub const FIELDS_COLUMN: &str = "fields";
pub const FIELDS_ERROR_COLUMN: &str = "fields_error";

/// Decoded value columns written beside the raw `value` (a topic whose values have a schema):
/// engines read typed columns without parsing, Kafka consumers still get the exact bytes.
pub trait ValueColumns: Send + Sync + std::fmt::Debug {
    /// The typed fields, all nullable.
    fn fields(&self) -> arrow_schema::Fields;
    /// Names the schema; files whose footer says the same can be read as typed columns.
    fn describe(&self) -> String;
    /// One row per value: the fields (NULL where a value does not decode) and the error text
    /// of each value that does not (NULL otherwise).
    fn decode(&self, values: &BinaryViewArray) -> Result<(StructArray, ArrayRef), String>;
}

#[derive(Clone, Debug)]
pub struct ConvertOptions {
    pub codec: ParquetCodec,
    /// Typed value columns to add, if the topic's values have a schema.
    pub value_columns: Option<Arc<dyn ValueColumns>>,
    /// Close a row group after about this many bytes of log input, counting a compressed batch
    /// at its decompressed size (so memory stays bounded however well batches compress).
    pub row_group_bytes: usize,
    /// The most one compressed batch may decompress to; a larger batch is kept as a raw batch.
    pub decompress_limit: usize,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions {
            codec: ParquetCodec::Zstd,
            value_columns: None,
            row_group_bytes: 1 << 20,
            decompress_limit: 256 << 20,
        }
    }
}

/// What one Parquet object holds; also in its footer under [`STATS_KEY`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectStats {
    /// Base offset of the first batch.
    pub base_offset: i64,
    /// Last offset of the last batch + 1.
    pub next_offset: i64,
    /// Over records' effective timestamps (a raw batch with records counts its max timestamp);
    /// -1 if there are no records.
    pub min_timestamp: i64,
    pub max_timestamp: i64,
    /// Sum of the batches' record counts (raw batches included).
    pub record_count: u64,
    pub batch_count: u64,
    /// Bytes of log input.
    pub log_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("nothing to convert: the log input holds no batch")]
    Empty,
    #[error("log input is invalid at byte {position} (batch base offset {base_offset}): {source}")]
    InvalidBatch {
        position: usize,
        base_offset: i64,
        source: RecordError,
    },
    #[error(
        "batch at offset {base_offset} does not follow the previous batch, which ends at offset {previous_last_offset}"
    )]
    OffsetsNotIncreasing {
        base_offset: i64,
        previous_last_offset: i64,
    },
    #[error(
        "batch base offset {base_offset} with last offset delta {last_offset_delta} is out of range"
    )]
    OffsetOutOfRange {
        base_offset: i64,
        last_offset_delta: i32,
    },
    #[error("parquet: {0}")]
    Parquet(#[from] ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),
    #[error("cold object column {column} is missing, has an unexpected type, or holds nulls")]
    BadColumn { column: &'static str },
    #[error("cold object footer: {reason}")]
    BadFooter { reason: String },
    #[error("cold object row at offset {offset} is invalid: {reason}")]
    InvalidRow { offset: i64, reason: String },
    #[error("cold object does not match its footer: footer says {footer:?}, rows give {rows:?}")]
    StatsMismatch {
        footer: Box<ObjectStats>,
        rows: Box<ObjectStats>,
    },
}

impl ConvertError {
    fn row(offset: i64, reason: impl ToString) -> ConvertError {
        ConvertError::InvalidRow {
            offset,
            reason: reason.to_string(),
        }
    }
}

/// The Arrow schema of a cold object (see the module docs).
pub fn schema() -> SchemaRef {
    let binary = |name, nullable| Field::new(name, DataType::BinaryView, nullable);
    Arc::new(Schema::new(vec![
        Field::new(column::OFFSET, DataType::Int64, false),
        Field::new(
            column::TIMESTAMP,
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        binary(column::KEY, true),
        binary(column::VALUE, true),
        Field::new(
            column::HEADERS,
            DataType::LargeList(header_element()),
            false,
        ),
        Field::new(column::BATCH_BASE_OFFSET, DataType::Int64, false),
        Field::new(column::BATCH_LAST_OFFSET_DELTA, DataType::Int32, false),
        Field::new(column::BATCH_FIRST_TIMESTAMP, DataType::Int64, false),
        Field::new(column::BATCH_MAX_TIMESTAMP, DataType::Int64, false),
        Field::new(column::BATCH_ATTRIBUTES, DataType::Int16, false),
        Field::new(column::PRODUCER_ID, DataType::Int64, false),
        Field::new(column::PRODUCER_EPOCH, DataType::Int16, false),
        Field::new(column::BASE_SEQUENCE, DataType::Int32, false),
        Field::new(column::PARTITION_LEADER_EPOCH, DataType::Int32, false),
        Field::new(column::RECORD_ATTRIBUTES, DataType::Int8, false),
        binary(column::RAW_BATCH, true),
    ]))
}

fn header_fields() -> Fields {
    Fields::from(vec![
        Field::new(column::HEADER_KEY, DataType::BinaryView, false),
        Field::new(column::HEADER_VALUE, DataType::BinaryView, true),
    ])
}

fn header_element() -> FieldRef {
    Arc::new(Field::new(
        column::HEADER_ELEMENT,
        DataType::Struct(header_fields()),
        false,
    ))
}

// ---------------------------------------------------------------------------------------------
// Log → Parquet

/// Converts a run of stored, already-validated v2 batches (contiguous bytes as read from a log
/// segment, offsets increasing) into one Parquet file. Every batch's framing and CRC are checked
/// again; a batch whose records cannot be decoded is kept verbatim (see the module docs).
pub fn batches_to_parquet(
    log_bytes: &[u8],
    options: &ConvertOptions,
) -> Result<(Vec<u8>, ObjectStats), ConvertError> {
    let schema = schema();
    let file_schema = match &options.value_columns {
        None => schema.clone(),
        Some(columns) => typed_schema(columns.as_ref()),
    };
    let typed = |batch: RecordBatch| -> Result<RecordBatch, ConvertError> {
        match &options.value_columns {
            None => Ok(batch),
            Some(columns) => with_typed_columns(batch, columns.as_ref(), &file_schema),
        }
    };
    let mut writer = ArrowWriter::try_new(
        Vec::with_capacity(log_bytes.len() / 2),
        file_schema.clone(),
        Some(writer_properties(options)?),
    )?;
    let mut rows = Rows::default();
    let mut stats = StatsBuilder::default();
    let mut scratch = Vec::new();
    let mut pending_bytes = 0usize;
    let mut batches = records::stored_batches(log_bytes);
    loop {
        let position = batches.position();
        let (header, range) = match batches.next() {
            None => break,
            Some(Ok(found)) => found,
            Some(Err(source)) => {
                let base_offset = log_bytes
                    .get(position..position + 8)
                    .map_or(-1, |b| i64::from_be_bytes(b.try_into().expect("8 bytes")));
                return Err(ConvertError::InvalidBatch {
                    position,
                    base_offset,
                    source,
                });
            }
        };
        check_offsets(&header, stats.last_offset)?;
        let batch = &log_bytes[range];
        pending_bytes += rows.push_batch(
            &header,
            batch,
            options.decompress_limit,
            &mut scratch,
            &mut stats,
        );
        if pending_bytes >= options.row_group_bytes {
            writer.write(&typed(rows.finish(&schema)?)?)?;
            writer.flush()?;
            pending_bytes = 0;
        }
    }
    if rows.len > 0 {
        writer.write(&typed(rows.finish(&schema)?)?)?;
    }
    if let Some(columns) = &options.value_columns {
        writer.append_key_value_metadata(KeyValue::new(
            VALUE_SCHEMA_KEY.to_string(),
            columns.describe(),
        ));
    }
    let stats = stats
        .finish(log_bytes.len() as u64)
        .ok_or(ConvertError::Empty)?;
    let json = serde_json::to_string(&stats).expect("stats serialize");
    writer.append_key_value_metadata(KeyValue::new(STATS_KEY.to_string(), json));
    writer.append_key_value_metadata(KeyValue::new(
        FORMAT_VERSION_KEY.to_string(),
        FORMAT_VERSION.to_string(),
    ));
    Ok((writer.into_inner()?, stats))
}

/// The schema of a cold object with `columns`: the base columns, `fields` and `fields_error`.
fn typed_schema(columns: &dyn ValueColumns) -> SchemaRef {
    let mut fields: Vec<FieldRef> = schema().fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(
        FIELDS_COLUMN,
        DataType::Struct(columns.fields()),
        true,
    )));
    fields.push(Arc::new(Field::new(
        FIELDS_ERROR_COLUMN,
        DataType::Utf8,
        true,
    )));
    Arc::new(Schema::new(fields))
}

/// `batch` (the base columns) with the typed columns decoded from its `value` appended.
fn with_typed_columns(
    batch: RecordBatch,
    columns: &dyn ValueColumns,
    file_schema: &SchemaRef,
) -> Result<RecordBatch, ConvertError> {
    let values = batch
        .column_by_name(column::VALUE)
        .and_then(|array| array.as_binary_view_opt())
        .ok_or(ConvertError::BadColumn {
            column: column::VALUE,
        })?;
    let (fields, errors) = columns
        .decode(values)
        .map_err(|reason| ConvertError::BadFooter {
            reason: format!("typed value columns: {reason}"),
        })?;
    let mut arrays = batch.columns().to_vec();
    arrays.push(Arc::new(fields));
    arrays.push(errors);
    Ok(RecordBatch::try_new(file_schema.clone(), arrays)?)
}

/// Rewrites a cold object with the typed value columns of `options.value_columns` (replacing
/// any it had): every base column, row group boundary and footer entry is copied as it is, so
/// Kafka reads of the new object give the same bytes as reads of the old one. Returns the new
/// file and the (unchanged) stats.
pub fn rewrite_value_columns(
    file: Bytes,
    options: &ConvertOptions,
) -> Result<(Vec<u8>, ObjectStats), ConvertError> {
    let columns = options
        .value_columns
        .as_ref()
        .ok_or_else(|| ConvertError::BadFooter {
            reason: "a rewrite needs typed value columns".into(),
        })?;
    let metadata = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new())?;
    let stats = stats_from_footer(metadata.metadata().file_metadata())?;
    let base = schema();
    let mut roots = Vec::with_capacity(base.fields().len());
    for field in base.fields() {
        let index =
            metadata
                .schema()
                .index_of(field.name())
                .map_err(|_| ConvertError::BadFooter {
                    reason: format!("column {} is missing", field.name()),
                })?;
        roots.push(index);
    }
    let mask = ProjectionMask::roots(metadata.parquet_schema(), roots);
    let file_schema = typed_schema(columns.as_ref());
    let mut writer = ArrowWriter::try_new(
        Vec::with_capacity(file.len() * 2),
        file_schema.clone(),
        Some(writer_properties(options)?),
    )?;
    for row_group in 0..metadata.metadata().num_row_groups() {
        let reader =
            ParquetRecordBatchReaderBuilder::new_with_metadata(file.clone(), metadata.clone())
                .with_projection(mask.clone())
                .with_row_groups(vec![row_group])
                .with_batch_size(READ_BATCH_ROWS_MAX)
                .build()?;
        for batch in reader {
            // The base schema in its own order, types checked.
            let batch = batch?;
            let arrays = base
                .fields()
                .iter()
                .map(|field| batch.column_by_name(field.name()).cloned())
                .collect::<Option<Vec<ArrayRef>>>()
                .ok_or_else(|| ConvertError::BadFooter {
                    reason: "a base column went missing while reading".into(),
                })?;
            let batch = RecordBatch::try_new(base.clone(), arrays)?;
            writer.write(&with_typed_columns(batch, columns.as_ref(), &file_schema)?)?;
        }
        writer.flush()?;
    }
    let kept = metadata
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .into_iter()
        .flatten()
        .filter(|entry| entry.key.starts_with("lakestream.") && entry.key != VALUE_SCHEMA_KEY);
    for entry in kept {
        writer.append_key_value_metadata(entry.clone());
    }
    writer.append_key_value_metadata(KeyValue::new(
        VALUE_SCHEMA_KEY.to_string(),
        columns.describe(),
    ));
    Ok((writer.into_inner()?, stats))
}

fn writer_properties(options: &ConvertOptions) -> Result<WriterProperties, ConvertError> {
    let compression = match options.codec {
        ParquetCodec::Zstd => ParquetCompression::ZSTD(ZstdLevel::try_new(1)?),
        ParquetCodec::Snappy => ParquetCompression::SNAPPY,
    };
    // The record's own bytes (kept for Kafka, large, read whole) take the configured codec; the
    // columns queries read (offsets, timestamps, batch fields, typed value fields) are not
    // compressed: they are encoded compactly instead (dictionaries, run lengths, deltas), and
    // a scan uses their pages as they are, with no decompression and no copy.
    let mut builder = WriterProperties::builder().set_compression(ParquetCompression::UNCOMPRESSED);
    let header = |leaf: &str| {
        ColumnPath::new(vec![
            column::HEADERS.to_string(),
            "list".to_string(),
            column::HEADER_ELEMENT.to_string(),
            leaf.to_string(),
        ])
    };
    for path in [
        ColumnPath::from(column::KEY),
        ColumnPath::from(column::VALUE),
        ColumnPath::from(column::RAW_BATCH),
        header(column::HEADER_KEY),
        header(column::HEADER_VALUE),
    ] {
        builder = builder.set_column_compression(path, compression);
    }
    // Offsets and timestamps mostly rise by small steps: delta encoding makes them tiny. So do
    // integer and timestamp value fields (event times, counters, ids).
    let mut deltas = vec![
        ColumnPath::from(column::OFFSET),
        ColumnPath::from(column::TIMESTAMP),
    ];
    if let Some(columns) = &options.value_columns {
        for field in columns.fields().iter() {
            if matches!(
                field.data_type(),
                DataType::Int64 | DataType::Int32 | DataType::Timestamp(_, _)
            ) {
                deltas.push(ColumnPath::new(vec![
                    FIELDS_COLUMN.to_string(),
                    field.name().clone(),
                ]));
            }
        }
    }
    for path in deltas {
        builder = builder
            .set_column_dictionary_enabled(path.clone(), false)
            .set_column_encoding(path, Encoding::DELTA_BINARY_PACKED);
    }
    Ok(builder
        // Values are mostly distinct: a dictionary would be built and then abandoned.
        .set_column_dictionary_enabled(ColumnPath::from(column::VALUE), false)
        .set_column_dictionary_enabled(ColumnPath::from(column::RAW_BATCH), false)
        // Row groups are closed by `batches_to_parquet`, by bytes of log input.
        .set_max_row_group_row_count(None)
        .set_created_by(format!(
            "lakestream version {} ({DEFAULT_CREATED_BY})",
            env!("CARGO_PKG_VERSION")
        ))
        .build())
}

/// Offsets are non-negative, a batch's last offset + 1 fits an i64, and each batch starts after
/// the previous one ends.
fn check_offsets(
    header: &BatchHeader,
    previous_last_offset: Option<i64>,
) -> Result<(), ConvertError> {
    let in_range = header.base_offset >= 0
        && header.last_offset_delta >= 0
        && header
            .base_offset
            .checked_add(header.last_offset_delta as i64 + 1)
            .is_some();
    if !in_range {
        return Err(ConvertError::OffsetOutOfRange {
            base_offset: header.base_offset,
            last_offset_delta: header.last_offset_delta,
        });
    }
    match previous_last_offset {
        Some(previous) if header.base_offset <= previous => {
            Err(ConvertError::OffsetsNotIncreasing {
                base_offset: header.base_offset,
                previous_last_offset: previous,
            })
        }
        _ => Ok(()),
    }
}

/// The effective timestamp of a record: what a consumer sees.
fn effective_timestamp(header: &BatchHeader, timestamp_delta: i64) -> i64 {
    match header.timestamp_type() {
        TimestampType::CreateTime => header.base_timestamp.wrapping_add(timestamp_delta),
        TimestampType::LogAppendTime => header.max_timestamp,
    }
}

/// Checks that the records of `section` can be stored row by row: they parse, their count is
/// the header's, and their offset deltas increase within `0..=last_offset_delta`.
fn records_are_decodable(header: &BatchHeader, section: &[u8]) -> bool {
    if header.record_count <= 0 {
        return false;
    }
    let mut previous_delta = -1i32;
    for record in records_in_section(section, header.record_count) {
        let Ok(record) = record else {
            return false;
        };
        if record.offset_delta <= previous_delta || record.offset_delta > header.last_offset_delta {
            return false;
        }
        previous_delta = record.offset_delta;
    }
    true
}

#[derive(Default)]
struct StatsBuilder {
    base_offset: Option<i64>,
    last_offset: Option<i64>,
    timestamps: Option<(i64, i64)>,
    record_count: u64,
    batch_count: u64,
}

impl StatsBuilder {
    fn batch(&mut self, header: &BatchHeader, record_count: u64) {
        self.base_offset.get_or_insert(header.base_offset);
        self.last_offset = Some(header.last_offset());
        self.record_count += record_count;
        self.batch_count += 1;
    }

    fn timestamp(&mut self, timestamp: i64) {
        let (min, max) = self.timestamps.get_or_insert((timestamp, timestamp));
        *min = (*min).min(timestamp);
        *max = (*max).max(timestamp);
    }

    fn finish(&self, log_bytes: u64) -> Option<ObjectStats> {
        let (min_timestamp, max_timestamp) = self.timestamps.unwrap_or((-1, -1));
        Some(ObjectStats {
            base_offset: self.base_offset?,
            next_offset: self.last_offset? + 1,
            min_timestamp,
            max_timestamp,
            record_count: self.record_count,
            batch_count: self.batch_count,
            log_bytes,
        })
    }
}

/// Column builders for the rows of one row group.
struct Rows {
    len: usize,
    offset: Vec<i64>,
    timestamp: Vec<i64>,
    key: BinaryViewBuilder,
    value: BinaryViewBuilder,
    /// `headers` list offsets into `header_key`/`header_value`; starts with 0.
    header_offsets: Vec<i64>,
    header_count: i64,
    header_key: BinaryViewBuilder,
    header_value: BinaryViewBuilder,
    batch_base_offset: Vec<i64>,
    batch_last_offset_delta: Vec<i32>,
    batch_first_timestamp: Vec<i64>,
    batch_max_timestamp: Vec<i64>,
    batch_attributes: Vec<i16>,
    producer_id: Vec<i64>,
    producer_epoch: Vec<i16>,
    base_sequence: Vec<i32>,
    partition_leader_epoch: Vec<i32>,
    record_attributes: Vec<i8>,
    raw_batch: BinaryViewBuilder,
}

impl Default for Rows {
    fn default() -> Self {
        Rows {
            len: 0,
            offset: Vec::new(),
            timestamp: Vec::new(),
            key: BinaryViewBuilder::new(),
            value: BinaryViewBuilder::new(),
            header_offsets: vec![0],
            header_count: 0,
            header_key: BinaryViewBuilder::new(),
            header_value: BinaryViewBuilder::new(),
            batch_base_offset: Vec::new(),
            batch_last_offset_delta: Vec::new(),
            batch_first_timestamp: Vec::new(),
            batch_max_timestamp: Vec::new(),
            batch_attributes: Vec::new(),
            producer_id: Vec::new(),
            producer_epoch: Vec::new(),
            base_sequence: Vec::new(),
            partition_leader_epoch: Vec::new(),
            record_attributes: Vec::new(),
            raw_batch: BinaryViewBuilder::new(),
        }
    }
}

impl Rows {
    /// Adds the rows of one batch (its records, or one raw row); returns the bytes it counts
    /// for towards a row group: the batch's size, or its decompressed size if larger.
    fn push_batch(
        &mut self,
        header: &BatchHeader,
        batch: &[u8],
        decompress_limit: usize,
        scratch: &mut Vec<u8>,
        stats: &mut StatsBuilder,
    ) -> usize {
        let section = &batch[BATCH_HEADER_LEN..];
        let section = match header.compression() {
            Ok(Compression::None) => Some(section),
            Ok(compression) => decompress_into(compression, section, decompress_limit, scratch)
                .ok()
                .map(|()| &scratch[..]),
            Err(_) => None,
        };
        let decodable = section.filter(|section| records_are_decodable(header, section));
        let Some(section) = decodable else {
            self.push_raw(header, batch);
            stats.batch(header, header.record_count.max(0) as u64);
            if header.record_count > 0 {
                stats.timestamp(header.max_timestamp);
            }
            return batch
                .len()
                .max(section.map_or(0, <[u8]>::len) + BATCH_HEADER_LEN);
        };
        // `records_are_decodable` walked every record: none fails here.
        for record in records_in_section(section, header.record_count).flatten() {
            let timestamp = effective_timestamp(header, record.timestamp_delta);
            stats.timestamp(timestamp);
            self.push_record(header, &record, timestamp);
        }
        stats.batch(header, header.record_count as u64);
        batch.len().max(section.len() + BATCH_HEADER_LEN)
    }

    fn push_record(&mut self, header: &BatchHeader, record: &Record<'_>, timestamp: i64) {
        self.offset
            .push(header.base_offset + record.offset_delta as i64);
        self.timestamp.push(timestamp);
        append_nullable(&mut self.key, record.key);
        append_nullable(&mut self.value, record.value);
        for header in record.headers() {
            self.header_key.append_value(header.key);
            append_nullable(&mut self.header_value, header.value);
            self.header_count += 1;
        }
        self.header_offsets.push(self.header_count);
        self.push_batch_fields(header);
        self.record_attributes.push(record.attributes);
        self.raw_batch.append_null();
        self.len += 1;
    }

    fn push_raw(&mut self, header: &BatchHeader, batch: &[u8]) {
        self.offset.push(header.base_offset);
        self.timestamp.push(header.max_timestamp);
        self.key.append_null();
        self.value.append_null();
        self.header_offsets.push(self.header_count);
        self.push_batch_fields(header);
        self.record_attributes.push(0);
        self.raw_batch.append_value(batch);
        self.len += 1;
    }

    fn push_batch_fields(&mut self, header: &BatchHeader) {
        self.batch_base_offset.push(header.base_offset);
        self.batch_last_offset_delta.push(header.last_offset_delta);
        self.batch_first_timestamp.push(header.base_timestamp);
        self.batch_max_timestamp.push(header.max_timestamp);
        self.batch_attributes.push(header.attributes);
        self.producer_id.push(header.producer_id);
        self.producer_epoch.push(header.producer_epoch);
        self.base_sequence.push(header.base_sequence);
        self.partition_leader_epoch
            .push(header.partition_leader_epoch);
    }

    /// The rows so far as an Arrow batch; the builders start over, keeping their sizes.
    fn finish(&mut self, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
        fn take<T: arrow_buffer::ArrowNativeType>(values: &mut Vec<T>) -> ScalarBuffer<T> {
            let capacity = values.len();
            ScalarBuffer::from(std::mem::replace(values, Vec::with_capacity(capacity)))
        }
        let entries = StructArray::try_new(
            header_fields(),
            vec![
                Arc::new(self.header_key.finish()),
                Arc::new(self.header_value.finish()),
            ],
            None,
        )?;
        let header_offsets = take(&mut self.header_offsets);
        self.header_offsets.push(0);
        self.header_count = 0;
        let headers = LargeListArray::try_new(
            header_element(),
            OffsetBuffer::new(header_offsets),
            Arc::new(entries),
            None,
        )?;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::new(take(&mut self.offset), None)),
            Arc::new(
                TimestampMillisecondArray::new(take(&mut self.timestamp), None)
                    .with_timezone("UTC"),
            ),
            Arc::new(self.key.finish()),
            Arc::new(self.value.finish()),
            Arc::new(headers),
            Arc::new(Int64Array::new(take(&mut self.batch_base_offset), None)),
            Arc::new(Int32Array::new(
                take(&mut self.batch_last_offset_delta),
                None,
            )),
            Arc::new(Int64Array::new(take(&mut self.batch_first_timestamp), None)),
            Arc::new(Int64Array::new(take(&mut self.batch_max_timestamp), None)),
            Arc::new(Int16Array::new(take(&mut self.batch_attributes), None)),
            Arc::new(Int64Array::new(take(&mut self.producer_id), None)),
            Arc::new(Int16Array::new(take(&mut self.producer_epoch), None)),
            Arc::new(Int32Array::new(take(&mut self.base_sequence), None)),
            Arc::new(Int32Array::new(
                take(&mut self.partition_leader_epoch),
                None,
            )),
            Arc::new(Int8Array::new(take(&mut self.record_attributes), None)),
            Arc::new(self.raw_batch.finish()),
        ];
        self.len = 0;
        RecordBatch::try_new(schema.clone(), columns)
    }
}

fn append_nullable(builder: &mut BinaryViewBuilder, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => builder.append_value(bytes),
        None => builder.append_null(),
    }
}

// ---------------------------------------------------------------------------------------------
// Parquet → batches

/// Where one batch is in [`ColdBatches`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColdBatch {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The largest effective timestamp of the batch's records (for a raw batch: its header's
    /// max timestamp); `i64::MIN` for a batch without records.
    pub max_timestamp: i64,
    pub position: usize,
    pub len: usize,
}

/// The batches of one cold object, re-encoded: contiguous v2 batches and an index.
#[derive(Clone, Debug)]
pub struct ColdBatches {
    bytes: Bytes,
    index: Vec<ColdBatch>,
    /// `running_max_timestamp[i]` = max of `index[..=i].max_timestamp`, for a binary search.
    running_max_timestamp: Vec<i64>,
}

impl ColdBatches {
    /// Base offset of the first batch.
    pub fn base_offset(&self) -> i64 {
        self.index.first().map_or(0, |batch| batch.base_offset)
    }

    /// Last offset of the last batch + 1.
    pub fn next_offset(&self) -> i64 {
        self.index.last().map_or(0, |batch| batch.last_offset + 1)
    }

    /// Memory held, for a bytes-bounded cache.
    pub fn size_bytes(&self) -> usize {
        self.bytes.len()
            + self.index.len() * std::mem::size_of::<ColdBatch>()
            + self.running_max_timestamp.len() * std::mem::size_of::<i64>()
    }

    /// All the batches, contiguous.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn batches(&self) -> &[ColdBatch] {
        &self.index
    }

    /// Same semantics as the log's `read_until`: whole batches starting with the batch that
    /// holds `offset` (or the next batch after a gap), stopping before `max_bytes` would be
    /// exceeded (the first batch is returned whatever its size) and before any batch whose last
    /// offset is >= `end_offset`. A zero-copy slice; empty if nothing qualifies.
    pub fn read(&self, offset: i64, max_bytes: usize, end_offset: i64) -> Bytes {
        let first = self
            .index
            .partition_point(|batch| batch.last_offset < offset);
        let Some(head) = self.index.get(first) else {
            return Bytes::new();
        };
        if head.last_offset >= end_offset {
            return Bytes::new();
        }
        let start = head.position;
        let mut end = head.position + head.len;
        for batch in &self.index[first + 1..] {
            let batch_end = batch.position + batch.len;
            if batch.last_offset >= end_offset || batch_end - start > max_bytes {
                break;
            }
            end = batch_end;
        }
        self.bytes.slice(start..end)
    }

    /// The first record whose effective timestamp is >= `timestamp_ms`, as (offset, timestamp).
    /// Exact per record, except inside a raw (undecodable) batch, which answers with its base
    /// offset and max timestamp.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Option<(i64, i64)> {
        let first = self
            .running_max_timestamp
            .partition_point(|&max| max < timestamp_ms);
        let batch = self.index.get(first)?;
        let bytes = &self.bytes[batch.position..batch.position + batch.len];
        let header = BatchHeader::parse(bytes).ok()?;
        let whole_batch = Some((header.base_offset, batch.max_timestamp));
        let Ok(records) = records::records(bytes) else {
            return whole_batch;
        };
        for record in records {
            let Ok(record) = record else {
                return whole_batch;
            };
            let timestamp = effective_timestamp(&header, record.timestamp_delta);
            if timestamp >= timestamp_ms {
                return Some((header.base_offset + record.offset_delta as i64, timestamp));
            }
        }
        whole_batch
    }
}

/// Reads only the stats from a Parquet footer (for checking an object against the manifest).
pub fn read_stats(file: &Bytes) -> Result<ObjectStats, ConvertError> {
    let metadata = ParquetMetaDataReader::new().parse_and_finish(file)?;
    stats_from_footer(metadata.file_metadata())
}

/// Reads the typed value columns' description ([`VALUE_SCHEMA_KEY`]) from a Parquet footer.
pub fn read_value_schema(file: &Bytes) -> Result<Option<String>, ConvertError> {
    let metadata = ParquetMetaDataReader::new().parse_and_finish(file)?;
    Ok(metadata
        .file_metadata()
        .key_value_metadata()
        .into_iter()
        .flatten()
        .find(|entry| entry.key == VALUE_SCHEMA_KEY)
        .and_then(|entry| entry.value.clone()))
}

fn stats_from_footer(metadata: &FileMetaData) -> Result<ObjectStats, ConvertError> {
    let value = |key: &str| {
        metadata
            .key_value_metadata()
            .into_iter()
            .flatten()
            .find(|entry| entry.key == key)
            .and_then(|entry| entry.value.as_deref())
    };
    let bad = |reason: String| ConvertError::BadFooter { reason };
    match value(FORMAT_VERSION_KEY) {
        Some(FORMAT_VERSION) => {}
        other => {
            return Err(bad(format!(
                "{FORMAT_VERSION_KEY} is {other:?}, this reader knows {FORMAT_VERSION:?}"
            )));
        }
    }
    let json = value(STATS_KEY).ok_or_else(|| bad(format!("{STATS_KEY} is missing")))?;
    serde_json::from_str(json).map_err(|error| bad(format!("{STATS_KEY} is not valid: {error}")))
}

/// Re-encodes a Parquet object written by [`batches_to_parquet`] into uncompressed v2 batches,
/// one per original batch, with an index. Records of a LogAppendTime batch get timestamp delta
/// 0: consumers take the batch's max timestamp for every record of such a batch, which is all
/// the object keeps. The object is checked as it is read (offsets increase, rows fit their
/// batch, raw batches are valid) and against its footer's [`ObjectStats`].
pub fn parquet_to_batches(file: Bytes) -> Result<ColdBatches, ConvertError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
    let footer = stats_from_footer(builder.metadata().file_metadata())?;
    let estimate: i64 = builder
        .metadata()
        .row_groups()
        .iter()
        .map(|group| group.total_byte_size())
        .sum();
    let capacity = (estimate.max(0) as usize)
        .max(footer.log_bytes as usize)
        .min(PRESIZE_BYTES_MAX);
    let batch_count = (footer.batch_count as usize).min(PRESIZE_BYTES_MAX / 64);
    let rows = builder.metadata().file_metadata().num_rows().max(1) as usize;
    let row_bytes = (estimate.max(0) as usize / rows).max(1);
    let batch_rows = (READ_BATCH_BYTES / row_bytes).clamp(READ_BATCH_ROWS_MIN, READ_BATCH_ROWS_MAX);
    let base_columns = schema().fields().len();
    let typed = builder.schema().fields().len() > base_columns;
    let builder = if typed {
        let mask = ProjectionMask::roots(builder.parquet_schema(), 0..base_columns);
        builder.with_projection(mask)
    } else {
        builder
    };
    let reader = builder.with_batch_size(batch_rows).build()?;
    let mut encoder = ReEncoder::new(capacity, batch_count);
    for batch in reader {
        let batch = batch?;
        encoder.push(&Columns::of(&batch)?)?;
    }
    let (cold, rows) = encoder.finish(footer.log_bytes)?;
    if rows != footer {
        return Err(ConvertError::StatsMismatch {
            footer: Box::new(footer),
            rows: Box::new(rows),
        });
    }
    Ok(cold)
}

/// The columns of one Arrow batch, type-checked once.
struct Columns<'a> {
    rows: usize,
    offset: &'a [i64],
    timestamp: &'a [i64],
    key: &'a BinaryViewArray,
    value: &'a BinaryViewArray,
    header_offsets: &'a [i64],
    header_key: &'a BinaryViewArray,
    header_value: &'a BinaryViewArray,
    batch_base_offset: &'a [i64],
    batch_last_offset_delta: &'a [i32],
    batch_first_timestamp: &'a [i64],
    batch_max_timestamp: &'a [i64],
    batch_attributes: &'a [i16],
    producer_id: &'a [i64],
    producer_epoch: &'a [i16],
    base_sequence: &'a [i32],
    partition_leader_epoch: &'a [i32],
    record_attributes: &'a [i8],
    raw_batch: &'a BinaryViewArray,
}

impl<'a> Columns<'a> {
    fn of(batch: &'a RecordBatch) -> Result<Columns<'a>, ConvertError> {
        fn bad(column: &'static str) -> ConvertError {
            ConvertError::BadColumn { column }
        }
        fn required<'a, T: ArrowPrimitiveType>(
            batch: &'a RecordBatch,
            column: &'static str,
        ) -> Result<&'a [T::Native], ConvertError> {
            batch
                .column_by_name(column)
                .and_then(|array| array.as_primitive_opt::<T>())
                .filter(|array| array.null_count() == 0)
                .map(|array| &array.values()[..])
                .ok_or(bad(column))
        }
        fn binary<'a>(
            array: Option<&'a ArrayRef>,
            column: &'static str,
            nullable: bool,
        ) -> Result<&'a BinaryViewArray, ConvertError> {
            array
                .and_then(|array| array.as_binary_view_opt())
                .filter(|array| nullable || array.null_count() == 0)
                .ok_or(bad(column))
        }
        let headers = batch
            .column_by_name(column::HEADERS)
            .and_then(|array| array.as_list_opt::<i64>())
            .filter(|array| array.null_count() == 0)
            .ok_or(bad(column::HEADERS))?;
        let entries = headers
            .values()
            .as_struct_opt()
            .ok_or(bad(column::HEADERS))?;
        let header_key = binary(
            entries.column_by_name(column::HEADER_KEY),
            column::HEADERS,
            false,
        )?;
        let header_value = binary(
            entries.column_by_name(column::HEADER_VALUE),
            column::HEADERS,
            true,
        )?;
        let header_offsets = headers.value_offsets();
        if header_offsets
            .iter()
            .any(|&end| end < 0 || end as usize > header_key.len())
            || header_key.len() != header_value.len()
        {
            return Err(bad(column::HEADERS));
        }
        Ok(Columns {
            rows: batch.num_rows(),
            offset: required::<Int64Type>(batch, column::OFFSET)?,
            timestamp: required::<TimestampMillisecondType>(batch, column::TIMESTAMP)?,
            key: binary(batch.column_by_name(column::KEY), column::KEY, true)?,
            value: binary(batch.column_by_name(column::VALUE), column::VALUE, true)?,
            header_offsets,
            header_key,
            header_value,
            batch_base_offset: required::<Int64Type>(batch, column::BATCH_BASE_OFFSET)?,
            batch_last_offset_delta: required::<Int32Type>(batch, column::BATCH_LAST_OFFSET_DELTA)?,
            batch_first_timestamp: required::<Int64Type>(batch, column::BATCH_FIRST_TIMESTAMP)?,
            batch_max_timestamp: required::<Int64Type>(batch, column::BATCH_MAX_TIMESTAMP)?,
            batch_attributes: required::<Int16Type>(batch, column::BATCH_ATTRIBUTES)?,
            producer_id: required::<Int64Type>(batch, column::PRODUCER_ID)?,
            producer_epoch: required::<Int16Type>(batch, column::PRODUCER_EPOCH)?,
            base_sequence: required::<Int32Type>(batch, column::BASE_SEQUENCE)?,
            partition_leader_epoch: required::<Int32Type>(batch, column::PARTITION_LEADER_EPOCH)?,
            record_attributes: required::<Int8Type>(batch, column::RECORD_ATTRIBUTES)?,
            raw_batch: binary(
                batch.column_by_name(column::RAW_BATCH),
                column::RAW_BATCH,
                true,
            )?,
        })
    }

    fn nullable(array: &'a BinaryViewArray, row: usize) -> Option<&'a [u8]> {
        (!array.is_null(row)).then(|| array.value(row))
    }

    fn batch_header(&self, row: usize) -> BatchHeader {
        BatchHeader {
            base_offset: self.batch_base_offset[row],
            batch_length: 0,
            partition_leader_epoch: self.partition_leader_epoch[row],
            magic: MAGIC_V2,
            crc: 0,
            attributes: self.batch_attributes[row],
            last_offset_delta: self.batch_last_offset_delta[row],
            base_timestamp: self.batch_first_timestamp[row],
            max_timestamp: self.batch_max_timestamp[row],
            producer_id: self.producer_id[row],
            producer_epoch: self.producer_epoch[row],
            base_sequence: self.base_sequence[row],
            record_count: 0,
        }
    }
}

/// A batch being re-encoded.
struct OpenBatch {
    header: BatchHeader,
    encoder: BatchEncoder,
    max_timestamp: i64,
}

/// Re-encodes rows (over any number of Arrow batches) into one buffer of v2 batches.
struct ReEncoder {
    out: Vec<u8>,
    index: Vec<ColdBatch>,
    open: Option<OpenBatch>,
    /// The last offset taken so far: every row's offset must be above it.
    last_offset: Option<i64>,
    stats: StatsBuilder,
}

impl ReEncoder {
    fn new(capacity: usize, batch_count: usize) -> ReEncoder {
        ReEncoder {
            out: Vec::with_capacity(capacity),
            index: Vec::with_capacity(batch_count),
            open: None,
            last_offset: None,
            stats: StatsBuilder::default(),
        }
    }

    fn push(&mut self, columns: &Columns<'_>) -> Result<(), ConvertError> {
        for row in 0..columns.rows {
            let offset = columns.offset[row];
            if self.last_offset.is_some_and(|last| offset <= last) {
                return Err(ConvertError::row(offset, "offsets do not increase"));
            }
            if let Some(raw) = Columns::nullable(columns.raw_batch, row) {
                self.close()?;
                self.push_raw(offset, raw)?;
                continue;
            }
            let base_offset = columns.batch_base_offset[row];
            if self.open.as_ref().map(|open| open.header.base_offset) != Some(base_offset) {
                self.close()?;
                self.open(columns.batch_header(row))?;
            }
            let open = self.open.as_mut().expect("opened above");
            let offset_delta = offset
                .checked_sub(base_offset)
                .filter(|delta| (0..=open.header.last_offset_delta as i64).contains(delta))
                .ok_or_else(|| ConvertError::row(offset, "offset is outside its batch"))?;
            let timestamp = columns.timestamp[row];
            let timestamp_delta = match open.header.timestamp_type() {
                TimestampType::CreateTime => timestamp.wrapping_sub(open.header.base_timestamp),
                TimestampType::LogAppendTime => 0,
            };
            let record = RecordFields {
                attributes: columns.record_attributes[row],
                timestamp_delta,
                offset_delta: offset_delta as i32,
                key: Columns::nullable(columns.key, row),
                value: Columns::nullable(columns.value, row),
            };
            let (start, end) = (
                columns.header_offsets[row] as usize,
                columns.header_offsets[row + 1] as usize,
            );
            if start > end {
                return Err(ConvertError::row(offset, "headers list offsets decrease"));
            }
            let headers = (start..end).map(|entry| Header {
                key: columns.header_key.value(entry),
                value: Columns::nullable(columns.header_value, entry),
            });
            open.encoder
                .record(&mut self.out, &record, headers)
                .map_err(|error| ConvertError::row(offset, error))?;
            open.max_timestamp = open.max_timestamp.max(timestamp);
            self.stats.timestamp(timestamp);
            self.last_offset = Some(offset);
        }
        Ok(())
    }

    fn open(&mut self, header: BatchHeader) -> Result<(), ConvertError> {
        check_offsets(&header, self.index.last().map(|batch| batch.last_offset))
            .map_err(|error| ConvertError::row(header.base_offset, error))?;
        let encoder = BatchEncoder::begin(&mut self.out, &header);
        self.open = Some(OpenBatch {
            header,
            encoder,
            max_timestamp: i64::MIN,
        });
        Ok(())
    }

    fn close(&mut self) -> Result<(), ConvertError> {
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        let record_count = open.encoder.record_count();
        let range = open
            .encoder
            .finish(&mut self.out)
            .map_err(|error| ConvertError::row(open.header.base_offset, error))?;
        self.index.push(ColdBatch {
            base_offset: open.header.base_offset,
            last_offset: open.header.last_offset(),
            max_timestamp: open.max_timestamp,
            position: range.start,
            len: range.len(),
        });
        self.stats.batch(&open.header, record_count as u64);
        self.last_offset = Some(open.header.last_offset());
        Ok(())
    }

    fn push_raw(&mut self, offset: i64, raw: &[u8]) -> Result<(), ConvertError> {
        let header = records::validate_stored_batch(raw)
            .map_err(|error| ConvertError::row(offset, format!("raw batch: {error}")))?;
        if header.base_offset != offset || header.total_len() != raw.len() {
            return Err(ConvertError::row(
                offset,
                "raw batch does not match its row (base offset or length)",
            ));
        }
        check_offsets(&header, self.index.last().map(|batch| batch.last_offset))
            .map_err(|error| ConvertError::row(offset, error))?;
        let position = self.out.len();
        self.out.extend_from_slice(raw);
        let max_timestamp = if header.record_count > 0 {
            self.stats.timestamp(header.max_timestamp);
            header.max_timestamp
        } else {
            i64::MIN
        };
        self.index.push(ColdBatch {
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
            max_timestamp,
            position,
            len: raw.len(),
        });
        self.stats.batch(&header, header.record_count as u64);
        self.last_offset = Some(header.last_offset());
        Ok(())
    }

    fn finish(mut self, log_bytes: u64) -> Result<(ColdBatches, ObjectStats), ConvertError> {
        self.close()?;
        let stats = self.stats.finish(log_bytes).ok_or(ConvertError::Empty)?;
        if self.out.capacity() - self.out.len() > self.out.len() / 8 {
            self.out.shrink_to_fit();
        }
        let mut running = i64::MIN;
        let running_max_timestamp = self
            .index
            .iter()
            .map(|batch| {
                running = running.max(batch.max_timestamp);
                running
            })
            .collect();
        let cold = ColdBatches {
            bytes: Bytes::from(self.out),
            index: self.index,
            running_max_timestamp,
        };
        Ok((cold, stats))
    }
}

#[cfg(test)]
mod tests;
