//! The client against a scripted fake broker: version negotiation, framing, correlation ids,
//! error mapping. The fake broker uses kafka-protocol's broker-side codecs.

use bytes::{BufMut, Bytes, BytesMut};
use client::{Client, Error, ResponseError};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, CreateTopicsRequest, CreateTopicsResponse, MetadataRequest,
    MetadataResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes, decode_request_header_from_buffer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the fake broker does with one request.
enum Reply {
    /// Answer with this body, encoded at the request's version.
    Body(Bytes),
    /// Answer with this body under another correlation id.
    WrongCorrelation(Bytes),
    /// Send only a length prefix.
    RawLength(i32),
}

fn encode<T: Encodable>(message: &T, version: i16) -> Bytes {
    let mut buf = BytesMut::new();
    message.encode(&mut buf, version).unwrap();
    buf.freeze()
}

fn api_versions(ranges: &[(ApiKey, i16, i16)]) -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(
        ranges
            .iter()
            .map(|&(key, min, max)| {
                ApiVersion::default()
                    .with_api_key(key as i16)
                    .with_min_version(min)
                    .with_max_version(max)
            })
            .collect(),
    )
}

/// Starts a one-connection fake broker; `handler` sees each request header and body.
async fn fake_broker<F>(mut handler: F) -> String
where
    F: FnMut(&RequestHeader, Bytes) -> Reply + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        while let Ok(size) = stream.read_i32().await {
            let mut frame = vec![0; size as usize];
            stream.read_exact(&mut frame).await.unwrap();
            let mut frame = Bytes::from(frame);
            let header = decode_request_header_from_buffer(&mut frame).unwrap();
            let reply = handler(&header, frame);
            write_reply(&mut stream, &header, reply).await;
        }
    });
    address
}

async fn write_reply(stream: &mut TcpStream, request: &RequestHeader, reply: Reply) {
    let api = ApiKey::try_from(request.request_api_key).unwrap();
    let header_version = api.response_header_version(request.request_api_version);
    let (correlation_id, body) = match reply {
        Reply::Body(body) => (request.correlation_id, body),
        Reply::WrongCorrelation(body) => (request.correlation_id + 100, body),
        Reply::RawLength(length) => {
            stream.write_i32(length).await.unwrap();
            return;
        }
    };
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let mut frame = BytesMut::new();
    frame.put_i32(0);
    header.encode(&mut frame, header_version).unwrap();
    frame.extend_from_slice(&body);
    let length = (frame.len() - 4) as i32;
    frame[..4].copy_from_slice(&length.to_be_bytes());
    stream.write_all(&frame).await.unwrap();
}

const BROKER_VERSIONS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::Metadata, 0, 9),
    (ApiKey::Fetch, 4, 17),
    (ApiKey::Produce, 3, 11),
    (ApiKey::CreateTopics, 2, 7),
];

/// Answers ApiVersions, and hands everything else to `rest`.
fn with_api_versions<F>(mut rest: F) -> impl FnMut(&RequestHeader, Bytes) -> Reply + Send
where
    F: FnMut(&RequestHeader, Bytes) -> Reply + Send,
{
    move |header, body| {
        if header.request_api_key == ApiKey::ApiVersions as i16 {
            let version = header.request_api_version;
            Reply::Body(encode(&api_versions(BROKER_VERSIONS), version))
        } else {
            rest(header, body)
        }
    }
}

