//! Topic configs under Kafka's own names, with their defaults and validation.

use std::collections::BTreeMap;

use crate::error::KafkaError;

/// How a config value is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigKind {
    /// A signed 64-bit number at least `min`.
    Long { min: i64 },
    /// A signed 32-bit number at least `min`.
    Int { min: i64 },
    /// One of a fixed set of words.
    OneOf(&'static [&'static str]),
    /// A comma-separated list, each element one of a fixed set of words.
    ListOf(&'static [&'static str]),
    /// Free text, checked by whoever reads it (at most 64 KiB).
    Text,
}

impl ConfigKind {
    /// Kafka's DescribeConfigs `config_type` (1 BOOLEAN, 2 STRING, 3 INT, 4 SHORT, 5 LONG, 7 LIST).
    pub fn wire_type(self) -> i8 {
        match self {
            ConfigKind::Long { .. } => 5,
            ConfigKind::Int { .. } => 3,
            ConfigKind::OneOf(_) => 2,
            ConfigKind::ListOf(_) => 7,
            ConfigKind::Text => 2,
        }
    }
}

/// One topic config this broker understands.
pub struct ConfigDef {
    pub name: &'static str,
    pub default: &'static str,
    pub kind: ConfigKind,
    pub doc: &'static str,
}

/// Every topic config the broker knows; any other name is refused with INVALID_CONFIG.
pub const TOPIC_CONFIGS: &[ConfigDef] = &[
    ConfigDef {
        name: "cleanup.policy",
        default: "delete",
        kind: ConfigKind::ListOf(&["delete", "compact"]),
        doc: "delete removes whole old segments by retention; compact is accepted and stored, compaction itself is not implemented yet",
    },
    ConfigDef {
        name: "compression.type",
        default: "producer",
        kind: ConfigKind::OneOf(&["producer"]),
        doc: "batches are stored as the producer compressed them; the broker never recompresses",
    },
    ConfigDef {
        name: "index.interval.bytes",
        default: "4096",
        kind: ConfigKind::Int { min: 0 },
        doc: "bytes between entries of the sparse offset and time indexes",
    },
    ConfigDef {
        name: "local.retention.bytes",
        default: "1073741824",
        kind: ConfigKind::Long { min: -2 },
        doc: "with remote storage, the bytes of already uploaded segments a partition keeps on local disk (the hot window); -2 follows retention.bytes",
    },
    ConfigDef {
        name: "local.retention.ms",
        default: "-2",
        kind: ConfigKind::Long { min: -2 },
        doc: "with remote storage, how long uploaded segments stay on local disk; -2 follows retention.ms",
    },
    ConfigDef {
        name: "value.avro.framing",
        default: "confluent",
        kind: ConfigKind::OneOf(&["confluent", "none"]),
        doc: "SQL, value.format=avro: confluent reads values in Confluent's wire format (0x00, a 4-byte schema id, the datum), as Confluent's serializers write them; none reads plain Avro datums",
    },
    ConfigDef {
        name: "value.avro.schema.id",
        default: "-1",
        kind: ConfigKind::Int { min: -1 },
        doc: "SQL, value.format=avro with Confluent framing: the schema id values must carry (others get an _error); -1 takes any id",
    },
    ConfigDef {
        name: "value.decode.strict",
        default: "false",
        kind: ConfigKind::OneOf(&["true", "false"]),
        doc: "SQL: a value that does not decode fails the query (true) or gives NULL columns and an _error text (false)",
    },
    ConfigDef {
        name: "value.format",
        default: "raw",
        kind: ConfigKind::OneOf(&["raw", "json", "csv", "avro"]),
        doc: "SQL: how record values decode into columns: raw bytes, JSON objects, CSV lines, or Avro datums",
    },
    ConfigDef {
        name: "value.schema",
        default: "",
        kind: ConfigKind::Text,
        doc: "SQL: the value's columns, e.g. `device_name STRING, metric DOUBLE, ts BIGINT`; empty infers them from a sample (JSON) or names CSV fields c0, c1, ... as strings; for avro, the record schema as JSON (required)",
    },
    ConfigDef {
        name: "max.message.bytes",
        default: "1048588",
        kind: ConfigKind::Int { min: 0 },
        doc: "largest record batch accepted, in bytes",
    },
    ConfigDef {
        name: "message.timestamp.type",
        default: "CreateTime",
        kind: ConfigKind::OneOf(&["CreateTime", "LogAppendTime"]),
        doc: "whether records keep the producer's timestamp or get the broker's append time",
    },
    ConfigDef {
        name: "min.insync.replicas",
        default: "1",
        kind: ConfigKind::Int { min: 1 },
        doc: "replicas that must hold a write for acks=all; one replica exists until replication does",
    },
    ConfigDef {
        name: "remote.storage.enable",
        default: "true",
        kind: ConfigKind::OneOf(&["true", "false"]),
        doc: "whether sealed segments move to the cold tier (Parquet in the object store); retention then applies to the whole log, local and remote",
    },
    ConfigDef {
        name: "retention.bytes",
        default: "-1",
        kind: ConfigKind::Long { min: -1 },
        doc: "largest size (of log bytes, local and remote) a partition keeps before deleting its oldest segments and objects; -1 keeps everything",
    },
    ConfigDef {
        name: "retention.ms",
        default: "-1",
        kind: ConfigKind::Long { min: -1 },
        doc: "how long records are kept; -1 keeps them forever",
    },
    ConfigDef {
        name: "segment.bytes",
        default: "1073741824",
        kind: ConfigKind::Int { min: 1024 },
        doc: "size at which the active segment is rolled",
    },
    ConfigDef {
        name: "segment.ms",
        default: "604800000",
        kind: ConfigKind::Long { min: 1 },
        doc: "age at which the active segment is rolled",
    },
];

