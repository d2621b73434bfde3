//! The broker: a tokio shell around the partition logs that speaks the Kafka wire protocol.
//!
//! `Broker` owns the topic registry and the flusher; `server::serve` accepts connections and
//! answers requests in order, with `kafka-protocol` as the codec. Wire types stay in this crate:
//! the `log` and `records` crates know nothing about sockets or Kafka messages.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let config = broker::BrokerConfig::for_data_dir("/tmp/lakestream-data".into());
//! let broker = broker::Broker::open(config)?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9092").await?;
//! broker::server::serve(broker, listener).await;
//! # Ok(()) }
//! ```

pub mod alloc;
pub mod error;
pub mod flusher;
pub mod group_service;
mod handlers;
pub mod limits;
pub mod offsets;
pub mod partition;
pub mod producer_ids;
pub mod producer_state;
pub mod server;
pub mod tiering;
pub mod topic_config;
pub mod topics;

use std::path::PathBuf;
use std::sync::Arc;

pub use error::KafkaError;
use flusher::Flusher;
use group_service::GroupService;
use offsets::OffsetStore;
use producer_ids::ProducerIds;
use topics::Topics;

/// What a broker needs to know about itself.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    pub data_dir: PathBuf,
    pub node_id: i32,
    pub cluster_id: String,
    /// Host and port clients are told to connect to (Metadata, DescribeCluster).
    pub advertised_host: String,
    pub advertised_port: i32,
    /// Kafka's `auto.create.topics.enable` (off by default here).
    pub auto_create_topics: bool,
    /// Kafka's `num.partitions`: partitions of an auto-created topic or one created with -1.
    pub num_partitions: i32,
    /// Kafka's `group.initial.rebalance.delay.ms`.
    pub group_initial_rebalance_delay_ms: u64,
    /// Kafka's `group.consumer.heartbeat.interval.ms` (KIP-848 groups).
    pub group_consumer_heartbeat_interval_ms: u64,
    /// Kafka's `group.consumer.session.timeout.ms` (KIP-848 groups).
    pub group_consumer_session_timeout_ms: u64,
    /// Offset records written between two snapshots of `__consumer_offsets`.
    pub offsets_snapshot_after_records: u64,
    /// The cold tier; `None` keeps everything on local disk.
    pub tiering: Option<tiering::TieringConfig>,
}

impl BrokerConfig {
    pub fn for_data_dir(data_dir: PathBuf) -> BrokerConfig {
        BrokerConfig {
            data_dir,
            node_id: 0,
            cluster_id: "lakestream".into(),
            advertised_host: "127.0.0.1".into(),
            advertised_port: 9092,
            auto_create_topics: false,
            num_partitions: 1,
            group_initial_rebalance_delay_ms: 3_000,
            group_consumer_heartbeat_interval_ms: 5_000,
            group_consumer_session_timeout_ms: 45_000,
            offsets_snapshot_after_records: offsets::OFFSETS_SNAPSHOT_AFTER_RECORDS,
            tiering: None,
        }
    }
}

/// A check of a whole topic config; the error says what to fix.
pub type ConfigCheck = dyn Fn(&topic_config::TopicConfig) -> Result<(), String> + Send + Sync;

pub struct Broker {
    pub config: BrokerConfig,
    pub topics: Topics,
    pub flusher: Arc<Flusher>,
    pub producer_ids: ProducerIds,
    pub groups: Arc<GroupService>,
    pub tiering: Option<tiering::Tiering>,
    /// Checks a topic's value format configs (`set_config_check`).
    config_check: parking_lot::RwLock<Option<Arc<ConfigCheck>>>,
    threads: parking_lot::Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Broker {
    /// Opens (recovering) every topic in the data directory and starts the flusher.
    pub fn open(config: BrokerConfig) -> Result<Arc<Broker>, KafkaError> {
        std::fs::create_dir_all(&config.data_dir).map_err(KafkaError::storage)?;
        let flusher = Flusher::new();
        let topics = Topics::open(&config.data_dir, flusher.clone())?;
        let producer_ids = ProducerIds::open(&config.data_dir).map_err(KafkaError::storage)?;
        let flusher_thread = flusher.start();
        let offsets = OffsetStore::open(&topics, config.offsets_snapshot_after_records)?;
        let groups = Arc::new(GroupService::new(offsets, &config, flusher.clone()));
        let ticker_thread = groups.start_ticker();
        let tiering = config
            .tiering
            .clone()
            .map(tiering::Tiering::open)
            .transpose()?;
        Ok(Arc::new(Broker {
            tiering,
            config,
            topics,
            flusher,
            producer_ids,
            groups,
            config_check: parking_lot::RwLock::new(None),
            threads: parking_lot::Mutex::new(vec![flusher_thread, ticker_thread]),
        }))
    }

    /// Lets the layer that reads values (SQL) check a topic's configs as a whole when topics
    /// are created and configs altered: a `value.schema` that does not parse is refused then.
    pub fn set_config_check(&self, check: Arc<ConfigCheck>) {
        *self.config_check.write() = Some(check);
    }

    /// INVALID_CONFIG with the check's reason when `config` does not pass it.
    pub fn check_config(&self, config: &topic_config::TopicConfig) -> Result<(), KafkaError> {
        let check = self.config_check.read().clone();
        match check {
            Some(check) => check(config).map_err(KafkaError::invalid_config),
            None => Ok(()),
        }
    }

    /// Flushes what is pending and stops the flusher (a clean shutdown).
    pub fn shutdown(&self) {
        self.groups.stop();
        self.flusher.stop();
        for thread in self.threads.lock().drain(..) {
            let _ = thread.join();
        }
    }

    /// Deletes segments past `retention.ms` / `retention.bytes` in every partition whose
    /// segments do not move to the cold tier (the tier applies retention to the others).
    pub fn apply_retention(&self) {
        for topic in self.topics.all() {
            if self.tiering.is_some() && tiering::Tiering::uploads(&topic) {
                continue;
            }
            for partition in topic.partitions() {
                match partition.apply_retention() {
                    Ok(0) => {}
                    Ok(deleted) => tracing::info!(
                        topic = %topic.name,
                        partition = partition.index,
                        deleted,
                        "retention deleted segments"
                    ),
                    Err(error) => tracing::warn!(
                        topic = %topic.name,
                        partition = partition.index,
                        %error,
                        "retention failed"
                    ),
                }
            }
        }
    }
}
