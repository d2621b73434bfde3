//! The client's error type.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::ApiKey;

/// Everything that can go wrong talking to a broker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not connect to the broker at {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("connecting to the broker at {address} timed out")]
    ConnectTimeout { address: String },
    #[error("i/o error talking to the broker: {0}")]
    Io(#[from] std::io::Error),
    #[error("the broker did not answer {api:?} in time")]
    RequestTimeout { api: ApiKey },
    #[error("the broker answered {api:?} with {name} (error code {code}){}", describe(.message, .context))]
    Broker {
        api: ApiKey,
        code: i16,
        /// Kafka's name for the error code, e.g. `UNKNOWN_TOPIC_OR_PARTITION`.
        name: String,
        /// The broker's own error message, if it sent one.
        message: Option<String>,
        /// What the request was about, e.g. `topic orders partition 3`.
        context: String,
    },
    #[error(
        "the broker does not support {api:?} in a version this client speaks (client {client_min}..={client_max}, broker {broker})"
    )]
    UnsupportedVersion {
        api: ApiKey,
        client_min: i16,
        client_max: i16,
        broker: String,
    },
    #[error("could not encode {api:?} v{version}: {message}")]
    Encode {
        api: ApiKey,
        version: i16,
        message: String,
    },
    #[error("could not decode the {api:?} v{version} response: {message}")]
    Decode {
        api: ApiKey,
        version: i16,
        message: String,
    },
    #[error("the broker sent a response frame of {size} bytes; the limit is {limit} bytes")]
    FrameTooLarge { size: i64, limit: usize },
    #[error("the broker answered correlation id {actual} where {expected} was expected")]
    CorrelationMismatch { expected: i32, actual: i32 },
    #[error("the {api:?} response did not mention {what}")]
    MissingFromResponse { api: ApiKey, what: String },
}

impl Error {
    /// Builds [`Error::Broker`] from a non-zero error code.
    pub(crate) fn broker(
        api: ApiKey,
        code: i16,
        message: Option<&str>,
        context: impl Into<String>,
    ) -> Error {
        Error::Broker {
            api,
            code,
            name: error_name(code),
            message: message.filter(|m| !m.is_empty()).map(str::to_owned),
            context: context.into(),
        }
    }

    /// The Kafka error this is, if the broker answered with an error code.
    pub fn kafka_error(&self) -> Option<ResponseError> {
        match self {
            Error::Broker { code, .. } => ResponseError::try_from_code(*code),
            _ => None,
        }
    }
}

/// Turns `Ok(())` for code 0, otherwise the broker error.
pub(crate) fn check(
    api: ApiKey,
    code: i16,
    message: Option<&str>,
    context: impl FnOnce() -> String,
) -> Result<(), Error> {
    if code == 0 {
        Ok(())
    } else {
        Err(Error::broker(api, code, message, context()))
    }
}

/// Kafka's name for an error code, as the Java client spells it: `UNKNOWN_TOPIC_OR_PARTITION`.
pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        None => "NONE".to_owned(),
        Some(ResponseError::Unknown(_)) => "UNKNOWN_ERROR_CODE".to_owned(),
        Some(error) => screaming_snake_case(&format!("{error}")),
    }
}

fn screaming_snake_case(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

fn describe(message: &Option<String>, context: &str) -> String {
    let mut out = String::new();
    if !context.is_empty() {
        out.push_str(" for ");
        out.push_str(context);
    }
    if let Some(message) = message {
        out.push_str(": ");
        out.push_str(message);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_name(code: i16, expect: &str) {
        assert_eq!(error_name(code), expect, "code {code}");
    }

    #[test]
    fn names_follow_kafka_spelling() {
        check_name(0, "NONE");
        check_name(-1, "UNKNOWN_SERVER_ERROR");
        check_name(1, "OFFSET_OUT_OF_RANGE");
        check_name(3, "UNKNOWN_TOPIC_OR_PARTITION");
        check_name(36, "TOPIC_ALREADY_EXISTS");
        check_name(37, "INVALID_PARTITIONS");
        check_name(31000, "UNKNOWN_ERROR_CODE");
    }

    #[test]
    fn display_names_the_error_and_the_broker_message() {
        let error = Error::broker(
            ApiKey::CreateTopics,
            36,
            Some("Topic 'orders' already exists."),
            "topic orders",
        );
        assert_eq!(
            error.to_string(),
            "the broker answered CreateTopics with TOPIC_ALREADY_EXISTS (error code 36) \
             for topic orders: Topic 'orders' already exists."
        );
        assert_eq!(error.kafka_error(), Some(ResponseError::TopicAlreadyExists));
        let bare = Error::broker(ApiKey::Fetch, 1, Some(""), "");
        assert_eq!(
            bare.to_string(),
            "the broker answered Fetch with OFFSET_OUT_OF_RANGE (error code 1)"
        );
    }
}
