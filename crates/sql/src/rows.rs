//! Turning records into Arrow rows of a topic table: from Kafka batches (the hot log, and raw
//! batches of cold objects) and from cold Parquet rows.

use std::ops::Range;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayBuilder, ArrayRef, BinaryArray, BinaryBuilder, Int32Array, Int64Builder, ListArray,
    RecordBatch, StringArray, StringBuilder, StructArray, TimestampMillisecondArray,
    TimestampMillisecondBuilder,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use bytes::Bytes;
use records::{BatchHeader, Compression, TimestampType};

use crate::format::{self, ERROR_COLUMN, ValueFormat};

pub const PARTITION: &str = "_partition";
pub const OFFSET: &str = "_offset";
pub const TIMESTAMP: &str = "_timestamp";
pub const KEY: &str = "_key";
pub const KEY_TEXT: &str = "_key_text";
pub const HEADERS: &str = "_headers";
pub const VALUE: &str = "_value";
/// Positions of `_offset` and `_timestamp` in a table schema.
pub const OFFSET_INDEX: usize = 1;
pub const TIMESTAMP_INDEX: usize = 2;

/// Rows per record batch handed to DataFusion.
pub const BATCH_ROWS: usize = 8192;

/// The largest a compressed batch may decompress to while scanning.
const DECOMPRESS_LIMIT: usize = 256 << 20;

pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

fn header_fields() -> Fields {
    Fields::from(vec![
        Field::new("key", DataType::Utf8, true),
        Field::new("value", DataType::Binary, true),
    ])
}

fn headers_type() -> DataType {
    DataType::List(Arc::new(Field::new(
        "item",
        DataType::Struct(header_fields()),
        true,
    )))
}

/// The table schema of a topic: its own columns, then the value's decoded columns and
/// `_error` when the format decodes.
pub fn table_schema(format: &ValueFormat) -> SchemaRef {
    let mut fields = vec![
        Field::new(PARTITION, DataType::Int32, false),
        Field::new(OFFSET, DataType::Int64, false),
        Field::new(TIMESTAMP, timestamp_type(), false),
        Field::new(KEY, DataType::Binary, true),
        Field::new(KEY_TEXT, DataType::Utf8, true),
        Field::new(HEADERS, headers_type(), true),
        Field::new(VALUE, DataType::Binary, true),
    ];
    if format.decodes() {
        // Text value fields are string views: cheap to read from Parquet dictionaries, and
        // DataFusion groups and compares short ones inline.
        fields.extend(format.fields().iter().map(|field| {
            let field = field.as_ref().clone();
            if field.data_type() == &DataType::Utf8 {
                field.with_data_type(DataType::Utf8View)
            } else {
                field
            }
        }));
        fields.push(Field::new(ERROR_COLUMN, DataType::Utf8, true));
    }
    Arc::new(Schema::new(fields))
}

/// Offsets and timestamps a scan keeps: `[low, high)` each, except that a `high` of `i64::MAX`
/// is no upper bound ([`below`]): a producer may timestamp a record `i64::MAX`, and a full scan
/// keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ranges {
    pub offsets: (i64, i64),
    pub timestamps: (i64, i64),
}

impl Default for Ranges {
    fn default() -> Self {
        Ranges {
            offsets: (i64::MIN, i64::MAX),
            timestamps: (i64::MIN, i64::MAX),
        }
    }
}

impl Ranges {
    pub fn keeps(&self, offset: i64, timestamp: i64) -> bool {
        offset >= self.offsets.0
            && below(offset, self.offsets.1)
            && timestamp >= self.timestamps.0
            && below(timestamp, self.timestamps.1)
    }

    pub fn is_empty(&self) -> bool {
        let empty = |(low, high): (i64, i64)| low > high || (low == high && high != i64::MAX);
        empty(self.offsets) || empty(self.timestamps)
    }
}

