//! Any bytes as a Kafka request frame: decoding must answer Ok or Err, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = broker::server::decode_request(bytes::Bytes::copy_from_slice(data));
});
