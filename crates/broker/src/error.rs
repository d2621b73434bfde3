//! The one place where broker errors become Kafka error codes.

use kafka_protocol::error::ResponseError;
use log::LogError;
use records::RecordError;

/// A failure answered to a client, with the Kafka error it maps to and a message that says what
/// to fix.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct KafkaError {
    pub code: ResponseError,
    pub message: String,
}

impl KafkaError {
    pub fn new(code: ResponseError, message: impl Into<String>) -> KafkaError {
        KafkaError {
            code,
            message: message.into(),
        }
    }

    pub fn code(&self) -> i16 {
        self.code.code()
    }

    pub fn unknown_topic(topic: &str) -> KafkaError {
        KafkaError::new(
            ResponseError::UnknownTopicOrPartition,
            format!("topic {topic} does not exist"),
        )
    }

    pub fn unknown_partition(topic: &str, partition: i32) -> KafkaError {
        KafkaError::new(
            ResponseError::UnknownTopicOrPartition,
            format!("partition {topic}-{partition} does not exist"),
        )
    }

    pub fn invalid_config(message: impl Into<String>) -> KafkaError {
        KafkaError::new(ResponseError::InvalidConfig, message)
    }

    pub fn storage(error: impl std::fmt::Display) -> KafkaError {
        KafkaError::new(ResponseError::KafkaStorageError, error.to_string())
    }
}

impl From<RecordError> for KafkaError {
    fn from(error: RecordError) -> KafkaError {
        let code = if error.is_invalid_record() {
            ResponseError::InvalidRecord
        } else {
            ResponseError::CorruptMessage
        };
        KafkaError::new(code, error.to_string())
    }
}

impl From<LogError> for KafkaError {
    fn from(error: LogError) -> KafkaError {
        match error {
            LogError::OffsetOutOfRange { .. } => {
                KafkaError::new(ResponseError::OffsetOutOfRange, error.to_string())
            }
            other => KafkaError::storage(other),
        }
    }
}

impl From<groups::GroupError> for KafkaError {
    fn from(error: groups::GroupError) -> KafkaError {
        use kafka_protocol::error::ParseResponseErrorCode;
        let code = error
            .code()
            .err()
            .unwrap_or(ResponseError::UnknownServerError);
        KafkaError::new(code, error.to_string())
    }
}
