//! CTAS tables outlive a restart: the table catalog (`DATA_DIR/sql/tables.json`) registers them
//! again when the engine starts.

use std::sync::Arc;

use arrow::array::{Array, Float64Array, Int64Array};
use broker::tiering::TieringConfig;
use broker::topic_config::TopicConfig;
use broker::{Broker, BrokerConfig};

fn start(dir: &std::path::Path) -> (Arc<Broker>, Arc<sql::Engine>) {
    start_with_memory(dir, 256 << 20)
}

fn start_with_memory(
    dir: &std::path::Path,
    memory_limit: usize,
) -> (Arc<Broker>, Arc<sql::Engine>) {
    let mut config = BrokerConfig::for_data_dir(dir.join("data"));
    config.tiering = Some(TieringConfig::new(tier::StoreLocation::Local(
        dir.join("cold"),
    )));
    let broker = Broker::open(config).unwrap();
    let engine = sql::Engine::start(
        Arc::clone(&broker),
        sql::EngineConfig {
            threads: 2,
            memory_limit,
        },
    )
    .unwrap();
    (broker, engine)
}

/// [`start`], with an empty JSON topic `nums` of columns `n BIGINT, x DOUBLE`.
fn start_with_nums(dir: &std::path::Path) -> (Arc<Broker>, Arc<sql::Engine>) {
    let (broker, engine) = start(dir);
    let config = TopicConfig::from_pairs([
        ("value.format", "json"),
        ("value.schema", "n BIGINT, x DOUBLE"),
    ])
    .unwrap();
    broker.topics.create("nums", 1, 1, config).unwrap();
    (broker, engine)
}

/// The rows of `sql` as (an integer column, a float column) pairs.
fn rows(engine: &Arc<sql::Engine>, sql: &str) -> Vec<(i64, f64)> {
    let output = engine.runtime().block_on(engine.query(sql)).unwrap();
    let mut out = Vec::new();
    for batch in &output.batches {
        let ints = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        let floats = batch
            .column(1)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        for row in 0..batch.num_rows() {
            assert!(!ints.is_null(row));
            out.push((ints.value(row), floats.value(row)));
        }
    }
    out
}

#[test]
fn ctas_tables_are_there_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, engine) = start_with_nums(dir.path());
    engine
        .runtime()
        .block_on(engine.query(
            r#"INSERT INTO nums (_value) VALUES ('{"n": 1, "x": 0.5}'), ('{"n": 2, "x": 1.5}'), ('{"n": 3, "x": 2.5}')"#,
        ))
        .unwrap();
    let elsewhere = dir.path().join("elsewhere");
    for sql in [
        "CREATE TABLE small WITH (format = 'parquet') AS SELECT n, x FROM nums WHERE n < 3"
            .to_string(),
        format!(
            "CREATE TABLE big WITH (format = 'parquet', bucket_count = 2, location = '{}') AS SELECT n, x FROM nums WHERE n > 1",
            elsewhere.display()
        ),
    ] {
        engine.runtime().block_on(engine.query(&sql)).unwrap();
    }
    let small = rows(&engine, "SELECT n, x FROM small ORDER BY n");
    let big = rows(&engine, "SELECT n, x FROM big ORDER BY n");
    assert_eq!(small, [(1, 0.5), (2, 1.5)]);
    assert_eq!(big, [(2, 1.5), (3, 2.5)]);
    broker.shutdown();
    drop(engine);
    drop(broker);

    let (broker, engine) = start(dir.path());
    assert_eq!(rows(&engine, "SELECT n, x FROM small ORDER BY n"), small);
    assert_eq!(rows(&engine, "SELECT n, x FROM big ORDER BY n"), big);
    // Still taken: a second CTAS of the same name is refused.
    let again = engine.runtime().block_on(
        engine.query("CREATE TABLE small WITH (format = 'parquet') AS SELECT n, x FROM nums"),
    );
    assert!(again.is_err());
    // DROP TABLE forgets it for good; the files stay where they are.
    engine
        .runtime()
        .block_on(engine.query("DROP TABLE big"))
        .unwrap();
    broker.shutdown();
    drop(engine);
    drop(broker);
    let (broker, engine) = start(dir.path());
    assert!(
        engine
            .runtime()
            .block_on(engine.query("SELECT n, x FROM big"))
            .is_err()
    );
    assert_eq!(rows(&engine, "SELECT n, x FROM small ORDER BY n"), small);
    assert!(elsewhere.join("part-00001.parquet").exists());
    broker.shutdown();
    drop(engine);
}

