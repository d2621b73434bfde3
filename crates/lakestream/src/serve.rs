//! `lakestream serve`: the broker with its storage, configured by flags, environment and a TOML
//! file (in that order of precedence), with defaults that need none of them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};

#[derive(clap::Args, Debug, Default)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (snake_case names, e.g. `data_dir = "..."`).
    #[arg(long, env = "LAKESTREAM_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where topics live [default: ./lakestream-data].
    #[arg(long, env = "LAKESTREAM_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Kafka listener [default: 127.0.0.1:9092].
    #[arg(long, env = "LAKESTREAM_KAFKA_ADDR")]
    pub kafka_addr: Option<SocketAddr>,
    /// Address clients are told to connect to [default: the Kafka listener's].
    #[arg(long, env = "LAKESTREAM_ADVERTISED_ADDR")]
    pub advertised_addr: Option<String>,
    /// PostgreSQL wire listener, for SQL (psql, psycopg, BI tools) [default: 127.0.0.1:5433].
    #[arg(long, env = "LAKESTREAM_PG_ADDR")]
    pub pg_addr: Option<SocketAddr>,
    /// HTTP listener for SQL (`POST /sql`), admin (`/v1/topics/NAME`) and metrics (`/metrics`)
    /// [default: 127.0.0.1:8080].
    #[arg(long, env = "LAKESTREAM_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Create topics on first use in Metadata (Kafka's auto.create.topics.enable).
    #[arg(long, env = "LAKESTREAM_AUTO_CREATE_TOPICS", num_args = 0..=1, default_missing_value = "true")]
    pub auto_create_topics: Option<bool>,
    /// Partitions of auto-created topics (Kafka's num.partitions) [default: 1].
    #[arg(long, env = "LAKESTREAM_NUM_PARTITIONS")]
    pub num_partitions: Option<i32>,
    /// How often retention.ms / retention.bytes are enforced [default: 300000].
    #[arg(long, env = "LAKESTREAM_RETENTION_CHECK_INTERVAL_MS")]
    pub retention_check_interval_ms: Option<u64>,
    /// How long a new group's first rebalance waits for more members
    /// (Kafka's group.initial.rebalance.delay.ms) [default: 3000].
    #[arg(long, env = "LAKESTREAM_GROUP_INITIAL_REBALANCE_DELAY_MS")]
    pub group_initial_rebalance_delay_ms: Option<u64>,
    /// Heartbeat interval given to members of `group.protocol=consumer` groups
    /// (Kafka's group.consumer.heartbeat.interval.ms) [default: 5000].
    #[arg(long, env = "LAKESTREAM_GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS")]
    pub group_consumer_heartbeat_interval_ms: Option<u64>,
    /// Session timeout of `group.protocol=consumer` members
    /// (Kafka's group.consumer.session.timeout.ms) [default: 45000].
    #[arg(long, env = "LAKESTREAM_GROUP_CONSUMER_SESSION_TIMEOUT_MS")]
    pub group_consumer_session_timeout_ms: Option<u64>,
    /// The cold tier: a folder, file:///PATH, s3://BUCKET[/PREFIX] (with AWS_ENDPOINT_URL,
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION from the environment), or `none`
    /// to keep everything on local disk [default: DATA_DIR/cold].
    #[arg(long, env = "LAKESTREAM_COLD_STORE")]
    pub cold_store: Option<String>,
    /// How often sealed segments are uploaded and the hot window enforced [default: 1000].
    #[arg(long, env = "LAKESTREAM_TIER_INTERVAL_MS")]
    pub tier_interval_ms: Option<u64>,
    /// Memory for cold data being served (re-encoded batches) [default: 536870912].
    #[arg(long, env = "LAKESTREAM_COLD_CACHE_BYTES")]
    pub cold_cache_bytes: Option<usize>,
    /// Largest run of log turned into one Parquet object [default: 33554432].
    #[arg(long, env = "LAKESTREAM_COLD_OBJECT_BYTES")]
    pub cold_object_bytes: Option<usize>,
    /// How long an object replaced by a rewrite (typed columns added) stays in the store for
    /// readers that were handed it before the swap [default: 300000].
    #[arg(long, env = "LAKESTREAM_COLD_REWRITE_GRACE_MS")]
    pub cold_rewrite_grace_ms: Option<u64>,
    /// Parquet compression of the record bytes in cold objects (key, value, headers): zstd or
    /// snappy [default: zstd]. Columns that queries read are encoded, not compressed.
    #[arg(long, env = "LAKESTREAM_COLD_COMPRESSION")]
    pub cold_compression: Option<String>,
    /// Threads of the SQL engine's own pool [default: the number of cores].
    #[arg(long, env = "LAKESTREAM_SQL_THREADS")]
    pub sql_threads: Option<usize>,
    /// Memory all running SQL queries may hold, in bytes [default: 1073741824].
    #[arg(long, env = "LAKESTREAM_SQL_MEMORY_LIMIT")]
    pub sql_memory_limit: Option<usize>,
    /// A PostgreSQL user as NAME:PASSWORD (repeatable; comma-separated in the environment). With
    /// any, clients authenticate with SCRAM-SHA-256 [default: none, any user name is let in].
    #[arg(
        long = "pg-user",
        env = "LAKESTREAM_PG_USERS",
        value_delimiter = ',',
        value_name = "NAME:PASSWORD"
    )]
    pub pg_users: Vec<String>,
}

