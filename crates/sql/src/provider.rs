//! Topics as tables: the schema provider that lists them, the table that plans a scan, and the
//! filters it takes over (`_partition` equality and lists, `_offset` and `_timestamp` ranges,
//! all exact).

use std::any::Any;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use broker::Broker;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use parking_lot::Mutex;

use crate::format::{self, ValueFormat};
use crate::rows::{self, OFFSET, PARTITION, Ranges, TIMESTAMP};
use crate::scan::{PartitionPlan, TopicScanExec};

/// Records sampled to infer a JSON schema.
const INFERENCE_SAMPLE: usize = 1000;

/// The `public` schema of the `lakestream` catalog: one table per topic.
pub struct TopicSchema {
    broker: Arc<Broker>,
    /// Tables made by CREATE TABLE ... AS (Parquet in the object store), by name.
    tables: Mutex<HashMap<String, Arc<dyn TableProvider>>>,
    /// Where those tables are recorded: DROP TABLE removes them there too.
    catalog: Arc<crate::catalog::TableCatalog>,
    /// Inferred JSON schemas by topic id: inferred once, then frozen.
    inferred: Mutex<HashMap<String, SchemaRef>>,
}

impl std::fmt::Debug for TopicSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TopicSchema")
    }
}

impl TopicSchema {
    pub fn new(broker: Arc<Broker>, catalog: Arc<crate::catalog::TableCatalog>) -> TopicSchema {
        TopicSchema {
            broker,
            tables: Mutex::new(HashMap::new()),
            catalog,
            inferred: Mutex::new(HashMap::new()),
        }
    }

    /// The names of the topics a query can read.
    pub fn topic_names(&self) -> Vec<String> {
        self.broker
            .topics
            .all()
            .iter()
            .filter(|topic| !topic.is_internal())
            .map(|topic| topic.name.to_string())
            .collect()
    }

    /// How many tables the view `name` reads, its views expanded (`None`: not a view).
    pub fn tables_read_by_view(&self, name: &str) -> Option<usize> {
        // Measured outside the lock.
        let table = Arc::clone(self.tables.lock().get(name)?);
        let plan = table.get_logical_plan()?;
        Some(crate::plan_size::tables_read(&plan))
    }

    /// The hint an unknown table gets: the topics that exist.
    pub fn hint(&self) -> String {
        format!("HINT: {}", self.topics_hint())
    }

    /// Which topics exist, for the hint of an unknown table.
    pub fn topics_hint(&self) -> String {
        let mut topics = self.topic_names();
        topics.sort();
        let topics = if topics.is_empty() {
            "(none yet)".to_string()
        } else {
            topics.join(", ")
        };
        format!("every topic is a table; the topics are: {topics}")
    }

    /// How `topic`'s values decode, from its configs (inferring a JSON schema if none is
    /// declared).
    pub fn value_format(&self, topic: &broker::topics::Topic) -> Result<ValueFormat> {
        let config = topic.config();
        let strict = config.value_of("value.decode.strict") == "true";
        let declared = config.value_of("value.schema").trim().to_string();
        let schema = |declared: &str| -> Result<SchemaRef> {
            format::parse_schema(declared)
                .map(Arc::new)
                .map_err(|error| DataFusionError::Plan(format!("topic {}: {error}", topic.name)))
        };
        Ok(match config.value_of("value.format") {
            "json" => {
                let schema = if declared.is_empty() {
                    self.inferred_schema(topic, "json", |sample| {
                        format::infer_json_schema(sample.iter().map(Vec::as_slice))
                    })
                } else {
                    schema(&declared)?
                };
                ValueFormat::Json { schema, strict }
            }
            "csv" => {
                let schema = if declared.is_empty() {
                    self.inferred_schema(topic, "csv", |sample| {
                        let count = sample
                            .first()
                            .map_or(1, |line| line.split(|b| *b == b',').count());
                        Schema::new(
                            (0..count)
                                .map(|n| Field::new(format!("c{n}"), DataType::Utf8, true))
                                .collect::<Vec<_>>(),
                        )
                    })
                } else {
                    schema(&declared)?
                };
                ValueFormat::Csv { schema, strict }
            }
            "avro" => ValueFormat::Avro {
                avro: Arc::new(format::avro_of(&config).map_err(|error| {
                    DataFusionError::Plan(format!("topic {}: {error}", topic.name))
                })?),
                strict,
            },
            _ => ValueFormat::Raw,
        })
    }