/// A table is kept and dropped under the name DataFusion resolves: unquoted names fold to lower
/// case, quoted ones stay, a `public.` prefix is dropped; `DROP TABLE` holds across a restart.
#[test]
fn ctas_names_are_kept_as_datafusion_resolves_them() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, engine) = start_with_nums(dir.path());
    let run = |sql: &str| engine.runtime().block_on(engine.query(sql)).map(|_| ());
    run(r#"INSERT INTO nums (_value) VALUES ('{"n": 1, "x": 0.5}')"#).unwrap();
    for create in [
        "CREATE TABLE Folded WITH (format = 'parquet') AS SELECT n, x FROM nums",
        r#"CREATE TABLE "Quoted" WITH (format = 'parquet') AS SELECT n, x FROM nums"#,
        "CREATE TABLE public.prefixed WITH (format = 'parquet') AS SELECT n, x FROM nums",
    ] {
        run(create).unwrap();
    }
    let refused = run("CREATE TABLE other.t WITH (format = 'parquet') AS SELECT n FROM nums")
        .unwrap_err()
        .to_string();
    assert!(refused.contains("name the table alone"), "{refused}");
    let mut kept: Vec<String> = engine
        .catalog()
        .tables()
        .into_iter()
        .map(|t| t.name)
        .collect();
    kept.sort();
    assert_eq!(kept, ["Quoted", "folded", "prefixed"]);
    for table in ["FOLDED", "folded", r#""Quoted""#, "public.prefixed"] {
        assert_eq!(
            rows(&engine, &format!("SELECT n, x FROM {table}")),
            [(1, 0.5)]
        );
    }
    run("DROP TABLE FOLDED").unwrap();
    run(r#"DROP TABLE "Quoted""#).unwrap();
    broker.shutdown();
    drop(engine);
    drop(broker);

    let (broker, engine) = start(dir.path());
    for gone in ["folded", r#""Quoted""#] {
        assert!(
            engine
                .runtime()
                .block_on(engine.query(&format!("SELECT n FROM {gone}")))
                .is_err(),
            "{gone} is back"
        );
    }
    assert_eq!(rows(&engine, "SELECT n, x FROM prefixed"), [(1, 0.5)]);
    broker.shutdown();
    drop(engine);
}

/// DataFusion drops what has the name before it registers a replacing object: checked first, a
/// CTAS table stays (across a restart too), and a view refused as too large keeps the old one.
#[test]
fn create_or_replace_view_keeps_what_it_cannot_replace() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, engine) = start_with_nums(dir.path());
    let run = |sql: &str| engine.runtime().block_on(engine.query(sql)).map(|_| ());
    run(r#"INSERT INTO nums (_value) VALUES ('{"n": 1, "x": 0.5}'), ('{"n": 2, "x": 1.5}')"#)
        .unwrap();
    run("CREATE TABLE small WITH (format = 'parquet') AS SELECT n, x FROM nums").unwrap();
    let refused = run("CREATE OR REPLACE VIEW small AS SELECT n, x FROM nums WHERE n = 1")
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("small is a table, not a view"),
        "{refused}"
    );
    // Nor by an in-memory table or an external table (which would not outlive a restart).
    let elsewhere = dir.path().join("elsewhere.parquet");
    run(&format!(
        "COPY (SELECT n, x FROM nums) TO '{}' STORED AS PARQUET",
        elsewhere.display()
    ))
    .unwrap();
    for replace in [
        "CREATE OR REPLACE TABLE small AS SELECT n, x FROM nums WHERE n = 1".to_string(),
        format!(
            "CREATE OR REPLACE EXTERNAL TABLE small STORED AS PARQUET LOCATION '{}'",
            elsewhere.display()
        ),
    ] {
        let refused = run(&replace).unwrap_err().to_string();
        assert!(
            refused.contains("small is a table made by CREATE TABLE ... AS"),
            "{replace}: {refused}"
        );
    }
    let all = [(1, 0.5), (2, 1.5)];
    assert_eq!(rows(&engine, "SELECT n, x FROM small ORDER BY n"), all);

    run("CREATE VIEW v0 AS SELECT n, x FROM nums").unwrap();
    for i in 1..=8 {
        let p = i - 1;
        run(&format!(
            "CREATE VIEW v{i} AS SELECT n, x FROM v{p} UNION ALL SELECT n, x FROM v{p}"
        ))
        .unwrap();
    }
    run("CREATE VIEW w AS SELECT n, x FROM nums WHERE n = 2").unwrap();
    let refused =
        run("CREATE OR REPLACE VIEW w AS SELECT n, x FROM v8 UNION ALL SELECT n, x FROM v8")
            .unwrap_err()
            .to_string();
    assert!(refused.contains("too complex to plan"), "{refused}");
    assert_eq!(rows(&engine, "SELECT n, x FROM w"), [(2, 1.5)]);
    run("CREATE OR REPLACE VIEW w AS SELECT n, x FROM nums WHERE n = 1").unwrap();
    assert_eq!(rows(&engine, "SELECT n, x FROM w"), [(1, 0.5)]);
    broker.shutdown();
    drop(engine);
    drop(broker);

    let (broker, engine) = start(dir.path());
    assert_eq!(rows(&engine, "SELECT n, x FROM small ORDER BY n"), all);
    broker.shutdown();
    drop(engine);
}