#[tokio::test]
async fn negotiates_versions_and_decodes_metadata() {
    let address = fake_broker(with_api_versions(|header, mut body| {
        assert_eq!(header.request_api_key, ApiKey::Metadata as i16);
        assert_eq!(header.request_api_version, 9);
        assert_eq!(header.client_id.as_deref(), Some("lakestream-client"));
        let request = MetadataRequest::decode(&mut body, 9).unwrap();
        assert_eq!(request.topics, None, "None asks for all topics");
        assert!(!request.allow_auto_topic_creation);
        let response = MetadataResponse::default()
            .with_cluster_id(Some(StrBytes::from_static_str("lakestream")))
            .with_brokers(vec![
                MetadataResponseBroker::default()
                    .with_node_id(0.into())
                    .with_host(StrBytes::from_static_str("127.0.0.1"))
                    .with_port(9092),
            ])
            .with_topics(vec![
                MetadataResponseTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_static_str("orders"))))
                    .with_partitions(vec![
                        MetadataResponsePartition::default()
                            .with_partition_index(0)
                            .with_leader_id(0.into()),
                    ]),
            ]);
        Reply::Body(encode(&response, 9))
    }))
    .await;
    let mut client = Client::connect(&address).await.unwrap();
    assert_eq!(client.api_version(ApiKey::Metadata), Some(9));
    assert_eq!(client.api_version(ApiKey::Fetch), Some(12), "capped at 12");
    assert_eq!(client.api_version(ApiKey::Produce), Some(11));
    assert_eq!(client.api_version(ApiKey::ListOffsets), None);

    let metadata = client.metadata(None).await.unwrap();
    assert_eq!(metadata.cluster_id.as_deref(), Some("lakestream"));
    assert_eq!(metadata.brokers[0].port, 9092);
    assert_eq!(metadata.topics[0].name, "orders");
    assert_eq!(metadata.topics[0].partitions[0].leader, 0);

    let missing = client.list_offsets("orders", 0, -1).await.unwrap_err();
    assert!(
        matches!(
            missing,
            Error::UnsupportedVersion {
                api: ApiKey::ListOffsets,
                ..
            }
        ),
        "{missing}"
    );
}

#[tokio::test]
async fn falls_back_when_the_broker_does_not_speak_api_versions_v3() {
    let mut seen = Vec::new();
    let address = fake_broker(move |header, _body| {
        seen.push(header.request_api_version);
        if header.request_api_version > 2 {
            // A broker answers an unknown ApiVersions version in the v0 layout.
            let response = api_versions(&[(ApiKey::ApiVersions, 0, 2), (ApiKey::Metadata, 0, 5)])
                .with_error_code(ResponseError::UnsupportedVersion.code());
            Reply::Body(encode(&response, 0))
        } else {
            assert_eq!(seen, [4, 2]);
            let response = api_versions(&[(ApiKey::ApiVersions, 0, 2), (ApiKey::Metadata, 0, 5)]);
            Reply::Body(encode(&response, 2))
        }
    })
    .await;
    let client = Client::connect(&address).await.unwrap();
    assert_eq!(client.api_version(ApiKey::Metadata), Some(5));
}

#[tokio::test]
async fn broker_errors_carry_kafka_names_and_messages() {
    let address = fake_broker(with_api_versions(|header, mut body| {
        let version = header.request_api_version;
        let request = CreateTopicsRequest::decode(&mut body, version).unwrap();
        assert_eq!(request.topics[0].num_partitions, 3);
        assert_eq!(request.topics[0].configs[0].name.as_str(), "retention.ms");
        let response = CreateTopicsResponse::default().with_topics(vec![
            CreatableTopicResult::default()
                .with_name(request.topics[0].name.clone())
                .with_error_code(ResponseError::TopicAlreadyExists.code())
                .with_error_message(Some(StrBytes::from_static_str("it is there"))),
        ]);
        Reply::Body(encode(&response, version))
    }))
    .await;
    let mut client = Client::connect(&address).await.unwrap();
    let error = client
        .create_topics("orders", 3, &[("retention.ms", "1000")])
        .await
        .unwrap_err();
    assert_eq!(error.kafka_error(), Some(ResponseError::TopicAlreadyExists));
    assert_eq!(
        error.to_string(),
        "the broker answered CreateTopics with TOPIC_ALREADY_EXISTS (error code 36) \
         for topic orders: it is there"
    );
}

#[tokio::test]
async fn a_wrong_correlation_id_is_an_error() {
    let address = fake_broker(with_api_versions(|_, _| {
        Reply::WrongCorrelation(encode(&MetadataResponse::default(), 9))
    }))
    .await;
    let mut client = Client::connect(&address).await.unwrap();
    let error = client.metadata(None).await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::CorrelationMismatch {
                expected: 1,
                actual: 101
            }
        ),
        "{error}"
    );
}

#[tokio::test]
async fn oversized_and_negative_frames_are_refused() {
    for length in [1 << 30, -7] {
        let address = fake_broker(with_api_versions(move |_, _| Reply::RawLength(length))).await;
        let mut client = Client::connect(&address).await.unwrap();
        let error = client.metadata(None).await.unwrap_err();
        assert!(matches!(error, Error::FrameTooLarge { .. }), "{error}");
    }
}

#[tokio::test]
async fn connection_refused_names_the_address() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    drop(listener);
    let error = Client::connect(&address).await.err().unwrap();
    assert!(matches!(error, Error::Connect { .. }), "{error}");
    assert!(error.to_string().contains(&address), "{error}");
}