    /// A schema inferred from a sample of `topic`'s values, sampled once and then frozen (an
    /// empty topic is sampled again next time).
    fn inferred_schema(
        &self,
        topic: &broker::topics::Topic,
        kind: &str,
        infer: impl Fn(&[Vec<u8>]) -> Schema,
    ) -> SchemaRef {
        let key = format!("{}/{kind}", topic.id);
        if let Some(schema) = self.inferred.lock().get(&key) {
            return Arc::clone(schema);
        }
        let sample = self.sample(topic);
        let schema = Arc::new(infer(&sample));
        if !sample.is_empty() && !schema.fields().is_empty() {
            self.inferred.lock().insert(key, Arc::clone(&schema));
        }
        schema
    }

    /// Up to `INFERENCE_SAMPLE` values from the start of each partition's local log.
    fn sample(&self, topic: &broker::topics::Topic) -> Vec<Vec<u8>> {
        let mut values = Vec::new();
        for partition in topic.partitions() {
            let Ok(read) = partition.read(partition.local_start_offset(), 1 << 20) else {
                continue;
            };
            let mut scratch = Vec::new();
            for batch in records::stored_batches(&read.records) {
                let Ok((header, range)) = batch else { break };
                let batch = &read.records[range];
                let Ok(compression) = header.compression() else {
                    continue;
                };
                let iter = if compression == records::Compression::None {
                    match records::records(batch) {
                        Ok(iter) => iter,
                        Err(_) => continue,
                    }
                } else {
                    let section = &batch[records::BATCH_HEADER_LEN..];
                    if records::codecs::decompress_into(
                        compression,
                        section,
                        64 << 20,
                        &mut scratch,
                    )
                    .is_err()
                    {
                        continue;
                    }
                    records::records_in_section(&scratch, header.record_count)
                };
                for record in iter.flatten() {
                    if let Some(value) = record.value {
                        values.push(value.to_vec());
                    }
                    if values.len() >= INFERENCE_SAMPLE {
                        return values;
                    }
                }
            }
        }
        values
    }
}

#[async_trait]
impl SchemaProvider for TopicSchema {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn table_names(&self) -> Vec<String> {
        let mut names = self.topic_names();
        names.extend(self.tables.lock().keys().cloned());
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let Some(topic) = self
            .broker
            .topics
            .get(name)
            .filter(|topic| !topic.is_internal())
        else {
            if let Some(table) = self.tables.lock().get(name).cloned() {
                return Ok(Some(table));
            }
            return Ok(None);
        };
        let format = Arc::new(self.value_format(&topic)?);
        Ok(Some(Arc::new(TopicTable::new(
            Arc::clone(&self.broker),
            topic,
            format,
        ))))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.broker
            .topics
            .get(name)
            .is_some_and(|topic| !topic.is_internal())
            || self.tables.lock().contains_key(name)
    }

    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> Result<Option<Arc<dyn TableProvider>>> {
        if self.broker.topics.get(&name).is_some() {
            return Err(DataFusionError::Plan(format!("{name} is a topic")));
        }
        // A view is inlined wherever it is named: its plan is bounded once, here.
        crate::plan_size::check_view(table.as_ref())?;
        Ok(self.tables.lock().insert(name, table))
    }

    fn deregister_table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if self.broker.topics.get(name).is_some() {
            return Err(DataFusionError::Plan(format!(
                "{name} is a topic: delete it with `lakestream topics delete {name}` (or DeleteTopics)"
            )));
        }
        // Durably forgotten first: a table that comes back after a restart was not dropped.
        self.catalog.remove(name).map_err(|error| {
            DataFusionError::Execution(format!(
                "table {name} could not be removed from the catalog: {error}"
            ))
        })?;
        Ok(self.tables.lock().remove(name))
    }
}

