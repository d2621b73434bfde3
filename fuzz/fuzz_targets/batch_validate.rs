//! Batch decoding must never panic on any bytes, and must agree with itself: a batch accepted
//! as from a producer is accepted as stored, and rewriting the broker-owned fields keeps it
//! valid.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let strict = records::validate_batch(data);
    let stored = records::validate_stored_batch(data);
    if let Ok(header) = &strict {
        assert_eq!(stored.as_ref().ok(), Some(header));
        let mut batch = data[..header.total_len()].to_vec();
        records::set_base_offset(&mut batch, 12345).unwrap();
        records::set_log_append_time(&mut batch, 67890).unwrap();
        let rewritten = records::validate_batch(&batch).unwrap();
        assert_eq!((rewritten.base_offset, rewritten.max_timestamp), (12345, 67890));
    }
    let mut end = 0;
    for batch in records::batches(data) {
        let Ok((_, range)) = batch else { break };
        assert_eq!(range.start, end);
        end = range.end;
    }
    for batch in records::stored_batches(data).flatten() {
        if let Ok(iter) = records::records(&data[batch.1]) {
            for record in iter.flatten() {
                let _ = record.headers().count();
            }
        }
    }
});
