//! The SQL engine: a DataFusion session whose `lakestream.public` schema is the topics, on a
//! runtime of its own (so a heavy query never takes the broker's threads), with a memory limit,
//! and the latest-N rewrite.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use broker::Broker;
use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DataFusionError, Result};
use datafusion::config::ConfigOptions;
use datafusion::datasource::{TableType, ViewTable};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::optimizer::{Analyzer, AnalyzerRule};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::catalog::TableCatalog;
use crate::provider::TopicSchema;
use crate::rows::OFFSET;
use crate::scan::TopicScanExec;

pub const CATALOG: &str = "lakestream";
pub const SCHEMA: &str = "public";

/// Stack of each SQL thread. DataFusion clones, rewrites and drops plans and expressions
/// recursively, a few hundred bytes of stack per level of nesting (more in debug builds): this
/// holds statements as deep as `depth::DEPTH_MAX` allows several times over. Untouched stack
/// costs address space, not memory.
pub const SQL_STACK_BYTES: usize = 32 << 20;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Worker threads of the SQL runtime.
    pub threads: usize,
    /// Memory all running queries may hold (sorts and aggregations spill or fail beyond it).
    pub memory_limit: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        EngineConfig {
            threads: cores,
            memory_limit: 1 << 30,
        }
    }
}

/// What a query gave.
pub struct QueryOutput {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub elapsed: Duration,
}

pub struct Engine {
    context: SessionContext,
    catalog: Arc<TableCatalog>,
    runtime: SqlRuntime,
    topics: Arc<TopicSchema>,
    pub broker: Arc<Broker>,
}

/// The SQL runtime, shut down without waiting when the engine drops: an engine may be dropped
/// inside async code (a server failing at start-up), where a runtime's own drop would panic.
struct SqlRuntime(Option<tokio::runtime::Runtime>);

impl Drop for SqlRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl std::ops::Deref for SqlRuntime {
    type Target = tokio::runtime::Runtime;

    fn deref(&self) -> &tokio::runtime::Runtime {
        self.0
            .as_ref()
            .expect("the SQL runtime lives as long as its engine")
    }
}