/// One topic as a table.
pub struct TopicTable {
    pub broker: Arc<Broker>,
    pub topic: Arc<broker::topics::Topic>,
    pub format: Arc<ValueFormat>,
    pub schema: SchemaRef,
    /// What INSERT fills in for the columns it does not name: -1 means "choose" (partition by
    /// key, offset by the log, timestamp now).
    defaults: HashMap<&'static str, Expr>,
}

impl TopicTable {
    pub fn new(
        broker: Arc<Broker>,
        topic: Arc<broker::topics::Topic>,
        format: Arc<ValueFormat>,
    ) -> TopicTable {
        let defaults = HashMap::from([
            (PARTITION, Expr::Literal(ScalarValue::Int32(Some(-1)), None)),
            (OFFSET, Expr::Literal(ScalarValue::Int64(Some(-1)), None)),
            (
                TIMESTAMP,
                Expr::Literal(
                    ScalarValue::TimestampMillisecond(Some(-1), Some("UTC".into())),
                    None,
                ),
            ),
        ]);
        TopicTable {
            schema: rows::table_schema(&format),
            format,
            broker,
            topic,
            defaults,
        }
    }
}

impl std::fmt::Debug for TopicTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TopicTable({})", self.topic.name)
    }
}

/// What the pushed-down filters leave to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Constraints {
    pub partitions: Option<BTreeSet<i32>>,
    pub ranges: Ranges,
}

impl Constraints {
    /// Narrows by one filter; false if the filter is not one this table takes over exactly.
    pub fn apply(&mut self, filter: &Expr) -> bool {
        match filter {
            Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::And,
                right,
            }) => {
                let mut narrowed = self.clone();
                if narrowed.apply(left) && narrowed.apply(right) {
                    *self = narrowed;
                    return true;
                }
                false
            }
            // `_partition = a OR _partition = b` (what short IN lists become): the union.
            Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::Or,
                right,
            }) => {
                let only_partitions = |side: &Expr| {
                    let mut alone = Constraints::default();
                    (alone.apply(side) && alone.ranges == Ranges::default())
                        .then_some(alone.partitions)
                        .flatten()
                };
                match (only_partitions(left), only_partitions(right)) {
                    (Some(mut either), Some(other)) => {
                        either.extend(other);
                        self.keep_partitions(either);
                        true
                    }
                    _ => false,
                }
            }
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let (column, op, value) = match (column_of(left), literal_of(right)) {
                    (Some(column), Some(value)) => (column, *op, value),
                    _ => match (literal_of(left), column_of(right)) {
                        (Some(value), Some(column)) => match op.swap() {
                            Some(op) => (column, op, value),
                            None => return false,
                        },
                        _ => return false,
                    },
                };
                self.compare(column, op, value)
            }
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) => {
                let (Some(column), Some(low), Some(high)) =
                    (column_of(expr), literal_of(low), literal_of(high))
                else {
                    return false;
                };
                let mut narrowed = self.clone();
                if narrowed.compare(column, Operator::GtEq, low)
                    && narrowed.compare(column, Operator::LtEq, high)
                {
                    *self = narrowed;
                    return true;
                }
                false
            }
            Expr::InList(list) if !list.negated => {
                if column_of(&list.expr) != Some(PARTITION) {
                    return false;
                }
                let mut wanted = BTreeSet::new();
                for item in &list.list {
                    match literal_of(item).and_then(|value| integer(&value)) {
                        Some(n) => {
                            wanted.insert(n.clamp(i32::MIN as i64, i32::MAX as i64) as i32);
                        }
                        None => return false,
                    }
                }
                self.keep_partitions(wanted);
                true
            }
            _ => false,
        }
    }

    fn keep_partitions(&mut self, wanted: BTreeSet<i32>) {
        self.partitions = Some(match self.partitions.take() {
            Some(current) => current.intersection(&wanted).copied().collect(),
            None => wanted,
        });
    }

    fn compare(&mut self, column: &str, op: Operator, value: ScalarValue) -> bool {
        match column {
            PARTITION => {
                let Some(n) = integer(&value) else {
                    return false;
                };
                if op != Operator::Eq {
                    return false;
                }
                self.keep_partitions(BTreeSet::from([
                    n.clamp(i32::MIN as i64, i32::MAX as i64) as i32
                ]));
                true
            }
            OFFSET => {
                let Some(n) = integer(&value) else {
                    return false;
                };
                narrow(&mut self.ranges.offsets, op, n, n)
            }
            TIMESTAMP => {
                let Some((floor, ceil)) = milliseconds(&value) else {
                    return false;
                };
                narrow(&mut self.ranges.timestamps, op, floor, ceil)
            }
            _ => false,
        }
    }
}

