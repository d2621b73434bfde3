use std::io::Write;

use arrow_array::cast::AsArray;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use proptest::prelude::*;
use records::{
    BatchBuilder, ProducerIdentity, RecordFields, set_log_append_time, set_partition_leader_epoch,
    validate_batch, validate_stored_batch,
};

use super::*;

// ---------------------------------------------------------------------------------------------
// Helpers

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    Gzip,
    Snappy,
    XerialSnappy,
    Lz4,
    Zstd,
}

impl Codec {
    fn compression(self) -> Compression {
        match self {
            Codec::Gzip => Compression::Gzip,
            Codec::Snappy | Codec::XerialSnappy => Compression::Snappy,
            Codec::Lz4 => Compression::Lz4,
            Codec::Zstd => Compression::Zstd,
        }
    }

    fn compress(self, data: &[u8]) -> Vec<u8> {
        match self {
            Codec::Gzip => {
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                encoder.write_all(data).unwrap();
                encoder.finish().unwrap()
            }
            Codec::Snappy => snap::raw::Encoder::new().compress_vec(data).unwrap(),
            Codec::XerialSnappy => {
                let mut output = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
                for chunk in data.chunks(64) {
                    let block = snap::raw::Encoder::new().compress_vec(chunk).unwrap();
                    output.extend_from_slice(&(block.len() as u32).to_be_bytes());
                    output.extend_from_slice(&block);
                }
                output
            }
            Codec::Lz4 => {
                let mut encoder = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
                encoder.write_all(data).unwrap();
                let (output, result) = encoder.finish();
                result.unwrap();
                output
            }
            Codec::Zstd => zstd::encode_all(data, 1).unwrap(),
        }
    }
}

/// `batch` (uncompressed) with its records section compressed, as a producer would send it.
fn compress_batch(batch: &[u8], codec: Codec) -> Vec<u8> {
    let header = BatchHeader::parse(batch).unwrap();
    let payload = codec.compress(&batch[BATCH_HEADER_LEN..header.total_len()]);
    replace_section(batch, codec.compression().codec(), &payload)
}

/// `batch` with the given codec bits and records section; length and CRC fixed up.
fn replace_section(batch: &[u8], codec_bits: i16, section: &[u8]) -> Vec<u8> {
    let header = BatchHeader::parse(batch).unwrap();
    let mut out = batch[..BATCH_HEADER_LEN].to_vec();
    out.extend_from_slice(section);
    let attributes = (header.attributes & !0x07) | codec_bits;
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    fix_length_and_crc(&mut out);
    out
}

fn fix_length_and_crc(batch: &mut [u8]) {
    let batch_length = (batch.len() - 12) as i32;
    batch[8..12].copy_from_slice(&batch_length.to_be_bytes());
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

type TestHeader = (Vec<u8>, Option<Vec<u8>>);

/// One record for [`encode_batch`]: offset delta, timestamp, key, value, headers.
#[derive(Debug, Clone)]
struct TestRecord {
    offset_delta: i32,
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<TestHeader>,
}

fn test_record(offset_delta: i32, timestamp: i64, value: &[u8]) -> TestRecord {
    TestRecord {
        offset_delta,
        timestamp,
        key: Some(format!("k{offset_delta}").into_bytes()),
        value: Some(value.to_vec()),
        headers: vec![],
    }
}

/// An uncompressed batch with any offset deltas and header fields (the builder only makes dense
/// CreateTime batches). `template.base_timestamp` is taken as the first timestamp.
fn encode_batch(template: &BatchHeader, records: &[TestRecord]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = BatchEncoder::begin(&mut out, template);
    for record in records {
        let fields = RecordFields {
            attributes: 0,
            timestamp_delta: record.timestamp.wrapping_sub(template.base_timestamp),
            offset_delta: record.offset_delta,
            key: record.key.as_deref(),
            value: record.value.as_deref(),
        };
        let headers = record.headers.iter().map(|(key, value)| Header {
            key,
            value: value.as_deref(),
        });
        encoder.record(&mut out, &fields, headers).unwrap();
    }
    encoder.finish(&mut out).unwrap();
    out
}

fn template(base_offset: i64, last_offset_delta: i32, base_timestamp: i64) -> BatchHeader {
    BatchHeader {
        base_offset,
        batch_length: 0,
        partition_leader_epoch: 3,
        magic: 2,
        crc: 0,
        attributes: 0,
        last_offset_delta,
        base_timestamp,
        max_timestamp: base_timestamp,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        record_count: 0,
    }
}

fn dense(base_offset: i64, count: i32, timestamp: i64) -> Vec<u8> {
    let mut builder = BatchBuilder::new(base_offset);
    for i in 0..count {
        builder = builder.record(
            Some(format!("key-{i}").as_bytes()),
            Some(format!("value-{base_offset}-{i}").as_bytes()),
            timestamp + i as i64,
        );
    }
    builder.build()
}

fn concat(batches: &[Vec<u8>]) -> Vec<u8> {
    batches.concat()
}

fn convert_with(log: &[u8], options: &ConvertOptions) -> (Vec<u8>, ObjectStats, ColdBatches) {
    let (file, stats) = batches_to_parquet(log, options).unwrap();
    let cold = parquet_to_batches(Bytes::from(file.clone())).unwrap();
    (file, stats, cold)
}

fn convert(log: &[u8]) -> (Vec<u8>, ObjectStats, ColdBatches) {
    convert_with(log, &ConvertOptions::default())
}

fn parquet_rows(file: &[u8]) -> RecordBatch {
    let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(file.to_vec()))
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    arrow_select_concat(&batches)
}

