//! Every bound the client puts on what grows, with the reason for each number.

use std::time::Duration;

/// Largest response frame the client accepts. A fetch answers with at most the `max_bytes` the
/// client asked for (plus a little framing), so 256 MiB is far above anything legitimate; a larger
/// length prefix means a confused or hostile peer, and reading it would exhaust memory.
pub const MAX_RESPONSE_FRAME_BYTES: usize = 256 * 1024 * 1024;

/// How long to wait for the TCP connection to be accepted. A local or LAN broker answers in
/// milliseconds; ten seconds covers a slow start without hanging a script forever.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a request may take beyond the time the request itself asks the broker to wait
/// (a fetch's `max_wait_ms`, an admin request's `timeout_ms`).
pub const REQUEST_TIMEOUT_MARGIN: Duration = Duration::from_secs(30);

/// The `timeout_ms` sent with admin and produce requests.
pub const BROKER_TIMEOUT_MS: i32 = 30_000;

/// Highest Produce version used: v13 addresses topics by id, which this client does not track.
pub const PRODUCE_VERSION_MAX: i16 = 12;

/// Highest Fetch version used: v13 addresses topics by id, which this client does not track.
pub const FETCH_VERSION_MAX: i16 = 12;
