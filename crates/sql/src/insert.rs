//! `INSERT INTO topic SELECT ...`: rows become records produced into the topic.
//!
//! Columns are matched by name:
//! - `_key` and `_value` are bytes or text; `_key_text` is the key as text, used where `_key`
//!   is NULL.
//! - `_headers` (a list of `{key, value}`) become the record's headers.
//! - `_partition` is optional: when it is absent, NULL or -1, a keyed record goes where Kafka's
//!   default partitioner would put it, and a record without a key goes round-robin (from where
//!   the previous statement left off). Another negative partition is an error.
//! - `_timestamp` is optional: when it is absent or NULL, the record gets the time of the
//!   insert. One before 1970 is an error (Kafka's timestamps are milliseconds since then).
//! - A record's value is `_value`; where it is NULL, a JSON or CSV topic's value columns are
//!   encoded as one value (an Avro topic's, when no row of the batch has a `_value`); where
//!   those are all NULL too, the record is a tombstone (no value).
//! - `_offset` and `_error` are ignored: the log assigns offsets (so `INSERT INTO t2 SELECT *
//!   FROM t1` copies records).
//!
//! A record larger than the topic's `max.message.bytes` is an error, and batches are cut below
//! it. The statement answers once the records are durable, like acks=all.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use async_trait::async_trait;
use broker::Broker;
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan};
use futures::StreamExt;

use crate::format::ValueFormat;
use crate::rows::{HEADERS, KEY, KEY_TEXT, PARTITION, TIMESTAMP, VALUE};

/// Records per appended batch, once a statement is too large to hold.
const RECORDS_PER_BATCH: usize = 1000;

/// Bytes per appended batch at most (the topic's `max.message.bytes` may make it less).
const BATCH_BYTES: usize = 512 << 10;

/// Bytes a record takes at most besides its key, value and headers (its length, attributes,
/// deltas and the lengths of the rest, as varints), and a header besides its key and value.
const RECORD_OVERHEAD: usize = 40;
const HEADER_OVERHEAD: usize = 10;

/// Bytes of records an INSERT holds before appending anything: up to this size a statement is
/// all or nothing.
const ATOMIC_INSERT_BYTES: usize = 64 << 20;

/// Where the next statement's round-robin starts, so that one-row inserts spread too.
static ROUND_ROBIN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

pub fn plan(
    broker: Arc<Broker>,
    topic: Arc<broker::topics::Topic>,
    format: Arc<ValueFormat>,
    input: Arc<dyn ExecutionPlan>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let sink = TopicSink {
        schema: input.schema(),
        broker,
        topic,
        format,
    };
    Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
}

struct TopicSink {
    schema: SchemaRef,
    broker: Arc<Broker>,
    topic: Arc<broker::topics::Topic>,
    format: Arc<ValueFormat>,
}

impl fmt::Debug for TopicSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TopicSink({})", self.topic.name)
    }
}

impl DisplayAs for TopicSink {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TopicSink: topic={}", self.topic.name)
    }
}

/// Records waiting to be appended to one partition.
#[derive(Default)]
struct Pending {
    builder: Option<records::BatchBuilder>,
    count: usize,
    bytes: usize,
    /// Built batches, not appended yet.
    sealed: Vec<Vec<u8>>,
}

impl Pending {
    /// Builds the batch being filled.
    fn seal(&mut self) {
        if let Some(builder) = self.builder.take() {
            self.sealed.push(builder.build());
        }
        self.count = 0;
        self.bytes = 0;
    }
}

