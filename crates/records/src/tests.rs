use proptest::prelude::*;

use super::*;

fn simple(count: usize) -> Vec<u8> {
    let mut builder = BatchBuilder::new(0);
    for i in 0..count {
        builder = builder.record(
            Some(format!("k{i}").as_bytes()),
            Some(b"value"),
            1_000 + i as i64,
        );
    }
    builder.build()
}

/// Writes `bytes` at `at`, then recomputes the CRC so only the edited field is wrong.
fn edit(mut batch: Vec<u8>, at: usize, bytes: &[u8]) -> Vec<u8> {
    batch[at..at + bytes.len()].copy_from_slice(bytes);
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    batch
}

fn check(batch: &[u8], expect: Result<(), RecordError>) {
    assert_eq!(validate_batch(batch).map(|_| ()), expect);
}

fn invalid(index: i32, reason: &'static str) -> Result<(), RecordError> {
    Err(RecordError::InvalidRecord { index, reason })
}

#[test]
fn valid_batches() {
    check(&simple(1), Ok(()));
    check(&simple(3), Ok(()));
    check(&BatchBuilder::new(7).record(None, None, -1).build(), Ok(()));
    check(
        &BatchBuilder::new(0)
            .record(Some(&[0; 300]), Some(&[1; 70_000]), 5)
            .build(),
        Ok(()),
    );
    check(
        &BatchBuilder::new(0)
            .record_with_headers(None, Some(b"v"), 1, &[(b"h", None)])
            .build(),
        Ok(()),
    );
    check(
        &BatchBuilder::new(0)
            .opaque_payload(Compression::Zstd, 5, 9, b"garbage")
            .build(),
        Ok(()),
    );
    check(
        &BatchBuilder::new(0)
            .opaque_payload(Compression::Gzip, 1, 9, b"")
            .build(),
        Ok(()),
    );
}

#[test]
fn invalid_framing() {
    let batch = simple(2);
    let len = batch.len();
    check(
        &batch[..60],
        Err(RecordError::Truncated {
            needed: 61,
            available: 60,
        }),
    );
    check(
        &batch[..len - 1],
        Err(RecordError::Truncated {
            needed: len,
            available: len - 1,
        }),
    );
    check(
        &edit(batch.clone(), MAGIC_AT, &[1]),
        Err(RecordError::BadMagic { magic: 1 }),
    );
    check(
        &edit(batch.clone(), BATCH_LENGTH_AT, &48i32.to_be_bytes()),
        Err(RecordError::InvalidBatchLength { batch_length: 48 }),
    );
    check(
        &edit(batch.clone(), BATCH_LENGTH_AT, &(-1i32).to_be_bytes()),
        Err(RecordError::InvalidBatchLength { batch_length: -1 }),
    );
    check(
        &edit(batch.clone(), ATTRIBUTES_AT, &7i16.to_be_bytes()),
        Err(RecordError::UnknownCompression { codec: 7 }),
    );
}

#[test]
fn crc_mismatch() {
    let mut batch = simple(1);
    let last = batch.len() - 1;
    batch[last] ^= 1;
    assert!(matches!(
        validate_batch(&batch),
        Err(RecordError::CorruptMessage { .. })
    ));
}

#[test]
fn invalid_counts() {
    let count = |record_count: i32, last_offset_delta: i32| {
        Err(RecordError::InvalidRecordCount {
            record_count,
            last_offset_delta,
        })
    };
    check(&BatchBuilder::new(0).build(), count(0, -1));
    check(&edit(simple(2), 23, &5i32.to_be_bytes()), count(2, 5));
    check(&edit(simple(2), 57, &1i32.to_be_bytes()), count(1, 1));
    // Both fields agree but the records say otherwise.
    let three = edit(
        edit(simple(2), 23, &2i32.to_be_bytes()),
        57,
        &3i32.to_be_bytes(),
    );
    check(
        &three,
        invalid(2, "batch holds fewer records than its record count"),
    );
    let one = edit(
        edit(simple(2), 23, &0i32.to_be_bytes()),
        57,
        &1i32.to_be_bytes(),
    );
    check(&one, invalid(1, "bytes left after the last record"));
}

