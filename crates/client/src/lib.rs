//! A small async Kafka client built on the `kafka-protocol` codecs, for the `lakestream` CLI and
//! for Rust tests: topic admin, produce, fetch, list offsets, and consumer-group admin (list,
//! describe, delete, offset fetch and commit) with a minimal membership for tests.
//!
//! It talks to one broker over one connection (lakestream is a single node, id 0): no leader
//! routing, no retries, no background tasks. [`Client::connect`] asks the broker for its
//! ApiVersions and from then on uses, for each API, the highest version both sides speak.
//!
//! ```no_run
//! # async fn example() -> Result<(), client::Error> {
//! use client::{Acks, Client, Compression, EARLIEST_TIMESTAMP, ProduceRecord};
//!
//! let mut client = Client::connect("127.0.0.1:9092").await?;
//! client.create_topics("orders", 3, &[("retention.ms", "86400000")]).await?;
//! let records = [ProduceRecord::new("hello").with_key("k1")];
//! let base_offset = client.produce("orders", 0, Acks::All, Compression::None, &records).await?;
//! let (start, _) = client.list_offsets("orders", 0, EARLIEST_TIMESTAMP).await?;
//! let (high_watermark, _log_start, fetched) = client.fetch("orders", 0, start, 500, 1 << 20).await?;
//! # Ok(()) }
//! ```
//!
//! **Architecture invariant:** the client never writes a codec of its own; every request and
//! response goes through `kafka-protocol`, and record batches through its `RecordBatchEncoder`
//! and `RecordBatchDecoder`.

mod error;
mod groups;
pub mod limits;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::{
    self, ApiKey, ApiVersionsRequest, ApiVersionsResponse, CreatePartitionsRequest,
    CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse, DeleteGroupsRequest,
    DeleteGroupsResponse, DeleteTopicsRequest, DeleteTopicsResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, DescribeGroupsRequest, DescribeGroupsResponse, FetchRequest,
    FetchResponse, HeartbeatRequest, HeartbeatResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, ListOffsetsRequest,
    ListOffsetsResponse, MetadataRequest, MetadataResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, ProduceRequest, ProduceResponse,
    RequestHeader, ResponseHeader, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::{
    Decodable, Encodable, VersionRange, encode_request_header_into_buffer,
};
use kafka_protocol::records::{RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use error::{Error, error_name};
pub use groups::{
    CommittedOffset, GenerationId, GroupDescription, GroupListing, GroupMember, JoinedGroup,
    STANDALONE_GENERATION, TopicPartitions, decode_consumer_assignment, encode_consumer_assignment,
};
pub use kafka_protocol::ResponseError;
pub use kafka_protocol::indexmap;
pub use kafka_protocol::protocol::StrBytes;
pub use kafka_protocol::records::{Compression, Record, TimestampType};

use error::check;
use limits::{
    BROKER_TIMEOUT_MS, CONNECT_TIMEOUT, FETCH_VERSION_MAX, MAX_RESPONSE_FRAME_BYTES,
    PRODUCE_VERSION_MAX, REQUEST_TIMEOUT_MARGIN,
};

/// A position in a partition's log.
pub type Offset = i64;
/// A partition's index within its topic.
pub type PartitionId = i32;
/// Milliseconds since the Unix epoch.
pub type TimestampMs = i64;
/// A broker's node id.
pub type NodeId = i32;

/// [`Client::list_offsets`] timestamp for the log start offset.
pub const EARLIEST_TIMESTAMP: TimestampMs = -2;
/// [`Client::list_offsets`] timestamp for the end of the log (the high watermark).
pub const LATEST_TIMESTAMP: TimestampMs = -1;
/// [`Client::list_offsets`] timestamp for the record with the largest timestamp.
pub const MAX_TIMESTAMP: TimestampMs = -3;

/// Kafka's resource type number for a topic in config requests.
const RESOURCE_TYPE_TOPIC: i8 = 2;
/// Kafka's UNSUPPORTED_VERSION error code.
const UNSUPPORTED_VERSION: i16 = 35;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A request this client knows how to send, and the response it expects.
pub trait ClientRequest: Encodable {
    const KEY: ApiKey;
    type Response: Decodable;
}

macro_rules! client_requests {
    ($($request:ident => $response:ident, $key:ident;)*) => {
        $(impl ClientRequest for $request {
            const KEY: ApiKey = ApiKey::$key;
            type Response = $response;
        })*
    };
}

client_requests! {
    ApiVersionsRequest => ApiVersionsResponse, ApiVersions;
    MetadataRequest => MetadataResponse, Metadata;
    CreateTopicsRequest => CreateTopicsResponse, CreateTopics;
    DeleteTopicsRequest => DeleteTopicsResponse, DeleteTopics;
    CreatePartitionsRequest => CreatePartitionsResponse, CreatePartitions;
    DescribeConfigsRequest => DescribeConfigsResponse, DescribeConfigs;
    IncrementalAlterConfigsRequest => IncrementalAlterConfigsResponse, IncrementalAlterConfigs;
    ProduceRequest => ProduceResponse, Produce;
    FetchRequest => FetchResponse, Fetch;
    ListOffsetsRequest => ListOffsetsResponse, ListOffsets;
    ListGroupsRequest => ListGroupsResponse, ListGroups;
    DescribeGroupsRequest => DescribeGroupsResponse, DescribeGroups;
    DeleteGroupsRequest => DeleteGroupsResponse, DeleteGroups;
    OffsetFetchRequest => OffsetFetchResponse, OffsetFetch;
    OffsetCommitRequest => OffsetCommitResponse, OffsetCommit;
    JoinGroupRequest => JoinGroupResponse, JoinGroup;
    SyncGroupRequest => SyncGroupResponse, SyncGroup;
    HeartbeatRequest => HeartbeatResponse, Heartbeat;
    LeaveGroupRequest => LeaveGroupResponse, LeaveGroup;
}

/// How many replicas must have a produced batch before the broker answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// The broker does not answer at all; the offsets stay unknown.
    None,
    /// The leader has appended the batch.
    Leader,
    /// All in-sync replicas have the batch.
    All,
}

impl Acks {
    fn wire(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

/// A record to produce. Offsets are assigned by the broker.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProduceRecord {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Creation time; the time of the produce call when `None`.
    pub timestamp: Option<TimestampMs>,
}

impl ProduceRecord {
    pub fn new(value: impl Into<Bytes>) -> ProduceRecord {
        ProduceRecord {
            value: Some(value.into()),
            ..ProduceRecord::default()
        }
    }