#[async_trait]
impl DataSink for TopicSink {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    async fn write_all(
        &self,
        mut data: SendableRecordBatchStream,
        _context: &Arc<TaskContext>,
    ) -> Result<u64> {
        let partitions = self.topic.partitions();
        let mut pending: Vec<Pending> = (0..partitions.len()).map(|_| Pending::default()).collect();
        let mut next = ROUND_ROBIN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let max_message_bytes = self.topic.config().max_message_bytes();
        let batch_bytes =
            BATCH_BYTES.min(max_message_bytes.saturating_sub(records::BATCH_HEADER_LEN));
        let mut total = 0u64;
        let mut written_end = vec![-1i64; partitions.len()];
        let mut buffered = 0usize;
        while let Some(batch) = data.next().await {
            let batch = batch?;
            let rows = Rows::of(&batch, &self.format)?;
            let now = broker::partition::now_ms();
            for row in 0..batch.num_rows() {
                let key = rows.key(row);
                let partition = match rows.partition(row) {
                    None | Some(-1) => match key {
                        Some(key) => {
                            records::partition_for_key(key, partitions.len() as i32) as usize
                        }
                        None => {
                            next = next.wrapping_add(1);
                            next % partitions.len()
                        }
                    },
                    Some(index) if index < 0 => {
                        return Err(DataFusionError::Execution(format!(
                            "_partition {index} does not exist (NULL or -1 lets the key choose)"
                        )));
                    }
                    Some(index) => {
                        let index = index as usize;
                        if index >= partitions.len() {
                            return Err(DataFusionError::Execution(format!(
                                "_partition {index} does not exist: topic {} has {} partitions",
                                self.topic.name,
                                partitions.len()
                            )));
                        }
                        index
                    }
                };
                let timestamp = match rows.timestamp(row) {
                    None | Some(-1) => now,
                    Some(before) if before < 0 => {
                        return Err(DataFusionError::Execution(format!(
                            "_timestamp {before} ms is before 1970-01-01: Kafka timestamps are \
                             milliseconds since then"
                        )));
                    }
                    Some(timestamp) => timestamp,
                };
                let value = rows.value(row);
                let headers = rows.headers(row);
                let size = RECORD_OVERHEAD
                    + value.map_or(0, <[u8]>::len)
                    + key.map_or(0, <[u8]>::len)
                    + headers
                        .iter()
                        .map(|(key, value)| {
                            HEADER_OVERHEAD + key.len() + value.map_or(0, <[u8]>::len)
                        })
                        .sum::<usize>();
                if records::BATCH_HEADER_LEN + size > max_message_bytes {
                    return Err(DataFusionError::Execution(format!(
                        "a record of about {size} bytes is larger than max.message.bytes={max_message_bytes} of {}",
                        self.topic.name
                    )));
                }
                let slot = &mut pending[partition];
                if slot.count > 0 && slot.bytes + size > batch_bytes {
                    slot.seal();
                }
                let builder = slot
                    .builder
                    .take()
                    .unwrap_or_else(|| records::BatchBuilder::new(0));
                slot.builder = Some(builder.record_with_headers(key, value, timestamp, &headers));
                slot.count += 1;
                total += 1;
                slot.bytes += size;
                buffered += size;
                if slot.count >= RECORDS_PER_BATCH {
                    slot.seal();
                }
                // Nothing is appended until every row is known good (a bad `_partition` fails
                // the whole statement), unless the statement is too large to hold.
                if buffered >= ATOMIC_INSERT_BYTES {
                    for (index, slot) in pending.iter_mut().enumerate() {
                        if let Some(end) = self.append(&partitions[index], slot)? {
                            written_end[index] = end;
                        }
                    }
                    buffered = 0;
                }
            }
        }
        for (index, slot) in pending.iter_mut().enumerate() {
            slot.seal();
            if let Some(end) = self.append(&partitions[index], slot)? {
                written_end[index] = end;
            }
        }
        // Durable before answering, like acks=all.
        for (partition, end) in partitions.iter().zip(written_end) {
            if end < 0 {
                continue;
            }
            let mut watermark = partition.subscribe_high_watermark();
            let wait = watermark.wait_for(|high_watermark| *high_watermark > end);
            match tokio::time::timeout(Duration::from_secs(30), wait).await {
                Ok(Ok(_)) => {}
                _ => {
                    return Err(DataFusionError::Execution(format!(
                        "the inserted records of {}-{} did not become durable within 30 s",
                        self.topic.name, partition.index
                    )));
                }
            }
        }
        Ok(total)
    }
}

impl TopicSink {
    /// Appends the sealed batches of one partition; returns the last offset, if any.
    fn append(
        &self,
        partition: &Arc<broker::partition::Partition>,
        slot: &mut Pending,
    ) -> Result<Option<i64>> {
        let log_append_time = self.topic.config().log_append_time();
        let mut last = None;
        for mut batch in slot.sealed.drain(..) {
            let header = records::validate_batch(&batch)
                .map_err(|error| DataFusionError::External(Box::new(error)))?;
            let appended = partition
                .append(
                    &mut [(header, &mut batch[..])],
                    log_append_time,
                    &self.broker.flusher,
                )
                .map_err(|error| DataFusionError::Execution(error.to_string()))?;
            last = Some(appended.last_offset);
        }
        Ok(last)
    }
}

/// The columns of an inserted batch, by role.
struct Rows {
    key: Option<Arc<dyn Array>>,
    /// `_key_text`, for the rows whose `_key` is NULL.
    key_text: Option<Arc<dyn Array>>,
    headers: Option<Arc<dyn Array>>,
    value: Option<Arc<dyn Array>>,
    /// Per row, a value encoded from the value columns (JSON, CSV or Avro), for rows without
    /// `_value`.
    encoded: Option<Vec<Option<Vec<u8>>>>,
    partition: Option<Arc<dyn Array>>,
    timestamp: Option<Arc<dyn Array>>,
}

