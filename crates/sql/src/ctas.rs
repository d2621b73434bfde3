//! `CREATE TABLE name WITH (format = 'parquet', compression = 'snappy', bucket_count = N,
//! location = '...') AS SELECT ...`, as in Athena and Trino: the query's rows written as N
//! Parquet files into the object store (by default the cold store's `tables/<name>/`), then the
//! table registered for querying and recorded in the table catalog (`catalog`), so it is
//! there again after a restart.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{DataFusionError, Result, TableReference};
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::sql::sqlparser::ast::{CreateTableOptions, Expr, SqlOption, Statement, Value};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use futures::StreamExt;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use tier::{StoreLocation, TierStore};

use crate::catalog::{self, TableEntry};
use crate::engine::Engine;

/// Files one CTAS may write.
const MAX_BUCKETS: usize = 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct CtasOptions {
    pub compression: Compression,
    pub buckets: usize,
    pub location: Option<String>,
}

impl CtasOptions {
    pub fn parse(options: &[SqlOption]) -> Result<CtasOptions> {
        let mut parsed = CtasOptions {
            compression: Compression::SNAPPY,
            buckets: 1,
            location: None,
        };
        for option in options {
            let SqlOption::KeyValue { key, value } = option else {
                return Err(plan_error(format!(
                    "CREATE TABLE option `{option}` is not `key = value`"
                )));
            };
            let text = match value {
                Expr::Value(value) => match &value.value {
                    Value::SingleQuotedString(text) | Value::DoubleQuotedString(text) => {
                        text.clone()
                    }
                    Value::Number(text, _) => text.clone(),
                    other => other.to_string(),
                },
                Expr::Identifier(ident) => ident.value.clone(),
                other => other.to_string(),
            };
            match key.value.to_ascii_lowercase().as_str() {
                "format" => {
                    if !text.eq_ignore_ascii_case("parquet") {
                        return Err(plan_error(format!(
                            "format '{text}' is not supported: write format = 'parquet'"
                        )));
                    }
                }
                "compression" | "parquet_compression" | "write_compression" => {
                    parsed.compression = match text.to_ascii_lowercase().as_str() {
                        "snappy" => Compression::SNAPPY,
                        "zstd" => Compression::ZSTD(ZstdLevel::default()),
                        "none" | "uncompressed" => Compression::UNCOMPRESSED,
                        other => {
                            return Err(plan_error(format!(
                                "compression '{other}' is not supported: use snappy, zstd or none"
                            )));
                        }
                    }
                }
                "bucket_count" => {
                    parsed.buckets = text
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_BUCKETS).contains(n))
                        .ok_or_else(|| {
                            plan_error(format!(
                                "bucket_count must be 1 to {MAX_BUCKETS}, not {text}"
                            ))
                        })?;
                }
                "location" | "external_location" => parsed.location = Some(text),
                other => {
                    return Err(plan_error(format!(
                        "unknown CREATE TABLE option `{other}`: the options are format, compression, bucket_count, location"
                    )));
                }
            }
        }
        Ok(parsed)
    }
}

fn plan_error(message: String) -> DataFusionError {
    DataFusionError::Plan(message)
}

/// Whether the first word of `sql`, after white space and comments, is CREATE. Other statements
/// are not parsed here, only once by DataFusion.
fn starts_with_create(sql: &str) -> bool {
    let mut rest = sql.trim_start();
    loop {
        if let Some(comment) = rest.strip_prefix("--") {
            rest = comment.split_once('\n').map_or("", |(_, after)| after);
        } else if rest.starts_with("/*") {
            // PostgreSQL block comments nest.
            let mut depth = 0usize;
            let mut end = None;
            let bytes = rest.as_bytes();
            let mut at = 0;
            while at + 1 < bytes.len() {
                match &bytes[at..at + 2] {
                    b"/*" => {
                        depth += 1;
                        at += 2;
                    }
                    b"*/" => {
                        depth -= 1;
                        at += 2;
                        if depth == 0 {
                            end = Some(at);
                            break;
                        }
                    }
                    _ => at += 1,
                }
            }
            let Some(end) = end else { return false };
            rest = &rest[end..];
        } else {
            break;
        }
        rest = rest.trim_start();
    }
    rest.get(..6)
        .is_some_and(|word| word.eq_ignore_ascii_case("create"))
        && rest[6..]
            .chars()
            .next()
            .is_none_or(|next| !(next.is_alphanumeric() || next == '_'))
}