    pub fn with_key(mut self, key: impl Into<Bytes>) -> ProduceRecord {
        self.key = Some(key.into());
        self
    }

    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> ProduceRecord {
        self.headers.push((key.into(), Some(value.into())));
        self
    }

    pub fn with_timestamp(mut self, timestamp: TimestampMs) -> ProduceRecord {
        self.timestamp = Some(timestamp);
        self
    }

    /// Bytes this record adds to a batch, roughly (for batching limits, not for framing).
    pub fn approximate_size(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Bytes::len) + 4)
            .sum();
        self.key.as_ref().map_or(0, Bytes::len)
            + self.value.as_ref().map_or(0, Bytes::len)
            + headers
            + 16
    }
}

/// The cluster as a Metadata response describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    pub cluster_id: Option<String>,
    pub controller_id: NodeId,
    pub brokers: Vec<BrokerMetadata>,
    pub topics: Vec<TopicMetadata>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BrokerMetadata {
    pub node_id: NodeId,
    pub host: String,
    pub port: i32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TopicMetadata {
    pub name: String,
    /// Non-zero when the broker could not describe the topic (e.g. it does not exist).
    pub error_code: i16,
    pub is_internal: bool,
    pub partitions: Vec<PartitionMetadata>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PartitionMetadata {
    pub partition: PartitionId,
    pub error_code: i16,
    pub leader: NodeId,
    pub replicas: Vec<NodeId>,
    pub in_sync_replicas: Vec<NodeId>,
}

/// One topic config as DescribeConfigs reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigEntry {
    pub name: String,
    pub value: Option<String>,
    pub read_only: bool,
    pub is_sensitive: bool,
    /// Kafka's ConfigSource number; see [`ConfigEntry::source_name`].
    pub source: i8,
}

impl ConfigEntry {
    /// Where the value comes from, in Kafka's words, lowercased.
    pub fn source_name(&self) -> &'static str {
        match self.source {
            1 => "topic",
            2 => "dynamic-broker",
            3 => "dynamic-default-broker",
            4 => "static-broker",
            5 => "default",
            6 => "dynamic-broker-logger",
            7 => "client-metrics",
            8 => "group",
            _ => "unknown",
        }
    }

    /// True when nobody set the value: it is the built-in default.
    pub fn is_default(&self) -> bool {
        self.source == 5
    }
}

/// What a fetch returned for one partition.
#[derive(Debug, Clone)]
pub struct FetchedPartition {
    pub partition: PartitionId,
    pub high_watermark: Offset,
    pub log_start_offset: Offset,
    /// Data records at or after the fetch offset; control records are left out.
    pub records: Vec<Record>,
    /// Where the next fetch should start: one past the last record returned (control records
    /// included), or the fetch offset when nothing was returned.
    pub next_offset: Offset,
}