impl Engine {
    pub fn start(broker: Arc<Broker>, config: EngineConfig) -> Result<Arc<Engine>> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            // More workers than query partitions, so accepting connections and answering small
            // queries goes on while heavy ones compute.
            .worker_threads(config.threads.max(1) * 2 + 1)
            .thread_name("lakestream-sql")
            .thread_stack_size(SQL_STACK_BYTES)
            // Queries yield the CPU to the broker: produce and fetch never wait on SQL.
            .on_thread_start(lower_priority)
            // Memory stays with the process while queries come (no purge between them).
            .on_thread_unpark(broker::alloc::keep_memory_warm)
            .on_thread_park(|| {
                broker::alloc::keep_memory_warm();
                broker::alloc::release_idle_thread_memory();
            })
            .enable_all()
            .build()
            .map_err(|error| DataFusionError::External(Box::new(error)))?;
        let tables = Arc::new(
            TableCatalog::open(&broker.config.data_dir)
                .map_err(|error| DataFusionError::External(Box::new(error)))?,
        );
        let topics = Arc::new(TopicSchema::new(Arc::clone(&broker), Arc::clone(&tables)));
        // A value format that cannot decode is refused when configured, not when queried.
        broker.set_config_check(Arc::new(|config| {
            crate::format::check_config(config).map_err(|error| error.to_string())
        }));
        if let Some(tiering) = &broker.tiering {
            // Cold files of topics whose values have a schema carry typed columns.
            let weak = Arc::downgrade(&topics);
            tiering.set_value_columns(Arc::new(move |topic| {
                let topics = weak.upgrade()?;
                let format = topics.value_format(topic).ok()?;
                crate::format::TypedValues::of(format)
                    .map(|typed| Arc::new(typed) as Arc<dyn tier::convert::ValueColumns>)
            }));
        }
        let session = SessionConfig::new()
            .with_default_catalog_and_schema(CATALOG, SCHEMA)
            .with_create_default_catalog_and_schema(false)
            .with_information_schema(true)
            .with_target_partitions(config.threads.max(1));
        let runtime_env = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(FairSpillPool::new(config.memory_limit)))
            .build_arc()?;
        let state = SessionStateBuilder::new()
            .with_config(session)
            .with_runtime_env(runtime_env)
            .with_default_features()
            .with_analyzer_rules(analyzer_rules())
            .with_physical_optimizer_rule(Arc::new(LatestRows))
            .with_physical_optimizer_rule(Arc::new(YieldingJoins))
            .build();
        let context = SessionContext::new_with_state(state);
        context.register_udf(crate::pg::current_setting());
        context.register_udf(crate::pg::set_config());
        let catalog = MemoryCatalogProvider::new();
        catalog.register_schema(SCHEMA, Arc::clone(&topics) as _)?;
        context.register_catalog(CATALOG, Arc::new(catalog));
        // What psql and BI tools ask on connect: pg_catalog tables and functions.
        crate::pg::types::register_pg_catalog(&context, CATALOG)?;
        // Tables made by CTAS before a restart.
        for entry in tables.tables() {
            if let Err(error) = crate::catalog::register(&context, &entry) {
                tracing::warn!(table = %entry.name, location = %entry.location, %error, "a table of the catalog cannot be registered");
            }
        }
        Ok(Arc::new(Engine {
            context,
            catalog: tables,
            runtime: SqlRuntime(Some(runtime)),
            topics,
            broker,
        }))
    }

    pub fn context(&self) -> &SessionContext {
        &self.context
    }

    /// The SQL runtime, where queries and the PostgreSQL server run.
    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.runtime
    }

    /// The CTAS tables kept across restarts.
    pub fn catalog(&self) -> &TableCatalog {
        &self.catalog
    }

    pub fn topics(&self) -> &TopicSchema {
        &self.topics
    }

    /// Runs one statement on the SQL runtime and collects its rows, on the engine's own session
    /// (HTTP and the CLI: no `SET`, see `settings`). Dropping the future cancels the query.
    pub async fn query(self: &Arc<Self>, sql: &str) -> Result<QueryOutput> {
        let engine = Arc::clone(self);
        let sql = sql.to_string();
        let task = self.runtime.spawn(async move {
            let started = Instant::now();
            let result = engine.run(&sql).await;
            result.map(|(schema, batches)| QueryOutput {
                schema,
                batches,
                elapsed: started.elapsed(),
            })
        });
        let guard = AbortOnDrop(task.abort_handle());
        let result = task
            .await
            .map_err(|error| DataFusionError::Execution(format!("the query stopped: {error}")))?;
        drop(guard);
        result.map_err(|error| self.explain(error))
    }

    /// Plans `sql` and starts it, for an answer that streams: the rows come as the stream is
    /// polled, which must be on the SQL runtime (`runtime()`), where the plan's operators spawn
    /// their tasks. A CTAS runs to its end here; its one summary row is the stream.
    pub async fn execute_stream(&self, sql: &str) -> Result<SendableRecordBatchStream> {
        self.begin(sql).await.map_err(|error| self.explain(error))
    }

    async fn begin(&self, sql: &str) -> Result<SendableRecordBatchStream> {
        self.check_text(sql)?;
        if let Some((schema, batches)) = crate::ctas::try_run(self, sql).await? {
            let batches = futures::stream::iter(batches.into_iter().map(Ok));
            return Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)));
        }
        // As `SessionContext::sql`, but a SET is refused before it runs (`settings`).
        let plan = self.context.state().create_logical_plan(sql).await?;
        crate::settings::refuse_sessionless(&plan)?;
        self.check_replacing(&plan).await?;
        let frame = self.context.execute_logical_plan(plan).await?;
        frame.execute_stream().await
    }

    async fn run(&self, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let stream = self.begin(sql).await?;
        let schema = stream.schema();
        let batches = futures::TryStreamExt::try_collect(stream).await?;
        Ok((schema, batches))
    }

    /// Refuses `sql` before it is planned if it is too complex ([`crate::plan_size::check_text`]),
    /// with the views of the `public` schema.
    pub fn check_text(&self, sql: &str) -> Result<()> {
        crate::plan_size::check_text(sql, &|name| self.topics.tables_read_by_view(name))
    }

    /// A planned `CREATE OR REPLACE` (view, table, external table), checked just before DataFusion
    /// runs it: DataFusion drops what has the name first and registers the new object after,
    /// so a view refused as too large ([`crate::plan_size::check_view`]) would leave nothing,
    /// and a CTAS table of that name would leave the catalog for good. So a view replaces only
    /// a view (PostgreSQL: "is not a view"), a view too large to keep is refused with the old
    /// one still there, and a CTAS table is replaced only after `DROP TABLE`.
    pub async fn check_replacing(&self, plan: &LogicalPlan) -> Result<()> {
        let (name, view) = match plan {
            LogicalPlan::Ddl(DdlStatement::CreateView(view)) if view.or_replace => {
                (&view.name, Some(view))
            }
            LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(table)) if table.or_replace => {
                (&table.name, None)
            }
            LogicalPlan::Ddl(DdlStatement::CreateExternalTable(table)) if table.or_replace => {
                (&table.name, None)
            }
            _ => return Ok(()),
        };
        let table = name.table();
        if self.broker.topics.get(table).is_some() {
            return Ok(()); // `TopicSchema::deregister_table` refuses it.
        }
        let old = self.context.table_provider(name.clone()).await.ok();
        let kept = self
            .catalog
            .tables()
            .iter()
            .any(|entry| entry.name == table);
        match view {
            Some(_)
                if old
                    .as_ref()
                    .is_some_and(|old| old.table_type() != TableType::View) =>
            {
                Err(DataFusionError::Plan(format!(
                    "{table} is a table, not a view: CREATE OR REPLACE VIEW replaces only a view \
                     (DROP TABLE {table} first, or choose another name)"
                )))
            }
            Some(view) => {
                let input = Arc::unwrap_or_clone(Arc::clone(&view.input));
                crate::plan_size::check_view(&ViewTable::new(input, view.definition.clone()))
                    .map(|_| ())
            }
            None if old.is_some() && kept => Err(DataFusionError::Plan(format!(
                "{table} is a table made by CREATE TABLE ... AS and kept across restarts: \
                 CREATE OR REPLACE does not replace it (DROP TABLE {table} first)"
            ))),
            None => Ok(()),
        }
    }

    /// Adds what helps: the topics that exist, when a table is unknown.
    pub fn explain(&self, error: DataFusionError) -> DataFusionError {
        if let DataFusionError::External(root) = error.find_root()
            && root.is::<crate::plan_size::TooLarge>()
        {
            // Not "plan_size caused by External error: ...".
            let mut error = error;
            while let DataFusionError::Context(_, inner) = error {
                error = *inner;
            }
            return error;
        }
        if let DataFusionError::External(root) = error.find_root()
            && let Some(refused) = root.downcast_ref::<crate::settings::Refused>()
        {
            return DataFusionError::Plan(format!("{refused}\nHINT: {}", crate::settings::HINT));
        }
        if crate::sqlstate::unknown_table(&error).is_none() {
            return error;
        }
        let text = error.to_string();
        if text.contains("HINT") {
            return error;
        }
        let text = text
            .trim_start_matches("Error during planning: ")
            .trim_end();
        DataFusionError::Plan(format!("{text}\n{}", self.topics.hint()))
    }
}