/// Runs `sql` if it is a CTAS with options; `None` leaves it to DataFusion.
pub async fn try_run(engine: &Engine, sql: &str) -> Result<Option<(SchemaRef, Vec<RecordBatch>)>> {
    if !starts_with_create(sql) {
        return Ok(None);
    }
    let Ok(statements) = Parser::parse_sql(&PostgreSqlDialect {}, sql) else {
        return Ok(None);
    };
    let [Statement::CreateTable(create)] = statements.as_slice() else {
        return Ok(None);
    };
    let (CreateTableOptions::With(options), Some(query)) = (&create.table_options, &create.query)
    else {
        return Ok(None);
    };
    let options = CtasOptions::parse(options)?;
    let name = table_name(&create.name.to_string())?;
    if create.or_replace {
        return Err(DataFusionError::NotImplemented(format!(
            "CREATE OR REPLACE TABLE ... WITH (...) AS: DROP TABLE {name} first, then create it"
        )));
    }
    if engine.topics().topic_names().contains(&name) {
        return Err(plan_error(format!(
            "{name} is a topic; choose another table name"
        )));
    }
    let Some(_claim) = engine.catalog().claim(&name) else {
        return Err(plan_error(format!(
            "table {name} is being made by another CREATE TABLE now"
        )));
    };
    if engine
        .context()
        .table_exist(TableReference::bare(name.as_str()))?
    {
        if create.if_not_exists {
            // As PostgreSQL: nothing is done, and nothing is written.
            return summary(0, 0, String::new()).map(Some);
        }
        return Err(plan_error(format!("table {name} already exists")));
    }
    let location = match &options.location {
        Some(location) => {
            StoreLocation::parse(location).map_err(|error| plan_error(error.to_string()))?
        }
        None => default_location(engine, &name),
    };
    let store = TierStore::open(&location, tier::StoreOptions::default())
        .map_err(|error| plan_error(error.to_string()))?;
    clear_location(engine, &store, &location, options.location.is_none()).await?;
    let frame = engine.context().sql(&query.to_string()).await?;
    // Exactly `buckets` files: the rows' batches dealt round-robin to the writers.
    let mut stream = frame.execute_stream().await?;
    let table_schema = stream.schema();
    let properties = WriterProperties::builder()
        .set_compression(options.compression)
        .build();
    let mut writers = (0..options.buckets)
        .map(|_| ArrowWriter::try_new(Vec::new(), stream.schema(), Some(properties.clone())))
        .collect::<Result<Vec<_>, _>>()?;
    // The files are held whole until written: in the engine's memory limit, like the query's
    // own buffers, so a table too large fails with "Resources exhausted" instead of taking the
    // broker's memory.
    let held = MemoryConsumer::new(format!("CREATE TABLE {name}"))
        .register(&engine.context().runtime_env().memory_pool);
    let mut rows = 0u64;
    let mut next = 0;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        rows += batch.num_rows() as u64;
        writers[next].write(&batch)?;
        next = (next + 1) % writers.len();
        let bytes = writers
            .iter()
            .map(|writer| writer.bytes_written() + writer.memory_size())
            .sum();
        held.try_resize(bytes)?;
    }
    // Written, registered, then recorded durably before the answer: the table outlives a
    // restart. If any step fails, the files written so far are removed.
    let entry = TableEntry::new(&name, &location, &table_schema);
    let mut written = Vec::new();
    let made = async {
        for (bucket, writer) in writers.into_iter().enumerate() {
            let bytes = writer.into_inner()?;
            let key = format!("part-{bucket:05}.parquet");
            store
                .put_new(&key, bytes.into())
                .await
                .map_err(|error| DataFusionError::Execution(format!("writing {key}: {error}")))?;
            written.push(key);
        }
        catalog::register(engine.context(), &entry)?;
        engine.catalog().add(entry.clone()).map_err(|error| {
            let _ = engine
                .context()
                .deregister_table(TableReference::bare(name.as_str()));
            DataFusionError::Execution(format!(
                "table {name} was written but could not be recorded in the catalog: {error}"
            ))
        })
    }
    .await;
    drop(held);
    if let Err(error) = made {
        remove_files(&store, &written).await;
        return Err(error);
    }
    summary(rows as i64, written.len() as i64, entry.location).map(Some)
}

/// The one row a CTAS answers: rows and files written, and where.
fn summary(rows: i64, files: i64, location: String) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("rows", DataType::Int64, false),
        Field::new("files", DataType::Int64, false),
        Field::new("location", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int64Array::from(vec![rows])),
            Arc::new(Int64Array::from(vec![files])),
            Arc::new(StringArray::from(vec![location])),
        ],
    )?;
    Ok((schema, vec![batch]))
}

/// Makes sure a new table's files are the only ones at `location` (its listing reads every
/// file there). At a table's default location, the `part-NNNNN.parquet` files a dropped table
/// or a failed CTAS of that name left (no table of the catalog is there) are removed; anything
/// else anywhere (another file, a folder, a live table's files) refuses the location, and
/// nothing is removed.
async fn clear_location(
    engine: &Engine,
    store: &TierStore,
    location: &StoreLocation,
    default: bool,
) -> Result<()> {
    let text = catalog::location_text(location);
    let failed = |error: tier::StoreError| plan_error(format!("location {text}: {error}"));
    let found = store.list("").await.map_err(failed)?;
    if found.is_empty() {
        return Ok(());
    }
    let used = engine.catalog().tables().iter().any(|entry| {
        StoreLocation::parse(&entry.location).is_ok_and(|other| same_place(&other, location))
    });
    let leftovers = default && !used && found.iter().all(|file| is_part_file(&file.key));
    if !leftovers {
        return Err(plan_error(format!(
            "location {text} already holds {} files (e.g. {}): choose an empty location",
            found.len(),
            found[0].key
        )));
    }
    for file in found {
        store.delete(&file.key).await.map_err(failed)?;
    }
    Ok(())
}