/// One connection to one broker.
pub struct Client {
    stream: TcpStream,
    address: String,
    client_id: StrBytes,
    next_correlation_id: i32,
    /// The versions the broker announced, by API key.
    broker_versions: HashMap<i16, VersionRange>,
}

impl Client {
    /// Connects to the first address of a bootstrap list (`host:port[,host:port...]`) and
    /// negotiates API versions.
    pub async fn connect(bootstrap: &str) -> Result<Client> {
        let address = bootstrap
            .split(',')
            .map(str::trim)
            .find(|a| !a.is_empty())
            .unwrap_or(bootstrap)
            .to_owned();
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&address)).await
        {
            Err(_) => return Err(Error::ConnectTimeout { address }),
            Ok(Err(source)) => return Err(Error::Connect { address, source }),
            Ok(Ok(stream)) => stream,
        };
        stream.set_nodelay(true)?;
        let mut client = Client {
            stream,
            address,
            client_id: StrBytes::from_static_str("lakestream-client"),
            next_correlation_id: 0,
            broker_versions: HashMap::new(),
        };
        client.negotiate_versions().await?;
        Ok(client)
    }

    /// The address this client is connected to.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The version this client uses for `api`, if both sides speak one.
    pub fn api_version(&self, api: ApiKey) -> Option<i16> {
        pick_version(api, self.broker_versions.get(&(api as i16)).copied())
    }

    async fn negotiate_versions(&mut self) -> Result<()> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("lakestream-client"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut version = ApiKey::ApiVersions.valid_versions().max;
        let response = loop {
            let body = self
                .round_trip(&request, version, Duration::ZERO, true)
                .await?
                .expect("a response was asked for");
            // A broker that does not speak our version answers UNSUPPORTED_VERSION in the v0
            // layout and lists what it does speak; error_code is the first field either way.
            let error_code = body.get(..2).map(|b| i16::from_be_bytes([b[0], b[1]]));
            if error_code == Some(UNSUPPORTED_VERSION) && version > 0 {
                let v0 = decode::<ApiVersionsResponse>(body, 0)?;
                let broker_max = v0
                    .api_keys
                    .iter()
                    .find(|k| k.api_key == ApiKey::ApiVersions as i16)
                    .map_or(0, |k| k.max_version);
                version = broker_max.clamp(0, version - 1);
                continue;
            }
            break decode::<ApiVersionsResponse>(body, version)?;
        };
        check(ApiKey::ApiVersions, response.error_code, None, String::new)?;
        self.broker_versions = response
            .api_keys
            .iter()
            .map(|k| {
                let range = VersionRange {
                    min: k.min_version,
                    max: k.max_version,
                };
                (k.api_key, range)
            })
            .collect();
        Ok(())
    }

    fn version_for(&self, api: ApiKey) -> Result<i16> {
        let broker = self.broker_versions.get(&(api as i16)).copied();
        pick_version(api, broker).ok_or_else(|| {
            let client = client_versions(api);
            Error::UnsupportedVersion {
                api,
                client_min: client.min,
                client_max: client.max,
                broker: broker.map_or("none".to_owned(), |b| format!("{}..={}", b.min, b.max)),
            }
        })
    }

    /// Sends any request at the highest common version and waits for its response.
    pub async fn send<R: ClientRequest>(&mut self, request: &R) -> Result<R::Response> {
        let version = self.version_for(R::KEY)?;
        self.send_at(
            request,
            version,
            Duration::from_millis(BROKER_TIMEOUT_MS as u64),
        )
        .await
    }

    async fn send_at<R: ClientRequest>(
        &mut self,
        request: &R,
        version: i16,
        broker_wait: Duration,
    ) -> Result<R::Response> {
        let body = self
            .round_trip(request, version, broker_wait, true)
            .await?
            .expect("a response was asked for");
        decode::<R::Response>(body, version).map_err(|e| match e {
            Error::Decode { message, .. } => Error::Decode {
                api: R::KEY,
                version,
                message,
            },
            other => other,
        })
    }

    /// Writes one request frame and, if `expect_response`, reads the matching response frame
    /// and returns its body (after the response header).
    async fn round_trip<R: ClientRequest>(
        &mut self,
        request: &R,
        version: i16,
        broker_wait: Duration,
        expect_response: bool,
    ) -> Result<Option<Bytes>> {
        let api = R::KEY;
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(self.client_id.clone()));
        let encode_error = |e: &dyn std::fmt::Display| Error::Encode {
            api,
            version,
            message: e.to_string(),
        };
        let mut frame = BytesMut::with_capacity(256);
        frame.put_i32(0); // length, patched below
        encode_request_header_into_buffer(&mut frame, &header).map_err(|e| encode_error(&e))?;
        request
            .encode(&mut frame, version)
            .map_err(|e| encode_error(&e))?;
        let length = i32::try_from(frame.len() - 4).map_err(|_| Error::Encode {
            api,
            version,
            message: format!("request of {} bytes is too large", frame.len()),
        })?;
        frame[..4].copy_from_slice(&length.to_be_bytes());

        let deadline = broker_wait + REQUEST_TIMEOUT_MARGIN;
        let exchange = async {
            self.stream.write_all(&frame).await?;
            if !expect_response {
                return Ok(None);
            }
            let size = self.stream.read_i32().await?;
            if size < 0 || size as usize > MAX_RESPONSE_FRAME_BYTES {
                return Err(Error::FrameTooLarge {
                    size: size.into(),
                    limit: MAX_RESPONSE_FRAME_BYTES,
                });
            }
            let mut body = vec![0; size as usize];
            self.stream.read_exact(&mut body).await?;
            Ok(Some(Bytes::from(body)))
        };
        let Some(mut body) = tokio::time::timeout(deadline, exchange)
            .await
            .map_err(|_| Error::RequestTimeout { api })??
        else {
            return Ok(None);
        };
        let header = ResponseHeader::decode(&mut body, api.response_header_version(version))
            .map_err(|e| Error::Decode {
                api,
                version,
                message: format!("response header: {e}"),
            })?;
        if header.correlation_id != correlation_id {
            return Err(Error::CorrelationMismatch {
                expected: correlation_id,
                actual: header.correlation_id,
            });
        }
        Ok(Some(body))
    }

    /// Describes the given topics, or all topics when `topics` is `None`. Topics the broker
    /// cannot describe come back with a non-zero `error_code` rather than as an error.
    pub async fn metadata(&mut self, topics: Option<&[&str]>) -> Result<Metadata> {
        let version = self.version_for(ApiKey::Metadata)?;
        let requested = match topics {
            Some(names) => Some(
                names
                    .iter()
                    .map(|name| {
                        messages::metadata_request::MetadataRequestTopic::default()
                            .with_name(Some(topic_name(name)))
                    })
                    .collect(),
            ),
            // v0 has no null list: an empty list means all topics there.
            None if version == 0 => Some(Vec::new()),
            None => None,
        };
        let mut request = MetadataRequest::default().with_topics(requested);
        if version >= 4 {
            request.allow_auto_topic_creation = false;
        }
        let response = self.send_at(&request, version, Duration::ZERO).await?;
        Ok(Metadata {
            cluster_id: response.cluster_id.map(|c| c.to_string()),
            controller_id: response.controller_id.0,
            brokers: response
                .brokers
                .into_iter()
                .map(|b| BrokerMetadata {
                    node_id: b.node_id.0,
                    host: b.host.to_string(),
                    port: b.port,
                })
                .collect(),
            topics: response
                .topics
                .into_iter()
                .map(|t| TopicMetadata {
                    name: t.name.map(|n| n.0.to_string()).unwrap_or_default(),
                    error_code: t.error_code,
                    is_internal: t.is_internal,
                    partitions: t
                        .partitions
                        .into_iter()
                        .map(|p| PartitionMetadata {
                            partition: p.partition_index,
                            error_code: p.error_code,
                            leader: p.leader_id.0,
                            replicas: p.replica_nodes.into_iter().map(|n| n.0).collect(),
                            in_sync_replicas: p.isr_nodes.into_iter().map(|n| n.0).collect(),
                        })
                        .collect(),
                })
                .collect(),
        })
    }

    /// Describes one topic; a topic the broker does not know is an error.
    pub async fn topic_metadata(&mut self, topic: &str) -> Result<TopicMetadata> {
        let metadata = self.metadata(Some(&[topic])).await?;
        let found = metadata
            .topics
            .into_iter()
            .find(|t| t.name == topic)
            .ok_or_else(|| Error::MissingFromResponse {
                api: ApiKey::Metadata,
                what: format!("topic {topic}"),
            })?;
        check(ApiKey::Metadata, found.error_code, None, || {
            format!("topic {topic}")
        })?;
        Ok(found)
    }

    /// Creates a topic with replication factor 1 and the given topic configs.
    pub async fn create_topics<K: AsRef<str>, V: AsRef<str>>(
        &mut self,
        name: &str,
        partitions: i32,
        configs: &[(K, V)],
    ) -> Result<()> {
        self.create_topic_with_replication_factor(name, partitions, 1, configs)
            .await
    }

    /// Creates a topic; `replication_factor` -1 leaves it to the broker.
    pub async fn create_topic_with_replication_factor<K: AsRef<str>, V: AsRef<str>>(
        &mut self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &[(K, V)],
    ) -> Result<()> {
        let topic = messages::create_topics_request::CreatableTopic::default()
            .with_name(topic_name(name))
            .with_num_partitions(partitions)
            .with_replication_factor(replication_factor)
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        messages::create_topics_request::CreatableTopicConfig::default()
                            .with_name(str_bytes(k.as_ref()))
                            .with_value(Some(str_bytes(v.as_ref())))
                    })
                    .collect(),
            );
        let request = CreateTopicsRequest::default()
            .with_topics(vec![topic])
            .with_timeout_ms(BROKER_TIMEOUT_MS);
        let response = self.send(&request).await?;
        let result = response
            .topics
            .iter()
            .find(|t| t.name.0.as_str() == name)
            .ok_or_else(|| missing(ApiKey::CreateTopics, format!("topic {name}")))?;
        check(
            ApiKey::CreateTopics,
            result.error_code,
            result.error_message.as_deref(),
            || format!("topic {name}"),
        )
    }

    /// Deletes topics by name.
    pub async fn delete_topics<N: AsRef<str>>(&mut self, names: &[N]) -> Result<()> {
        let version = self.version_for(ApiKey::DeleteTopics)?;
        let mut request = DeleteTopicsRequest::default().with_timeout_ms(BROKER_TIMEOUT_MS);
        if version >= 6 {
            request.topics = names
                .iter()
                .map(|n| {
                    messages::delete_topics_request::DeleteTopicState::default()
                        .with_name(Some(topic_name(n.as_ref())))
                })
                .collect();
        } else {
            request.topic_names = names.iter().map(|n| topic_name(n.as_ref())).collect();
        }
        let response = self
            .send_at(
                &request,
                version,
                Duration::from_millis(BROKER_TIMEOUT_MS as u64),
            )
            .await?;
        for name in names {
            let name = name.as_ref();
            let result = response
                .responses
                .iter()
                .find(|r| r.name.as_ref().is_some_and(|n| n.0.as_str() == name))
                .ok_or_else(|| missing(ApiKey::DeleteTopics, format!("topic {name}")))?;
            check(
                ApiKey::DeleteTopics,
                result.error_code,
                result.error_message.as_deref(),
                || format!("topic {name}"),
            )?;
        }
        Ok(())
    }

    /// Grows a topic to `total` partitions.
    pub async fn create_partitions(&mut self, topic: &str, total: i32) -> Result<()> {
        let request = CreatePartitionsRequest::default()
            .with_topics(vec![
                messages::create_partitions_request::CreatePartitionsTopic::default()
                    .with_name(topic_name(topic))
                    .with_count(total),
            ])
            .with_timeout_ms(BROKER_TIMEOUT_MS);
        let response = self.send(&request).await?;
        let result = response
            .results
            .iter()
            .find(|r| r.name.0.as_str() == topic)
            .ok_or_else(|| missing(ApiKey::CreatePartitions, format!("topic {topic}")))?;
        check(
            ApiKey::CreatePartitions,
            result.error_code,
            result.error_message.as_deref(),
            || format!("topic {topic}"),
        )
    }

    /// All configs of a topic, sorted by name.
    pub async fn describe_configs(&mut self, topic: &str) -> Result<Vec<ConfigEntry>> {
        let request = DescribeConfigsRequest::default().with_resources(vec![
            messages::describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(RESOURCE_TYPE_TOPIC)
                .with_resource_name(str_bytes(topic))
                .with_configuration_keys(None),
        ]);
        let response = self.send(&request).await?;
        let result = response
            .results
            .into_iter()
            .find(|r| r.resource_name.as_str() == topic)
            .ok_or_else(|| missing(ApiKey::DescribeConfigs, format!("topic {topic}")))?;
        check(
            ApiKey::DescribeConfigs,
            result.error_code,
            result.error_message.as_deref(),
            || format!("topic {topic}"),
        )?;
        let mut configs: Vec<ConfigEntry> = result
            .configs
            .into_iter()
            .map(|c| ConfigEntry {
                name: c.name.to_string(),
                value: c.value.map(|v| v.to_string()),
                read_only: c.read_only,
                is_sensitive: c.is_sensitive,
                source: c.config_source,
            })
            .collect();
        configs.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(configs)
    }

    /// Sets and deletes (returns to default) topic configs in one request.
    pub async fn incremental_alter_configs<K: AsRef<str>, V: AsRef<str>, D: AsRef<str>>(
        &mut self,
        topic: &str,
        set: &[(K, V)],
        delete: &[D],
    ) -> Result<()> {
        const SET: i8 = 0;
        const DELETE: i8 = 1;
        let sets = set.iter().map(|(k, v)| {
            messages::incremental_alter_configs_request::AlterableConfig::default()
                .with_name(str_bytes(k.as_ref()))
                .with_config_operation(SET)
                .with_value(Some(str_bytes(v.as_ref())))
        });
        let deletes = delete.iter().map(|k| {
            messages::incremental_alter_configs_request::AlterableConfig::default()
                .with_name(str_bytes(k.as_ref()))
                .with_config_operation(DELETE)
                .with_value(None)
        });
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            messages::incremental_alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(RESOURCE_TYPE_TOPIC)
                .with_resource_name(str_bytes(topic))
                .with_configs(sets.chain(deletes).collect()),
        ]);
        let response = self.send(&request).await?;
        let result = response
            .responses
            .iter()
            .find(|r| r.resource_name.as_str() == topic)
            .ok_or_else(|| missing(ApiKey::IncrementalAlterConfigs, format!("topic {topic}")))?;
        check(
            ApiKey::IncrementalAlterConfigs,
            result.error_code,
            result.error_message.as_deref(),
            || format!("topic {topic}"),
        )
    }

    /// Produces one batch to one partition and returns the offset of its first record, or
    /// `None` with [`Acks::None`], where the broker does not answer.
    pub async fn produce(
        &mut self,
        topic: &str,
        partition: PartitionId,
        acks: Acks,
        compression: Compression,
        records: &[ProduceRecord],
    ) -> Result<Option<Offset>> {
        let version = self.version_for(ApiKey::Produce)?;
        let batch = encode_batch(records, compression, now_ms()).map_err(|e| Error::Encode {
            api: ApiKey::Produce,
            version,
            message: format!("record batch: {e}"),
        })?;
        let request = ProduceRequest::default()
            .with_acks(acks.wire())
            .with_timeout_ms(BROKER_TIMEOUT_MS)
            .with_topic_data(vec![
                messages::produce_request::TopicProduceData::default()
                    .with_name(topic_name(topic))
                    .with_partition_data(vec![
                        messages::produce_request::PartitionProduceData::default()
                            .with_index(partition)
                            .with_records(Some(batch)),
                    ]),
            ]);
        let broker_wait = Duration::from_millis(BROKER_TIMEOUT_MS as u64);
        if acks == Acks::None {
            self.round_trip(&request, version, broker_wait, false)
                .await?;
            return Ok(None);
        }
        let response = self.send_at(&request, version, broker_wait).await?;
        let context = || format!("topic {topic} partition {partition}");
        let result = response
            .responses
            .iter()
            .filter(|t| t.name.0.as_str() == topic)
            .flat_map(|t| &t.partition_responses)
            .find(|p| p.index == partition)
            .ok_or_else(|| missing(ApiKey::Produce, context()))?;
        let record_error = result
            .record_errors
            .iter()
            .find_map(|e| e.batch_index_error_message.as_deref());
        check(
            ApiKey::Produce,
            result.error_code,
            result.error_message.as_deref().or(record_error),
            context,
        )?;
        Ok(Some(result.base_offset))
    }

    /// Fetches from one partition: `(high_watermark, log_start_offset, records)`.
    pub async fn fetch(
        &mut self,
        topic: &str,
        partition: PartitionId,
        offset: Offset,
        max_wait_ms: i32,
        max_bytes: i32,
    ) -> Result<(Offset, Offset, Vec<Record>)> {
        let mut fetched = self
            .fetch_partitions(topic, &[(partition, offset)], max_wait_ms, max_bytes)
            .await?;
        let fetched = fetched
            .pop()
            .expect("fetch_partitions answers every partition asked");
        Ok((
            fetched.high_watermark,
            fetched.log_start_offset,
            fetched.records,
        ))
    }

    /// Fetches from several partitions of one topic in one request. `max_bytes` bounds each
    /// partition and the whole response. The answer has one entry per partition asked, in the
    /// order asked; a partition error fails the whole call.
    pub async fn fetch_partitions(
        &mut self,
        topic: &str,
        positions: &[(PartitionId, Offset)],
        max_wait_ms: i32,
        max_bytes: i32,
    ) -> Result<Vec<FetchedPartition>> {
        let version = self.version_for(ApiKey::Fetch)?;
        let request = FetchRequest::default()
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(max_bytes)
            .with_topics(vec![
                messages::fetch_request::FetchTopic::default()
                    .with_topic(topic_name(topic))
                    .with_partitions(
                        positions
                            .iter()
                            .map(|&(partition, offset)| {
                                messages::fetch_request::FetchPartition::default()
                                    .with_partition(partition)
                                    .with_fetch_offset(offset)
                                    .with_partition_max_bytes(max_bytes)
                            })
                            .collect(),
                    ),
            ]);
        let broker_wait = Duration::from_millis(max_wait_ms.max(0) as u64);
        let response = self.send_at(&request, version, broker_wait).await?;
        check(ApiKey::Fetch, response.error_code, None, || {
            format!("topic {topic}")
        })?;
        let mut answered: Vec<messages::fetch_response::PartitionData> = response
            .responses
            .into_iter()
            .filter(|t| t.topic.0.as_str() == topic)
            .flat_map(|t| t.partitions)
            .collect();
        let mut out = Vec::with_capacity(positions.len());
        for &(partition, offset) in positions {
            let context = || format!("topic {topic} partition {partition}");
            let index = answered
                .iter()
                .position(|p| p.partition_index == partition)
                .ok_or_else(|| missing(ApiKey::Fetch, context()))?;
            let data = answered.swap_remove(index);
            check(ApiKey::Fetch, data.error_code, None, context)?;
            let decoded = decode_batches(data.records.unwrap_or_default()).map_err(|message| {
                Error::Decode {
                    api: ApiKey::Fetch,
                    version,
                    message: format!("records of {}: {message}", context()),
                }
            })?;
            let next_offset = decoded
                .iter()
                .map(|r| r.offset + 1)
                .max()
                .unwrap_or(offset)
                .max(offset);
            let records = decoded
                .into_iter()
                .filter(|r| !r.control && r.offset >= offset)
                .collect();
            out.push(FetchedPartition {
                partition,
                high_watermark: data.high_watermark,
                log_start_offset: data.log_start_offset,
                records,
                next_offset,
            });
        }
        Ok(out)
    }

    /// Looks up an offset by timestamp: [`EARLIEST_TIMESTAMP`], [`LATEST_TIMESTAMP`],
    /// [`MAX_TIMESTAMP`], or milliseconds (the first offset whose timestamp is at or after it;
    /// offset -1 when there is none). Returns `(offset, timestamp)`.
    pub async fn list_offsets(
        &mut self,
        topic: &str,
        partition: PartitionId,
        timestamp: TimestampMs,
    ) -> Result<(Offset, TimestampMs)> {
        let request = ListOffsetsRequest::default()
            .with_replica_id((-1).into())
            .with_timeout_ms(BROKER_TIMEOUT_MS)
            .with_topics(vec![
                messages::list_offsets_request::ListOffsetsTopic::default()
                    .with_name(topic_name(topic))
                    .with_partitions(vec![
                        messages::list_offsets_request::ListOffsetsPartition::default()
                            .with_partition_index(partition)
                            .with_timestamp(timestamp),
                    ]),
            ]);
        let version = self.version_for(ApiKey::ListOffsets)?;
        let mut request = request;
        if version < 10 {
            request.timeout_ms = 0;
        }
        let response = self
            .send_at(
                &request,
                version,
                Duration::from_millis(BROKER_TIMEOUT_MS as u64),
            )
            .await?;
        let context = || format!("topic {topic} partition {partition}");
        let result = response
            .topics
            .iter()
            .filter(|t| t.name.0.as_str() == topic)
            .flat_map(|t| &t.partitions)
            .find(|p| p.partition_index == partition)
            .ok_or_else(|| missing(ApiKey::ListOffsets, context()))?;
        check(ApiKey::ListOffsets, result.error_code, None, context)?;
        Ok((result.offset, result.timestamp))
    }
}

