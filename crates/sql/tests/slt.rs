//! SQL tests as data: each `tests/slt/NAME.slt` is a [sqllogictest] script run by the test
//! `NAME` against a fresh broker (in a temporary directory, with the cold tier in a folder of
//! it) and a SQL engine over it.
//!
//! Every file starts with these topics, all empty:
//!
//! | topic      | partitions | configs                                                        |
//! |------------|------------|----------------------------------------------------------------|
//! | `events`   | 2          | `value.format=json`, `value.schema=device STRING, metric DOUBLE` |
//! | `inferred` | 1          | `value.format=json` (the schema is inferred from the records)  |
//! | `lines`    | 1          | `value.format=csv`, `value.schema=id BIGINT, name STRING, score DOUBLE` |
//! | `raw`      | 1          | (raw values)                                                   |
//! | `strict`   | 1          | like `events`, with `value.decode.strict=true`                 |
//! | `tiered`   | 2          | `value.format=json`, `value.schema=device STRING, metric DOUBLE`, `segment.bytes=4096`, `local.retention.bytes=0` |
//! | `avro`     | 1          | `value.format=avro`, `value.schema=` the record `READING` below (Confluent framing, the default), `segment.bytes=4096`, `local.retention.bytes=0` |
//! | `avro_id`  | 1          | like `avro`, with `value.avro.schema.id=7` (Confluent framing, that id only) |
//! | `avro_plain` | 1        | like `avro`, with `value.avro.framing=none` (plain datums)     |
//!
//! Binary values are written as hex literals: `INSERT INTO avro (_value) VALUES (X'00...')`.
//!
//! What the harness adds to sqllogictest:
//! - `__TMP__` anywhere in a file (SQL and expected rows) is the test's temporary directory, for
//!   CTAS and COPY locations.
//! - The statement `tier` (alone: `statement ok` then `tier`) is not SQL: it runs one pass of
//!   the cold tier, which uploads every sealed segment (as objects of at most 8 KiB of log) and,
//!   with `local.retention.bytes=0`, deletes the uploaded local copies.
//! - An `INSERT` answers as a statement with the number of records it produced, so
//!   `statement count 3` checks it (a `COPY` stays a query of one `count` row).
//! - Result columns are typed `I` (integers), `R` (floating point) or `T` (everything else),
//!   and the types are checked. A NULL shows as `NULL`, an empty string as `(empty)`, binary as
//!   hex, a timestamp as `2024-01-01T00:00:00Z`. A cell of several lines (an EXPLAIN plan) goes
//!   on as rows holding its further lines; `<slt:ignore>` in the expected rows skips what is
//!   not checked (`<slt:ignore>TopicScanExec: ...<slt:ignore>` checks one line of a plan).
//!
//! `LAKESTREAM_SLT_COMPLETE=1 cargo nextest run -p lakestream-sql --test slt NAME` writes what
//! the engine answers into the file as the expected results: a start for a new file, to be read
//! line by line before it is committed.
//!
//! A new `.slt` file needs a line in `slt_files!` below (a test checks that none is missing).
//!
//! [sqllogictest]: https://www.sqlite.org/sqllogictest/doc/trunk/about.wiki

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use broker::tiering::TieringConfig;
use broker::topic_config::TopicConfig;
use broker::{Broker, BrokerConfig};
use datafusion::error::DataFusionError;
use sqllogictest::{DBOutput, DefaultColumnType};

/// A topic every file starts with.
struct TopicSpec {
    name: &'static str,
    partitions: i32,
    configs: &'static [(&'static str, &'static str)],
}

