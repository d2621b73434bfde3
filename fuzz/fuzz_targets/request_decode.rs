//! Any bytes as a Kafka request frame: decoding must answer Ok or Err, never panic or abort.
//! The broker's allocator is installed, as in the `lakestream` binary, so that the codec's
//! up-front reservations behave as they do in production.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOCATOR: broker::alloc::LazyLargeAllocator = broker::alloc::LazyLargeAllocator;

fuzz_target!(|data: &[u8]| {
    let _ = broker::server::decode_request(bytes::Bytes::copy_from_slice(data));
});