/// The file form of the same settings.
#[derive(serde::Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    kafka_addr: Option<SocketAddr>,
    advertised_addr: Option<String>,
    pg_addr: Option<SocketAddr>,
    http_addr: Option<SocketAddr>,
    auto_create_topics: Option<bool>,
    num_partitions: Option<i32>,
    retention_check_interval_ms: Option<u64>,
    group_initial_rebalance_delay_ms: Option<u64>,
    group_consumer_heartbeat_interval_ms: Option<u64>,
    group_consumer_session_timeout_ms: Option<u64>,
    cold_store: Option<String>,
    tier_interval_ms: Option<u64>,
    cold_cache_bytes: Option<usize>,
    cold_object_bytes: Option<usize>,
    cold_rewrite_grace_ms: Option<u64>,
    cold_compression: Option<String>,
    sql_threads: Option<usize>,
    sql_memory_limit: Option<usize>,
    /// NAME:PASSWORD entries.
    pg_users: Option<Vec<String>>,
}

/// Settings after flags, environment, file and defaults are merged.
#[derive(Debug)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub kafka_addr: SocketAddr,
    pub advertised_host: String,
    pub advertised_port: u16,
    pub pg_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub auto_create_topics: bool,
    pub num_partitions: i32,
    pub retention_check_interval_ms: u64,
    pub group_initial_rebalance_delay_ms: u64,
    pub group_consumer_heartbeat_interval_ms: u64,
    pub group_consumer_session_timeout_ms: u64,
    pub tiering: Option<broker::tiering::TieringConfig>,
    pub sql: sql::EngineConfig,
    pub pg_users: Vec<(String, String)>,
}