#[test]
fn invalid_records() {
    // First record starts at 61: length varint, attributes, timestampDelta, offsetDelta, key...
    let batch = simple(1);
    check(
        &edit(batch.clone(), 61, &[0x01]),
        invalid(0, "negative record length"),
    );
    check(
        &edit(batch.clone(), 61, &[0x7e]),
        invalid(0, "record length runs past the batch"),
    );
    check(
        &edit(batch.clone(), 61, &[0x02]),
        invalid(0, "record runs past its length"),
    );
    let two = simple(2);
    let longer = two[61] + 2; // zigzag: one byte more
    check(
        &edit(two, 61, &[longer]),
        invalid(0, "record length does not match its fields"),
    );
    check(
        &edit(batch.clone(), 64, &[0x02]),
        invalid(0, "offset delta is not the record's position in the batch"),
    );
    check(
        &edit(batch.clone(), 65, &[0x03]),
        invalid(0, "negative field length"),
    );
    check(
        &edit(batch.clone(), 65, &[0x7e]),
        invalid(0, "field runs past the record"),
    );
    let long_varint = edit(batch.clone(), 64, &[0xff, 0xff, 0xff, 0xff, 0xff]);
    check(&long_varint, invalid(0, "varint longer than 5 bytes"));
    let null_header = BatchBuilder::new(0).record_with_headers(None, None, 1, &[(b"h", None)]);
    let mut bytes = null_header.build();
    // record: len, attr, tsDelta, offDelta, key(-1), value(-1), headerCount(1), headerKeyLen(1)
    let header_key_at = 61 + 7;
    assert_eq!(bytes[header_key_at], 0x02);
    bytes = edit(bytes, header_key_at, &[0x01]);
    check(&bytes, invalid(0, "null header key"));
}

#[test]
fn header_fields_and_helpers() {
    let producer = ProducerIdentity {
        producer_id: 9,
        producer_epoch: 2,
        base_sequence: 5,
    };
    let batch = BatchBuilder::new(100)
        .producer(producer)
        .partition_leader_epoch(3)
        .transactional(true)
        .record(None, Some(b"a"), 50)
        .record(None, Some(b"b"), 40)
        .record(None, Some(b"c"), 70)
        .build();
    let header = validate_batch(&batch).unwrap();
    assert_eq!(header.base_offset, 100);
    assert_eq!(header.last_offset(), 102);
    assert_eq!(header.total_len(), batch.len());
    assert_eq!(header.partition_leader_epoch, 3);
    assert_eq!((header.base_timestamp, header.max_timestamp), (50, 70));
    assert_eq!(
        (
            header.producer_id,
            header.producer_epoch,
            header.base_sequence
        ),
        (9, 2, 5)
    );
    assert_eq!(header.last_sequence(), 7);
    assert!(header.is_transactional() && !header.is_control());
    assert_eq!(header.timestamp_type(), TimestampType::CreateTime);
    assert_eq!(header.compression(), Ok(Compression::None));
    let timestamps: Vec<i64> = records(&batch)
        .unwrap()
        .map(|r| header.base_timestamp + r.unwrap().timestamp_delta)
        .collect();
    assert_eq!(timestamps, [50, 40, 70]);
}

#[test]
fn last_sequence_wraps() {
    let mut header = BatchHeader::parse(&simple(1)).unwrap();
    let cases = [
        (-1, 4, -1),
        (0, 0, 0),
        (0, 4, 4),
        (i32::MAX, 0, i32::MAX),
        (i32::MAX, 1, 0),
        (i32::MAX - 1, 3, 1),
    ];
    for (base_sequence, last_offset_delta, expect) in cases {
        header.base_sequence = base_sequence;
        header.last_offset_delta = last_offset_delta;
        assert_eq!(
            header.last_sequence(),
            expect,
            "{base_sequence} + {last_offset_delta}"
        );
    }
}

#[test]
fn records_and_headers_are_borrowed() {
    let batch = BatchBuilder::new(0)
        .record_with_headers(Some(b"key"), None, 10, &[(b"a", Some(b"1")), (b"b", None)])
        .record(None, Some(b"v2"), 12)
        .build();
    let all: Vec<Record> = records(&batch).unwrap().map(Result::unwrap).collect();
    assert_eq!(all.len(), 2);
    assert_eq!(
        (all[0].key, all[0].value, all[0].offset_delta),
        (Some(&b"key"[..]), None, 0)
    );
    let headers: Vec<Header> = all[0].headers().collect();
    assert_eq!(
        headers,
        [
            Header {
                key: b"a",
                value: Some(b"1")
            },
            Header {
                key: b"b",
                value: None
            }
        ]
    );
    assert_eq!(
        (all[1].key, all[1].value, all[1].timestamp_delta),
        (None, Some(&b"v2"[..]), 2)
    );
    let compressed = BatchBuilder::new(0)
        .opaque_payload(Compression::Lz4, 1, 0, b"x")
        .build();
    assert!(matches!(
        records(&compressed),
        Err(RecordError::Compressed {
            compression: Compression::Lz4
        })
    ));
}