/// DataFusion's analyzer rules, after [`PlanSize`](crate::plan_size::PlanSize): every plan is
/// measured before anything rewrites it, on every way in (HTTP, the CLI, both PostgreSQL
/// protocols, CTAS, `INSERT`). `EXPLAIN` of a refused plan answers with the refusal as its
/// last row, as DataFusion explains any analyzer failure; `EXPLAIN ANALYZE` fails.
fn analyzer_rules() -> Vec<Arc<dyn AnalyzerRule + Send + Sync>> {
    let mut rules: Vec<Arc<dyn AnalyzerRule + Send + Sync>> =
        vec![Arc::new(crate::plan_size::PlanSize)];
    rules.extend(Analyzer::new().rules);
    rules
}

/// Makes the calling thread the kernel's last choice when the broker's threads want the CPU.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority on the calling thread's own id changes only its scheduling.
    unsafe {
        let thread = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, thread, 10);
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Joins yield to the runtime every so many output batches (`CooperativeExec`), so that a
/// cancelled query stops within milliseconds. A join can compute for minutes on one input batch
/// (a nested loop join of 200k × 8k rows), and the operators above it keep polling while it is
/// ready: without a yield, an aborted task or a dropped connection would only stop it at the
/// end.
#[derive(Debug)]
struct YieldingJoins;

