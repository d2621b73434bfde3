//! Every bound the broker puts on what grows, in one place, each with its reason.

/// Largest request frame accepted (Kafka's `socket.request.max.bytes` default, 100 MiB).
/// A larger (or negative) length prefix closes the connection before anything is allocated.
pub const SOCKET_REQUEST_MAX_BYTES: usize = 100 * 1024 * 1024;

/// Requests of one connection that may be decoded but not yet answered. Clients pipeline
/// (librdkafka keeps up to 5 produce requests in flight); past this bound the connection stops
/// reading until answers drain, so one client cannot queue unbounded work or memory.
pub const IN_FLIGHT_REQUESTS_PER_CONNECTION: usize = 32;

/// Upper bound on what one Fetch response carries in total, whatever the client asks for
/// (Kafka's `fetch.max.bytes` broker default is 55 MiB).
pub const FETCH_RESPONSE_MAX_BYTES: usize = 55 * 1024 * 1024;

/// Longest a Fetch may wait for data (clients send `fetch.wait.max.ms`, 500 ms by default).
pub const FETCH_MAX_WAIT_MS: u64 = 30_000;

/// Partitions a topic may have: each is a directory with open files.
pub const PARTITIONS_PER_TOPIC_MAX: i32 = 10_000;

/// Longest topic name (Kafka's limit; the name becomes a directory name).
pub const TOPIC_NAME_MAX_LEN: usize = 249;

/// Batches remembered per producer and partition for duplicate detection
/// (Kafka keeps 5, matching `max.in.flight.requests.per.connection` for idempotence).
pub const PRODUCER_BATCHES_REMEMBERED: usize = 5;

/// Connections served at once; further accepts wait for one to close.
pub const CONNECTIONS_MAX: usize = 10_000;

/// Most bytes one stored batch may decompress to when the broker must look inside it (ListOffsets
/// by timestamp on a compressed batch). A batch is at most `max.message.bytes` compressed; this
/// bound refuses a decompression bomb instead of allocating its output.
pub const DECOMPRESSED_BATCH_MAX_BYTES: usize = 64 * 1024 * 1024;