/// Narrows `range` (half-open, `i64::MAX` as its end being no bound: `rows::Ranges`) by
/// `column op value`, where the value lies in `[floor, ceil]` milliseconds (equal unless it had a
/// finer unit). False for a comparison the range cannot express exactly: one ending just below
/// `i64::MAX` (DataFusion filters those rows itself).
fn narrow(range: &mut (i64, i64), op: Operator, floor: i64, ceil: i64) -> bool {
    // `[low, end)`, where `end` may be past i64; `None`: nothing matches.
    let bounds = match op {
        Operator::Eq if floor == ceil => Some((floor, floor as i128 + 1)),
        Operator::Eq => None,
        Operator::Gt if floor == i64::MAX => None,
        Operator::Gt => Some((floor + 1, i64::MAX as i128 + 1)),
        Operator::GtEq => Some((ceil, i64::MAX as i128 + 1)),
        Operator::Lt => Some((i64::MIN, ceil as i128)),
        Operator::LtEq => Some((i64::MIN, floor as i128 + 1)),
        _ => return false,
    };
    let (low, high) = match bounds {
        // Past i64::MAX: no upper bound.
        Some((low, end)) if end > i64::MAX as i128 => (low, i64::MAX),
        // Exactly i64::MAX would read as no bound.
        Some((_, end)) if end == i64::MAX as i128 => return false,
        Some((low, end)) => (low, end as i64),
        None => (1, 0),
    };
    range.0 = range.0.max(low);
    range.1 = range.1.min(high);
    true
}

fn column_of(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Column(column) => Some(column.name.as_str()),
        Expr::Cast(cast) => column_of(&cast.expr),
        Expr::TryCast(cast) => column_of(&cast.expr),
        _ => None,
    }
}

fn literal_of(expr: &Expr) -> Option<ScalarValue> {
    match expr {
        Expr::Literal(value, _) if !value.is_null() => Some(value.clone()),
        _ => None,
    }
}

fn integer(value: &ScalarValue) -> Option<i64> {
    match value {
        ScalarValue::Int8(Some(n)) => Some(*n as i64),
        ScalarValue::Int16(Some(n)) => Some(*n as i64),
        ScalarValue::Int32(Some(n)) => Some(*n as i64),
        ScalarValue::Int64(Some(n)) => Some(*n),
        ScalarValue::UInt8(Some(n)) => Some(*n as i64),
        ScalarValue::UInt16(Some(n)) => Some(*n as i64),
        ScalarValue::UInt32(Some(n)) => Some(*n as i64),
        ScalarValue::UInt64(Some(n)) => i64::try_from(*n).ok(),
        _ => None,
    }
}

/// A timestamp literal as milliseconds, rounded down and up.
fn milliseconds(value: &ScalarValue) -> Option<(i64, i64)> {
    let scaled = |n: i64, per_ms: i64| {
        (
            n.div_euclid(per_ms),
            n.div_euclid(per_ms) + (n.rem_euclid(per_ms) != 0) as i64,
        )
    };
    match value {
        ScalarValue::TimestampSecond(Some(n), _) => {
            Some((n.saturating_mul(1000), n.saturating_mul(1000)))
        }
        ScalarValue::TimestampMillisecond(Some(n), _) => Some((*n, *n)),
        ScalarValue::TimestampMicrosecond(Some(n), _) => Some(scaled(*n, 1_000)),
        ScalarValue::TimestampNanosecond(Some(n), _) => Some(scaled(*n, 1_000_000)),
        ScalarValue::Int64(Some(n)) => Some((*n, *n)),
        _ => None,
    }
}