/// Whether `value` lies below a range's `high` end, where `i64::MAX` is no bound at all.
#[inline]
pub fn below(value: i64, high: i64) -> bool {
    value < high || high == i64::MAX
}

/// Record values where they lie, one per row: in the reads they came from (kept alive by
/// reference), so a value is copied only if the raw `_value` column wants it, not to decode it.
#[derive(Default)]
pub struct ValueSpans {
    chunks: Vec<Bytes>,
    /// Per row: the chunk, and the value's range in it; `None` for a NULL value.
    spans: Vec<Option<(u32, Range<u32>)>>,
    bytes: usize,
}

/// An Arrow buffer as the owner of a [`Bytes`].
struct ArrowBytes(arrow::buffer::Buffer);

/// The value bytes of a binary array as one [`Bytes`] (no copy); the array's offsets index it.
pub fn binary_chunk(array: &BinaryArray) -> Bytes {
    Bytes::from_owner(ArrowBytes(array.values().clone()))
}

impl AsRef<[u8]> for ArrowBytes {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

impl ValueSpans {
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The value of `row`; `None` if NULL.
    pub fn get(&self, row: usize) -> Option<&[u8]> {
        let (chunk, range) = self.spans[row].as_ref()?;
        Some(&self.chunks[*chunk as usize][range.start as usize..range.end as usize])
    }

    /// The index of `chunk` among the chunks, added if it is not the last one.
    fn chunk(&mut self, chunk: &Bytes) -> u32 {
        let same = self
            .chunks
            .last()
            .is_some_and(|last| last.as_ptr() == chunk.as_ptr() && last.len() == chunk.len());
        if !same {
            self.chunks.push(chunk.clone());
        }
        (self.chunks.len() - 1) as u32
    }

    /// Adds a row whose value, if any, lies inside `chunk` (the chunk is the index from
    /// [`ValueSpans::chunk`]; `within` is the chunk's bytes).
    fn push(&mut self, chunk: u32, within: &[u8], value: Option<&[u8]>) {
        let span = value.map(|value| {
            let start = value.as_ptr() as usize - within.as_ptr() as usize;
            debug_assert!(start + value.len() <= within.len());
            self.bytes += value.len();
            (chunk, start as u32..(start + value.len()) as u32)
        });
        self.spans.push(span);
    }

    /// The values as one binary array (a copy).
    pub fn to_binary(&self) -> BinaryArray {
        let mut builder = BinaryBuilder::with_capacity(self.len(), self.bytes);
        for row in 0..self.len() {
            builder.append_option(self.get(row));
        }
        builder.finish()
    }

