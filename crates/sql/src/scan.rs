//! The scan of a topic table: one DataFusion partition per topic partition, each reading its
//! cold Parquet objects (pruned by the manifest, then by row-group statistics) and then its hot
//! log, from a high watermark fixed when the query was planned.

use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::BooleanArray;
use arrow::array::{
    Array, AsArray, BinaryArray, Int64Array, ListArray, RecordBatch, TimestampMillisecondArray,
};
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::{DataType, Field, Fields, SchemaRef};
use arrow::datatypes::{Int64Type, TimestampMillisecondType};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowPredicateFn, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder, RowFilter,
};
use parquet::file::statistics::Statistics;
use tier::ObjectEntry;

use crate::format::ValueFormat;
use crate::rows::{self, BATCH_ROWS, Ranges, RowsBuilder, below};

/// Bytes of hot log read at a time.
const HOT_READ_BYTES: usize = 4 << 20;

/// A scan gives its worker thread up after this much work, so that other queries' tasks (a
/// small query, a new connection) run between the steps of a heavy one.
const YIELD_AFTER: Duration = Duration::from_millis(2);

/// What one topic partition's scan reads, fixed at planning.
#[derive(Clone)]
pub struct PartitionPlan {
    pub partition: Arc<broker::partition::Partition>,
    /// Nothing at or above it is read: the high watermark when the query was planned.
    pub high_watermark: i64,
    /// The cold objects that can hold matching rows, in offset order.
    pub cold: Vec<ObjectEntry>,
    /// Objects the manifest had, before pruning.
    pub cold_total: usize,
    /// Where the hot log takes over from the cold tier.
    pub hot_start: i64,
}

#[derive(Debug)]
struct ScanMetrics {
    row_groups_read: Count,
    row_groups_pruned: Count,
    cold_bytes: Count,
    hot_bytes: Count,
    rows: Count,
}

impl ScanMetrics {
    fn new(metrics: &ExecutionPlanMetricsSet, partition: usize) -> ScanMetrics {
        let counter = |name: &'static str| MetricBuilder::new(metrics).counter(name, partition);
        ScanMetrics {
            row_groups_read: counter("row_groups_read"),
            row_groups_pruned: counter("row_groups_pruned"),
            cold_bytes: counter("cold_bytes_read"),
            hot_bytes: counter("hot_bytes_read"),
            rows: counter("rows_kept"),
        }
    }
}

pub struct TopicScanExec {
    pub topic: String,
    pub format: Arc<ValueFormat>,
    pub table: SchemaRef,
    pub projection: Vec<usize>,
    pub ranges: Ranges,
    pub partitions: Vec<PartitionPlan>,
    /// Latest-N: only the newest `n` kept rows of each partition are needed.
    pub tail: Option<usize>,
    /// Rows per partition at most.
    pub limit: Option<usize>,
    pub store: Option<tier::TierStore>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl fmt::Debug for TopicScanExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TopicScanExec")
            .field("topic", &self.topic)
            .finish()
    }
}