const TOPICS: &[TopicSpec] = &[
    TopicSpec {
        name: "events",
        partitions: 2,
        configs: &[
            ("value.format", "json"),
            ("value.schema", "device STRING, metric DOUBLE"),
        ],
    },
    TopicSpec {
        name: "inferred",
        partitions: 1,
        configs: &[("value.format", "json")],
    },
    TopicSpec {
        name: "lines",
        partitions: 1,
        configs: &[
            ("value.format", "csv"),
            ("value.schema", "id BIGINT, name STRING, score DOUBLE"),
        ],
    },
    TopicSpec {
        name: "raw",
        partitions: 1,
        configs: &[],
    },
    TopicSpec {
        name: "strict",
        partitions: 1,
        configs: &[
            ("value.format", "json"),
            ("value.schema", "device STRING, metric DOUBLE"),
            ("value.decode.strict", "true"),
        ],
    },
    TopicSpec {
        name: "tiered",
        partitions: 2,
        configs: &[
            ("value.format", "json"),
            ("value.schema", "device STRING, metric DOUBLE"),
            ("segment.bytes", "4096"),
            ("local.retention.bytes", "0"),
        ],
    },
    TopicSpec {
        name: "avro",
        partitions: 1,
        configs: &[
            ("value.format", "avro"),
            ("value.schema", READING),
            ("segment.bytes", "4096"),
            ("local.retention.bytes", "0"),
        ],
    },
    TopicSpec {
        name: "avro_id",
        partitions: 1,
        configs: &[
            ("value.format", "avro"),
            ("value.schema", READING),
            ("value.avro.schema.id", "7"),
        ],
    },
    TopicSpec {
        name: "avro_plain",
        partitions: 1,
        configs: &[
            ("value.format", "avro"),
            ("value.schema", READING),
            ("value.avro.framing", "none"),
        ],
    },
];

/// The Avro record schema of the topics `avro` and `avro_plain`.
const READING: &str = r#"{"type": "record", "name": "Reading", "fields": [
    {"name": "device", "type": "string"},
    {"name": "metric", "type": ["null", "double"]},
    {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["GAUGE", "COUNTER"]}},
    {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}}
]}"#;

/// Set, the tests rewrite the expected results in the files instead of checking them.
const COMPLETE: &str = "LAKESTREAM_SLT_COMPLETE";

/// The harness's own statement: one pass of the cold tier.
const TIER: &str = "tier";

macro_rules! slt_files {
    ($($name:ident),* $(,)?) => {
        const FILES: &[&str] = &[$(stringify!($name)),*];
        $(
            #[test]
            fn $name() {
                run_file(stringify!($name));
            }
        )*
    };
}

slt_files!(
    offsets,
    timestamps,
    scans,
    decoders,
    tiered_cold,
    ctas_copy,
    errors,
    inserts,
    avro,
);

#[test]
fn every_file_has_a_test() {
    let mut found: Vec<String> = std::fs::read_dir(slt_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "slt"))
        .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let mut listed: Vec<String> = FILES.iter().map(|name| name.to_string()).collect();
    listed.sort();
    assert_eq!(found, listed, "add each tests/slt/*.slt to slt_files!");
}