    fn clear(&mut self) {
        self.chunks.clear();
        self.spans.clear();
        self.bytes = 0;
    }
}

/// Collects rows of one partition and turns them into record batches of the projected columns.
pub struct RowsBuilder {
    partition: i32,
    format: Arc<ValueFormat>,
    /// The table schema and the projected columns' indexes in it.
    table: SchemaRef,
    projection: Vec<usize>,
    output: SchemaRef,
    offsets: Int64Builder,
    timestamps: TimestampMillisecondBuilder,
    keys: BinaryBuilder,
    values: ValueSpans,
    header_keys: StringBuilder,
    header_values: BinaryBuilder,
    header_offsets: Vec<i32>,
    /// Whether keys, values, headers are needed at all.
    need_key: bool,
    need_value: bool,
    need_headers: bool,
    rows: usize,
    /// JSON values decode as they are walked, while in cache (`None`: another format, or no
    /// decoded column projected).
    json: Option<crate::json_fast::RowDecoder>,
}

impl RowsBuilder {
    pub fn new(
        partition: i32,
        format: Arc<ValueFormat>,
        table: SchemaRef,
        projection: Vec<usize>,
    ) -> RowsBuilder {
        let output = Arc::new(
            table
                .project(&projection)
                .expect("projection within the table"),
        );
        let named = |name: &str| output.fields().iter().any(|field| field.name() == name);
        let need_value =
            named(VALUE) || (format.decodes() && projection.iter().any(|&index| index > 6));
        let json = match format.as_ref() {
            ValueFormat::Json { schema, .. } if projection.iter().any(|&index| index > 6) => {
                let wanted: Vec<bool> = (0..schema.fields().len())
                    .map(|field| projection.contains(&(7 + field)))
                    .collect();
                // Decoded into the table's types (text as string views), so nothing is cast.
                let types = Arc::new(Schema::new(
                    table.fields()[7..7 + schema.fields().len()].to_vec(),
                ));
                crate::json_fast::RowDecoder::new(&types, &wanted, BATCH_ROWS, BATCH_ROWS * 32)
            }
            _ => None,
        };
        RowsBuilder {
            json,
            need_key: named(KEY) || named(KEY_TEXT),
            need_value,
            need_headers: named(HEADERS),
            partition,
            format,
            table,
            projection,
            output,
            offsets: Int64Builder::with_capacity(BATCH_ROWS),
            timestamps: TimestampMillisecondBuilder::with_capacity(BATCH_ROWS).with_timezone("UTC"),
            keys: BinaryBuilder::new(),
            values: ValueSpans::default(),
            header_keys: StringBuilder::new(),
            header_values: BinaryBuilder::new(),
            header_offsets: vec![0],
            rows: 0,
        }
    }

    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.output)
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Adds the kept records of the stored Kafka batch at `at` in `chunk`; returns how many rows
    /// it added. Values are not copied: the builder keeps `chunk` until [`RowsBuilder::finish`].
    pub fn add_batch(
        &mut self,
        chunk: &Bytes,
        at: Range<usize>,
        ranges: &Ranges,
    ) -> Result<usize, ArrowError> {
        let batch = &chunk[at];
        let header = BatchHeader::parse(batch).map_err(external)?;
        if header.last_offset() < ranges.offsets.0
            || header.base_offset >= ranges.offsets.1
            || header.max_timestamp < ranges.timestamps.0
            || header.is_control()
        {
            return Ok(0);
        }
        let log_append_time = header.timestamp_type() == TimestampType::LogAppendTime;
        let compression = header.compression().map_err(external)?;
        // The values of a compressed batch lie in its decompressed records, kept as a chunk.
        let decompressed;
        let (chunk, iter) = if compression == Compression::None {
            (chunk, records::records(batch).map_err(external)?)
        } else {
            let section = &batch[records::BATCH_HEADER_LEN..header.total_len()];
            let mut scratch = Vec::new();
            records::codecs::decompress_into(compression, section, DECOMPRESS_LIMIT, &mut scratch)
                .map_err(external)?;
            decompressed = Bytes::from(scratch);
            (
                &decompressed,
                records::records_in_section(&decompressed, header.record_count),
            )
        };
        let chunk_index = if self.need_value {
            self.values.chunk(chunk)
        } else {
            0
        };
        let before = self.rows;
        for record in iter {
            let record = record.map_err(external)?;
            let offset = header.base_offset + record.offset_delta as i64;
            let timestamp = if log_append_time {
                header.max_timestamp
            } else {
                // Wrapping, as every reader of stored batches: a producer chose both numbers.
                header.base_timestamp.wrapping_add(record.timestamp_delta)
            };
            if !ranges.keeps(offset, timestamp) {
                continue;
            }
            self.offsets.append_value(offset);
            self.timestamps.append_value(timestamp);
            if self.need_key {
                self.keys.append_option(record.key);
            }
            if self.need_value {
                self.values.push(chunk_index, chunk, record.value);
            }
            if let Some(json) = &mut self.json {
                json.push(record.value);
            }
            if self.need_headers {
                for header in record.headers() {
                    self.header_keys
                        .append_option(std::str::from_utf8(header.key).ok());
                    self.header_values.append_option(header.value);
                }
                self.header_offsets.push(self.header_keys.len() as i32);
            }
            self.rows += 1;
        }
        Ok(self.rows - before)
    }