impl TopicScanExec {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        topic: String,
        format: Arc<ValueFormat>,
        table: SchemaRef,
        projection: Vec<usize>,
        ranges: Ranges,
        partitions: Vec<PartitionPlan>,
        limit: Option<usize>,
        store: Option<tier::TierStore>,
    ) -> TopicScanExec {
        let schema = Arc::new(
            table
                .project(&projection)
                .expect("projection within the table"),
        );
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(partitions.len().max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        TopicScanExec {
            topic,
            format,
            table,
            projection,
            ranges,
            partitions,
            tail: None,
            limit,
            store,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// The same scan reading only each partition's newest `n` kept rows.
    pub fn with_tail(&self, n: usize) -> TopicScanExec {
        let mut scan = TopicScanExec::new(
            self.topic.clone(),
            Arc::clone(&self.format),
            Arc::clone(&self.table),
            self.projection.clone(),
            self.ranges,
            self.partitions.clone(),
            self.limit,
            self.store.clone(),
        );
        scan.tail = Some(n);
        scan
    }

    pub fn output_schema(&self) -> SchemaRef {
        Arc::new(
            self.table
                .project(&self.projection)
                .expect("projection within the table"),
        )
    }
}

fn show_range(f: &mut fmt::Formatter<'_>, name: &str, (low, high): (i64, i64)) -> fmt::Result {
    if low == i64::MIN && high == i64::MAX {
        return Ok(());
    }
    let low = if low == i64::MIN {
        "-inf".to_string()
    } else {
        low.to_string()
    };
    let high = if high == i64::MAX {
        "+inf".to_string()
    } else {
        high.to_string()
    };
    write!(f, ", {name}=[{low}, {high})")
}

impl DisplayAs for TopicScanExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let partitions: Vec<String> = self
            .partitions
            .iter()
            .map(|plan| plan.partition.index.to_string())
            .collect();
        write!(
            f,
            "TopicScanExec: topic={}, partitions=[{}]",
            self.topic,
            partitions.join(",")
        )?;
        show_range(f, "offsets", self.ranges.offsets)?;
        show_range(f, "timestamps", self.ranges.timestamps)?;
        let cold: usize = self.partitions.iter().map(|plan| plan.cold.len()).sum();
        let cold_total: usize = self.partitions.iter().map(|plan| plan.cold_total).sum();
        let hot: Vec<String> = self
            .partitions
            .iter()
            .map(|plan| format!("{}..{}", plan.hot_start, plan.high_watermark))
            .collect();
        write!(
            f,
            ", cold_objects={cold}/{cold_total}, hot=[{}]",
            hot.join(",")
        )?;
        if let Some(n) = self.tail {
            write!(f, ", tail={n}")?;
        }
        if let Some(limit) = self.limit {
            write!(f, ", limit={limit}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for TopicScanExec {
    fn name(&self) -> &str {
        "TopicScanExec"
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let schema = self.output_schema();
        let Some(plan) = self.partitions.get(partition).cloned() else {
            return Ok(Box::pin(RecordBatchStreamAdapter::new(
                schema,
                futures::stream::empty(),
            )));
        };
        let tail = self.tail.map(|n| Tail {
            n,
            low: self.ranges.offsets.0.max(plan.partition.log_start_offset()),
            end: self.ranges.offsets.1.min(plan.high_watermark),
            step: (n as i64).max(256),
            kept: 0,
            before: 0,
        });
        let mut job = PartitionScan {
            plan,
            builder: RowsBuilder::new(
                self.partitions[partition].partition.index,
                Arc::clone(&self.format),
                Arc::clone(&self.table),
                self.projection.clone(),
            ),
            ranges: self.ranges,
            tail,
            limit: self.limit,
            store: self.store.clone(),
            metrics: ScanMetrics::new(&self.metrics, partition),
            emitted: 0,
            typed_schema: crate::format::TypedValues::describe_format(&self.format),
            cursor: None,
            ready: VecDeque::new(),
            stopped: false,
            yielded: Instant::now(),
        };
        if job.tail.is_none() {
            let (low, high) = job.ranges.offsets;
            job.cursor = job.cursor(low, high);
        }
        // The scan runs in the stream's own polls: no thread of its own, no hand-over per batch.
        let stream = futures::stream::unfold(job, |mut job| async move {
            job.next().await.map(|item| (item, job))
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// A Parquet row filter keeping the rows whose offset and timestamp (those of the two that
/// `columns` selects) are in `range`.
fn range_filter(columns: ProjectionMask, range: Ranges) -> RowFilter {
    let keep = move |batch: RecordBatch| Ok(rows_in_range(&batch, &range));
    RowFilter::new(vec![Box::new(ArrowPredicateFn::new(columns, keep))])
}

/// Which rows of cold `batch` are in `range`, by its `offset` and `timestamp` columns (a
/// column the batch does not have is not checked).
fn rows_in_range(batch: &RecordBatch, range: &Ranges) -> BooleanArray {
    let offsets = batch
        .column_by_name("offset")
        .map(|column| column.as_primitive::<Int64Type>().values());
    let timestamps = batch
        .column_by_name("timestamp")
        .map(|column| column.as_primitive::<TimestampMillisecondType>().values());
    let inside = |values: &[i64], range: (i64, i64)| {
        BooleanBuffer::new(in_range_bits(values, range), 0, values.len())
    };
    let kept = match (offsets, timestamps) {
        (Some(offsets), Some(times)) => {
            &inside(offsets, range.offsets) & &inside(times, range.timestamps)
        }
        (Some(offsets), None) => inside(offsets, range.offsets),
        (None, Some(times)) => inside(times, range.timestamps),
        (None, None) => BooleanBuffer::new_set(batch.num_rows()),
    };
    BooleanArray::new(kept, None)
}

/// A bitmap of which `values` lie in `[low, high)` (`high` = `i64::MAX`: no upper bound), 64
/// rows to a word. Each word comes from a loop of fixed length without branches or bounds
/// checks, so the compiler vectorizes it.
fn in_range_bits(values: &[i64], (low, high): (i64, i64)) -> arrow::buffer::Buffer {
    // `low <= value < high` as one unsigned comparison: `value - low < high - low`; with no
    // upper bound `value - low <= i64::MAX - low`, which for `low` = `i64::MIN` is every value.
    let (width, every) = if high == i64::MAX {
        let last = i64::MAX.wrapping_sub(low) as u64;
        (last.wrapping_add(1), last == u64::MAX)
    } else if high > low {
        (high.wrapping_sub(low) as u64, false)
    } else {
        (0, false)
    };
    let word = |chunk: &[i64]| {
        chunk.iter().enumerate().fold(0u64, |word, (bit, &value)| {
            word | u64::from(every | ((value.wrapping_sub(low) as u64) < width)) << bit
        })
    };
    let (chunks, rest) = values.as_chunks::<64>();
    let mut words: Vec<u64> = chunks.iter().map(|chunk| word(chunk)).collect();
    if !rest.is_empty() {
        words.push(word(rest));
    }
    arrow::buffer::Buffer::from_vec(words)
}

/// Why a scan stopped early.
enum Stop {
    /// The query no longer wants rows (cancelled, or the limit is reached).
    Done,
    Failed(DataFusionError),
}

/// What opening a cold object gave.
enum Opened {
    Reader(ColdReader),
    /// No row group can match.
    Nothing,
    /// The object is no longer in the store: a rewrite replaced it and its grace period is
    /// over. The partition's current manifest says which objects hold its records now.
    Gone,
}

impl From<DataFusionError> for Stop {
    fn from(error: DataFusionError) -> Stop {
        Stop::Failed(error)
    }
}

impl From<arrow::error::ArrowError> for Stop {
    fn from(error: arrow::error::ArrowError) -> Stop {
        Stop::Failed(error.into())
    }
}

/// Where a partition's scan is in one range of offsets.
struct RangeCursor {
    range: Ranges,
    /// Cold objects still to read, in offset order, each with the range it is read for.
    cold: VecDeque<(ObjectEntry, Ranges)>,
    /// The cold object being read.
    reading: Option<ColdReader>,
    /// The next hot offset to read; `None` once the hot log is done.
    hot: Option<i64>,
}

struct ColdReader {
    reader: ParquetRecordBatchReader,
    /// Rows come straight from the file's columns: typed value columns, or no column at all.
    direct: bool,
    /// The reader keeps only rows in range (its row filter), so they need no check.
    filtered: bool,
    range: Ranges,
}

/// Latest-N: windows of offsets, newest first, that double until `n` rows are kept.
struct Tail {
    n: usize,
    low: i64,
    /// The next window ends here.
    end: i64,
    step: i64,
    kept: usize,
    /// Rows kept before the current window.
    before: usize,
}

struct PartitionScan {
    plan: PartitionPlan,
    builder: RowsBuilder,
    ranges: Ranges,
    tail: Option<Tail>,
    limit: Option<usize>,
    store: Option<tier::TierStore>,
    metrics: ScanMetrics,
    emitted: usize,
    /// The name cold files carry when their typed value columns match the topic's format.
    typed_schema: Option<String>,
    cursor: Option<RangeCursor>,
    /// Batches made and not yet handed on, oldest first.
    ready: VecDeque<RecordBatch>,
    stopped: bool,
    /// When the scan last gave its thread up.
    yielded: Instant,
}

impl PartitionScan {
    /// The next batch of rows. Each step reads one batch of a cold object, opens one object or
    /// reads once from the hot log, so what waits in `ready` is bounded by one such step.
    async fn next(&mut self) -> Option<Result<RecordBatch>> {
        loop {
            if let Some(batch) = self.ready.pop_front() {
                return Some(Ok(batch));
            }
            if self.stopped {
                return None;
            }
            if self.yielded.elapsed() >= YIELD_AFTER {
                tokio::task::yield_now().await;
                self.yielded = Instant::now();
            }
            let result = match self.step().await {
                Ok(true) => Ok(()),
                Ok(false) => {
                    self.stopped = true;
                    self.flush(true)
                }
                Err(stop) => Err(stop),
            };
            match result {
                Ok(()) => {}
                Err(Stop::Done) => self.stopped = true,
                Err(Stop::Failed(error)) => {
                    self.stopped = true;
                    self.ready.clear();
                    return Some(Err(error));
                }
            }
        }
    }

    /// One unit of work; false when the scan is done.
    async fn step(&mut self) -> Result<bool, Stop> {
        let Some(mut cursor) = self.cursor.take() else {
            return Ok(self.next_window());
        };
        if self.advance(&mut cursor).await? {
            self.cursor = Some(cursor);
        }
        Ok(true)
    }

    /// The reading of every kept row with an offset in `[low, high)`: cold objects first, then
    /// the hot log. `None` when nothing can be there.
    fn cursor(&self, low: i64, high: i64) -> Option<RangeCursor> {
        let high = high.min(self.plan.high_watermark);
        if low >= high {
            return None;
        }
        let range = Ranges {
            offsets: (
                low.max(self.ranges.offsets.0),
                high.min(self.ranges.offsets.1),
            ),
            timestamps: self.ranges.timestamps,
        };
        let cold = self
            .plan
            .cold
            .iter()
            .filter(|entry| {
                entry.next_offset() > range.offsets.0 && entry.base_offset() < range.offsets.1
            })
            .map(|entry| (entry.clone(), range))
            .collect();
        Some(RangeCursor {
            range,
            cold,
            reading: None,
            hot: Some(range.offsets.0.max(self.plan.hot_start)),
        })
    }

    /// Latest-N: counts the rows the last window kept and starts the next, older, window
    /// unless `n` rows are kept or the range is done. False when there is no next window.
    fn next_window(&mut self) -> bool {
        let rows = self.emitted + self.builder.len();
        let Some(tail) = self.tail.as_mut() else {
            return false;
        };
        tail.kept += rows - tail.before;
        if tail.end <= tail.low || tail.kept >= tail.n {
            return false;
        }
        let (start, end) = (tail.end.saturating_sub(tail.step).max(tail.low), tail.end);
        tail.end = start;
        tail.step = tail.step.saturating_mul(2);
        tail.before = rows;
        self.cursor = self.cursor(start, end);
        true
    }

    /// One step in `cursor`; false when its range is done.
    async fn advance(&mut self, cursor: &mut RangeCursor) -> Result<bool, Stop> {
        if let Some(reading) = cursor.reading.as_mut() {
            match reading.reader.next() {
                Some(batch) => {
                    let batch = batch?;
                    let raw_rows = batch
                        .column_by_name("raw_batch")
                        .is_some_and(|raw| raw.null_count() < raw.len());
                    if reading.filtered {
                        self.add_typed_batch(&batch, None)?;
                    } else if reading.direct && !raw_rows {
                        self.add_typed_batch(&batch, Some(&reading.range))?;
                    } else {
                        self.add_cold_batch(&batch, &reading.range)?;
                        self.flush(false)?;
                    }
                }
                None => cursor.reading = None,
            }
            return Ok(true);
        }
        if let Some((entry, range)) = cursor.cold.pop_front() {
            match self.open_cold(&entry, range).await? {
                Opened::Reader(reader) => cursor.reading = Some(reader),
                Opened::Nothing => {}
                Opened::Gone => {
                    for replacement in self.replacements(&entry, range)?.into_iter().rev() {
                        cursor.cold.push_front(replacement);
                    }
                }
            }
            return Ok(true);
        }
        match cursor.hot {
            Some(offset) => {
                cursor.hot = self.read_hot(offset, cursor)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The objects of the partition's current manifest that now hold the records of `gone`
    /// (read for `range`), each to be read only for the offsets `gone` had, so no record is
    /// read twice or left out.
    fn replacements(
        &self,
        gone: &ObjectEntry,
        range: Ranges,
    ) -> Result<Vec<(ObjectEntry, Ranges)>, Stop> {
        let offsets = (
            range.offsets.0.max(gone.base_offset()),
            range.offsets.1.min(gone.next_offset()),
        );
        let manifest = self.plan.partition.cold_manifest();
        let objects = manifest
            .as_ref()
            .map_or(&[][..], |manifest| &manifest.objects);
        let replacements: Vec<(ObjectEntry, Ranges)> = objects
            .iter()
            .filter(|object| {
                object.key != gone.key
                    && object.next_offset() > offsets.0
                    && object.base_offset() < offsets.1
            })
            .map(|object| {
                let offsets = (
                    offsets.0.max(object.base_offset()),
                    offsets.1.min(object.next_offset()),
                );
                let range = Ranges {
                    offsets,
                    timestamps: range.timestamps,
                };
                (object.clone(), range)
            })
            .collect();
        // The objects, in the manifest's order (by offset, none overlapping), must hold every
        // offset, one after the other.
        let mut next = offsets.0;
        for (_, range) in &replacements {
            if range.offsets.0 != next {
                break;
            }
            next = range.offsets.1;
        }
        if next < offsets.1 {
            return Err(Stop::Failed(DataFusionError::Execution(format!(
                "cold object {} of partition {} is gone from the store, and no object of the \
                 current manifest holds offsets {next}..{} (deleted by retention while the \
                 query ran?)",
                gone.key, self.plan.partition.index, offsets.1
            ))));
        }
        Ok(replacements)
    }

    /// One read of the hot log from `offset`; the offset to go on from, `None` when done.
    fn read_hot(&mut self, offset: i64, cursor: &mut RangeCursor) -> Result<Option<i64>, Stop> {
        let range = cursor.range;
        if offset >= range.offsets.1 {
            return Ok(None);
        }
        // Uploads go on while the query runs: what left local disk since planning is in
        // objects the plan does not know yet. They are read next, then the log after them.
        if offset < self.plan.partition.local_start_offset() {
            let moved: Vec<ObjectEntry> = self
                .plan
                .partition
                .cold_manifest()
                .map(|manifest| {
                    manifest
                        .objects
                        .iter()
                        .filter(|object| {
                            object.next_offset() > offset && object.base_offset() < range.offsets.1
                        })
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            let Some(last) = moved.last().map(ObjectEntry::next_offset) else {
                return Ok(None);
            };
            let moved_range = Ranges {
                offsets: (offset, range.offsets.1),
                timestamps: range.timestamps,
            };
            cursor
                .cold
                .extend(moved.into_iter().map(|entry| (entry, moved_range)));
            return Ok(Some(last));
        }
        // With a time range, only the runs of batches whose zones can match are read.
        // (The run ends at a batch boundary: reading stops before it.)
        let mut offset = offset;
        let mut run_end = range.offsets.1;
        let mut read_end = i64::MAX;
        if range.timestamps != (i64::MIN, i64::MAX) {
            let (low, high) = range.timestamps;
            match self.plan.partition.next_in_time_range(offset, low, high) {
                Some((from, to)) if from < range.offsets.1 => {
                    offset = from;
                    run_end = to.min(range.offsets.1);
                    read_end = to;
                }
                _ => return Ok(None),
            }
        }
        let read = self
            .plan
            .partition
            .read_until(offset, HOT_READ_BYTES, read_end)
            .map_err(|error| DataFusionError::External(Box::new(error)))?;
        if read.records.is_empty() {
            return Ok(None);
        }
        self.metrics.hot_bytes.add(read.records.len());
        let mut next = offset;
        for batch in records::own_batches(&read.records) {
            let (header, bytes) =
                batch.map_err(|error| DataFusionError::External(Box::new(error)))?;
            if header.base_offset >= run_end {
                next = run_end;
                break;
            }
            let added = self.builder.add_batch(&read.records, bytes, &range)?;
            self.metrics.rows.add(added);
            next = header.last_offset() + 1;
            self.flush(false)?;
        }
        Ok((next > offset).then_some(next))
    }

    /// A reader of the row groups and columns of a cold object that the query needs.
    async fn open_cold(&mut self, entry: &ObjectEntry, range: Ranges) -> Result<Opened, Stop> {
        let store = self.store.as_ref().ok_or_else(|| {
            DataFusionError::Execution(format!(
                "{} is in the cold tier, which is not configured",
                entry.key
            ))
        })?;
        let failed = |error: &dyn std::fmt::Display| {
            DataFusionError::Execution(format!("reading cold object {}: {error}", entry.key))
        };
        // The footer (kept by the store once parsed), then only the column chunks needed.
        // Typed text fields are read as string views, the table's type for them.
        // A store error: the object is gone (its replacements are read instead), or a failure.
        let store_error = |error: tier::StoreError| match error {
            tier::StoreError::NotFound { .. } => Ok(Opened::Gone),
            error => Err(Stop::from(failed(&error))),
        };
        let reader_metadata = match store.reader_metadata(&entry.key, entry.size_bytes).await {
            Ok(metadata) => metadata,
            Err(error) => return store_error(error),
        };
        let metadata = Arc::clone(reader_metadata.metadata());
        // Row groups whose offsets or timestamps cannot match are skipped.
        let columns = metadata.file_metadata().schema_descr();
        let column_index = |name: &str| {
            columns
                .columns()
                .iter()
                .position(|column| column.path().string() == name)
        };
        let (offset_column, timestamp_column) = (column_index("offset"), column_index("timestamp"));
        let raw_column = column_index("raw_batch");
        let mut row_groups = Vec::new();
        // Whether a chosen row group may hold a raw batch (whose records are in no other column).
        let mut raw_batches = false;
        // Whether every chosen row group lies inside the offset range, and the time range, so no
        // row needs checking against it.
        let (mut offsets_all_inside, mut times_all_inside) = (true, true);
        for (index, group) in metadata.row_groups().iter().enumerate() {
            let bounds =
                |column: Option<usize>| match column.and_then(|c| group.column(c).statistics()) {
                    Some(Statistics::Int64(stats)) => {
                        stats.min_opt().copied().zip(stats.max_opt().copied())
                    }
                    _ => None,
                };
            let offsets_match = bounds(offset_column)
                .is_none_or(|(min, max)| max >= range.offsets.0 && below(min, range.offsets.1));
            let times_match = bounds(timestamp_column).is_none_or(|(min, max)| {
                max >= range.timestamps.0 && below(min, range.timestamps.1)
            });
            // Raw batches (kept verbatim) hold records the statistics do not see row by row.
            if offsets_match && times_match {
                let offsets_inside = bounds(offset_column).is_some_and(|(min, max)| {
                    min >= range.offsets.0 && below(max, range.offsets.1)
                });
                let times_inside = bounds(timestamp_column).is_some_and(|(min, max)| {
                    min >= range.timestamps.0 && below(max, range.timestamps.1)
                });
                offsets_all_inside &= offsets_inside;
                times_all_inside &= times_inside;
                let all_null = raw_column
                    .and_then(|c| group.column(c).statistics())
                    .and_then(|stats| stats.null_count_opt())
                    .is_some_and(|nulls| nulls == group.num_rows() as u64);
                raw_batches |= raw_column.is_some() && !all_null;
                row_groups.push(index);
                self.metrics.row_groups_read.add(1);
            } else {
                self.metrics.row_groups_pruned.add(1);
            }
        }
        if row_groups.is_empty() {
            return Ok(Opened::Nothing);
        }
        let arrow_schema = Arc::clone(reader_metadata.schema());
        // Typed value columns written for the topic's current schema are read as they are.
        let typed = self.builder.needs_decoded()
            && entry.value_schema.is_some()
            && entry.value_schema == self.typed_schema
            && arrow_schema.index_of(tier::convert::FIELDS_COLUMN).is_ok();
        // Only the columns the query needs: offsets and timestamps to keep rows by range (unless
        // every row is kept anyway), `raw_batch` where a row group holds whole batches.
        // Rows whose columns come straight from the file: typed value columns, or no column at
        // all (`count(*)`).
        let direct = typed || self.builder.projects_nothing();
        // Rows straight from the file are kept by a filter inside the Parquet reader: it reads
        // the offsets or timestamps that need checking, then only the kept rows of the other
        // columns. Other rows go through the builder, which checks both.
        let filtered = direct && !raw_batches;
        let check_offsets = !filtered || !offsets_all_inside;
        let check_times = !filtered || !times_all_inside;
        let mut wanted = Vec::new();
        if !filtered || self.builder.projects(rows::OFFSET_INDEX) {
            wanted.push("offset");
        }
        if !filtered || self.builder.projects(rows::TIMESTAMP_INDEX) {
            wanted.push("timestamp");
        }
        if raw_batches {
            wanted.push("raw_batch");
        }
        if self.builder.needs_key() {
            wanted.push("key");
        }
        if self.builder.needs_headers() {
            wanted.push("headers");
        }
        // Typed files still give `value` when a row group holds a raw batch: it is decoded.
        if self.builder.needs_value_bytes()
            || (self.builder.needs_decoded() && (!typed || raw_batches))
        {
            wanted.push("value");
        }
        // Of the typed columns, only the projected fields.
        let fields = if typed {
            self.builder.projected_value_fields()
        } else {
            Vec::new()
        };
        if typed && self.builder.needs_error() {
            wanted.push(tier::convert::FIELDS_ERROR_COLUMN);
        }
        let leaves = |wanted: &[&str], fields: &[String]| {
            let leaves = reader_metadata
                .parquet_schema()
                .columns()
                .iter()
                .enumerate()
                .filter(|(_, column)| {
                    let parts = column.path().parts();
                    wanted.contains(&parts[0].as_str())
                        || (parts[0] == tier::convert::FIELDS_COLUMN
                            && parts.get(1).is_some_and(|field| fields.contains(field)))
                })
                .map(|(index, _)| index)
                .collect::<Vec<_>>();
            ProjectionMask::leaves(reader_metadata.parquet_schema(), leaves)
        };
        let mask = leaves(&wanted, &fields);
        let mut checked = Vec::new();
        if filtered && check_offsets {
            checked.push("offset");
        }
        if filtered && check_times {
            checked.push("timestamp");
        }
        let filter_mask = (!checked.is_empty()).then(|| leaves(&checked, &[]));
        let mut fetch = mask.clone();
        if let Some(filter_mask) = &filter_mask {
            fetch.union(filter_mask);
        }
        let parts = match store
            .parquet_chunks(&entry.key, entry.size_bytes, &metadata, &row_groups, &fetch)
            .await
        {
            Ok(parts) => parts,
            Err(error) => return store_error(error),
        };
        self.metrics.cold_bytes.add(parts.fetched);
        let mut builder =
            ParquetRecordBatchReaderBuilder::new_with_metadata(parts, reader_metadata)
                .with_row_groups(row_groups)
                .with_projection(mask)
                .with_batch_size(BATCH_ROWS);
        if let Some(filter_mask) = filter_mask {
            builder = builder.with_row_filter(range_filter(filter_mask, range));
        }
        let reader = builder.build().map_err(|error| {
            DataFusionError::Execution(format!("cold object {}: {error}", entry.key))
        })?;
        Ok(Opened::Reader(ColdReader {
            reader,
            direct,
            filtered,
            range,
        }))
    }

    /// Cold rows with typed value columns: the kept rows go out as they are, nothing parsed.
    /// `range`: the range to keep rows by; `None` if every row is known to be in it.
    fn add_typed_batch(&mut self, batch: &RecordBatch, range: Option<&Ranges>) -> Result<(), Stop> {
        let kept = match (
            range,
            batch.column_by_name("offset"),
            batch.column_by_name("timestamp"),
        ) {
            (Some(range), Some(_), Some(_)) => {
                let keep = rows_in_range(batch, range);
                if keep.true_count() == batch.num_rows() {
                    batch.clone()
                } else {
                    arrow::compute::filter_record_batch(batch, &keep)?
                }
            }
            _ => batch.clone(),
        };
        if kept.num_rows() == 0 {
            return Ok(());
        }
        self.metrics.rows.add(kept.num_rows());
        // Rows collected before these go first, to keep offset order.
        self.flush(true)?;
        let output = self.builder.typed_batch(&kept)?;
        self.emit(output)
    }

    fn add_cold_batch(&mut self, batch: &RecordBatch, range: &Ranges) -> Result<(), Stop> {
        let column = |name: &str| batch.column_by_name(name).cloned();
        let offsets = column("offset")
            .ok_or_else(|| DataFusionError::Execution("cold object without offsets".into()))?;
        let offsets: &Int64Array = offsets.as_primitive();
        let timestamps = column("timestamp")
            .ok_or_else(|| DataFusionError::Execution("cold object without timestamps".into()))?;
        let timestamps: &TimestampMillisecondArray = timestamps.as_primitive();
        let binary = |name: &str| -> Result<Option<BinaryArray>, Stop> {
            match column(name) {
                Some(array) => Ok(Some(
                    arrow::compute::cast(&array, &DataType::Binary)?
                        .as_binary::<i32>()
                        .clone(),
                )),
                None => Ok(None),
            }
        };
        let keys = binary("key")?;
        let values = binary("value")?;
        let headers = match column("headers") {
            Some(array) => {
                let fields = Fields::from(vec![
                    Field::new("key", DataType::Binary, false),
                    Field::new("value", DataType::Binary, true),
                ]);
                let target = DataType::List(Arc::new(Field::new(
                    "element",
                    DataType::Struct(fields),
                    false,
                )));
                Some(
                    arrow::compute::cast(&array, &target)?
                        .as_list::<i32>()
                        .clone(),
                )
            }
            None => None,
        };
        let raw = binary("raw_batch")?;
        let added = match &raw {
            Some(raw) if raw.null_count() < raw.len() => {
                // Rows kept verbatim as whole batches: split around them.
                let mut added = 0;
                let mut start = 0;
                let chunk = rows::binary_chunk(raw);
                let raw_offsets = raw.value_offsets();
                for row in 0..raw.len() {
                    if raw.is_valid(row) {
                        added += self.add_cold_slice(
                            offsets, timestamps, &keys, &values, &headers, start, row, range,
                        );
                        let at = raw_offsets[row] as usize..raw_offsets[row + 1] as usize;
                        added += self.builder.add_batch(&chunk, at, range)?;
                        start = row + 1;
                    }
                }
                added
                    + self.add_cold_slice(
                        offsets,
                        timestamps,
                        &keys,
                        &values,
                        &headers,
                        start,
                        raw.len(),
                        range,
                    )
            }
            _ => self.add_cold_slice(
                offsets,
                timestamps,
                &keys,
                &values,
                &headers,
                0,
                offsets.len(),
                range,
            ),
        };
        self.metrics.rows.add(added);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn add_cold_slice(
        &mut self,
        offsets: &Int64Array,
        timestamps: &TimestampMillisecondArray,
        keys: &Option<BinaryArray>,
        values: &Option<BinaryArray>,
        headers: &Option<ListArray>,
        start: usize,
        end: usize,
        range: &Ranges,
    ) -> usize {
        if start >= end {
            return 0;
        }
        let length = end - start;
        let slice_binary =
            |array: &Option<BinaryArray>| array.as_ref().map(|array| array.slice(start, length));
        let keys = slice_binary(keys);
        let values = slice_binary(values);
        let headers = headers.as_ref().map(|array| array.slice(start, length));
        self.builder.add_cold_rows(
            &offsets.slice(start, length),
            &timestamps.slice(start, length),
            keys.as_ref(),
            values.as_ref(),
            headers.as_ref(),
            range,
        )
    }

    /// Hands a record batch on once enough rows are collected (or at the end).
    fn flush(&mut self, last: bool) -> Result<(), Stop> {
        if self.builder.is_empty() || (!last && self.builder.len() < BATCH_ROWS) {
            return Ok(());
        }
        let batch = self.builder.finish()?;
        self.emit(batch)
    }

    /// Hands one record batch on, cut to the limit.
    fn emit(&mut self, mut batch: RecordBatch) -> Result<(), Stop> {
        if let Some(limit) = self.limit {
            let left = limit.saturating_sub(self.emitted);
            if batch.num_rows() > left {
                batch = batch.slice(0, left);
            }
        }
        self.emitted += batch.num_rows();
        if batch.num_rows() > 0 {
            self.ready.push_back(batch);
        }
        if self.limit.is_some_and(|limit| self.emitted >= limit) {
            return Err(Stop::Done);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, TimestampMillisecondArray};
    use arrow::datatypes::TimeUnit;

    use super::*;

    #[test]
    fn range_bits_agree_with_plain_comparisons() {
        let edges = [
            i64::MIN,
            i64::MIN + 1,
            -5,
            -1,
            0,
            1,
            5,
            63,
            64,
            i64::MAX - 1,
            i64::MAX,
        ];
        // Lengths around the 64-row words, values from the edges and between them.
        for len in [0, 1, 63, 64, 65, 130] {
            let values: Vec<i64> = (0..len)
                .map(|row| edges[row % edges.len()].wrapping_add((row / edges.len()) as i64))
                .collect();
            for &low in &edges {
                for &high in &edges {
                    let bits = BooleanBuffer::new(in_range_bits(&values, (low, high)), 0, len);
                    let want: Vec<bool> = values
                        .iter()
                        .map(|&v| v >= low && (v < high || high == i64::MAX))
                        .collect();
                    assert_eq!(
                        bits.iter().collect::<Vec<_>>(),
                        want,
                        "[{low}, {high}) len {len}"
                    );
                }
            }
        }
    }

    #[test]
    fn rows_in_range_checks_the_columns_a_batch_has() {
        let offsets = Int64Array::from(vec![5, 6, 7, 8, 9]);
        let times = TimestampMillisecondArray::from(vec![100, 300, 200, 400, 250]);
        let range = Ranges {
            offsets: (6, 9),
            timestamps: (200, 400),
        };
        let field = |name: &str, data_type: DataType| Field::new(name, data_type, false);
        let batch = |columns: Vec<(&str, Arc<dyn arrow::array::Array>)>| {
            let fields: Vec<Field> = columns
                .iter()
                .map(|(name, column)| field(name, column.data_type().clone()))
                .collect();
            RecordBatch::try_new(
                Arc::new(arrow::datatypes::Schema::new(fields)),
                columns.into_iter().map(|(_, column)| column).collect(),
            )
            .unwrap()
        };
        let kept = |batch: &RecordBatch| -> Vec<bool> {
            rows_in_range(batch, &range).values().iter().collect()
        };
        let (offsets, times) = (Arc::new(offsets), Arc::new(times));
        assert_eq!(
            times.data_type(),
            &DataType::Timestamp(TimeUnit::Millisecond, None)
        );
        let both = batch(vec![
            ("offset", offsets.clone()),
            ("timestamp", times.clone()),
        ]);
        assert_eq!(kept(&both), [false, true, true, false, false]);
        let only_offsets = batch(vec![("offset", offsets)]);
        assert_eq!(kept(&only_offsets), [false, true, true, true, false]);
        let only_times = batch(vec![("timestamp", times)]);
        assert_eq!(kept(&only_times), [false, true, true, false, true]);
        let neither = RecordBatch::try_new_with_options(
            Arc::new(arrow::datatypes::Schema::empty()),
            vec![],
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(3)),
        )
        .unwrap();
        assert_eq!(kept(&neither), [true, true, true]);
    }
}
