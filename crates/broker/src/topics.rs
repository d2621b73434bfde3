//! The topic registry: names, ids, partition counts and configs, persisted under the data
//! directory as `topics/<name>/topic.json`, with each partition's log in `topics/<name>/<index>/`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use parking_lot::RwLock;
use uuid::Uuid;

use crate::error::KafkaError;
use crate::limits::{PARTITIONS_PER_TOPIC_MAX, TOPIC_NAME_MAX_LEN};
use crate::partition::Partition;
use crate::topic_config::TopicConfig;

pub struct Topic {
    pub name: Arc<str>,
    pub id: Uuid,
    dir: PathBuf,
    config: RwLock<TopicConfig>,
    partitions: RwLock<Vec<Arc<Partition>>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct TopicFile {
    id: Uuid,
    partitions: i32,
    config: TopicConfig,
}

impl Topic {
    pub fn config(&self) -> TopicConfig {
        self.config.read().clone()
    }

    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions.read().clone()
    }

    pub fn partition_count(&self) -> i32 {
        self.partitions.read().len() as i32
    }

    pub fn partition(&self, index: i32) -> Option<Arc<Partition>> {
        usize::try_from(index)
            .ok()
            .and_then(|index| self.partitions.read().get(index).cloned())
    }

    pub fn is_internal(&self) -> bool {
        &*self.name == crate::offsets::OFFSETS_TOPIC
    }

    fn persist(&self) -> Result<(), KafkaError> {
        let file = TopicFile {
            id: self.id,
            partitions: self.partition_count(),
            config: self.config(),
        };
        let json = serde_json::to_vec_pretty(&file).expect("topic metadata serializes");
        write_atomically(&self.dir.join("topic.json"), &json).map_err(KafkaError::storage)
    }
}

/// Writes a small file so that a crash leaves either the old or the new contents.
fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let temporary = path.with_extension("tmp");
    let mut file = fs::File::create(&temporary)?;
    file.write_all(contents)?;
    file.sync_all()?;
    fs::rename(&temporary, path)?;
    sync_dir(path.parent().expect("a file has a parent directory"))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Kafka's rule: 1 to 249 characters of ASCII letters, digits, '.', '_' and '-', not "." or "..".
pub fn validate_topic_name(name: &str) -> Result<(), KafkaError> {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name == "." || name == ".." {
        return Err(KafkaError::new(
            ResponseError::InvalidTopicException,
            format!("topic name {name:?} is not allowed"),
        ));
    }
    if name.len() > TOPIC_NAME_MAX_LEN {
        return Err(KafkaError::new(
            ResponseError::InvalidTopicException,
            format!(
                "topic name is {} characters long; the limit is {TOPIC_NAME_MAX_LEN}",
                name.len()
            ),
        ));
    }
    if !name.chars().all(legal) {
        return Err(KafkaError::new(
            ResponseError::InvalidTopicException,
            format!("topic name {name:?} may contain only ASCII letters, digits, '.', '_' and '-'"),
        ));
    }
    Ok(())
}

fn check_create(
    name: &str,
    exists: bool,
    partitions: i32,
    replication_factor: i16,
) -> Result<(), KafkaError> {
    validate_topic_name(name)?;
    if exists {
        return Err(KafkaError::new(
            ResponseError::TopicAlreadyExists,
            format!("topic {name} already exists"),
        ));
    }
    if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&partitions) {
        return Err(KafkaError::new(
            ResponseError::InvalidPartitions,
            format!("a topic needs 1 to {PARTITIONS_PER_TOPIC_MAX} partitions, not {partitions}"),
        ));
    }
    if replication_factor > 1 || replication_factor == 0 || replication_factor < -1 {
        return Err(KafkaError::new(
            ResponseError::InvalidReplicationFactor,
            format!(
                "replication factor {replication_factor} is not possible: this broker keeps one replica until replication exists; use 1 (or -1 for the default)"
            ),
        ));
    }
    Ok(())
}

pub struct Topics {
    dir: PathBuf,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    flusher: Arc<crate::flusher::Flusher>,
}

