//! Connections: frames in, requests decoded, answers written back in request order.
//!
//! Each connection has a reader (this task) and a writer task joined by a bounded queue of
//! replies. The reader runs the synchronous part of each request in arrival order (appends happen
//! here, so a producer's pipelined batches are appended in the order sent); a reply that must wait
//! (acks=all durability, a long-polling fetch) is queued as a future, and the writer awaits the
//! replies one after the other. A malformed frame closes only its own connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Encodable, decode_request_header_from_buffer};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};

use crate::Broker;
use crate::handlers;
use crate::limits::{CONNECTIONS_MAX, IN_FLIGHT_REQUESTS_PER_CONNECTION, SOCKET_REQUEST_MAX_BYTES};

pub type Pending = Pin<Box<dyn Future<Output = ResponseKind> + Send>>;

/// The answer to one request.
// Moved once per request; boxing the common case would cost an allocation each time.
#[allow(clippy::large_enum_variant)]
pub enum Reply {
    Now(ResponseKind),
    Later(Pending),
    /// acks=0 produce: Kafka sends nothing back.
    Nothing,
}

struct Outgoing {
    correlation_id: i32,
    api_key: ApiKey,
    version: i16,
    reply: Reply,
}

/// Accepts connections until the listener fails.
pub async fn serve(broker: Arc<Broker>, listener: TcpListener) {
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let permit = slots
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore is never closed");
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let broker = broker.clone();
        tokio::spawn(async move {
            if let Err(reason) = connection(broker, stream, peer.ip().to_string()).await {
                tracing::info!(%peer, %reason, "closing connection");
            }
            drop(permit);
        });
    }
}

async fn connection(
    broker: Arc<Broker>,
    stream: TcpStream,
    client_host: String,
) -> Result<(), String> {
    let (mut reader, writer) = stream.into_split();
    let (sender, receiver) = mpsc::channel::<Outgoing>(IN_FLIGHT_REQUESTS_PER_CONNECTION);
    let writer_task = tokio::spawn(write_replies(
        BufWriter::with_capacity(256 * 1024, writer),
        receiver,
    ));
    let result = async {
        loop {
            let mut length = [0u8; 4];
            match reader.read_exact(&mut length).await {
                Ok(_) => {}
                Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(error) => return Err(format!("read failed: {error}")),
            }
            let length = i32::from_be_bytes(length);
            if length < 0 || length as usize > SOCKET_REQUEST_MAX_BYTES {
                return Err(format!(
                    "request frame of {length} bytes is outside 0..={SOCKET_REQUEST_MAX_BYTES} (socket.request.max.bytes)"
                ));
            }
            let mut frame = BytesMut::zeroed(length as usize);
            reader
                .read_exact(&mut frame)
                .await
                .map_err(|error| format!("read failed mid-frame: {error}"))?;
            let outgoing = handle_frame(&broker, &client_host, frame.freeze())?;
            if sender.send(outgoing).await.is_err() {
                return Err("writer stopped".to_string());
            }
        }
    }
    .await;
    drop(sender);
    let _ = writer_task.await;
    result
}

/// A request frame after decoding.
#[allow(clippy::large_enum_variant)]
pub enum Decoded {
    Request {
        api_key: ApiKey,
        version: i16,
        correlation_id: i32,
        client_id: String,
        request: RequestKind,
    },
    /// An ApiVersions request of a version this broker does not implement.
    UnsupportedApiVersions { correlation_id: i32 },
}

/// Decodes one request frame (without its length prefix). Never panics on any input; an error
/// says why the connection must close.
pub fn decode_request(mut frame: Bytes) -> Result<Decoded, String> {
    if frame.len() < 8 {
        return Err(format!(
            "request frame of {} bytes is too short for a header",
            frame.len()
        ));
    }
    let api_key_raw = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api_key =
        ApiKey::try_from(api_key_raw).map_err(|_| format!("unknown api key {api_key_raw}"))?;
    let Some((min, max)) = handlers::api_versions::supported(api_key) else {
        return Err(format!("api {api_key:?} is not supported"));
    };
    if version < min || version > max {
        if api_key == ApiKey::ApiVersions {
            return Ok(Decoded::UnsupportedApiVersions { correlation_id });
        }
        return Err(format!(
            "{api_key:?} v{version} is not supported (supported: v{min}..=v{max})"
        ));
    }
    let header = decode_request_header_from_buffer(&mut frame)
        .map_err(|error| format!("malformed {api_key:?} request header: {error}"))?;
    let client_id = header
        .client_id
        .map(|id| id.to_string())
        .unwrap_or_default();
    let request = RequestKind::decode(api_key, &mut frame, version)
        .map_err(|error| format!("malformed {api_key:?} v{version} request: {error}"))?;
    Ok(Decoded::Request {
        api_key,
        version,
        correlation_id,
        client_id,
        request,
    })
}

/// Decodes one frame and runs its synchronous part. An error closes the connection.
fn handle_frame(broker: &Arc<Broker>, client_host: &str, frame: Bytes) -> Result<Outgoing, String> {
    match decode_request(frame)? {
        // Kafka answers an ApiVersions it cannot parse with a v0 response listing what it
        // supports, so the client can pick a version and retry.
        Decoded::UnsupportedApiVersions { correlation_id } => Ok(Outgoing {
            correlation_id,
            api_key: ApiKey::ApiVersions,
            version: 0,
            reply: Reply::Now(handlers::api_versions::unsupported_version()),
        }),
        Decoded::Request {
            api_key,
            version,
            correlation_id,
            client_id,
            request,
        } => {
            let context = handlers::Context {
                version,
                client_id,
                client_host,
            };
            let reply = handlers::dispatch(broker, request, &context);
            Ok(Outgoing {
                correlation_id,
                api_key,
                version,
                reply,
            })
        }
    }
}

async fn write_replies(
    mut writer: BufWriter<tokio::net::tcp::OwnedWriteHalf>,
    mut receiver: mpsc::Receiver<Outgoing>,
) {
    let mut buffer = BytesMut::with_capacity(64 * 1024);
    while let Some(mut outgoing) = receiver.recv().await {
        let response = match std::mem::replace(&mut outgoing.reply, Reply::Nothing) {
            Reply::Now(response) => response,
            Reply::Later(pending) => pending.await,
            Reply::Nothing => continue,
        };
        buffer.clear();
        if let Err(error) = encode_response(&mut buffer, &outgoing, &response) {
            tracing::error!(api = ?outgoing.api_key, %error, "could not encode a response");
            return;
        }
        if writer.write_all(&buffer).await.is_err() {
            return;
        }
        // Flush only when no other answer is ready, so pipelined answers share one write.
        if receiver.is_empty() && writer.flush().await.is_err() {
            return;
        }
    }
    let _ = writer.flush().await;
}

fn encode_response(
    buffer: &mut BytesMut,
    outgoing: &Outgoing,
    response: &ResponseKind,
) -> Result<(), String> {
    buffer.put_i32(0);
    let header = ResponseHeader::default().with_correlation_id(outgoing.correlation_id);
    let header_version = outgoing.api_key.response_header_version(outgoing.version);
    header
        .encode(buffer, header_version)
        .map_err(|error| error.to_string())?;
    response
        .encode(buffer, outgoing.version)
        .map_err(|error| error.to_string())?;
    let length = (buffer.len() - 4) as i32;
    buffer[..4].copy_from_slice(&length.to_be_bytes());
    Ok(())
}