    /// Adds rows read from a cold Parquet object (columns `offset`, `timestamp`, `key`, `value`,
    /// `headers` as `tier::convert` writes them, already cast to Binary), keeping those in range.
    pub fn add_cold_rows(
        &mut self,
        offsets: &arrow::array::Int64Array,
        timestamps: &TimestampMillisecondArray,
        keys: Option<&BinaryArray>,
        values: Option<&BinaryArray>,
        headers: Option<&ListArray>,
        ranges: &Ranges,
    ) -> usize {
        let before = self.rows;
        let values = match values {
            Some(values) if self.need_value => {
                let chunk = binary_chunk(values);
                let index = self.values.chunk(&chunk);
                Some((values, chunk, index))
            }
            _ => None,
        };
        for row in 0..offsets.len() {
            let (offset, timestamp) = (offsets.value(row), timestamps.value(row));
            if !ranges.keeps(offset, timestamp) {
                continue;
            }
            self.offsets.append_value(offset);
            self.timestamps.append_value(timestamp);
            if self.need_key {
                let keys = keys.expect("keys are read when needed");
                self.keys
                    .append_option((!keys.is_null(row)).then(|| keys.value(row)));
            }
            if self.need_value {
                let (values, chunk, index) = values.as_ref().expect("values are read when needed");
                let value = (!values.is_null(row)).then(|| values.value(row));
                self.values.push(*index, chunk, value);
                if let Some(json) = &mut self.json {
                    json.push(value);
                }
            }
            if self.need_headers {
                let headers = headers.expect("headers are read when needed");
                let entries = headers.value(row);
                let entries = entries
                    .as_any()
                    .downcast_ref::<StructArray>()
                    .expect("headers are structs");
                let header_keys = entries.column(0).as_any().downcast_ref::<BinaryArray>();
                let header_values = entries.column(1).as_any().downcast_ref::<BinaryArray>();
                if let (Some(header_keys), Some(header_values)) = (header_keys, header_values) {
                    for at in 0..entries.len() {
                        self.header_keys
                            .append_option(std::str::from_utf8(header_keys.value(at)).ok());
                        self.header_values.append_option(
                            (!header_values.is_null(at)).then(|| header_values.value(at)),
                        );
                    }
                }
                self.header_offsets.push(self.header_keys.len() as i32);
            }
            self.rows += 1;
        }
        self.rows - before
    }