pub fn config_def(name: &str) -> Option<&'static ConfigDef> {
    TOPIC_CONFIGS.iter().find(|def| def.name == name)
}

/// Checks one value against its definition, answering INVALID_CONFIG with what to fix.
pub fn validate(name: &str, value: &str) -> Result<(), KafkaError> {
    let Some(def) = config_def(name) else {
        let known: Vec<&str> = TOPIC_CONFIGS.iter().map(|def| def.name).collect();
        return Err(KafkaError::invalid_config(format!(
            "unknown topic config {name:?}; known configs: {}",
            known.join(", ")
        )));
    };
    let number = |min: i64, max: i64| -> Result<(), KafkaError> {
        match value.trim().parse::<i64>() {
            Ok(n) if n >= min && n <= max => Ok(()),
            _ => Err(KafkaError::invalid_config(format!(
                "invalid value {value:?} for {name}: expected a whole number between {min} and {max}"
            ))),
        }
    };
    match def.kind {
        ConfigKind::Long { min } => number(min, i64::MAX),
        ConfigKind::Int { min } => number(min, i32::MAX as i64),
        ConfigKind::OneOf(words) => {
            if words.contains(&value) {
                Ok(())
            } else {
                Err(KafkaError::invalid_config(format!(
                    "invalid value {value:?} for {name}: expected one of {}",
                    words.join(", ")
                )))
            }
        }
        ConfigKind::Text => {
            if value.len() <= 64 * 1024 {
                Ok(())
            } else {
                Err(KafkaError::invalid_config(format!(
                    "{name} is {} bytes long; the limit is 65536",
                    value.len()
                )))
            }
        }
        ConfigKind::ListOf(words) => {
            if value
                .split(',')
                .map(str::trim)
                .all(|item| words.contains(&item))
            {
                Ok(())
            } else {
                Err(KafkaError::invalid_config(format!(
                    "invalid value {value:?} for {name}: expected a comma-separated list of {}",
                    words.join(", ")
                )))
            }
        }
    }
}

/// A topic's overrides of the defaults. Only validated values get in.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TopicConfig {
    pub overrides: BTreeMap<String, String>,
}

impl TopicConfig {
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<TopicConfig, KafkaError> {
        let mut config = TopicConfig::default();
        for (name, value) in pairs {
            config.set(name, value)?;
        }
        Ok(config)
    }

    pub fn set(&mut self, name: &str, value: &str) -> Result<(), KafkaError> {
        validate(name, value)?;
        self.overrides.insert(name.to_string(), value.to_string());
        Ok(())
    }

    /// Back to the default; deleting an unknown name is refused like setting it.
    pub fn delete(&mut self, name: &str) -> Result<(), KafkaError> {
        if config_def(name).is_none() {
            return validate(name, "");
        }
        self.overrides.remove(name);
        Ok(())
    }