impl PhysicalOptimizerRule for YieldingJoins {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if node.children().len() < 2 {
                return Ok(Transformed::no(node));
            }
            Ok(Transformed::yes(
                Arc::new(CooperativeExec::new(node)) as Arc<dyn ExecutionPlan>
            ))
        })
        .map(|transformed| transformed.data)
    }

    fn name(&self) -> &str {
        "yielding_joins"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `ORDER BY _offset DESC LIMIT n` reads only each partition's newest rows: the top n of the
/// whole table are among the newest n kept rows of each partition, and the sort on top picks
/// them.
#[derive(Debug)]
struct LatestRows;

impl PhysicalOptimizerRule for LatestRows {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_down(|node| {
            let found = if let Some(sort) = node.as_any().downcast_ref::<SortExec>() {
                sort.fetch()
                    .zip(offset_descending(sort.expr()))
                    .map(|(n, column)| (n, column, Arc::clone(sort.input())))
            } else if let Some(merge) = node.as_any().downcast_ref::<SortPreservingMergeExec>() {
                merge
                    .fetch()
                    .zip(offset_descending(merge.expr()))
                    .map(|(n, column)| (n, column, Arc::clone(merge.input())))
            } else {
                None
            };
            let Some((n, column, input)) = found else {
                return Ok(Transformed::no(node));
            };
            match with_tail(&input, n, column)? {
                Some(input) => Ok(Transformed::yes(
                    Arc::clone(&node).with_new_children(vec![input])?,
                )),
                None => Ok(Transformed::no(node)),
            }
        })
        .map(|transformed| transformed.data)
    }

    fn name(&self) -> &str {
        "latest_rows"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The index of the column a sort orders by, if it sorts descending by a column.
fn offset_descending(ordering: &datafusion::physical_expr::LexOrdering) -> Option<usize> {
    let first = ordering.first();
    if !first.options.descending {
        return None;
    }
    first
        .expr
        .as_any()
        .downcast_ref::<Column>()
        .map(Column::index)
}

/// The plan with its topic scan reading only the tail, through nodes that keep every row, if
/// the column at `column` of `plan`'s output is the scan's own `_offset` (not a computed
/// column that happens to be named so).
fn with_tail(
    plan: &Arc<dyn ExecutionPlan>,
    n: usize,
    column: usize,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    if let Some(scan) = plan.as_any().downcast_ref::<TopicScanExec>() {
        let is_offset = scan
            .output_schema()
            .fields()
            .get(column)
            .is_some_and(|field| field.name() == OFFSET);
        return Ok(is_offset.then(|| Arc::new(scan.with_tail(n)) as Arc<dyn ExecutionPlan>));
    }
    let input_column = if let Some(projection) = plan.as_any().downcast_ref::<ProjectionExec>() {
        // Only a plain column passes `_offset` through unchanged.
        match projection
            .expr()
            .get(column)
            .and_then(|projected| projected.expr.as_any().downcast_ref::<Column>())
        {
            Some(input) => input.index(),
            None => return Ok(None),
        }
    } else if plan.as_any().is::<CooperativeExec>()
        || plan.as_any().is::<RepartitionExec>()
        || plan.as_any().is::<CoalescePartitionsExec>()
        || plan.as_any().is::<SortExec>()
    {
        column
    } else {
        return Ok(None);
    };
    if plan.children().len() != 1 {
        return Ok(None);
    }
    match with_tail(plan.children()[0], n, input_column)? {
        Some(child) => Ok(Some(Arc::clone(plan).with_new_children(vec![child])?)),
        None => Ok(None),
    }
}