#[async_trait]
impl TableProvider for TopicTable {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn get_column_default(&self, column: &str) -> Option<&Expr> {
        self.defaults.get(column)
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|filter| {
                if Constraints::default().apply(filter) {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut constraints = Constraints::default();
        for filter in filters {
            if !constraints.apply(filter) {
                return Err(DataFusionError::Internal(format!(
                    "filter {filter} was not pushed down"
                )));
            }
        }
        let projection = projection
            .cloned()
            .unwrap_or_else(|| (0..self.schema.fields().len()).collect());
        let ranges = constraints.ranges;
        let mut plans = Vec::new();
        if !ranges.is_empty() {
            for partition in self.topic.partitions() {
                if constraints
                    .partitions
                    .as_ref()
                    .is_some_and(|wanted| !wanted.contains(&partition.index))
                {
                    continue;
                }
                plans.push(plan_partition(partition, &ranges)?);
            }
        }
        let store = self
            .broker
            .tiering
            .as_ref()
            .map(|tiering| tiering.cache.store().clone());
        Ok(Arc::new(TopicScanExec::new(
            self.topic.name.to_string(),
            Arc::clone(&self.format),
            Arc::clone(&self.schema),
            projection,
            ranges,
            plans,
            limit,
            store,
        )))
    }

    async fn insert_into(
        &self,
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if insert_op != InsertOp::Append {
            return Err(DataFusionError::Plan(format!(
                "a topic is append-only: INSERT INTO {} appends; it cannot be overwritten or replaced",
                self.topic.name
            )));
        }
        crate::insert::plan(
            Arc::clone(&self.broker),
            Arc::clone(&self.topic),
            Arc::clone(&self.format),
            input,
        )
    }
}

/// Fixes what one partition's scan reads: the high watermark now, the cold objects that can
/// match, and where the hot log starts (the time index gives the first offset that can match
/// the lower timestamp bound).
fn plan_partition(
    partition: Arc<broker::partition::Partition>,
    ranges: &Ranges,
) -> Result<PartitionPlan> {
    let high_watermark = partition.high_watermark();
    let manifest = partition.cold_manifest();
    let (cold, cold_total, cold_end) = match &manifest {
        Some(manifest) => {
            let cold: Vec<tier::ObjectEntry> = manifest
                .objects
                .iter()
                .filter(|object| {
                    object.next_offset() > ranges.offsets.0
                        && object.base_offset() < ranges.offsets.1
                        && object.stats.max_timestamp >= ranges.timestamps.0
                        && crate::rows::below(object.stats.min_timestamp, ranges.timestamps.1)
                })
                .cloned()
                .collect();
            (
                cold,
                manifest.objects.len(),
                manifest.next_offset().unwrap_or(i64::MIN),
            )
        }
        None => (Vec::new(), 0, i64::MIN),
    };
    let mut hot_start = cold_end.max(partition.local_start_offset());
    if ranges.timestamps.0 > i64::MIN {
        match partition
            .batch_for_timestamp(ranges.timestamps.0)
            .map_err(|error| DataFusionError::External(Box::new(error)))?
        {
            Some(batch) => {
                if let Ok(header) = records::BatchHeader::parse(&batch) {
                    hot_start = hot_start.max(header.base_offset);
                }
            }
            // No hot record is that late.
            None => hot_start = high_watermark,
        }
    }
    Ok(PartitionPlan {
        partition,
        high_watermark,
        cold,
        cold_total,
        hot_start,
    })
}

#[cfg(test)]
mod tests {
    use datafusion::logical_expr::{col, lit};

    use super::*;

    fn constraints(filters: &[Expr]) -> Option<Constraints> {
        let mut constraints = Constraints::default();
        filters
            .iter()
            .all(|filter| constraints.apply(filter))
            .then_some(constraints)
    }