/// A scan planned before a rewrite replaced its cold objects, and run once the old objects are
/// deleted, reads their records from the replacements the partition's manifest now lists.
#[test]
fn a_scan_planned_before_a_rewrite_reads_the_replacements() {
    let dir = tempfile::tempdir().unwrap();
    // Replaced objects are deleted at the first pass after their rewrite.
    let broker = tiered_broker(dir.path(), |tiering| {
        tiering.rewrite_grace = std::time::Duration::ZERO;
    });
    let topic_config = TopicConfig::from_pairs([
        ("value.format", "json"),
        ("segment.bytes", "4096"),
        ("local.retention.bytes", "0"),
    ])
    .unwrap();
    let topic = broker.topics.create("events", 1, 1, topic_config).unwrap();
    let engine = engine(&broker);
    let runtime = engine.runtime();
    let tick = || runtime.block_on(broker.tiering.as_ref().unwrap().tick(&broker));
    for from in (0..600).step_by(100) {
        let insert = format!(
            "INSERT INTO events (_value) SELECT '{{\"device\":\"d' || value || '\",\"metric\":' || value || '}}' \
             FROM generate_series({from}, {})",
            from + 99
        );
        runtime.block_on(engine.query(&insert)).unwrap();
    }
    tick();
    let partition = topic.partition(0).unwrap();
    let before = partition.cold_manifest().unwrap();
    assert!(before.objects.len() >= 3, "{before:?}");
    let query =
        "SELECT count(*), sum(metric), count(DISTINCT _offset) FROM events WHERE _offset >= 50";
    let plan = runtime
        .block_on(async {
            engine
                .context()
                .sql(query)
                .await?
                .create_physical_plan()
                .await
        })
        .unwrap();

    // A declared schema: every object is rewritten with typed columns, one per pass, and the
    // old ones are deleted.
    let mut declared = topic.config();
    declared
        .set("value.schema", "device STRING, metric DOUBLE")
        .unwrap();
    broker.topics.set_config("events", declared).unwrap();
    for _ in 0..=before.objects.len() {
        tick();
    }
    let after = partition.cold_manifest().unwrap();
    assert!(
        after
            .objects
            .iter()
            .all(|object| object.value_schema.is_some())
    );
    for object in &before.objects {
        assert!(
            !dir.path().join("cold").join(&object.key).exists(),
            "{}",
            object.key
        );
    }

    let batches = runtime
        .block_on(datafusion::physical_plan::collect(
            plan,
            engine.context().task_ctx(),
        ))
        .unwrap();
    let rows = rows_of(&batches).unwrap();
    let sum: i64 = (50..600).sum();
    assert_eq!(
        rows,
        vec![vec!["550".to_string(), sum.to_string(), "550".to_string()]]
    );

    // Records that retention deleted while the query waited are an error that says so.
    let plan = runtime
        .block_on(async {
            let frame = engine
                .context()
                .sql("SELECT sum(metric) FROM events")
                .await?;
            frame.create_physical_plan().await
        })
        .unwrap();
    let mut short = topic.config();
    short.set("retention.ms", "1").unwrap();
    broker.topics.set_config("events", short).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    tick();
    assert!(partition.cold_manifest().unwrap().objects.len() < after.objects.len());
    let error = runtime
        .block_on(datafusion::physical_plan::collect(
            plan,
            engine.context().task_ctx(),
        ))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("no object of the current manifest holds offsets"),
        "{error}"
    );
    broker.shutdown();
    drop(engine);
}

fn slt_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt")
}

/// A broker in `dir` with a cold tier in `dir/cold` of small objects, so a few hundred records
/// make several; `adjust` changes its tiering settings further.
fn tiered_broker(dir: &Path, adjust: impl FnOnce(&mut TieringConfig)) -> Arc<Broker> {
    let mut config = BrokerConfig::for_data_dir(dir.join("data"));
    let mut tiering = TieringConfig::new(tier::StoreLocation::Local(dir.join("cold")));
    tiering.object_bytes = 8 << 10;
    adjust(&mut tiering);
    config.tiering = Some(tiering);
    Broker::open(config).unwrap()
}

/// The SQL engine on two threads and two target partitions whatever the machine, so plans are
/// the same everywhere.
fn engine(broker: &Arc<Broker>) -> Arc<sql::Engine> {
    sql::Engine::start(
        Arc::clone(broker),
        sql::EngineConfig {
            threads: 2,
            memory_limit: 512 << 20,
        },
    )
    .unwrap()
}

/// Runs `tests/slt/{name}.slt` against a fresh broker and engine.
fn run_file(name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = slt_dir().join(format!("{name}.slt"));
    let script = std::fs::read_to_string(&path)
        .unwrap()
        .replace("__TMP__", &dir.path().display().to_string());

    let broker = tiered_broker(dir.path(), |_| {});
    for topic in TOPICS {
        let config = TopicConfig::from_pairs(topic.configs.iter().copied()).unwrap();
        broker
            .topics
            .create(topic.name, topic.partitions, 1, config)
            .unwrap();
    }
    let engine = engine(&broker);

    let mut runner = sqllogictest::Runner::new(|| {
        let engine = Arc::clone(&engine);
        async move { Ok::<_, DataFusionError>(Lakestream { engine }) }
    });
    runner.with_column_validator(sqllogictest::strict_column_validator);
    let result = if std::env::var_os(COMPLETE).is_some() {
        complete(&mut runner, &path, &script, dir.path());
        Ok(())
    } else {
        runner.run_script_with_name(&script, path.display().to_string())
    };
    runner.shutdown();
    drop(runner);
    broker.shutdown();
    // The engine owns a runtime: it is dropped here, outside any async context.
    drop(engine);
    if let Err(error) = result {
        panic!("{}", error.display(false));
    }
}