    /// The rows collected so far as a record batch of the projected columns; the builder starts
    /// over.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let rows = self.rows;
        self.rows = 0;
        let offsets: ArrayRef = Arc::new(self.offsets.finish());
        let timestamps: ArrayRef = Arc::new(self.timestamps.finish());
        let keys = self.need_key.then(|| self.keys.finish());
        let values = self.need_value.then(|| std::mem::take(&mut self.values));
        let headers = if self.need_headers {
            let offsets = std::mem::replace(&mut self.header_offsets, vec![0]);
            let entries = StructArray::new(
                header_fields(),
                vec![
                    Arc::new(self.header_keys.finish()) as ArrayRef,
                    Arc::new(self.header_values.finish()),
                ],
                None,
            );
            Some(Arc::new(ListArray::new(
                Arc::new(Field::new("item", DataType::Struct(header_fields()), true)),
                OffsetBuffer::new(offsets.into()),
                Arc::new(entries),
                None,
            )) as ArrayRef)
        } else {
            None
        };
        let value_fields = self.format.fields().len();
        let decoded = match &values {
            Some(values)
                if self.format.decodes() && self.projection.iter().any(|&index| index > 6) =>
            {
                let wanted: Vec<bool> = (0..value_fields)
                    .map(|field| self.projection.contains(&(7 + field)))
                    .collect();
                let fast = self.json.as_mut().and_then(|json| json.finish());
                match (fast, self.format.as_ref()) {
                    (Some(columns), ValueFormat::Json { schema, .. }) => {
                        Some(format::flat_columns(schema, columns, rows))
                    }
                    // Another format, or some value was not of the common shape.
                    _ => Some(format::decode_spans(&self.format, values, Some(&wanted))?),
                }
            }
            _ => None,
        };
        let mut columns = Vec::with_capacity(self.projection.len());
        for &index in &self.projection {
            let column: ArrayRef = match index {
                0 => Arc::new(Int32Array::from_value(self.partition, rows)),
                1 => Arc::clone(&offsets),
                2 => Arc::clone(&timestamps),
                3 => Arc::new(keys.clone().expect("keys are read when projected")),
                4 => {
                    let keys = keys.as_ref().expect("keys are read when projected");
                    Arc::new(text_of(keys))
                }
                5 => Arc::clone(headers.as_ref().expect("headers are read when projected")),
                6 => Arc::new(
                    values
                        .as_ref()
                        .expect("values are read when projected")
                        .to_binary(),
                ),
                index if index < 7 + value_fields => {
                    let decoded = decoded.as_ref().expect("values are decoded when projected");
                    let column = &decoded.columns[index - 7];
                    let wanted = self.table.field(index).data_type();
                    if column.data_type() == wanted {
                        Arc::clone(column)
                    } else {
                        arrow::compute::cast(column, wanted)?
                    }
                }
                _ => {
                    let decoded = decoded.as_ref().expect("values are decoded when projected");
                    Arc::clone(&decoded.errors)
                }
            };
            columns.push(column);
        }
        // The spans' room is kept for the next rows; their chunks are let go.
        if let Some(mut values) = values {
            values.clear();
            self.values = values;
        }
        let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(rows));
        RecordBatch::try_new_with_options(Arc::clone(&self.output), columns, &options)
    }

    /// Whether the projection has decoded value columns or `_error`.
    pub fn needs_decoded(&self) -> bool {
        self.format.decodes() && self.projection.iter().any(|&index| index > 6)
    }

    /// Whether the projection has the table column at `index`.
    pub fn projects(&self, index: usize) -> bool {
        self.projection.contains(&index)
    }

    /// Whether no column is projected (only rows are counted).
    pub fn projects_nothing(&self) -> bool {
        self.projection.is_empty()
    }

    /// The names of the projected decoded value columns.
    pub fn projected_value_fields(&self) -> Vec<String> {
        let fields = self.format.fields().len();
        self.projection
            .iter()
            .filter(|&&index| index >= 7 && index < 7 + fields)
            .map(|&index| self.table.field(index).name().clone())
            .collect()
    }

    /// Whether the projection has `_error`.
    pub fn needs_error(&self) -> bool {
        let fields = self.format.fields().len();
        self.format.decodes() && self.projection.contains(&(7 + fields))
    }

    /// Whether keys (`_key`, `_key_text`) are needed.
    pub fn needs_key(&self) -> bool {
        self.need_key
    }

    /// Whether `_headers` is needed.
    pub fn needs_headers(&self) -> bool {
        self.need_headers
    }

    /// Whether the projection has the raw `_value`.
    pub fn needs_value_bytes(&self) -> bool {
        self.projection.contains(&6)
    }

    /// The projected columns straight from cold rows that carry typed value columns (`fields`,
    /// `fields_error`), already cut to the kept rows: nothing is parsed.
    pub fn typed_batch(&self, cold: &RecordBatch) -> Result<RecordBatch, ArrowError> {
        let rows = cold.num_rows();
        let column = |name: &str| {
            cold.column_by_name(name).cloned().ok_or_else(|| {
                ArrowError::SchemaError(format!("cold object without column {name}"))
            })
        };
        let binary = |name: &str| -> Result<ArrayRef, ArrowError> {
            arrow::compute::cast(&column(name)?, &DataType::Binary)
        };
        // Only the projected fields were read (none: no `fields` at all).
        let fields = cold.column_by_name(tier::convert::FIELDS_COLUMN);
        let fields =
            match fields {
                Some(fields) => Some(fields.as_any().downcast_ref::<StructArray>().ok_or_else(
                    || ArrowError::SchemaError("cold `fields` is not a struct".into()),
                )?),
                None => None,
            };
        let mut columns = Vec::with_capacity(self.projection.len());
        for &index in &self.projection {
            let table_field = self.table.field(index);
            let array: ArrayRef = match index {
                0 => Arc::new(Int32Array::from_value(self.partition, rows)),
                1 => column("offset")?,
                2 => column("timestamp")?,
                3 => binary("key")?,
                4 => {
                    let keys = binary("key")?;
                    Arc::new(text_of(
                        keys.as_any()
                            .downcast_ref::<BinaryArray>()
                            .expect("cast to binary"),
                    ))
                }
                5 => arrow::compute::cast(&column("headers")?, &headers_type())?,
                6 => binary("value")?,
                _ if table_field.name() == ERROR_COLUMN => {
                    column(tier::convert::FIELDS_ERROR_COLUMN)?
                }
                _ => match fields.and_then(|fields| fields.column_by_name(table_field.name())) {
                    Some(array) => arrow::compute::cast(array, table_field.data_type())?,
                    None => arrow::array::new_null_array(table_field.data_type(), rows),
                },
            };
            columns.push(array);
        }
        let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(rows));
        RecordBatch::try_new_with_options(Arc::clone(&self.output), columns, &options)
    }

    /// The table schema this builder serves.
    pub fn table(&self) -> &SchemaRef {
        &self.table
    }
}