#[test]
fn mutators() {
    let mut batch = simple(2);
    set_base_offset(&mut batch, 1 << 40).unwrap();
    set_partition_leader_epoch(&mut batch, 12).unwrap();
    let header = validate_batch(&batch).unwrap();
    assert_eq!(
        (header.base_offset, header.partition_leader_epoch),
        (1 << 40, 12)
    );

    set_log_append_time(&mut batch, 99_999).unwrap();
    let after = validate_batch(&batch).unwrap();
    assert_eq!(after.timestamp_type(), TimestampType::LogAppendTime);
    assert_eq!(
        (after.base_timestamp, after.max_timestamp),
        (header.base_timestamp, 99_999)
    );
    assert_eq!(after.compression(), Ok(Compression::None));

    let mut short = vec![0u8; 10];
    assert!(set_base_offset(&mut short, 1).is_err());
    assert!(set_log_append_time(&mut short, 1).is_err());
}

#[test]
fn record_sets() {
    let mut set = simple(1);
    set.extend(simple(3));
    set.extend(
        BatchBuilder::new(0)
            .opaque_payload(Compression::Snappy, 2, 1, b"zz")
            .build(),
    );
    let ranges: Vec<_> = batches(&set).map(|b| b.unwrap().1).collect();
    assert_eq!(ranges.len(), 3);
    assert_eq!(ranges[2].end, set.len());
    assert_eq!(validate_record_set(&set).unwrap().len(), 3);
    assert_eq!(validate_record_set(&[]), Err(RecordError::EmptyRecordSet));

    set.extend_from_slice(&[0; 5]);
    let results: Vec<_> = batches(&set).collect();
    assert_eq!(results.len(), 4);
    assert!(matches!(results[3], Err(RecordError::Truncated { .. })));
    assert!(validate_record_set(&set).is_err());
}

#[test]
fn stored_batches_tolerate_compaction_gaps() {
    // A compacted batch keeps its last offset delta but holds fewer records.
    let compacted = edit(simple(2), 23, &4i32.to_be_bytes());
    assert!(validate_batch(&compacted).is_err());
    assert_eq!(validate_stored_batch(&compacted).unwrap().last_offset(), 4);
    let empty = edit(BatchBuilder::new(0).build(), 23, &3i32.to_be_bytes());
    assert_eq!(validate_stored_batch(&empty).unwrap().record_count, 0);
    let too_many = edit(simple(3), 23, &0i32.to_be_bytes());
    assert!(validate_stored_batch(&too_many).is_err());
    assert_eq!(stored_batches(&compacted).count(), 1);
}

#[test]
fn own_batches_skip_only_the_crc() {
    let batch = simple(3);
    // A flipped byte in the records: the CRC no longer matches.
    let mut flipped = batch.clone();
    *flipped.last_mut().unwrap() ^= 1;
    assert!(matches!(
        validate_stored_batch(&flipped),
        Err(RecordError::CorruptMessage { .. })
    ));
    assert_eq!(validate_own_batch(&flipped).unwrap().record_count, 3);
    assert_eq!(own_batches(&flipped).count(), 1);
    // Framing and counts are still checked.
    assert!(matches!(
        validate_own_batch(&batch[..batch.len() - 1]),
        Err(RecordError::Truncated { .. })
    ));
    let too_many = edit(simple(3), 23, &0i32.to_be_bytes());
    assert!(validate_own_batch(&too_many).is_err());
    let bad_codec = edit(simple(1), 22, &[7]);
    assert!(validate_own_batch(&bad_codec).is_err());
}

fn arb_record() -> impl Strategy<Value = (Option<Vec<u8>>, Option<Vec<u8>>, i64)> {
    (
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
        any::<i64>().prop_map(|t| t >> 2),
    )
}

fn arb_batch() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<i64>(),
        proptest::collection::vec(arb_record(), 1..8),
        proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..8), any::<bool>()),
            0..3,
        ),
    )
        .prop_map(|(base_offset, records, headers)| {
            let headers: Vec<(&[u8], Option<&[u8]>)> = headers
                .iter()
                .map(|(h, null)| (&h[..], if *null { None } else { Some(&h[..]) }))
                .collect();
            let mut builder = BatchBuilder::new(base_offset);
            for (key, value, timestamp) in &records {
                builder = builder.record_with_headers(
                    key.as_deref(),
                    value.as_deref(),
                    *timestamp,
                    &headers,
                );
            }
            builder.build()
        })
}