/// All rows in one batch (tests only read small files: the first batch is all of it).
fn arrow_select_concat(batches: &[RecordBatch]) -> RecordBatch {
    assert_eq!(batches.len(), 1, "test files fit one reader batch");
    batches[0].clone()
}

fn i64_column(rows: &RecordBatch, name: &str) -> Vec<i64> {
    let column = rows.column_by_name(name).unwrap();
    match column.data_type() {
        DataType::Timestamp(..) => column
            .as_primitive::<TimestampMillisecondType>()
            .values()
            .to_vec(),
        _ => column.as_primitive::<Int64Type>().values().to_vec(),
    }
}

fn binary_column(rows: &RecordBatch, name: &str) -> Vec<Option<Vec<u8>>> {
    rows.column_by_name(name)
        .unwrap()
        .as_binary_view()
        .iter()
        .map(|value| value.map(<[u8]>::to_vec))
        .collect()
}

/// Every record of a batch as a consumer sees it: (offset, effective timestamp, attributes,
/// key, value, headers), decompressing if needed.
type SeenRecord = (
    i64,
    i64,
    i8,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<TestHeader>,
);

fn seen_records(batch: &[u8]) -> Vec<SeenRecord> {
    let header = validate_stored_batch(batch).unwrap();
    let compression = header.compression().unwrap();
    let section = records::codecs::decompress(
        compression,
        &batch[BATCH_HEADER_LEN..header.total_len()],
        1 << 30,
    )
    .unwrap();
    records_in_section(&section, header.record_count)
        .map(|record| {
            let record = record.unwrap();
            (
                header.base_offset + record.offset_delta as i64,
                effective_timestamp(&header, record.timestamp_delta),
                record.attributes,
                record.key.map(<[u8]>::to_vec),
                record.value.map(<[u8]>::to_vec),
                record
                    .headers()
                    .map(|h| (h.key.to_vec(), h.value.map(<[u8]>::to_vec)))
                    .collect(),
            )
        })
        .collect()
}

/// The header fields a consumer sees: everything but length, CRC and the codec bits.
fn seen_header(batch: &[u8]) -> BatchHeader {
    let header = BatchHeader::parse(batch).unwrap();
    BatchHeader {
        batch_length: 0,
        crc: 0,
        attributes: header.attributes & !0x07,
        ..header
    }
}