/// A dropped table's name can be used again at its default location: what the dropped table
/// left there is removed first, so the new table reads only its own files. A location holding
/// files no dropped table of that name left is refused.
#[test]
fn a_dropped_tables_name_can_be_used_again() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, engine) = start_with_nums(dir.path());
    let run = |sql: &str| engine.runtime().block_on(engine.query(sql)).map(|_| ());
    run(r#"INSERT INTO nums (_value) VALUES ('{"n": 1, "x": 0.5}'), ('{"n": 2, "x": 1.5}')"#)
        .unwrap();
    run("CREATE TABLE t WITH (format = 'parquet', bucket_count = 2) AS SELECT n, x FROM nums")
        .unwrap();
    run("DROP TABLE t").unwrap();
    run("CREATE TABLE t WITH (format = 'parquet') AS SELECT n, x * 10 AS x FROM nums WHERE n = 2")
        .unwrap();
    assert_eq!(rows(&engine, "SELECT n, x FROM t"), [(2, 15.0)]);

    let taken = dir.path().join("taken");
    std::fs::create_dir_all(&taken).unwrap();
    std::fs::write(taken.join("notes.txt"), "someone's").unwrap();
    let refused = run(&format!(
        "CREATE TABLE u WITH (format = 'parquet', location = '{}') AS SELECT n FROM nums",
        taken.display()
    ))
    .unwrap_err()
    .to_string();
    assert!(refused.contains("already holds 1 files"), "{refused}");
    assert!(taken.join("notes.txt").exists());
    broker.shutdown();
    drop(engine);
}

/// A CTAS holds its files until it writes them, within the engine's memory limit: too large a
/// table is refused and nothing is written.
#[test]
fn a_ctas_too_large_to_hold_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, engine) = start_with_memory(dir.path(), 4 << 20);
    let refused = engine
        .runtime()
        .block_on(engine.query(
            "CREATE TABLE big WITH (format = 'parquet') AS \
             SELECT md5(CAST(value AS VARCHAR)) || md5(CAST(-value AS VARCHAR)) AS h \
             FROM generate_series(1, 400000)",
        ))
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(refused.contains("Resources exhausted"), "{refused}");
    assert!(engine.catalog().tables().is_empty());
    let folder = dir.path().join("cold").join("tables").join("big");
    let files = std::fs::read_dir(&folder).map_or(0, |entries| entries.count());
    assert_eq!(files, 0);
    broker.shutdown();
    drop(engine);
}

/// What CTAS removes at a default location is only what a table of that name left there:
/// names cannot leave or nest in the tables folder, and a live table's files (its location
/// written another way), folders or other files refuse the location with nothing removed.
#[test]
fn ctas_never_removes_what_is_not_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, engine) = start_with_nums(dir.path());
    let run = |sql: &str| engine.runtime().block_on(engine.query(sql)).map(|_| ());
    run(r#"INSERT INTO nums (_value) VALUES ('{"n": 1, "x": 0.5}')"#).unwrap();
    for name in ["\"..\"", "\".\"", "\"a/b\"", "\"a\\b\"", "\"\""] {
        let refused = run(&format!(
            "CREATE TABLE {name} WITH (format = 'parquet') AS SELECT n FROM nums"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            refused.contains("a table's name cannot be"),
            "{name}: {refused}"
        );
    }
    let tables = dir.path().join("cold").join("tables");
    // A live table whose explicit location is t's default location, written with a slash.
    run(&format!(
        "CREATE TABLE x WITH (format = 'parquet', location = '{}/') AS SELECT n, x FROM nums",
        tables.join("t").display()
    ))
    .unwrap();
    // A folder nested where n's files would go.
    std::fs::create_dir_all(tables.join("n").join("sub")).unwrap();
    std::fs::write(
        tables.join("n").join("sub").join("part-00000.parquet"),
        "kept",
    )
    .unwrap();
    for name in ["t", "n"] {
        let refused = run(&format!(
            "CREATE TABLE {name} WITH (format = 'parquet') AS SELECT n FROM nums"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            refused.contains("choose an empty location"),
            "{name}: {refused}"
        );
    }
    assert_eq!(rows(&engine, "SELECT n, x FROM x"), [(1, 0.5)]);
    assert!(
        tables
            .join("n")
            .join("sub")
            .join("part-00000.parquet")
            .exists()
    );
    assert_eq!(rows(&engine, "SELECT n, x FROM nums"), [(1, 0.5)]);
    broker.shutdown();
    drop(engine);
}