    /// Every comparison taken over keeps exactly the values it matches, i64's ends included; only
    /// those ending just below i64::MAX are left to DataFusion.
    #[test]
    fn ranges_are_exact_at_the_ends_of_i64() {
        let edges = [
            i64::MIN,
            i64::MIN + 1,
            -1,
            0,
            1,
            i64::MAX - 2,
            i64::MAX - 1,
            i64::MAX,
        ];
        let ops = [
            Operator::Eq,
            Operator::Gt,
            Operator::GtEq,
            Operator::Lt,
            Operator::LtEq,
        ];
        let mut left_over = Vec::new();
        for op in ops {
            for v in edges {
                let mut timestamps = (i64::MIN, i64::MAX);
                if !narrow(&mut timestamps, op, v, v) {
                    left_over.push((op, v));
                    continue;
                }
                let ranges = crate::rows::Ranges {
                    offsets: (0, 1),
                    timestamps,
                };
                for t in edges {
                    let want = match op {
                        Operator::Eq => t == v,
                        Operator::Gt => t > v,
                        Operator::GtEq => t >= v,
                        Operator::Lt => t < v,
                        _ => t <= v,
                    };
                    assert_eq!(ranges.keeps(0, t), want, "{t} {op} {v}: {timestamps:?}");
                }
                // Every range here keeps one of the edges or nothing at all.
                let kept = edges.iter().any(|&t| ranges.keeps(0, t));
                assert_eq!(ranges.is_empty(), !kept, "{op} {v}: {timestamps:?}");
            }
        }
        let just_below = [
            (Operator::Eq, i64::MAX - 1),
            (Operator::Lt, i64::MAX),
            (Operator::LtEq, i64::MAX - 1),
        ];
        assert_eq!(left_over, just_below);
    }

    #[test]
    fn filters_become_exact_ranges() {
        let c = constraints(&[
            col("_offset").gt_eq(lit(10i64)),
            col("_offset").lt(lit(20i64)),
        ])
        .unwrap();
        assert_eq!(c.ranges.offsets, (10, 20));
        let c = constraints(&[lit(5i64).lt(col("_offset")), col("_partition").eq(lit(2))]).unwrap();
        assert_eq!(c.ranges.offsets, (6, i64::MAX));
        assert_eq!(c.partitions, Some(BTreeSet::from([2])));
        let c = constraints(&[col("_offset").between(lit(1i64), lit(3i64))]).unwrap();
        assert_eq!(c.ranges.offsets, (1, 4));
        let c = constraints(&[
            col("_partition").in_list(vec![lit(1), lit(3)], false),
            col("_partition").eq(lit(3)),
        ])
        .unwrap();
        assert_eq!(c.partitions, Some(BTreeSet::from([3])));
        let micros = ScalarValue::TimestampMicrosecond(Some(1_500), Some("UTC".into()));
        let c =
            constraints(&[col("_timestamp").gt_eq(Expr::Literal(micros.clone(), None))]).unwrap();
        assert_eq!(c.ranges.timestamps, (2, i64::MAX));
        let c = constraints(&[col("_timestamp").lt_eq(Expr::Literal(micros, None))]).unwrap();
        assert_eq!(c.ranges.timestamps, (i64::MIN, 2));
        // Short IN lists arrive as ORs of equalities: the union, narrowed by the rest.
        let c = constraints(&[
            col("_partition").eq(lit(1)).or(col("_partition")
                .eq(lit(4))
                .or(col("_partition").eq(lit(2)))),
            col("_partition").in_list(vec![lit(1), lit(2), lit(3)], false),
        ])
        .unwrap();
        assert_eq!(c.partitions, Some(BTreeSet::from([1, 2])));
        // Not taken over: other columns, OR of anything but partitions, NOT IN.
        assert!(
            constraints(&[col("_partition")
                .eq(lit(1))
                .or(col("_offset").eq(lit(5i64)))])
            .is_none()
        );
        assert!(
            constraints(&[col("_partition").eq(lit(1)).or(col("_partition")
                .eq(lit(2))
                .and(col("_offset").eq(lit(5i64))))])
            .is_none()
        );
        assert!(constraints(&[col("metric").gt(lit(1))]).is_none());
        assert!(
            constraints(&[col("_offset")
                .eq(lit(1i64))
                .or(col("_offset").eq(lit(5i64)))])
            .is_none()
        );
        assert!(constraints(&[col("_partition").in_list(vec![lit(1)], true)]).is_none());
    }
}