proptest! {
    #[test]
    fn builder_output_validates(batch in arb_batch()) {
        let header = validate_batch(&batch).unwrap();
        prop_assert_eq!(header.total_len(), batch.len());
        prop_assert_eq!(records(&batch).unwrap().filter(Result::is_ok).count() as i32, header.record_count);
    }

    #[test]
    fn corruption_in_crc_range_is_rejected(batch in arb_batch(), at in any::<prop::sample::Index>(), flip in 1u8..) {
        let mut batch = batch;
        let at = CRC_START + at.index(batch.len() - CRC_START);
        batch[at] ^= flip;
        prop_assert!(validate_batch(&batch).is_err());
        prop_assert!(validate_stored_batch(&batch).is_err());
    }

    #[test]
    fn corruption_of_crc_field_is_rejected(batch in arb_batch(), at in CRC_AT..CRC_AT + 4, flip in 1u8..) {
        let mut batch = batch;
        batch[at] ^= flip;
        let corrupt = matches!(validate_batch(&batch), Err(RecordError::CorruptMessage { .. }));
        prop_assert!(corrupt);
    }

    #[test]
    fn truncation_is_rejected(batch in arb_batch()) {
        for len in 0..batch.len() {
            prop_assert!(validate_batch(&batch[..len]).is_err());
            prop_assert!(validate_stored_batch(&batch[..len]).is_err());
            prop_assert!(batches(&batch[..len]).any(|b| b.is_err()) || len == 0);
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = validate_batch(&bytes);
        let _ = validate_stored_batch(&bytes);
        let _ = batches(&bytes).count();
        if let Ok(iter) = records(&bytes) {
            for record in iter.flatten() {
                let _ = record.headers().count();
            }
        }
    }

    #[test]
    fn random_records_after_a_valid_header_never_panic(
        batch in arb_batch(),
        body in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        // Keep the header, replace the records with random bytes and fix up length and CRC,
        // so the record walker (not the CRC) has to reject them.
        let mut bytes = batch[..BATCH_HEADER_LEN].to_vec();
        bytes.extend_from_slice(&body);
        let batch_length = (bytes.len() - LOG_OVERHEAD) as i32;
        let bytes = edit(bytes, BATCH_LENGTH_AT, &batch_length.to_be_bytes());
        let _ = validate_batch(&bytes);
    }

    #[test]
    fn log_append_time_keeps_batch_valid(batch in arb_batch(), ts in any::<i64>()) {
        let mut batch = batch;
        set_log_append_time(&mut batch, ts).unwrap();
        let header = validate_batch(&batch).unwrap();
        prop_assert_eq!(header.max_timestamp, ts);
        prop_assert_eq!(header.timestamp_type(), TimestampType::LogAppendTime);
    }
}

/// Walks `batch` (uncompressed) and writes every record again with [`BatchEncoder`].
fn re_encode(batch: &[u8]) -> Vec<u8> {
    let header = BatchHeader::parse(batch).unwrap();
    let mut out = vec![0xaa; 3]; // the encoder appends after whatever is there
    let mut encoder = BatchEncoder::begin(&mut out, &header);
    for record in records(batch).unwrap() {
        let record = record.unwrap();
        let fields = RecordFields {
            attributes: record.attributes,
            timestamp_delta: record.timestamp_delta,
            offset_delta: record.offset_delta,
            key: record.key,
            value: record.value,
        };
        encoder.record(&mut out, &fields, record.headers()).unwrap();
    }
    let range = encoder.finish(&mut out).unwrap();
    assert_eq!(range, 3..out.len());
    out.split_off(3)
}

#[test]
fn encoder_clears_the_codec_bits_and_counts_records() {
    let batch = BatchBuilder::new(5)
        .transactional(true)
        .record_with_headers(Some(b""), None, 10, &[(b"", None), (b"h", Some(b""))])
        .record(None, Some(b"v"), 7)
        .build();
    let mut header = BatchHeader::parse(&batch).unwrap();
    header.attributes |= Compression::Zstd.codec();
    header.record_count = 99;
    let mut out = Vec::new();
    let encoder = BatchEncoder::begin(&mut out, &header);
    assert_eq!(encoder.record_count(), 0);
    encoder.finish(&mut out).unwrap();
    let empty = validate_stored_batch(&out).unwrap();
    assert_eq!(empty.compression(), Ok(Compression::None));
    assert!(empty.is_transactional());
    assert_eq!(empty.record_count, 0);
    assert_eq!(re_encode(&batch), batch);
}

#[test]
fn records_in_a_section_are_walked_like_a_batch() {
    let batch = simple(3);
    let section = &batch[BATCH_HEADER_LEN..];
    let from_section: Vec<_> = records_in_section(section, 3).collect();
    let from_batch: Vec<_> = records(&batch).unwrap().collect();
    assert_eq!(from_section, from_batch);
    assert_eq!(from_section.len(), 3);
    assert!(records_in_section(section, 4).any(|r| r.is_err()));
    assert!(records_in_section(section, 2).any(|r| r.is_err()));
    assert!(records_in_section(&section[..section.len() - 1], 3).any(|r| r.is_err()));
}

proptest! {
    #[test]
    fn encoder_reproduces_builder_bytes(batch in arb_batch()) {
        prop_assert_eq!(re_encode(&batch), batch);
    }
}