impl ServeArgs {
    pub fn settings(self) -> anyhow::Result<Settings> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                toml::from_str::<FileConfig>(&text).with_context(|| {
                    format!("config file {} is invalid (settings are snake_case, e.g. data_dir, kafka_addr)", path.display())
                })?
            }
            None => FileConfig::default(),
        };
        let kafka_addr = self
            .kafka_addr
            .or(file.kafka_addr)
            .unwrap_or_else(|| "127.0.0.1:9092".parse().expect("valid default"));
        let advertised = self.advertised_addr.or(file.advertised_addr);
        let (advertised_host, advertised_port) = match advertised {
            Some(address) => {
                let (host, port) = address
                    .rsplit_once(':')
                    .with_context(|| format!("advertised address {address:?} must be HOST:PORT"))?;
                let port = port.parse().with_context(|| {
                    format!("advertised address {address:?} has an invalid port")
                })?;
                (host.to_string(), port)
            }
            None if kafka_addr.ip().is_unspecified() => {
                bail!(
                    "--kafka-addr {kafka_addr} listens on every interface: give --advertised-addr HOST:PORT that clients can reach"
                )
            }
            None => (kafka_addr.ip().to_string(), kafka_addr.port()),
        };
        let num_partitions = self.num_partitions.or(file.num_partitions).unwrap_or(1);
        if !(1..=broker::limits::PARTITIONS_PER_TOPIC_MAX).contains(&num_partitions) {
            bail!(
                "num_partitions must be between 1 and {}, not {num_partitions}",
                broker::limits::PARTITIONS_PER_TOPIC_MAX
            );
        }
        let data_dir = self
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| "lakestream-data".into());
        let cold_store = self
            .cold_store
            .or(file.cold_store)
            .unwrap_or_else(|| data_dir.join("cold").display().to_string());
        let tiering = if cold_store == "none" {
            None
        } else {
            let location = tier::StoreLocation::parse(&cold_store)
                .with_context(|| format!("--cold-store {cold_store}"))?;
            let mut tiering = broker::tiering::TieringConfig::new(location);
            if let Some(ms) = self.tier_interval_ms.or(file.tier_interval_ms) {
                tiering.interval = Duration::from_millis(ms.max(1));
            }
            if let Some(bytes) = self.cold_cache_bytes.or(file.cold_cache_bytes) {
                tiering.cache_bytes = bytes;
            }
            if let Some(bytes) = self.cold_object_bytes.or(file.cold_object_bytes) {
                tiering.object_bytes = bytes.max(1);
            }
            if let Some(ms) = self.cold_rewrite_grace_ms.or(file.cold_rewrite_grace_ms) {
                tiering.rewrite_grace = Duration::from_millis(ms);
            }
            match self.cold_compression.or(file.cold_compression).as_deref() {
                None | Some("zstd") => tiering.convert.codec = tier::ParquetCodec::Zstd,
                Some("snappy") => tiering.convert.codec = tier::ParquetCodec::Snappy,
                Some(other) => bail!("--cold-compression must be zstd or snappy, not {other:?}"),
            }
            Some(tiering)
        };
        let mut sql = sql::EngineConfig::default();
        if let Some(threads) = self.sql_threads.or(file.sql_threads) {
            sql.threads = threads.max(1);
        }
        if let Some(limit) = self.sql_memory_limit.or(file.sql_memory_limit) {
            sql.memory_limit = limit;
        }
        let pg_users = if self.pg_users.is_empty() {
            file.pg_users.unwrap_or_default()
        } else {
            self.pg_users
        };
        let pg_users = pg_users
            .iter()
            .map(|entry| match entry.split_once(':') {
                Some((name, password)) if !name.is_empty() => {
                    Ok((name.to_string(), password.to_string()))
                }
                _ => bail!("--pg-user {entry:?} must be NAME:PASSWORD"),
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Settings {
            pg_users,
            sql,
            tiering,
            data_dir,
            kafka_addr,
            advertised_host,
            advertised_port,
            pg_addr: self
                .pg_addr
                .or(file.pg_addr)
                .unwrap_or_else(|| "127.0.0.1:5433".parse().expect("valid default")),
            http_addr: self
                .http_addr
                .or(file.http_addr)
                .unwrap_or_else(|| "127.0.0.1:8080".parse().expect("valid default")),
            auto_create_topics: self
                .auto_create_topics
                .or(file.auto_create_topics)
                .unwrap_or(false),
            num_partitions,
            retention_check_interval_ms: self
                .retention_check_interval_ms
                .or(file.retention_check_interval_ms)
                .unwrap_or(300_000)
                .max(1),
            group_initial_rebalance_delay_ms: self
                .group_initial_rebalance_delay_ms
                .or(file.group_initial_rebalance_delay_ms)
                .unwrap_or(3_000),
            group_consumer_heartbeat_interval_ms: self
                .group_consumer_heartbeat_interval_ms
                .or(file.group_consumer_heartbeat_interval_ms)
                .unwrap_or(5_000)
                .max(1),
            group_consumer_session_timeout_ms: self
                .group_consumer_session_timeout_ms
                .or(file.group_consumer_session_timeout_ms)
                .unwrap_or(45_000)
                .max(1),
        })
    }
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let settings = args.settings()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("lakestream")
        .on_thread_park(broker::alloc::release_idle_thread_memory)
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(settings))
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let mut config = broker::BrokerConfig::for_data_dir(settings.data_dir.clone());
    config.advertised_host = settings.advertised_host.clone();
    config.advertised_port = settings.advertised_port as i32;
    config.auto_create_topics = settings.auto_create_topics;
    config.num_partitions = settings.num_partitions;
    config.group_initial_rebalance_delay_ms = settings.group_initial_rebalance_delay_ms;
    config.group_consumer_heartbeat_interval_ms = settings.group_consumer_heartbeat_interval_ms;
    config.group_consumer_session_timeout_ms = settings.group_consumer_session_timeout_ms;
    config.tiering = settings.tiering.clone();
    let broker = broker::Broker::open(config).with_context(|| {
        format!(
            "cannot open the data directory {}",
            settings.data_dir.display()
        )
    })?;
    let listener = tokio::net::TcpListener::bind(settings.kafka_addr)
        .await
        .with_context(|| format!("cannot listen on {} (--kafka-addr)", settings.kafka_addr))?;
    tracing::info!(
        kafka = %settings.kafka_addr,
        advertised = %format!("{}:{}", settings.advertised_host, settings.advertised_port),
        data_dir = %settings.data_dir.display(),
        "lakestream listening"
    );
    let http_listener = tokio::net::TcpListener::bind(settings.http_addr)
        .await
        .with_context(|| format!("cannot listen on {} (--http-addr)", settings.http_addr))?;
    // The PostgreSQL server binds on its own; check the address first for a clear error.
    drop(
        std::net::TcpListener::bind(settings.pg_addr)
            .with_context(|| format!("cannot listen on {} (--pg-addr)", settings.pg_addr))?,
    );
    let engine = sql::Engine::start(broker.clone(), settings.sql.clone())
        .context("cannot start the SQL engine")?;
    let users = sql::pg::Users::from_pairs(
        settings
            .pg_users
            .iter()
            .map(|(name, password)| (name.as_str(), password.as_str())),
    );
    let postgres = sql::pg::serve(&engine, settings.pg_addr, users);
    tracing::info!(http = %settings.http_addr, pg = %settings.pg_addr, "SQL over HTTP and the PostgreSQL protocol; admin and metrics over HTTP");
    let http = tokio::spawn(crate::http::serve(
        broker.clone(),
        engine.clone(),
        http_listener,
    ));
    let tiering = tokio::spawn(broker::tiering::Tiering::run(broker.clone()));
    let retention = tokio::spawn(retention_loop(
        broker.clone(),
        settings.retention_check_interval_ms,
    ));
    let trim = tokio::spawn(async {
        let mut ticker = tokio::time::interval(Duration::from_secs(5));
        loop {
            ticker.tick().await;
            let _ =
                tokio::task::spawn_blocking(broker::alloc::release_free_memory_unless_warm).await;
        }
    });
    let server = tokio::spawn(broker::server::serve(broker.clone(), listener));
    shutdown_signal().await;
    tracing::info!("shutting down: flushing");
    server.abort();
    http.abort();
    postgres.abort();
    tiering.abort();
    retention.abort();
    trim.abort();
    let broker_for_shutdown = broker.clone();
    tokio::task::spawn_blocking(move || broker_for_shutdown.shutdown()).await?;
    drop(engine);
    tracing::info!("stopped");
    Ok(())
}