    /// The value in force and whether it is the default.
    pub fn get(&self, name: &str) -> Option<(&str, bool)> {
        match self.overrides.get(name) {
            Some(value) => Some((value.as_str(), false)),
            None => config_def(name).map(|def| (def.default, true)),
        }
    }

    fn number(&self, name: &str) -> i64 {
        self.get(name)
            .and_then(|(value, _)| value.trim().parse().ok())
            .unwrap_or_else(|| {
                config_def(name)
                    .and_then(|def| def.default.parse().ok())
                    .expect("every numeric config has a numeric default")
            })
    }

    pub fn max_message_bytes(&self) -> usize {
        self.number("max.message.bytes") as usize
    }

    pub fn log_append_time(&self) -> bool {
        self.get("message.timestamp.type").map(|(value, _)| value) == Some("LogAppendTime")
    }

    pub fn min_insync_replicas(&self) -> i64 {
        self.number("min.insync.replicas")
    }

    /// The config's value in force (the default if not set).
    pub fn value_of(&self, name: &str) -> &str {
        self.get(name).map(|(value, _)| value).unwrap_or("")
    }

    pub fn remote_storage_enabled(&self) -> bool {
        self.get("remote.storage.enable").map(|(value, _)| value) == Some("true")
    }

    /// `local.retention.ms`, with -2 resolved to `retention.ms`.
    pub fn local_retention_ms(&self) -> i64 {
        match self.number("local.retention.ms") {
            -2 => self.number("retention.ms"),
            value => value,
        }
    }

    /// `local.retention.bytes`, with -2 resolved to `retention.bytes`.
    pub fn local_retention_bytes(&self) -> i64 {
        match self.number("local.retention.bytes") {
            -2 => self.number("retention.bytes"),
            value => value,
        }
    }

    pub fn retention_ms(&self) -> i64 {
        self.number("retention.ms")
    }

    pub fn retention_bytes(&self) -> i64 {
        self.number("retention.bytes")
    }

    pub fn log_config(&self) -> log::LogConfig {
        log::LogConfig {
            segment_bytes: self.number("segment.bytes") as u64,
            segment_ms: self.number("segment.ms"),
            retention_ms: self.number("retention.ms"),
            retention_bytes: self.number("retention.bytes"),
            index_interval_bytes: self.number("index.interval.bytes") as u32,
            max_message_bytes: self.number("max.message.bytes") as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, value: &str, ok: bool) {
        assert_eq!(validate(name, value).is_ok(), ok, "{name}={value}");
    }

    #[test]
    fn validation() {
        check("retention.ms", "-1", true);
        check("retention.ms", "86400000", true);
        check("retention.ms", "-2", false);
        check("retention.ms", "soon", false);
        check("segment.bytes", "1048576", true);
        check("segment.bytes", "10", false);
        check("segment.bytes", "4294967296", false);
        check("cleanup.policy", "delete", true);
        check("cleanup.policy", "compact,delete", true);
        check("cleanup.policy", "shred", false);
        check("message.timestamp.type", "LogAppendTime", true);
        check("message.timestamp.type", "Now", false);
        check("compression.type", "gzip", false);
        check("no.such.config", "1", false);
        check("remote.storage.enable", "false", true);
        check("remote.storage.enable", "yes", false);
        check("local.retention.bytes", "-2", true);
        check("local.retention.ms", "-3", false);
        check("value.format", "avro", true);
        check("value.avro.framing", "none", true);
        check("value.avro.framing", "magic", false);
        check("value.avro.schema.id", "-1", true);
        check("value.avro.schema.id", "-2", false);
    }

    #[test]
    fn defaults_and_overrides() {
        let mut config = TopicConfig::default();
        assert_eq!(config.get("retention.ms"), Some(("-1", true)));
        config.set("retention.ms", "1000").unwrap();
        assert_eq!(config.get("retention.ms"), Some(("1000", false)));
        assert_eq!(config.log_config().retention_ms, 1000);
        config.delete("retention.ms").unwrap();
        assert_eq!(config.get("retention.ms"), Some(("-1", true)));
        assert!(config.delete("bogus").is_err());
        assert_eq!(config.max_message_bytes(), 1_048_588);
        assert!(config.remote_storage_enabled());
        assert_eq!(config.local_retention_ms(), -1);
        config.set("retention.ms", "5000").unwrap();
        assert_eq!(config.local_retention_ms(), 5000);
        config.set("local.retention.ms", "100").unwrap();
        assert_eq!(config.local_retention_ms(), 100);
    }
}