impl Topics {
    /// Loads every topic under `data_dir/topics`, recovering each partition's log.
    pub fn open(
        data_dir: &Path,
        flusher: Arc<crate::flusher::Flusher>,
    ) -> Result<Topics, KafkaError> {
        let dir = data_dir.join("topics");
        fs::create_dir_all(&dir).map_err(KafkaError::storage)?;
        let mut topics = BTreeMap::new();
        for entry in fs::read_dir(&dir).map_err(KafkaError::storage)? {
            let entry = entry.map_err(KafkaError::storage)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".deleted") {
                let _ = fs::remove_dir_all(entry.path());
                continue;
            }
            let meta_path = entry.path().join("topic.json");
            let Ok(contents) = fs::read(&meta_path) else {
                tracing::warn!(path = %entry.path().display(), "skipping a directory without topic.json");
                continue;
            };
            let file: TopicFile = serde_json::from_slice(&contents).map_err(|error| {
                KafkaError::storage(format!("{} is unreadable: {error}", meta_path.display()))
            })?;
            let name: Arc<str> = name.into();
            let config = file.config;
            let mut partitions = Vec::new();
            for index in 0..file.partitions {
                let partition_dir = entry.path().join(index.to_string());
                partitions.push(Partition::open(
                    name.clone(),
                    index,
                    &partition_dir,
                    config.log_config(),
                )?);
            }
            tracing::info!(topic = %name, partitions = file.partitions, "topic loaded");
            topics.insert(
                name.to_string(),
                Arc::new(Topic {
                    name,
                    id: file.id,
                    dir: entry.path(),
                    config: RwLock::new(config),
                    partitions: RwLock::new(partitions),
                }),
            );
        }
        Ok(Topics {
            dir,
            topics: RwLock::new(topics),
            flusher,
        })
    }

    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().get(name).cloned()
    }

    pub fn by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        self.topics
            .read()
            .values()
            .find(|topic| topic.id == id)
            .cloned()
    }

    pub fn all(&self) -> Vec<Arc<Topic>> {
        self.topics.read().values().cloned().collect()
    }

    pub fn flusher(&self) -> &crate::flusher::Flusher {
        &self.flusher
    }

    /// Checks a create request without creating anything.
    pub fn validate_create(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
    ) -> Result<(), KafkaError> {
        let exists = self.topics.read().contains_key(name);
        check_create(name, exists, partitions, replication_factor)
    }

    pub fn create(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        config: TopicConfig,
    ) -> Result<Arc<Topic>, KafkaError> {
        let mut topics = self.topics.write();
        check_create(
            name,
            topics.contains_key(name),
            partitions,
            replication_factor,
        )?;
        let dir = self.dir.join(name);
        fs::create_dir_all(&dir).map_err(KafkaError::storage)?;
        let name: Arc<str> = name.into();
        let mut opened = Vec::new();
        for index in 0..partitions {
            opened.push(Partition::open(
                name.clone(),
                index,
                &dir.join(index.to_string()),
                config.log_config(),
            )?);
        }
        let topic = Arc::new(Topic {
            name: name.clone(),
            id: Uuid::new_v4(),
            dir,
            config: RwLock::new(config),
            partitions: RwLock::new(opened),
        });
        topic.persist()?;
        sync_dir(&self.dir).map_err(KafkaError::storage)?;
        topics.insert(name.to_string(), topic.clone());
        tracing::info!(topic = %name, partitions, "topic created");
        Ok(topic)
    }

    pub fn delete(&self, name: &str) -> Result<Arc<Topic>, KafkaError> {
        let topic = self
            .topics
            .write()
            .remove(name)
            .ok_or_else(|| KafkaError::unknown_topic(name))?;
        let graveyard = self
            .dir
            .join(format!("{name}.{}.deleted", topic.id.simple()));
        fs::rename(&topic.dir, &graveyard).map_err(KafkaError::storage)?;
        sync_dir(&self.dir).map_err(KafkaError::storage)?;
        if let Err(error) = fs::remove_dir_all(&graveyard) {
            tracing::warn!(%error, path = %graveyard.display(), "could not remove a deleted topic's files");
        }
        tracing::info!(topic = name, "topic deleted");
        Ok(topic)
    }

    /// Grows a topic to `total` partitions (partitions never shrink).
    pub fn add_partitions(
        &self,
        name: &str,
        total: i32,
        validate_only: bool,
    ) -> Result<(), KafkaError> {
        let topic = self
            .get(name)
            .ok_or_else(|| KafkaError::unknown_topic(name))?;
        let current = topic.partition_count();
        if total <= current {
            return Err(KafkaError::new(
                ResponseError::InvalidPartitions,
                format!(
                    "topic {name} has {current} partitions; the new count must be larger, not {total}"
                ),
            ));
        }
        if total > PARTITIONS_PER_TOPIC_MAX {
            return Err(KafkaError::new(
                ResponseError::InvalidPartitions,
                format!("a topic may have at most {PARTITIONS_PER_TOPIC_MAX} partitions"),
            ));
        }
        if validate_only {
            return Ok(());
        }
        let config = topic.config();
        let mut partitions = topic.partitions.write();
        for index in partitions.len() as i32..total {
            partitions.push(Partition::open(
                topic.name.clone(),
                index,
                &topic.dir.join(index.to_string()),
                config.log_config(),
            )?);
        }
        drop(partitions);
        topic.persist()?;
        tracing::info!(topic = name, total, "partitions added");
        Ok(())
    }

    /// Replaces a topic's config and applies it to every partition.
    pub fn set_config(&self, name: &str, config: TopicConfig) -> Result<(), KafkaError> {
        let topic = self
            .get(name)
            .ok_or_else(|| KafkaError::unknown_topic(name))?;
        *topic.config.write() = config.clone();
        topic.persist()?;
        for partition in topic.partitions() {
            partition.set_config(config.log_config());
        }
        Ok(())
    }
}
