//! Bounds the people-facing commands put on what grows, with the reason for each number.

use std::time::Duration;

/// Records per produce request and partition. Big enough that piping a file is not one request
/// per line, small enough that a request stays far below any broker's message size limit.
pub const PRODUCE_BATCH_RECORDS_MAX: usize = 1000;

/// Bytes (roughly) per produce request and partition, for the same reasons; Kafka's default
/// `max.request.size` is 1 MiB.
pub const PRODUCE_BATCH_BYTES_MAX: usize = 1024 * 1024;

/// How long `produce` holds records back waiting for more before it sends what it has, so
/// that lines typed by hand show up promptly while piped input still batches.
pub const PRODUCE_LINGER: Duration = Duration::from_millis(100);

/// Longest stdin line `produce` accepts: one line is one record, and Kafka's default
/// `max.message.bytes` is about 1 MiB, so a longer record would be refused anyway.
pub const PRODUCE_LINE_BYTES_MAX: usize = 1024 * 1024;

/// Lines read ahead from stdin while a produce request is in flight: one full batch, so the
/// reader keeps up, and with [`PRODUCE_LINE_BYTES_MAX`] at most 1 GiB even for absurd input.
pub const PRODUCE_READ_AHEAD_LINES: usize = PRODUCE_BATCH_RECORDS_MAX;

/// Bytes one fetch may return, per partition and in total.
pub const CONSUME_FETCH_BYTES_MAX: i32 = 4 * 1024 * 1024;

/// How long the broker may hold a fetch open waiting for new records.
pub const CONSUME_FETCH_WAIT_MS: i32 = 500;

/// The same with `--exit`, where waiting only delays noticing the end.
pub const CONSUME_EXIT_FETCH_WAIT_MS: i32 = 50;