/// `part-NNNNN.parquet`, at the top of a table's folder: a name only CTAS writes.
fn is_part_file(key: &str) -> bool {
    key.strip_prefix("part-")
        .and_then(|rest| rest.strip_suffix(".parquet"))
        .is_some_and(|digits| digits.len() == 5 && digits.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether two locations are one folder, however written (`/a/t/`, `/a/x/../t`, a link).
fn same_place(a: &StoreLocation, b: &StoreLocation) -> bool {
    match (a, b) {
        (StoreLocation::Local(a), StoreLocation::Local(b)) => {
            let resolved = |path: &std::path::Path| {
                std::fs::canonicalize(path).unwrap_or_else(|_| path.components().collect())
            };
            resolved(a) == resolved(b)
        }
        (
            StoreLocation::S3 { bucket, prefix },
            StoreLocation::S3 {
                bucket: other_bucket,
                prefix: other_prefix,
            },
        ) => {
            let parts = |prefix: &str| -> Vec<String> {
                prefix
                    .split('/')
                    .filter(|part| !part.is_empty())
                    .map(str::to_string)
                    .collect()
            };
            bucket == other_bucket && parts(prefix) == parts(other_prefix)
        }
        _ => false,
    }
}

/// Removes what a CTAS that failed had written (best effort: what stays is removed by the next
/// CTAS of that name at its default location).
async fn remove_files(store: &TierStore, keys: &[String]) {
    for key in keys {
        if let Err(error) = store.delete(key).await {
            tracing::warn!(%key, %error, "a file of a failed CREATE TABLE could not be removed");
        }
    }
}

/// The table's name as DataFusion resolves it and as `DROP TABLE` names it (`Sales` is `sales`,
/// `"Sales"` stays `Sales`, `public.t` is `t`), so that it is kept and forgotten under one name.
fn table_name(written: &str) -> Result<String> {
    let reference = TableReference::parse_str(written);
    let in_public = reference
        .catalog()
        .is_none_or(|catalog| catalog == crate::engine::CATALOG)
        && reference
            .schema()
            .is_none_or(|schema| schema == crate::engine::SCHEMA);
    if !in_public {
        return Err(plan_error(format!(
            "{written}: tables are made in {}.{} (name the table alone)",
            crate::engine::CATALOG,
            crate::engine::SCHEMA
        )));
    }
    let table = reference.table();
    // The name is a folder of the default location: nothing that leaves it or nests in it.
    if table.is_empty()
        || table == "."
        || table == ".."
        || table.contains(['/', '\\'])
        || table.chars().any(char::is_control)
    {
        return Err(plan_error(format!(
            "{written}: a table's name cannot be empty, `.` or `..`, or hold `/`, `\\` or control characters"
        )));
    }
    Ok(table.to_string())
}

/// `tables/<name>` under the cold store (or under the data directory without one).
fn default_location(engine: &Engine, name: &str) -> StoreLocation {
    let config = &engine.broker.config;
    match config.tiering.as_ref().map(|tiering| &tiering.store) {
        Some(StoreLocation::Local(path)) => StoreLocation::Local(path.join("tables").join(name)),
        Some(StoreLocation::S3 { bucket, prefix }) => StoreLocation::S3 {
            bucket: bucket.clone(),
            prefix: if prefix.is_empty() {
                format!("tables/{name}")
            } else {
                format!("{prefix}/tables/{name}")
            },
        },
        None => StoreLocation::Local(config.data_dir.join("tables").join(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::starts_with_create;

    #[test]
    fn the_first_word_is_found_after_comments() {
        for sql in [
            "CREATE TABLE t AS SELECT 1",
            "  create table t as select 1",
            "-- a note\nCREATE TABLE t AS SELECT 1",
            "/* a /* nested */ note */ Create table t as select 1",
            "/**/CREATE\tTABLE t AS SELECT 1",
            "CREATE",
        ] {
            assert!(starts_with_create(sql), "{sql:?}");
        }
        for sql in [
            "SELECT 1",
            "created",
            "create_table",
            "-- CREATE TABLE t AS SELECT 1",
            "/* CREATE TABLE t AS SELECT 1",
            "/* a /* nested */ CREATE TABLE t AS SELECT 1",
            "SELECT 'CREATE TABLE'",
            "",
            "créate table",
        ] {
            assert!(!starts_with_create(sql), "{sql:?}");
        }
    }
}