/// The versions this client speaks for `api`.
fn client_versions(api: ApiKey) -> VersionRange {
    let mut range = api.valid_versions();
    match api {
        ApiKey::Produce => range.max = range.max.min(PRODUCE_VERSION_MAX),
        ApiKey::Fetch => range.max = range.max.min(FETCH_VERSION_MAX),
        _ => {}
    }
    range
}

/// The highest version both sides speak, if any.
fn pick_version(api: ApiKey, broker: Option<VersionRange>) -> Option<i16> {
    let both = client_versions(api).intersect(&broker?);
    (!both.is_empty()).then_some(both.max)
}

fn decode<T: Decodable>(mut body: Bytes, version: i16) -> Result<T> {
    T::decode(&mut body, version).map_err(|e| Error::Decode {
        // The caller knows the API; ApiVersions is the only one decoded without rewrapping.
        api: ApiKey::ApiVersions,
        version,
        message: e.to_string(),
    })
}

fn missing(api: ApiKey, what: String) -> Error {
    Error::MissingFromResponse { api, what }
}

fn topic_name(name: &str) -> TopicName {
    TopicName(str_bytes(name))
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

fn now_ms() -> TimestampMs {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as TimestampMs)
}

/// Encodes records as one v2 record batch with offsets 0..n (the broker assigns real ones).
fn encode_batch(
    records: &[ProduceRecord],
    compression: Compression,
    now: TimestampMs,
) -> Result<Bytes, String> {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as Offset,
            // The encoder starts a new batch wherever offset - sequence changes, and takes the
            // first record's sequence as the batch's base sequence. Sequence = offset - 1 keeps
            // all records in one batch (v3+ produce allows exactly one) with base sequence -1,
            // "none", as a producer without an id must send.
            sequence: i as i32 - 1,
            timestamp: r.timestamp.unwrap_or(now),
            key: r.key.clone(),
            value: r.value.clone(),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (str_bytes(k), v.clone()))
                .collect::<IndexMap<_, _>>(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut buf, records.iter(), &options).map_err(|e| e.to_string())?;
    Ok(buf.freeze())
}