/// The UTF-8 text of each key, NULL where it is not UTF-8.
fn text_of(keys: &BinaryArray) -> StringArray {
    keys.iter()
        .map(|key| key.and_then(|key| std::str::from_utf8(key).ok()))
        .collect()
}

fn external(error: impl std::error::Error + Send + Sync + 'static) -> ArrowError {
    ArrowError::ExternalError(Box::new(error))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A producer chooses a batch's base timestamp and its records' deltas: a sum past i64's
    /// range wraps (as the log's own readers do) instead of failing the scan.
    #[test]
    fn timestamps_past_i64_wrap_as_the_logs_readers_do() {
        let template = BatchHeader::parse(
            &records::BatchBuilder::new(0)
                .record(None, Some(b"a"), 0)
                .build(),
        )
        .unwrap();
        let header = BatchHeader {
            base_timestamp: i64::MAX,
            max_timestamp: i64::MAX,
            ..template
        };
        let mut out = Vec::new();
        let mut encoder = records::BatchEncoder::begin(&mut out, &header);
        for (offset_delta, timestamp_delta) in [(0, 0), (1, 1)] {
            let record = records::RecordFields {
                attributes: 0,
                timestamp_delta,
                offset_delta,
                key: None,
                value: Some(b"v"),
            };
            encoder.record(&mut out, &record, []).unwrap();
        }
        let range = encoder.finish(&mut out).unwrap();
        let format = Arc::new(ValueFormat::Raw);
        let table = table_schema(&format);
        let mut rows = RowsBuilder::new(0, format, Arc::clone(&table), vec![1, 2]);
        let chunk = Bytes::from(out);
        let added = rows.add_batch(&chunk, range, &Ranges::default()).unwrap();
        assert_eq!(added, 2);
        let batch = rows.finish().unwrap();
        let timestamps = batch
            .column(1)
            .as_any()
            .downcast_ref::<arrow::array::TimestampMillisecondArray>()
            .unwrap();
        assert_eq!(timestamps.values(), &[i64::MAX, i64::MIN]);
    }
}