impl Rows {
    fn of(batch: &RecordBatch, format: &ValueFormat) -> Result<Rows> {
        let column = |name: &str| -> Result<Option<Arc<dyn Array>>> {
            let Some(array) = batch.column_by_name(name) else {
                return Ok(None);
            };
            let target = match name {
                KEY | KEY_TEXT | VALUE => DataType::Binary,
                PARTITION => DataType::Int32,
                TIMESTAMP => DataType::Timestamp(TimeUnit::Millisecond, None),
                _ => return Ok(Some(Arc::clone(array))),
            };
            Ok(Some(arrow::compute::cast(array, &target)?))
        };
        let value = column(VALUE)?;
        let given = value
            .as_ref()
            .map_or(0, |value| value.len() - value.null_count());
        // Rows without `_value` get one encoded from the value columns: per row for JSON and
        // CSV (a row whose value columns are all NULL too is a tombstone), for the whole batch
        // for Avro (whose schema may not take NULLs), when no row has a `_value`.
        let encoded = match format {
            ValueFormat::Json { schema, .. } | ValueFormat::Csv { schema, .. }
                if given < batch.num_rows() =>
            {
                let fields: Vec<usize> = schema
                    .fields()
                    .iter()
                    .filter_map(|field| batch.schema().index_of(field.name()).ok())
                    .collect();
                let projected = batch.project(&fields)?;
                let named = |row: usize| projected.columns().iter().any(|c| c.is_valid(row));
                if fields.is_empty() {
                    None
                } else if matches!(format, ValueFormat::Json { .. }) {
                    // One line per row: the writer escapes newlines inside strings.
                    let mut writer = arrow::json::LineDelimitedWriter::new(Vec::new());
                    writer.write(&projected)?;
                    writer.finish()?;
                    let text = writer.into_inner();
                    let lines = text.split(|byte| *byte == b'\n').take(batch.num_rows());
                    let values = lines
                        .enumerate()
                        .map(|(row, line)| named(row).then(|| line.to_vec()));
                    Some(values.collect())
                } else {
                    // Row by row: a quoted CSV field may hold a newline.
                    let mut values = Vec::with_capacity(batch.num_rows());
                    for row in 0..batch.num_rows() {
                        if !named(row) {
                            values.push(None);
                            continue;
                        }
                        let mut writer = arrow::csv::WriterBuilder::new()
                            .with_header(false)
                            .build(Vec::new());
                        writer.write(&projected.slice(row, 1))?;
                        let mut line = writer.into_inner();
                        if line.last() == Some(&b'\n') {
                            line.pop();
                        }
                        values.push(Some(line));
                    }
                    Some(values)
                }
            }
            ValueFormat::Avro { avro, .. } if given == 0 => {
                let has_fields = avro.columns().fields().iter().any(|field| {
                    batch
                        .column_by_name(field.name())
                        .is_some_and(|column| column.null_count() < column.len())
                });
                if has_fields {
                    let values = avro.encode(batch).map_err(|reason| {
                        DataFusionError::Plan(format!("INSERT INTO an Avro topic: {reason}"))
                    })?;
                    Some(values.into_iter().map(Some).collect())
                } else {
                    None
                }
            }
            _ => None,
        };
        Ok(Rows {
            key: column(KEY)?,
            key_text: column(KEY_TEXT)?,
            headers: batch.column_by_name(HEADERS).cloned(),
            value,
            encoded,
            partition: column(PARTITION)?,
            timestamp: column(TIMESTAMP)?,
        })
    }

    fn key(&self, row: usize) -> Option<&[u8]> {
        binary_at(self.key.as_ref(), row).or_else(|| binary_at(self.key_text.as_ref(), row))
    }

    /// The headers of `row`: `_headers` as the table types it (a list of `{key, value}`).
    fn headers(&self, row: usize) -> Vec<(&[u8], Option<&[u8]>)> {
        let Some(list) = self
            .headers
            .as_ref()
            .and_then(|column| column.as_list_opt::<i32>())
        else {
            return Vec::new();
        };
        if list.is_null(row) {
            return Vec::new();
        }
        let range = list.value_offsets()[row] as usize..list.value_offsets()[row + 1] as usize;
        let entries = list.values().as_struct();
        let (Some(keys), Some(values)) = (
            entries.column(0).as_string_opt::<i32>(),
            entries.column(1).as_binary_opt::<i32>(),
        ) else {
            return Vec::new();
        };
        range
            .filter(|&at| !entries.is_null(at) && !keys.is_null(at))
            .map(|at| {
                let value = (!values.is_null(at)).then(|| values.value(at));
                (keys.value(at).as_bytes(), value)
            })
            .collect()
    }

    /// `_value`, else the value encoded from the value columns; `None`: a tombstone.
    fn value(&self, row: usize) -> Option<&[u8]> {
        binary_at(self.value.as_ref(), row).or_else(|| self.encoded.as_ref()?.get(row)?.as_deref())
    }

    fn partition(&self, row: usize) -> Option<i32> {
        let partition = self
            .partition
            .as_ref()?
            .as_primitive::<arrow::datatypes::Int32Type>();
        (!partition.is_null(row)).then(|| partition.value(row))
    }

    fn timestamp(&self, row: usize) -> Option<i64> {
        let timestamp = self
            .timestamp
            .as_ref()?
            .as_primitive::<arrow::datatypes::TimestampMillisecondType>();
        (!timestamp.is_null(row)).then(|| timestamp.value(row))
    }
}

/// The bytes of `row` in a binary `column`; `None` if NULL or if there is no column.
fn binary_at(column: Option<&Arc<dyn Array>>, row: usize) -> Option<&[u8]> {
    let column = column?.as_binary::<i32>();
    (!column.is_null(row)).then(|| column.value(row))
}