/// Decodes the record batches of a fetch response. A size-limited fetch may end in a partial
/// batch; that tail is dropped, as Kafka clients do.
fn decode_batches(mut data: Bytes) -> Result<Vec<Record>, String> {
    /// base offset (8) + batch length (4)
    const LOG_OVERHEAD: usize = 12;
    let mut records = Vec::new();
    while data.len() >= LOG_OVERHEAD {
        let batch_length = i32::from_be_bytes([data[8], data[9], data[10], data[11]]);
        let batch_length =
            usize::try_from(batch_length).map_err(|_| format!("batch length {batch_length}"))?;
        let total = LOG_OVERHEAD + batch_length;
        if data.len() < total {
            break;
        }
        let mut batch = data.split_to(total);
        let set = RecordBatchDecoder::decode(&mut batch).map_err(|e| e.to_string())?;
        records.extend(set.records);
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(min: i16, max: i16) -> Option<VersionRange> {
        Some(VersionRange { min, max })
    }

    #[test]
    fn picks_the_highest_common_version() {
        let check = |api, broker, expect: Option<i16>| {
            assert_eq!(pick_version(api, broker), expect, "{api:?} {broker:?}")
        };
        check(ApiKey::Metadata, range(0, 12), Some(12));
        check(ApiKey::Metadata, range(0, 99), Some(13));
        check(ApiKey::Fetch, range(4, 17), Some(FETCH_VERSION_MAX));
        check(ApiKey::Produce, range(3, 11), Some(11));
        check(ApiKey::Produce, range(0, 2), None);
        check(ApiKey::CreateTopics, None, None);
    }

    #[test]
    fn batches_round_trip_with_every_compression() {
        let records = vec![
            ProduceRecord::new("v0")
                .with_key("k0")
                .with_timestamp(1_000),
            ProduceRecord {
                value: None,
                ..ProduceRecord::new("")
            }
            .with_header("h", "x"),
            ProduceRecord::new(vec![0u8; 3000]),
        ];
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let batch = encode_batch(&records, compression, 5_000).unwrap();
            let info = RecordBatchDecoder::decode_batch_info(&mut batch.clone()).unwrap();
            assert_eq!(info.len(), 1, "one batch");
            assert_eq!(info[0].base_sequence, -1);
            assert_eq!(info[0].producer_id, -1);
            assert_eq!(info[0].compression, compression);
            let decoded = decode_batches(batch.clone()).unwrap();
            assert_eq!(decoded.len(), 3, "{compression:?}");
            assert_eq!(decoded[0].key.as_deref(), Some(&b"k0"[..]));
            assert_eq!(decoded[0].timestamp, 1_000);
            assert_eq!(decoded[1].value, None);
            assert_eq!(decoded[1].timestamp, 5_000);
            assert_eq!(
                decoded[1]
                    .headers
                    .get(&b"h"[..])
                    .cloned()
                    .flatten()
                    .as_deref(),
                Some(&b"x"[..])
            );
            assert_eq!(decoded[2].offset, 2);
            assert_eq!(decoded[2].value.as_ref().map(Bytes::len), Some(3000));

            // A truncated tail batch is dropped, not an error.
            let mut two = BytesMut::from(&batch[..]);
            two.extend_from_slice(&batch[..batch.len() - 1]);
            assert_eq!(decode_batches(two.freeze()).unwrap().len(), 3);
        }
    }

    #[test]
    fn corrupt_batches_are_errors_not_panics() {
        let batch = encode_batch(&[ProduceRecord::new("v")], Compression::None, 0).unwrap();
        let mut corrupt = BytesMut::from(&batch[..]);
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        assert!(decode_batches(corrupt.freeze()).is_err());
        let mut negative = BytesMut::from(&batch[..]);
        negative[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        assert!(decode_batches(negative.freeze()).is_err());
    }
}