/// Rewrites the expected results of `path` with what the engine gives (review the diff!).
fn complete<M>(
    runner: &mut sqllogictest::Runner<Lakestream, M>,
    path: &Path,
    script: &str,
    dir: &Path,
) where
    M: sqllogictest::MakeConnection<Conn = Lakestream>,
{
    let scratch = dir.join("complete.slt");
    std::fs::write(&scratch, script).unwrap();
    futures::executor::block_on(runner.update_test_file(
        &scratch,
        " ",
        sqllogictest::default_validator,
        sqllogictest::default_normalizer,
        sqllogictest::strict_column_validator,
    ))
    .unwrap();
    let completed = std::fs::read_to_string(&scratch)
        .unwrap()
        .replace(&dir.display().to_string(), "__TMP__");
    std::fs::write(path, completed).unwrap();
}

struct Lakestream {
    engine: Arc<sql::Engine>,
}

impl sqllogictest::DB for Lakestream {
    type Error = DataFusionError;
    type ColumnType = DefaultColumnType;

    fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, DataFusionError> {
        let runtime = self.engine.runtime();
        if sql.trim().eq_ignore_ascii_case(TIER) {
            let broker = Arc::clone(&self.engine.broker);
            runtime.block_on(async move {
                let tiering = broker
                    .tiering
                    .as_ref()
                    .expect("the cold tier is configured");
                tiering.tick(&broker).await;
            });
            return Ok(DBOutput::StatementComplete(0));
        }
        let output = runtime.block_on(self.engine.query(sql))?;
        let fields = output.schema.fields();
        if fields.is_empty() {
            return Ok(DBOutput::StatementComplete(0));
        }
        let is_insert = sql
            .trim_start()
            .get(..6)
            .is_some_and(|word| word.eq_ignore_ascii_case("insert"));
        if is_insert && fields.len() == 1 && fields[0].name() == "count" {
            let rows = rows_of(&output.batches)?;
            let count = rows
                .first()
                .and_then(|row| row[0].parse().ok())
                .unwrap_or(0);
            return Ok(DBOutput::StatementComplete(count));
        }
        Ok(DBOutput::Rows {
            types: fields
                .iter()
                .map(|field| column_type(field.data_type()))
                .collect(),
            rows: rows_of(&output.batches)?,
        })
    }

    fn engine_name(&self) -> &str {
        "lakestream"
    }
}

fn column_type(data_type: &DataType) -> DefaultColumnType {
    if data_type.is_integer() {
        DefaultColumnType::Integer
    } else if data_type.is_floating() || matches!(data_type, DataType::Decimal128(..)) {
        DefaultColumnType::FloatingPoint
    } else {
        DefaultColumnType::Text
    }
}

fn rows_of(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>, DataFusionError> {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|column| ArrayFormatter::try_new(column.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = formatters
                .iter()
                .zip(batch.columns())
                .map(|(formatter, column)| {
                    let text = formatter.value(row).to_string();
                    if text.is_empty() && !column.is_null(row) {
                        "(empty)".to_string()
                    } else {
                        text
                    }
                })
                .collect();
            // A cell of several lines (an EXPLAIN plan) goes on as rows of its further lines.
            let lines: Vec<Vec<&str>> = cells.iter().map(|cell| cell.lines().collect()).collect();
            let height = lines.iter().map(Vec::len).max().unwrap_or(1).max(1);
            rows.push(
                lines
                    .iter()
                    .map(|cell| cell.first().copied().unwrap_or("").to_string())
                    .collect(),
            );
            for at in 1..height {
                rows.push(
                    lines
                        .iter()
                        .filter_map(|cell| cell.get(at).map(|line| line.to_string()))
                        .collect(),
                );
            }
        }
    }
    Ok(rows)
}