async fn retention_loop(broker: Arc<broker::Broker>, interval_ms: u64) {
    let mut ticker = tokio::time::interval(Duration::from_millis(interval_ms));
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let broker = broker.clone();
        let _ = tokio::task::spawn_blocking(move || broker.apply_retention()).await;
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn flags_override_the_file_and_defaults_fill_the_rest() {
        let mut file = tempfile_in_target();
        writeln!(
            file.1,
            "data_dir = \"/from/file\"\nnum_partitions = 3\nkafka_addr = \"127.0.0.1:19092\""
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(file.0.clone()),
            data_dir: Some("/from/flag".into()),
            ..ServeArgs::default()
        };
        let settings = args.settings().unwrap();
        assert_eq!(settings.data_dir, PathBuf::from("/from/flag"));
        assert_eq!(settings.num_partitions, 3);
        assert_eq!(settings.kafka_addr.port(), 19092);
        assert_eq!(settings.advertised_port, 19092);
        assert_eq!(settings.pg_addr.port(), 5433);
        assert!(!settings.auto_create_topics);
        std::fs::remove_file(file.0).unwrap();
    }

    #[test]
    fn a_bad_file_says_what_to_fix() {
        let mut file = tempfile_in_target();
        writeln!(file.1, "data-dir = \"x\"").unwrap();
        let args = ServeArgs {
            config: Some(file.0.clone()),
            ..ServeArgs::default()
        };
        let error = format!("{:#}", args.settings().unwrap_err());
        assert!(error.contains("unknown field `data-dir`"), "{error}");
        assert!(error.contains("snake_case"), "{error}");
        std::fs::remove_file(file.0).unwrap();
    }

    #[test]
    fn every_interface_needs_an_advertised_address() {
        let args = ServeArgs {
            kafka_addr: Some("0.0.0.0:9092".parse().unwrap()),
            ..ServeArgs::default()
        };
        assert!(args.settings().is_err());
        let args = ServeArgs {
            kafka_addr: Some("0.0.0.0:9092".parse().unwrap()),
            advertised_addr: Some("broker.example:9092".into()),
            ..ServeArgs::default()
        };
        let settings = args.settings().unwrap();
        assert_eq!(settings.advertised_host, "broker.example");
    }

    fn tempfile_in_target() -> (PathBuf, std::fs::File) {
        let path = std::env::temp_dir().join(format!(
            "lakestream-serve-test-{}-{:?}.toml",
            std::process::id(),
            std::thread::current().id()
        ));
        let file = std::fs::File::create(&path).unwrap();
        (path, file)
    }
}