fn split(log: &[u8]) -> Vec<&[u8]> {
    records::stored_batches(log)
        .map(|batch| &log[batch.unwrap().1])
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Round trips

#[test]
fn uncompressed_round_trip_is_byte_identical() {
    let producer = ProducerIdentity {
        producer_id: 42,
        producer_epoch: 3,
        base_sequence: 17,
    };
    let mut first = BatchBuilder::new(0)
        .producer(producer)
        .record_with_headers(Some(b"k"), Some(b"v"), 1_000, &[(b"h1", Some(b"x"))])
        .record(None, None, 999)
        .record(Some(b""), Some(b""), 1_005)
        .build();
    set_partition_leader_epoch(&mut first, 9).unwrap();
    let log = concat(&[first, dense(3, 5, 2_000), dense(8, 1, 1_500)]);
    let (file, stats, cold) = convert(&log);
    assert_eq!(cold.bytes().as_ref(), &log[..]);
    for batch in split(cold.bytes()) {
        validate_batch(batch).unwrap();
    }
    assert_eq!(
        stats,
        ObjectStats {
            base_offset: 0,
            next_offset: 9,
            min_timestamp: 999,
            max_timestamp: 2_004,
            record_count: 9,
            batch_count: 3,
            log_bytes: log.len() as u64,
        }
    );
    assert_eq!((cold.base_offset(), cold.next_offset()), (0, 9));
    assert!(cold.size_bytes() >= log.len());
    let rows = parquet_rows(&file);
    assert_eq!(rows.num_rows(), 9);
    assert_eq!(i64_column(&rows, "offset"), (0..9).collect::<Vec<_>>());
    assert_eq!(i64_column(&rows, "producer_id")[..3], [42, 42, 42]);
    assert_eq!(i64_column(&rows, "producer_id")[3], -1);
    assert!(
        binary_column(&rows, "raw_batch")
            .iter()
            .all(Option::is_none)
    );
}

#[test]
fn every_codec_round_trips_content() {
    let originals = [
        BatchBuilder::new(10)
            .record_with_headers(Some(b"a"), Some(&[7; 500]), 5, &[(b"h", None)])
            .record(None, Some(b"second"), 4)
            .build(),
        dense(12, 40, 100),
    ];
    for codec in [
        Codec::Gzip,
        Codec::Snappy,
        Codec::XerialSnappy,
        Codec::Lz4,
        Codec::Zstd,
    ] {
        let compressed: Vec<Vec<u8>> = originals
            .iter()
            .map(|batch| compress_batch(batch, codec))
            .collect();
        let log = concat(&compressed);
        let (file, stats, cold) = convert(&log);
        // Decompressed, codec bits cleared, length and CRC recomputed: the uncompressed batch.
        assert_eq!(cold.bytes().as_ref(), &concat(&originals)[..], "{codec:?}");
        for batch in split(cold.bytes()) {
            let header = validate_batch(batch).unwrap();
            assert_eq!(header.compression(), Ok(Compression::None), "{codec:?}");
        }
        let rows = parquet_rows(&file);
        assert_eq!(rows.num_rows(), 42, "{codec:?}: one row per record");
        assert!(
            binary_column(&rows, "raw_batch")
                .iter()
                .all(Option::is_none)
        );
        let attributes = rows
            .column_by_name("batch_attributes")
            .unwrap()
            .as_primitive::<Int16Type>()
            .values()
            .to_vec();
        assert!(
            attributes.iter().all(|&a| a == codec.compression().codec()),
            "{codec:?}: the original codec is kept in batch_attributes"
        );
        assert_eq!(
            (stats.record_count, stats.log_bytes),
            (42, log.len() as u64)
        );
    }
}

#[test]
fn log_append_time_batch_keeps_the_append_time() {
    let mut batch = BatchBuilder::new(5)
        .record(Some(b"a"), Some(b"1"), 100)
        .record(Some(b"b"), Some(b"2"), 300)
        .record(Some(b"c"), Some(b"3"), 200)
        .build();
    set_log_append_time(&mut batch, 5_000).unwrap();
    let (file, stats, cold) = convert(&batch);
    // Record timestamp deltas become 0: consumers read the batch's max timestamp anyway.
    let mut expected = BatchBuilder::new(5)
        .record(Some(b"a"), Some(b"1"), 100)
        .record(Some(b"b"), Some(b"2"), 100)
        .record(Some(b"c"), Some(b"3"), 100)
        .build();
    set_log_append_time(&mut expected, 5_000).unwrap();
    assert_eq!(cold.bytes().as_ref(), &expected[..]);
    assert_eq!(seen_records(cold.bytes()), seen_records(&batch));
    let rows = parquet_rows(&file);
    assert_eq!(i64_column(&rows, "timestamp"), [5_000; 3]);
    assert_eq!(i64_column(&rows, "batch_first_timestamp"), [100; 3]);
    assert_eq!((stats.min_timestamp, stats.max_timestamp), (5_000, 5_000));
    assert_eq!(cold.offset_for_timestamp(4_000), Some((5, 5_000)));
    assert_eq!(cold.offset_for_timestamp(5_000), Some((5, 5_000)));
    assert_eq!(cold.offset_for_timestamp(5_001), None);
}

#[test]
fn control_and_transactional_batches_round_trip() {
    let producer = ProducerIdentity {
        producer_id: 1_234_567,
        producer_epoch: 12,
        base_sequence: 88,
    };
    let data = BatchBuilder::new(0)
        .producer(producer)
        .transactional(true)
        .record(Some(b"k"), Some(b"v"), 10)
        .record(Some(b"k"), Some(b"w"), 11)
        .build();
    // A commit marker as Kafka writes it: key = version 0, type 1 (commit); value = version 0,
    // coordinator epoch 5. Control batches carry no sequence.
    let marker = BatchBuilder::new(2)
        .producer(ProducerIdentity {
            base_sequence: -1,
            ..producer
        })
        .transactional(true)
        .control(true)
        .record(Some(&[0, 0, 0, 1]), Some(&[0, 0, 0, 0, 0, 5]), 20)
        .build();
    let log = concat(&[data, marker]);
    let (file, _, cold) = convert(&log);
    assert_eq!(cold.bytes().as_ref(), &log[..]);
    let batches = split(cold.bytes());
    let data = validate_batch(batches[0]).unwrap();
    assert!(data.is_transactional() && !data.is_control());
    assert_eq!(
        (data.producer_id, data.producer_epoch, data.base_sequence),
        (1_234_567, 12, 88)
    );
    let marker = validate_batch(batches[1]).unwrap();
    assert!(marker.is_transactional() && marker.is_control());
    assert_eq!(marker.base_sequence, -1);
    let rows = parquet_rows(&file);
    assert_eq!(
        binary_column(&rows, "key")[2].as_deref(),
        Some(&[0u8, 0, 0, 1][..])
    );
    let attributes = rows
        .column_by_name("batch_attributes")
        .unwrap()
        .as_primitive::<Int16Type>();
    assert_eq!(attributes.values()[..], [0x10, 0x10, 0x30]);
}

#[test]
fn offset_gaps_inside_and_between_batches() {
    // Compacted: three records at deltas 0, 2, 5 of a batch whose last offset delta is 7, then
    // a gap to 20.
    let compacted = encode_batch(
        &template(0, 7, 1_000),
        &[
            test_record(0, 1_000, b"a"),
            test_record(2, 1_002, b"b"),
            test_record(5, 1_001, b"c"),
        ],
    );
    let after_gap = encode_batch(
        &template(20, 3, 2_000),
        &[test_record(1, 2_000, b"d"), test_record(3, 2_001, b"e")],
    );
    let log = concat(&[compacted, after_gap]);
    let (file, stats, cold) = convert(&log);
    assert_eq!(cold.bytes().as_ref(), &log[..]);
    assert!(validate_batch(split(cold.bytes())[0]).is_err());
    validate_stored_batch(split(cold.bytes())[0]).unwrap();
    assert_eq!(
        i64_column(&parquet_rows(&file), "offset"),
        [0, 2, 5, 21, 23]
    );
    assert_eq!(
        (stats.base_offset, stats.next_offset, stats.record_count),
        (0, 24, 5)
    );
    assert_eq!(cold.next_offset(), 24);
    // Offset 6 and 7 are in the first batch's range; 10 is in the gap.
    assert_eq!(cold.read(7, 1 << 20, i64::MAX), cold.bytes().slice(..));
    let second = cold.batches()[1];
    assert_eq!(
        cold.read(10, 1 << 20, i64::MAX),
        cold.bytes().slice(second.position..)
    );
    assert_eq!(cold.offset_for_timestamp(1_001), Some((2, 1_002)));
}

#[test]
fn headers_and_null_keys_and_values() {
    let batch = BatchBuilder::new(0)
        .record_with_headers(
            None,
            None,
            1,
            &[(b"", None), (b"", Some(b"")), (b"trace", Some(b"\x00\xff"))],
        )
        .record_with_headers(Some(b""), None, 2, &[])
        .record_with_headers(None, Some(b""), 3, &[(b"dup", None), (b"dup", Some(b"x"))])
        .build();
    let (file, _, cold) = convert(&batch);
    assert_eq!(cold.bytes().as_ref(), &batch[..]);
    let rows = parquet_rows(&file);
    assert_eq!(binary_column(&rows, "key"), [None, Some(vec![]), None]);
    assert_eq!(binary_column(&rows, "value"), [None, None, Some(vec![])]);
    let headers = rows.column_by_name("headers").unwrap().as_list::<i64>();
    assert_eq!(headers.value_offsets(), [0, 3, 3, 5]);
    let entries = headers.values().as_struct();
    let values: Vec<_> = entries.column(1).as_binary_view().iter().collect();
    assert_eq!(
        values,
        [
            None,
            Some(&b""[..]),
            Some(&b"\x00\xff"[..]),
            None,
            Some(&b"x"[..])
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Batches that cannot be decoded

#[test]
fn undecodable_batches_are_kept_verbatim() {
    let garbage = BatchBuilder::new(3)
        .opaque_payload(Compression::Zstd, 2, 50, b"not zstd at all")
        .build();
    // A zstd batch that decompresses beyond the limit set below.
    let big = BatchBuilder::new(5)
        .record(None, Some(&vec![0u8; 100_000]), 60)
        .build();
    let too_large = compress_batch(&big, Codec::Zstd);
    // An uncompressed batch whose record count is one short of its records (CRC fixed up).
    let mut short = dense(6, 3, 70);
    short[57..61].copy_from_slice(&2i32.to_be_bytes());
    fix_length_and_crc(&mut short);
    validate_stored_batch(&short).unwrap();
    // A compressed batch whose records do not parse.
    let bad_records = replace_section(
        &dense(9, 2, 80),
        Compression::Gzip.codec(),
        &Codec::Gzip.compress(b"\x10\x00\x00"),
    );

    let log = concat(&[
        dense(0, 3, 10),
        garbage,
        too_large,
        short,
        bad_records,
        dense(11, 1, 90),
    ]);
    let options = ConvertOptions {
        decompress_limit: 50_000,
        ..ConvertOptions::default()
    };
    let (file, stats, cold) = convert_with(&log, &options);
    assert_eq!(cold.bytes().as_ref(), &log[..]);
    let rows = parquet_rows(&file);
    assert_eq!(i64_column(&rows, "offset"), [0, 1, 2, 3, 5, 6, 9, 11]);
    let raw = binary_column(&rows, "raw_batch");
    let input = split(&log);
    assert_eq!(raw[..3], [None, None, None]);
    for (row, batch) in (3..7).zip(&input[1..5]) {
        assert_eq!(raw[row].as_deref(), Some(&batch[..]), "row {row}");
    }
    assert_eq!(raw[7], None);
    assert_eq!(stats.record_count, 3 + 2 + 1 + 2 + 2 + 1);
    // Raw batches answer timestamp lookups at batch granularity.
    assert_eq!(cold.offset_for_timestamp(40), Some((3, 50)));
    assert_eq!(cold.offset_for_timestamp(85), Some((11, 90)));
    // With the default limit the big batch decodes.
    let (file, _, _) = convert(&log);
    assert_eq!(binary_column(&parquet_rows(&file), "raw_batch")[4], None);
}

#[test]
fn zero_record_batches_are_kept_verbatim() {
    // Compaction can leave a batch without records (it keeps the producer's last sequence).
    let empty = encode_batch(&template(3, 4, 77), &[]);
    assert_eq!(validate_stored_batch(&empty).unwrap().record_count, 0);
    let log = concat(&[dense(0, 3, 10), empty.clone(), dense(8, 1, 20)]);
    let (_, stats, cold) = convert(&log);
    assert_eq!(cold.bytes().as_ref(), &log[..]);
    assert_eq!((stats.record_count, stats.batch_count), (4, 3));
    assert_eq!((stats.min_timestamp, stats.max_timestamp), (10, 20));
    assert_eq!(cold.read(5, 1, i64::MAX), Bytes::from(empty.clone()));

    let (_, stats, cold) = convert(&empty);
    assert_eq!(cold.bytes().as_ref(), &empty[..]);
    assert_eq!(
        (stats.min_timestamp, stats.max_timestamp, stats.next_offset),
        (-1, -1, 8)
    );
    assert_eq!(cold.offset_for_timestamp(0), None);
}

// ---------------------------------------------------------------------------------------------
// ColdBatches

#[test]
fn read_returns_whole_batches_like_the_log() {
    // Batches [0..=2], [3..=3], gap, [10..=14].
    let batches = [dense(0, 3, 0), dense(3, 1, 0), dense(10, 5, 0)];
    let log = concat(&batches);
    let (_, _, cold) = convert(&log);
    let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
    let all = log.len();
    let check = |offset, max_bytes, end_offset, expect: std::ops::Range<usize>| {
        assert_eq!(
            cold.read(offset, max_bytes, end_offset),
            Bytes::from(log[expect.clone()].to_vec()),
            "read({offset}, {max_bytes}, {end_offset}) should be bytes {expect:?}"
        );
    };
    check(0, usize::MAX, i64::MAX, 0..all);
    check(-5, usize::MAX, i64::MAX, 0..all);
    check(1, usize::MAX, i64::MAX, 0..all);
    check(2, usize::MAX, i64::MAX, 0..all);
    check(3, usize::MAX, i64::MAX, sizes[0]..all);
    check(5, usize::MAX, i64::MAX, sizes[0] + sizes[1]..all);
    check(14, usize::MAX, i64::MAX, sizes[0] + sizes[1]..all);
    check(15, usize::MAX, i64::MAX, 0..0);
    // The first batch whatever its size, then only whole batches within max_bytes.
    check(0, 1, i64::MAX, 0..sizes[0]);
    check(0, sizes[0] + sizes[1] - 1, i64::MAX, 0..sizes[0]);
    check(0, sizes[0] + sizes[1], i64::MAX, 0..sizes[0] + sizes[1]);
    // Nothing whose last offset reaches end_offset.
    check(0, usize::MAX, 15, 0..all);
    check(0, usize::MAX, 14, 0..sizes[0] + sizes[1]);
    check(0, usize::MAX, 4, 0..sizes[0] + sizes[1]);
    check(0, usize::MAX, 3, 0..sizes[0]);
    check(0, usize::MAX, 2, 0..0);
    check(4, usize::MAX, 14, 0..0);
    // Zero-copy: a slice of the same buffer.
    let slice = cold.read(3, usize::MAX, i64::MAX);
    assert_eq!(slice.as_ptr(), cold.bytes()[sizes[0]..].as_ptr());
}

#[test]
fn offset_for_timestamp_is_exact_with_out_of_order_timestamps() {
    let first = encode_batch(
        &template(0, 3, 100),
        &[
            test_record(0, 100, b"a"),
            test_record(1, 50, b"b"),
            test_record(2, 300, b"c"),
            test_record(3, 200, b"d"),
        ],
    );
    let second = encode_batch(
        &template(4, 1, 150),
        &[test_record(0, 150, b"e"), test_record(1, 400, b"f")],
    );
    let log = concat(&[first, second]);
    let (_, stats, cold) = convert(&log);
    assert_eq!(cold.bytes().as_ref(), &log[..]);
    assert_eq!((stats.min_timestamp, stats.max_timestamp), (50, 400));
    for (target, expect) in [
        (i64::MIN, Some((0, 100))),
        (0, Some((0, 100))),
        (50, Some((0, 100))),
        (100, Some((0, 100))),
        (101, Some((2, 300))),
        (160, Some((2, 300))),
        (250, Some((2, 300))),
        (300, Some((2, 300))),
        (301, Some((5, 400))),
        (400, Some((5, 400))),
        (401, None),
        (i64::MAX, None),
    ] {
        assert_eq!(cold.offset_for_timestamp(target), expect, "target {target}");
    }
}

#[test]
fn a_batch_spanning_reader_batches_and_row_groups() {
    // More records than one Arrow reader batch, and row groups closed every few KiB.
    let big = dense(0, READ_BATCH_ROWS_MAX as i32 + 100, 1_000);
    let log = concat(&[big, dense(READ_BATCH_ROWS_MAX as i64 + 100, 50, 7)]);
    let options = ConvertOptions {
        row_group_bytes: 4 << 10,
        codec: ParquetCodec::Snappy,
        ..ConvertOptions::default()
    };
    let (file, stats, cold) = convert_with(&log, &options);
    assert_eq!(cold.bytes().as_ref(), &log[..]);
    assert_eq!(stats.batch_count, 2);
    let metadata = ParquetMetaDataReader::new()
        .parse_and_finish(&Bytes::from(file))
        .unwrap();
    assert_eq!(metadata.num_row_groups(), 2, "one row group per batch here");
    // The configured codec is the record bytes' (query columns are never compressed).
    let value = metadata
        .row_group(0)
        .columns()
        .iter()
        .find(|chunk| chunk.column_path().string() == "value")
        .unwrap();
    assert_eq!(value.compression(), ParquetCompression::SNAPPY);
}

/// Typed columns for tests: each value's length, and an error for a NULL value.
#[derive(Debug)]
struct Lengths(&'static str);

impl ValueColumns for Lengths {
    fn fields(&self) -> Fields {
        Fields::from(vec![Field::new(self.0, DataType::Int64, true)])
    }

    fn describe(&self) -> String {
        format!("lengths: {} Int64", self.0)
    }

    fn decode(&self, values: &BinaryViewArray) -> Result<(StructArray, ArrayRef), String> {
        let lengths: Int64Array = values.iter().map(|v| v.map(|v| v.len() as i64)).collect();
        let errors: arrow_array::StringArray = values
            .iter()
            .map(|v| v.is_none().then_some("no value"))
            .collect();
        let fields = StructArray::try_new(self.fields(), vec![Arc::new(lengths)], None)
            .map_err(|error| error.to_string())?;
        Ok((fields, Arc::new(errors)))
    }
}

fn footer_value(file: &[u8], key: &str) -> Option<String> {
    let metadata = ParquetMetaDataReader::new()
        .parse_and_finish(&Bytes::from(file.to_vec()))
        .unwrap();
    metadata
        .file_metadata()
        .key_value_metadata()
        .into_iter()
        .flatten()
        .find(|entry| entry.key == key)
        .and_then(|entry| entry.value.clone())
}

#[test]
fn a_rewrite_adds_typed_columns_and_changes_nothing_kafka_reads() {
    let garbage = BatchBuilder::new(3)
        .opaque_payload(Compression::Zstd, 2, 50, b"not zstd at all")
        .build();
    let log = concat(&[
        compress_batch(&dense(0, 3, 10), Codec::Lz4),
        garbage,
        BatchBuilder::new(6)
            .record(Some(b"k"), None, 60)
            .record(None, Some(b"four"), 61)
            .build(),
        dense(8, 200, 90),
        dense(208, 200, 95),
        dense(408, 200, 99),
    ]);
    let options = ConvertOptions {
        row_group_bytes: 1 << 10,
        ..ConvertOptions::default()
    };
    let (plain, stats, cold) = convert_with(&log, &options);
    assert_eq!(footer_value(&plain, VALUE_SCHEMA_KEY), None);
    let groups = |file: &[u8]| {
        ParquetMetaDataReader::new()
            .parse_and_finish(&Bytes::from(file.to_vec()))
            .unwrap()
            .num_row_groups()
    };
    let typed = ConvertOptions {
        value_columns: Some(Arc::new(Lengths("length"))),
        ..options.clone()
    };
    let (rewritten, rewritten_stats) =
        rewrite_value_columns(Bytes::from(plain.clone()), &typed).unwrap();
    assert_eq!(rewritten_stats, stats);
    assert_eq!(
        footer_value(&rewritten, VALUE_SCHEMA_KEY).as_deref(),
        Some("lengths: length Int64")
    );
    assert_eq!(
        footer_value(&rewritten, STATS_KEY),
        footer_value(&plain, STATS_KEY)
    );
    assert_eq!(groups(&rewritten), groups(&plain));
    assert!(groups(&plain) > 1);
    let again = parquet_to_batches(Bytes::from(rewritten.clone())).unwrap();
    assert_eq!(again.bytes(), cold.bytes());
    // Every base column is the same, and the typed ones follow the values.
    let (before, after) = (parquet_rows(&plain), parquet_rows(&rewritten));
    for field in schema().fields() {
        assert_eq!(
            before.column_by_name(field.name()).unwrap().to_data(),
            after.column_by_name(field.name()).unwrap().to_data(),
            "{}",
            field.name()
        );
    }
    let fields = after.column_by_name(FIELDS_COLUMN).unwrap().as_struct();
    let lengths = fields.column(0).as_primitive::<Int64Type>();
    let values = binary_column(&after, "value");
    for (row, value) in values.iter().enumerate() {
        assert_eq!(lengths.is_null(row), value.is_none(), "row {row}");
    }
    assert_eq!(lengths.value(5), 4);
    // A rewrite under another schema replaces the typed columns.
    let other = ConvertOptions {
        value_columns: Some(Arc::new(Lengths("size"))),
        ..options
    };
    let (twice, _) = rewrite_value_columns(Bytes::from(rewritten), &other).unwrap();
    let rows = parquet_rows(&twice);
    assert_eq!(rows.num_columns(), schema().fields().len() + 2);
    let fields = rows.column_by_name(FIELDS_COLUMN).unwrap().as_struct();
    assert_eq!(fields.column_names(), ["size"]);
    assert_eq!(
        parquet_to_batches(Bytes::from(twice)).unwrap().bytes(),
        cold.bytes()
    );
}

// ---------------------------------------------------------------------------------------------
// Footer and errors

#[test]
fn read_stats_reads_the_footer() {
    let log = concat(&[dense(100, 4, 5_000), dense(104, 2, 4_000)]);
    let (file, stats) = batches_to_parquet(&log, &ConvertOptions::default()).unwrap();
    let file = Bytes::from(file);
    assert_eq!(read_stats(&file).unwrap(), stats);
    assert_eq!(
        (
            stats.base_offset,
            stats.next_offset,
            stats.min_timestamp,
            stats.max_timestamp
        ),
        (100, 106, 4_000, 5_003)
    );
    let metadata = ParquetMetaDataReader::new()
        .parse_and_finish(&file)
        .unwrap();
    let footer = metadata.file_metadata();
    assert!(
        footer
            .created_by()
            .unwrap()
            .starts_with("lakestream version ")
    );
    // Offset and timestamp statistics are in the footer for query engines.
    let offset_stats = metadata.row_group(0).column(0).statistics().unwrap();
    assert_eq!(
        offset_stats.min_bytes_opt().unwrap(),
        &100i64.to_le_bytes()[..]
    );
    assert!(matches!(
        read_stats(&Bytes::from_static(b"PAR1 not parquet PAR1")),
        Err(ConvertError::Parquet(_))
    ));
}

#[test]
fn invalid_log_input_is_an_error() {
    let good = dense(0, 2, 0);
    assert!(matches!(
        batches_to_parquet(&[], &ConvertOptions::default()),
        Err(ConvertError::Empty)
    ));
    let truncated = concat(&[good.clone(), good[..good.len() - 1].to_vec()]);
    match batches_to_parquet(&truncated, &ConvertOptions::default()) {
        Err(ConvertError::InvalidBatch {
            position,
            base_offset,
            ..
        }) => assert_eq!((position, base_offset), (good.len(), 0)),
        other => panic!("{other:?}"),
    }
    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert!(matches!(
        batches_to_parquet(&flipped, &ConvertOptions::default()),
        Err(ConvertError::InvalidBatch {
            source: RecordError::CorruptMessage { .. },
            ..
        })
    ));
    let backwards = concat(&[dense(5, 2, 0), dense(6, 2, 0)]);
    let error = batches_to_parquet(&backwards, &ConvertOptions::default()).unwrap_err();
    assert!(matches!(
        error,
        ConvertError::OffsetsNotIncreasing {
            base_offset: 6,
            previous_last_offset: 6
        }
    ));
    assert_eq!(
        error.to_string(),
        "batch at offset 6 does not follow the previous batch, which ends at offset 6"
    );
    let negative = dense(-1, 1, 0);
    assert!(matches!(
        batches_to_parquet(&negative, &ConvertOptions::default()),
        Err(ConvertError::OffsetOutOfRange { .. })
    ));
    let overflowing = encode_batch(&template(i64::MAX - 1, 1, 0), &[test_record(0, 0, b"")]);
    assert!(matches!(
        batches_to_parquet(&overflowing, &ConvertOptions::default()),
        Err(ConvertError::OffsetOutOfRange { .. })
    ));
}

/// Rewrites a cold object's rows with `edit`, keeping its footer metadata.
fn tamper(
    file: &[u8],
    edit: impl FnOnce(RecordBatch) -> RecordBatch,
    stats: Option<&str>,
) -> Bytes {
    let rows = edit(parquet_rows(file));
    let metadata = ParquetMetaDataReader::new()
        .parse_and_finish(&Bytes::from(file.to_vec()))
        .unwrap();
    let mut writer = ArrowWriter::try_new(Vec::new(), schema(), None).unwrap();
    writer.write(&rows).unwrap();
    for entry in metadata.file_metadata().key_value_metadata().unwrap() {
        if entry.key.starts_with("lakestream.") {
            let mut entry = entry.clone();
            if let (STATS_KEY, Some(stats)) = (entry.key.as_str(), stats) {
                entry.value = Some(stats.to_string());
            }
            writer.append_key_value_metadata(entry);
        }
    }
    Bytes::from(writer.into_inner().unwrap())
}

#[test]
fn a_tampered_object_is_refused() {
    let log = concat(&[dense(0, 3, 10), dense(3, 2, 20)]);
    let (file, stats) = batches_to_parquet(&log, &ConvertOptions::default()).unwrap();
    // Unchanged rows read back fine.
    parquet_to_batches(tamper(&file, |rows| rows, None)).unwrap();
    let with_offsets = |offsets: Vec<i64>| {
        tamper(
            &file,
            |rows| {
                let mut columns = rows.columns().to_vec();
                columns[0] = Arc::new(Int64Array::from(offsets));
                RecordBatch::try_new(rows.schema(), columns).unwrap()
            },
            None,
        )
    };
    // Offsets that do not increase.
    assert!(matches!(
        parquet_to_batches(with_offsets(vec![0, 1, 2, 2, 4])),
        Err(ConvertError::InvalidRow { offset: 2, .. })
    ));
    // A row outside its batch.
    assert!(matches!(
        parquet_to_batches(with_offsets(vec![0, 1, 2, 3, 9])),
        Err(ConvertError::InvalidRow { offset: 9, .. })
    ));
    // Stats that do not match the rows.
    let lying = ObjectStats {
        record_count: 6,
        ..stats
    };
    let lying = tamper(
        &file,
        |rows| rows,
        Some(&serde_json::to_string(&lying).unwrap()),
    );
    assert!(matches!(
        parquet_to_batches(lying),
        Err(ConvertError::StatsMismatch { .. })
    ));
    // No lakestream footer at all.
    let mut writer = ArrowWriter::try_new(Vec::new(), schema(), None).unwrap();
    writer.write(&parquet_rows(&file)).unwrap();
    let plain = Bytes::from(writer.into_inner().unwrap());
    assert!(matches!(
        parquet_to_batches(plain.clone()),
        Err(ConvertError::BadFooter { .. })
    ));
    assert!(matches!(
        read_stats(&plain),
        Err(ConvertError::BadFooter { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Property: everything a consumer sees survives the round trip

#[derive(Debug, Clone)]
struct BatchSpec {
    gap: i64,
    records: Vec<TestRecord>,
    /// Extra offsets after the last record (compaction removed the tail).
    tail_gap: i32,
    producer: ProducerIdentity,
    partition_leader_epoch: i32,
    transactional: bool,
    log_append_time: Option<i64>,
    codec: Option<Codec>,
}

fn arb_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

/// A record whose `offset_delta` is the step from the previous record's offset (0 = dense) and
/// whose timestamp is relative to the batch's.
fn arb_record() -> impl Strategy<Value = TestRecord> {
    (
        prop_oneof![3 => Just(0), 1 => 1..3i32],
        -1_000i64..1_000,
        proptest::option::of(arb_bytes(12)),
        proptest::option::of(arb_bytes(40)),
        proptest::collection::vec((arb_bytes(6), proptest::option::of(arb_bytes(6))), 0..3),
    )
        .prop_map(|(step, timestamp, key, value, headers)| TestRecord {
            offset_delta: step,
            timestamp,
            key,
            value,
            headers,
        })
}

fn arb_batch_spec() -> impl Strategy<Value = BatchSpec> {
    (
        0..3i64,
        proptest::collection::vec(arb_record(), 1..12),
        0..3i32,
        (any::<i64>(), any::<i16>(), any::<i32>(), any::<i32>()),
        any::<bool>(),
        proptest::option::weighted(0.2, any::<i64>()),
        proptest::option::weighted(0.5, prop_oneof![Just(Codec::Zstd), Just(Codec::Gzip)]),
        1_600_000_000_000i64..1_700_000_000_000,
    )
        .prop_map(
            |(gap, records, tail_gap, producer, transactional, log_append_time, codec, base)| {
                let mut offset_delta = -1;
                let records = records
                    .into_iter()
                    .map(|record| {
                        offset_delta += 1 + record.offset_delta;
                        TestRecord {
                            offset_delta,
                            timestamp: base + record.timestamp,
                            ..record
                        }
                    })
                    .collect();
                BatchSpec {
                    gap,
                    records,
                    tail_gap,
                    producer: ProducerIdentity {
                        producer_id: producer.0,
                        producer_epoch: producer.1,
                        base_sequence: producer.2,
                    },
                    partition_leader_epoch: producer.3,
                    transactional,
                    log_append_time,
                    codec,
                }
            },
        )
}

fn build_log(specs: &[BatchSpec]) -> Vec<u8> {
    let mut next_offset = 0i64;
    let mut log = Vec::new();
    for spec in specs {
        let base_offset = next_offset + spec.gap;
        let last_delta = spec.records.last().unwrap().offset_delta + spec.tail_gap;
        let mut header = template(base_offset, last_delta, spec.records[0].timestamp);
        header.producer_id = spec.producer.producer_id;
        header.producer_epoch = spec.producer.producer_epoch;
        header.base_sequence = spec.producer.base_sequence;
        header.partition_leader_epoch = spec.partition_leader_epoch;
        header.max_timestamp = spec.records.iter().map(|r| r.timestamp).max().unwrap();
        if spec.transactional {
            header.attributes |= 0x10;
        }
        let mut batch = encode_batch(&header, &spec.records);
        if let Some(append_time) = spec.log_append_time {
            set_log_append_time(&mut batch, append_time).unwrap();
        }
        if let Some(codec) = spec.codec {
            batch = compress_batch(&batch, codec);
        }
        log.extend_from_slice(&batch);
        next_offset = base_offset + last_delta as i64 + 1;
    }
    log
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn round_trip_keeps_what_consumers_see(
        specs in proptest::collection::vec(arb_batch_spec(), 1..6),
        row_group_bytes in prop_oneof![Just(1usize), Just(8 << 20)],
    ) {
        let log = build_log(&specs);
        let options = ConvertOptions { row_group_bytes, ..ConvertOptions::default() };
        let (file, stats) = batches_to_parquet(&log, &options).unwrap();
        prop_assert_eq!(read_stats(&Bytes::from(file.clone())).unwrap(), stats.clone());
        let cold = parquet_to_batches(Bytes::from(file)).unwrap();
        let input = split(&log);
        let output = split(cold.bytes());
        prop_assert_eq!(input.len(), output.len());
        for (spec, (&before, &after)) in specs.iter().zip(input.iter().zip(&output)) {
            prop_assert_eq!(seen_header(after), seen_header(before));
            prop_assert_eq!(seen_records(after), seen_records(before));
            let header = validate_stored_batch(after).unwrap();
            prop_assert_eq!(header.compression(), Ok(Compression::None));
            if spec.codec.is_none() && spec.log_append_time.is_none() {
                prop_assert_eq!(before, after, "uncompressed CreateTime comes back byte for byte");
            }
        }
        let record_count: usize = specs.iter().map(|s| s.records.len()).sum();
        prop_assert_eq!(stats.record_count, record_count as u64);
        prop_assert_eq!((cold.base_offset(), cold.next_offset()), (stats.base_offset, stats.next_offset));
    }
}

#[test]
fn record_bytes_take_the_codec_and_query_columns_are_not_compressed() {
    let log = concat(&[dense(0, 50, 1_000), dense(50, 50, 2_000)]);
    let (file, _, _) = convert(&log);
    let metadata = ParquetMetaDataReader::new()
        .parse_and_finish(&Bytes::from(file))
        .unwrap();
    let group = metadata.row_group(0);
    let chunk = |path: &str| {
        group
            .columns()
            .iter()
            .find(|chunk| chunk.column_path().string() == path)
            .unwrap_or_else(|| panic!("no column {path}"))
    };
    for path in ["value", "key", "raw_batch", "headers.list.element.value"] {
        assert!(
            matches!(chunk(path).compression(), ParquetCompression::ZSTD(_)),
            "{path}: {:?}",
            chunk(path).compression()
        );
    }
    for path in ["offset", "timestamp", "batch_base_offset"] {
        assert_eq!(
            chunk(path).compression(),
            ParquetCompression::UNCOMPRESSED,
            "{path}"
        );
    }
    for path in ["offset", "timestamp"] {
        let encodings: Vec<_> = chunk(path).encodings().collect();
        assert!(
            encodings.contains(&Encoding::DELTA_BINARY_PACKED),
            "{path}: {encodings:?}"
        );
    }
}
