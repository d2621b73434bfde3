use std::fs::OpenOptions;

use proptest::prelude::*;
use records::{BatchBuilder, Compression, TimestampType};

use super::*;

fn config(segment_bytes: u64, index_interval_bytes: u32) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes,
        ..LogConfig::default()
    }
}

/// A batch of `count` records with values `"{tag}-{i}"` and timestamps `timestamp_ms + i`.
fn batch(tag: &str, count: usize, timestamp_ms: i64) -> Vec<u8> {
    let mut builder = BatchBuilder::new(0);
    for i in 0..count {
        builder = builder.record(
            None,
            Some(format!("{tag}-{i}").as_bytes()),
            timestamp_ms + i as i64,
        );
    }
    builder.build()
}

fn append(log: &mut PartitionLog, mut set: Vec<u8>) -> AppendInfo {
    log.append(&mut set, 0, false).unwrap()
}

/// The values of every record in `bytes`, with their offsets.
fn values(bytes: &[u8]) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    for batch in records::stored_batches(bytes) {
        let (header, range) = batch.unwrap();
        for record in records::records(&bytes[range]).unwrap() {
            let record = record.unwrap();
            let value = String::from_utf8(record.value.unwrap().to_vec()).unwrap();
            out.push((header.base_offset + record.offset_delta as i64, value));
        }
    }
    out
}

fn segment_files(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == extension))
        .collect();
    files.sort();
    files
}

#[test]
fn append_assigns_offsets_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(
        (
            log.log_start_offset(),
            log.log_end_offset(),
            log.max_timestamp()
        ),
        (0, 0, (-1, -1))
    );
    let info = append(&mut log, batch("a", 3, 100));
    assert_eq!(
        (
            info.base_offset,
            info.last_offset,
            info.max_timestamp,
            info.log_append_time_ms
        ),
        (0, 2, 102, -1)
    );
    let mut set = batch("b", 1, 50);
    set.extend(batch("c", 2, 300));
    let info = append(&mut log, set);
    assert_eq!(
        (info.base_offset, info.last_offset, info.max_timestamp),
        (3, 5, 301)
    );
    assert_eq!(log.log_end_offset(), 6);
    assert_eq!(log.max_timestamp(), (301, 4));
    let expect: Vec<(i64, String)> = [
        (0, "a-0"),
        (1, "a-1"),
        (2, "a-2"),
        (3, "b-0"),
        (4, "c-0"),
        (5, "c-1"),
    ]
    .into_iter()
    .map(|(offset, value)| (offset, value.to_string()))
    .collect();
    assert_eq!(values(&log.read(0, 1 << 20).unwrap()), expect);
    assert_eq!(
        values(&log.read(1, 1 << 20).unwrap())[0].0,
        0,
        "whole batch holding offset 1"
    );
    assert_eq!(values(&log.read(4, 1 << 20).unwrap())[0].0, 4);
    assert_eq!(
        values(&log.read(0, 1).unwrap()).len(),
        3,
        "first batch even if over max_bytes"
    );
    assert!(log.read(6, 100).unwrap().is_empty());
    assert!(matches!(
        log.read(7, 100),
        Err(LogError::OffsetOutOfRange { offset: 7, .. })
    ));
    assert!(matches!(
        log.read(-1, 100),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    // The high watermark bound keeps whole batches below it.
    assert_eq!(values(&log.read_until(0, 1 << 20, 3).unwrap()).len(), 3);
    assert!(log.read_until(0, 1 << 20, 2).unwrap().is_empty());
    assert!(log.read_until(3, 1 << 20, 3).unwrap().is_empty());
}

#[test]
fn log_append_time_rewrites_batches() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    let mut set = batch("a", 2, 5);
    let info = log.append(&mut set, 777, true).unwrap();
    assert_eq!((info.max_timestamp, info.log_append_time_ms), (777, 777));
    let read = log.read(0, 1 << 20).unwrap();
    let header = records::validate_batch(&read).unwrap();
    assert_eq!(header.timestamp_type(), TimestampType::LogAppendTime);
    assert_eq!(header.max_timestamp, 777);
    assert_eq!(log.offset_for_timestamp(700).unwrap(), Some((0, 777)));
    assert_eq!(log.offset_for_timestamp(778).unwrap(), None);
}

#[test]
fn append_rejects_bad_input_without_appending() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(
        dir.path(),
        LogConfig {
            max_message_bytes: 200,
            ..LogConfig::default()
        },
    )
    .unwrap();
    assert!(matches!(
        log.append(&mut [], 0, false),
        Err(LogError::InvalidRecords(RecordError::EmptyRecordSet))
    ));
    let mut torn = batch("a", 1, 0);
    torn.pop();
    assert!(matches!(
        log.append(&mut torn, 0, false),
        Err(LogError::InvalidRecords(RecordError::Truncated { .. }))
    ));
    let mut big = BatchBuilder::new(0)
        .record(None, Some(&[0; 300]), 0)
        .build();
    assert!(matches!(
        log.append(&mut big, 0, false),
        Err(LogError::RecordTooLarge { .. })
    ));
    let mut ok_then_big = batch("a", 1, 0);
    ok_then_big.extend(big);
    assert!(log.append(&mut ok_then_big, 0, false).is_err());
    assert_eq!((log.log_end_offset(), log.size_bytes()), (0, 0));
}

#[test]
fn rolls_by_size_and_time_and_reads_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let one = batch("x", 1, 0).len() as u64;
    let mut log = PartitionLog::open(
        dir.path(),
        LogConfig {
            segment_ms: 1000,
            ..config(3 * one, 0)
        },
    )
    .unwrap();
    for i in 0..7 {
        log.append(&mut batch("x", 1, i), 10, false).unwrap();
    }
    assert_eq!(log.segment_count(), 3);
    assert_eq!(segment_files(dir.path(), "log").len(), 3);
    // Older than segment_ms at append time: roll even though the segment has room.
    log.append(&mut batch("late", 1, 0), 2000, false).unwrap();
    assert_eq!(log.segment_count(), 4);
    let names: Vec<String> = segment_files(dir.path(), "log")
        .iter()
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names[1], "00000000000000000003.log");
    for offset in 0..8 {
        let read = values(&log.read(offset, 1 << 20).unwrap());
        assert_eq!(
            read[0].0, offset,
            "a fetch starts at the batch holding {offset}"
        );
    }
    // One fetch reads from one segment.
    assert_eq!(values(&log.read(0, 1 << 20).unwrap()).len(), 3);
    log.flush().unwrap();
    assert_eq!(log.flushed_offset(), 8);
}

/// A batch of one record whose value is `tag` repeated to `bytes` bytes.
fn big_batch(tag: u8, bytes: usize) -> Vec<u8> {
    BatchBuilder::new(0)
        .record(None, Some(&vec![tag; bytes]), 0)
        .build()
}

#[test]
fn large_reads_are_mapped_and_outlive_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let one = big_batch(0, 100_000).len() as u64;
    let mut log = PartitionLog::open(dir.path(), config(6 * one, 0)).unwrap();
    for tag in 0..4 {
        append(&mut log, big_batch(tag, 100_000));
    }
    let tags = |bytes: &[u8]| -> Vec<(i64, u8)> {
        records::stored_batches(bytes)
            .map(|batch| {
                let (header, range) = batch.unwrap();
                let record = records::records(&bytes[range])
                    .unwrap()
                    .next()
                    .unwrap()
                    .unwrap();
                let value = record.value.unwrap();
                assert!(value.iter().all(|&byte| byte == value[0]));
                (header.base_offset, value[0])
            })
            .collect()
    };
    // Reads of 256 KiB and more are mapped, from a batch boundary that is not a page boundary.
    let read = log.read(1, 1 << 20).unwrap();
    assert_eq!(tags(&read), vec![(1, 1), (2, 2), (3, 3)]);
    assert_eq!(read.len() as u64, 3 * one);
    // Whole batches within max_bytes, and below the end offset, as with pread.
    assert_eq!(tags(&log.read(0, 3 * one as usize - 1).unwrap()).len(), 2);
    assert_eq!(tags(&log.read_until(0, 1 << 20, 3).unwrap()).len(), 3);
    // What is appended after a mapped read is read too.
    append(&mut log, big_batch(4, 100_000));
    assert_eq!(tags(&log.read(2, 1 << 20).unwrap()).last(), Some(&(4, 4)));
    // A read held while retention deletes its segment stays valid.
    append(&mut log, big_batch(5, 100_000));
    append(&mut log, big_batch(6, 100_000));
    assert_eq!(log.segment_count(), 2);
    let held = log.read(0, 1 << 20).unwrap();
    log.set_config(LogConfig {
        retention_bytes: 0,
        ..*log.config()
    });
    assert_eq!(log.apply_retention(0).unwrap(), 1);
    assert_eq!(
        tags(&held),
        (0..6)
            .map(|offset| (offset, offset as u8))
            .collect::<Vec<_>>()
    );
}

#[test]
fn retention_by_bytes_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let one = batch("x", 1, 0).len() as u64;
    let mut log = PartitionLog::open(dir.path(), config(2 * one, 0)).unwrap();
    for i in 0..6 {
        log.append(&mut batch("r", 1, i * 100), 0, false).unwrap();
    }
    assert_eq!(log.segment_count(), 3);
    assert_eq!(
        log.apply_retention(10_000).unwrap(),
        0,
        "unlimited by default"
    );
    log.set_config(LogConfig {
        retention_ms: 1000,
        ..*log.config()
    });
    assert_eq!(
        log.apply_retention(1150).unwrap(),
        1,
        "segment [0,1] has max ts 100 < 150"
    );
    assert_eq!(log.log_start_offset(), 2);
    assert!(matches!(
        log.read(1, 10),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    log.set_config(LogConfig {
        retention_ms: -1,
        retention_bytes: 0,
        ..*log.config()
    });
    assert_eq!(
        log.apply_retention(0).unwrap(),
        1,
        "the active segment stays"
    );
    assert_eq!(
        (
            log.log_start_offset(),
            log.segment_count(),
            log.size_bytes()
        ),
        (4, 1, 2 * one)
    );
    assert_eq!(segment_files(dir.path(), "log").len(), 1);
    assert_eq!(segment_files(dir.path(), "index").len(), 0);
    drop(log);
    let log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (4, 6));
}

#[test]
fn offset_for_timestamp_walks_records() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), config(1 << 20, 0)).unwrap();
    // Batch 0: ts 100,101,102; batch 1: ts 50; batch 2: ts 300,301.
    append(&mut log, batch("a", 3, 100));
    append(&mut log, batch("b", 1, 50));
    append(&mut log, batch("c", 2, 300));
    let compressed = BatchBuilder::new(0)
        .opaque_payload(Compression::Zstd, 4, 500, b"zz")
        .build();
    append(&mut log, compressed);
    let cases = [
        (0, Some((0, 100))),
        (100, Some((0, 100))),
        (101, Some((1, 101))),
        (102, Some((2, 102))),
        (103, Some((4, 300))),
        (301, Some((5, 301))),
        (302, Some((6, 500))),
        (500, Some((6, 500))),
        (501, None),
    ];
    for (target, expect) in cases {
        assert_eq!(
            log.offset_for_timestamp(target).unwrap(),
            expect,
            "target {target}"
        );
    }
    assert_eq!(log.max_timestamp(), (500, 6));
}

#[test]
fn tail_offset_is_a_batch_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), config(1 << 20, 0)).unwrap();
    for _ in 0..10 {
        append(&mut log, batch("t", 2, 0));
    }
    let one = batch("t", 2, 0).len() as u64;
    assert_eq!(log.tail_offset(0), 20);
    assert_eq!(log.tail_offset(one), 18);
    assert_eq!(log.tail_offset(3 * one), 14);
    assert_eq!(log.tail_offset(u64::MAX), 0);
}

#[test]
fn flush_jobs_run_without_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let one = batch("x", 1, 0).len() as u64;
    let mut log = PartitionLog::open(dir.path(), config(one, 0)).unwrap();
    append(&mut log, batch("a", 1, 0));
    append(&mut log, batch("b", 1, 0));
    let job = log.begin_flush();
    append(&mut log, batch("c", 1, 0));
    job.run().unwrap();
    assert_eq!(job.end_offset(), 2);
    log.complete_flush(job);
    assert_eq!(log.flushed_offset(), 2);
    log.flush().unwrap();
    assert_eq!(log.flushed_offset(), 3);
}

#[test]
fn delete_all_removes_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("topic-0");
    let mut log = PartitionLog::open(&path, LogConfig::default()).unwrap();
    append(&mut log, batch("a", 1, 0));
    log.delete_all().unwrap();
    assert!(!path.exists());
}

/// Builds a one-segment log of `batches` batches, closes it, returns the batch boundaries.
fn closed_log(dir: &Path, batches: usize, segment_bytes: u64) -> Vec<(u64, i64)> {
    let mut log = PartitionLog::open(dir, config(segment_bytes, 64)).unwrap();
    let mut ends = Vec::new();
    for i in 0..batches {
        let info = append(&mut log, batch(&format!("b{i}"), 1 + i % 3, i as i64));
        ends.push((log.size_bytes(), info.last_offset + 1));
    }
    log.flush().unwrap();
    ends
}

fn check_prefix(log: &PartitionLog, end_offset: i64) {
    assert_eq!(log.log_end_offset(), end_offset);
    assert_eq!(log.flushed_offset(), end_offset);
    let mut offset = 0;
    while offset < end_offset {
        let read = values(&log.read(offset, 1 << 20).unwrap());
        assert_eq!(read.first().map(|r| r.0), Some(offset));
        offset = read.last().unwrap().0 + 1;
    }
    assert_eq!(offset, end_offset);
}

#[test]
fn torn_tail_is_cut_at_every_byte() {
    let template = tempfile::tempdir().unwrap();
    let ends = closed_log(template.path(), 6, 1 << 20);
    let segment = template.path().join(segment::file_name(0, "log"));
    let original = fs::read(&segment).unwrap();
    let (last_start, end_before_last) = ends[ends.len() - 2];
    for cut in last_start..original.len() as u64 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(segment::file_name(0, "log"));
        fs::write(&path, &original[..cut as usize]).unwrap();
        let mut log = PartitionLog::open(dir.path(), config(1 << 20, 64)).unwrap();
        check_prefix(&log, end_before_last);
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            last_start,
            "cut at {cut}"
        );
        // The log goes on from there.
        assert_eq!(
            append(&mut log, batch("again", 1, 0)).base_offset,
            end_before_last
        );
    }
    // Garbage after the whole last batch is cut too.
    for garbage in [
        &[0u8; 1][..],
        &[0; 100],
        &original[..61],
        &original[..original.len() / 2],
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = original.clone();
        bytes.extend_from_slice(garbage);
        fs::write(dir.path().join(segment::file_name(0, "log")), &bytes).unwrap();
        let log = PartitionLog::open(dir.path(), config(1 << 20, 64)).unwrap();
        check_prefix(&log, ends.last().unwrap().1);
    }
}

#[test]
fn corrupt_batch_in_the_middle_cuts_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let ends = closed_log(dir.path(), 5, 1 << 20);
    let path = dir.path().join(segment::file_name(0, "log"));
    let mut bytes = fs::read(&path).unwrap();
    bytes[ends[1].0 as usize + 40] ^= 0xff; // inside batch 2's CRC range
    fs::write(&path, &bytes).unwrap();
    let log = PartitionLog::open(dir.path(), config(1 << 20, 64)).unwrap();
    check_prefix(&log, ends[1].1);
}

#[test]
fn missing_or_garbage_indexes_are_rebuilt() {
    let template = tempfile::tempdir().unwrap();
    let one = batch("b0", 1, 0).len() as u64;
    let ends = closed_log(template.path(), 30, 6 * one);
    let end_offset = ends.last().unwrap().1;
    let reference = PartitionLog::open(template.path(), config(6 * one, 64)).unwrap();
    assert!(reference.segment_count() > 3);
    let expected: Vec<Bytes> = (0..end_offset)
        .map(|o| reference.read(o, 300).unwrap())
        .collect();
    let expected_times: Vec<_> = (0..40)
        .map(|t| reference.offset_for_timestamp(t).unwrap())
        .collect();
    drop(reference);
    let damages: [&dyn Fn(&Path); 5] = [
        &|path| fs::remove_file(path).unwrap(),
        &|path| fs::write(path, b"garbage").unwrap(),
        &|path| fs::write(path, [0xff; 16]).unwrap(),
        &|path| {
            OpenOptions::new()
                .append(true)
                .open(path)
                .unwrap()
                .write_all_at(&[0; 8], 0)
                .unwrap()
        },
        &|path| fs::write(path, []).unwrap(),
    ];
    for extension in ["index", "timeindex"] {
        for (which, damage) in damages.iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            for entry in fs::read_dir(template.path()).unwrap() {
                let entry = entry.unwrap();
                fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
            }
            for path in segment_files(dir.path(), extension) {
                damage(&path);
            }
            let log = PartitionLog::open(dir.path(), config(6 * one, 64)).unwrap();
            assert_eq!(
                log.log_end_offset(),
                end_offset,
                "{extension} damage {which}"
            );
            for offset in 0..end_offset {
                assert_eq!(
                    log.read(offset, 300).unwrap(),
                    expected[offset as usize],
                    "{extension} {which} {offset}"
                );
            }
            for t in 0..40 {
                assert_eq!(
                    log.offset_for_timestamp(t).unwrap(),
                    expected_times[t as usize],
                    "{extension} {which} ts {t}"
                );
            }
        }
    }
}

#[test]
fn index_without_segment_is_removed_and_overlap_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(segment::file_name(5, "index")), []).unwrap();
    fs::write(dir.path().join("unrelated.txt"), b"x").unwrap();
    let mut log = PartitionLog::open(dir.path(), config(1 << 20, 64)).unwrap();
    assert!(!dir.path().join(segment::file_name(5, "index")).exists());
    for _ in 0..3 {
        append(&mut log, batch("a", 2, 0));
    }
    drop(log);
    // A segment that starts inside the previous one.
    fs::write(dir.path().join(segment::file_name(3, "log")), []).unwrap();
    assert!(matches!(
        PartitionLog::open(dir.path(), config(1 << 20, 64)),
        Err(LogError::Corrupt { .. })
    ));
}

// ---- Property test against a reference model ----

#[derive(Debug, Clone)]
enum Op {
    /// Batches of record timestamps; each record's value is unique.
    Append {
        batches: Vec<Vec<i64>>,
        log_append_time: bool,
        clock_step_ms: i64,
    },
    Read {
        pick: prop::sample::Index,
        max_bytes: usize,
        limit_back: i64,
    },
    Lookup {
        timestamp_ms: i64,
    },
    Retention,
    Flush,
    Reopen,
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (
            proptest::collection::vec(proptest::collection::vec(0i64..1000, 1..4), 1..3),
            any::<bool>(),
            0i64..200,
        )
            .prop_map(|(batches, log_append_time, clock_step_ms)| Op::Append { batches, log_append_time, clock_step_ms }),
        3 => (any::<prop::sample::Index>(), 1usize..600, 0i64..3)
            .prop_map(|(pick, max_bytes, limit_back)| Op::Read { pick, max_bytes, limit_back }),
        2 => (-10i64..3000).prop_map(|timestamp_ms| Op::Lookup { timestamp_ms }),
        1 => Just(Op::Retention),
        1 => Just(Op::Flush),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Debug, Clone)]
struct ModelRecord {
    offset: i64,
    batch_base: i64,
    value: String,
    timestamp_ms: i64,
}

fn check_model(config: LogConfig, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), config).unwrap();
    let mut model: Vec<ModelRecord> = Vec::new();
    let mut start = 0i64;
    let mut end = 0i64;
    let mut clock = 10_000i64;
    let mut next_value = 0u64;
    for op in ops {
        match op {
            Op::Append {
                batches,
                log_append_time,
                clock_step_ms,
            } => {
                clock += clock_step_ms;
                let mut set = Vec::new();
                let mut added = Vec::new();
                for timestamps in &batches {
                    let mut builder = BatchBuilder::new(-7);
                    for (i, &timestamp_ms) in timestamps.iter().enumerate() {
                        let value = format!("v{next_value}");
                        next_value += 1;
                        builder = builder.record(None, Some(value.as_bytes()), timestamp_ms);
                        added.push((i, value, if log_append_time { clock } else { timestamp_ms }));
                    }
                    set.extend(builder.build());
                }
                let info = log.append(&mut set, clock, log_append_time).unwrap();
                prop_assert_eq!(info.base_offset, end);
                let mut batch_base = end;
                for (i, value, timestamp_ms) in added {
                    if i == 0 {
                        batch_base = end;
                    }
                    model.push(ModelRecord {
                        offset: end,
                        batch_base,
                        value,
                        timestamp_ms,
                    });
                    end += 1;
                }
                prop_assert_eq!(info.last_offset, end - 1);
            }
            Op::Read {
                pick,
                max_bytes,
                limit_back,
            } => {
                let offset = start + pick.index((end - start + 1) as usize) as i64;
                let limit = (end - limit_back).max(start);
                let bytes = log.read_until(offset, max_bytes, limit).unwrap();
                let mut expected = offset;
                let mut batch_count = 0;
                for batch in records::stored_batches(&bytes) {
                    let (header, range) = batch.unwrap();
                    batch_count += 1;
                    prop_assert!(header.last_offset() < limit);
                    if batch_count == 1 {
                        prop_assert!(
                            header.base_offset <= offset && offset <= header.last_offset()
                        );
                        expected = header.base_offset;
                    }
                    for record in records::records(&bytes[range]).unwrap() {
                        let record = record.unwrap();
                        let want = &model[expected as usize];
                        let timestamp_ms = match header.timestamp_type() {
                            TimestampType::LogAppendTime => header.max_timestamp,
                            TimestampType::CreateTime => {
                                header.base_timestamp + record.timestamp_delta
                            }
                        };
                        prop_assert_eq!(
                            header.base_offset + record.offset_delta as i64,
                            want.offset
                        );
                        prop_assert_eq!(record.value.unwrap(), want.value.as_bytes());
                        prop_assert_eq!(timestamp_ms, want.timestamp_ms);
                        expected += 1;
                    }
                }
                prop_assert!(batch_count <= 1 || bytes.len() <= max_bytes);
                let batch_holding = model
                    .iter()
                    .find(|r| r.offset == offset)
                    .map(|r| r.batch_base);
                let last_of_batch = model
                    .iter()
                    .filter(|r| Some(r.batch_base) == batch_holding)
                    .map(|r| r.offset)
                    .max();
                if offset < end && last_of_batch.is_some_and(|last| last < limit) {
                    prop_assert!(
                        batch_count >= 1,
                        "read({}) below the limit returned nothing",
                        offset
                    );
                }
            }
            Op::Lookup { timestamp_ms } => {
                let expected = model
                    .iter()
                    .filter(|r| r.offset >= start)
                    .find(|r| r.timestamp_ms >= timestamp_ms)
                    .map(|r| (r.offset, r.timestamp_ms));
                prop_assert_eq!(log.offset_for_timestamp(timestamp_ms).unwrap(), expected);
                // Every record in [t, t + 100) lies in a run of batches the zones give.
                let (low, high) = (timestamp_ms, timestamp_ms + 100);
                let mut runs = Vec::new();
                let mut at = start;
                while let Some((from, to)) = log.next_in_time_range(at, low, high) {
                    prop_assert!(from >= at && to > from, "run {}..{} from {}", from, to, at);
                    runs.push((from, to));
                    at = to;
                }
                for record in model
                    .iter()
                    .filter(|r| r.offset >= start && r.timestamp_ms >= low && r.timestamp_ms < high)
                {
                    prop_assert!(
                        runs.iter()
                            .any(|&(from, to)| from <= record.offset && record.offset < to),
                        "record {:?} is in no run of {:?}",
                        record,
                        runs
                    );
                }
            }
            Op::Retention => {
                let before = log.size_bytes();
                log.apply_retention(clock).unwrap();
                let new_start = log.log_start_offset();
                prop_assert!(new_start >= start && new_start <= end);
                prop_assert!(new_start == end || model.iter().any(|r| r.batch_base == new_start));
                if config.retention_ms < 0 && config.retention_bytes < 0 {
                    prop_assert_eq!(new_start, start);
                }
                if new_start > start && config.retention_ms >= 0 && config.retention_bytes < 0 {
                    let deleted_max = model
                        .iter()
                        .filter(|r| r.offset >= start && r.offset < new_start)
                        .map(|r| r.timestamp_ms)
                        .max();
                    prop_assert!(deleted_max.unwrap_or(-1) < clock - config.retention_ms);
                }
                if config.retention_bytes >= 0 {
                    prop_assert!(log.size_bytes() <= before);
                }
                start = new_start;
            }
            Op::Flush => {
                log.flush().unwrap();
                prop_assert_eq!(log.flushed_offset(), end);
            }
            Op::Reopen => {
                drop(log);
                log = PartitionLog::open(dir.path(), config).unwrap();
                prop_assert_eq!(log.flushed_offset(), end);
            }
        }
        prop_assert_eq!(log.log_end_offset(), end);
        prop_assert_eq!(log.log_start_offset(), start);
        let retained = model.iter().filter(|r| r.offset >= start);
        let max = retained.fold((-1, -1), |best, r| {
            if r.timestamp_ms > best.0 {
                (r.timestamp_ms, r.batch_base)
            } else {
                best
            }
        });
        prop_assert_eq!(log.max_timestamp(), max);
    }
    Ok(())
}

fn arb_config() -> impl Strategy<Value = LogConfig> {
    (
        150u64..1500,
        0u32..400,
        prop_oneof![Just(-1i64), 0i64..2000],
        prop_oneof![Just(-1i64), 0i64..3000],
    )
        .prop_map(
            |(segment_bytes, index_interval_bytes, retention_ms, retention_bytes)| LogConfig {
                segment_bytes,
                index_interval_bytes,
                retention_ms,
                retention_bytes,
                ..LogConfig::default()
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn log_agrees_with_model(config in arb_config(), ops in proptest::collection::vec(arb_op(), 1..60)) {
        check_model(config, ops)?;
    }
}

#[test]
fn a_superseded_prefix_is_deleted_by_whole_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    log.roll_now().unwrap(); // empty active segment: nothing to roll
    assert_eq!(segment_files(dir.path(), "log").len(), 1);
    append(&mut log, batch("old", 3, 1_000));
    log.roll_now().unwrap();
    append(&mut log, batch("old", 2, 2_000));
    log.roll_now().unwrap();
    let snapshot = append(&mut log, batch("snapshot", 4, 3_000));
    assert_eq!(
        (snapshot.base_offset, segment_files(dir.path(), "log").len()),
        (5, 3)
    );

    assert_eq!(log.delete_segments_below(snapshot.base_offset).unwrap(), 2);
    assert_eq!(log.log_start_offset(), 5);
    assert_eq!(
        log.delete_segments_below(i64::MAX).unwrap(),
        0,
        "never the active segment"
    );
    log.flush().unwrap();
    drop(log);
    let log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (5, 9));
    let read = values(&log.read(5, 1 << 20).unwrap());
    assert_eq!(read.first(), Some(&(5, "snapshot-0".to_string())));
    assert_eq!(read.len(), 4);
}

#[test]
fn sealed_slices_read_sealed_segments_without_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 300,
        ..LogConfig::default()
    };
    let mut log = PartitionLog::open(dir.path(), config).unwrap();
    let mut appended = Vec::new();
    for n in 0..20u8 {
        let mut batch = records::BatchBuilder::new(0)
            .record(None, Some(&[n; 40]), 1_000 + n as i64)
            .build();
        log.append(&mut batch, 2_000, false).unwrap();
        appended.push(batch);
    }
    let sealed = log.sealed_segments();
    assert!(sealed.len() >= 2, "{sealed:?}");
    assert_eq!(sealed[0].base_offset, 0);
    for pair in sealed.windows(2) {
        assert_eq!(pair[0].next_offset, pair[1].base_offset);
    }
    let first = sealed[0];
    let slice = log.sealed_slice(1).unwrap().unwrap();
    assert_eq!(slice.segment_next_offset(), first.next_offset);
    // At least one batch, whatever the limit; then whole batches only.
    let one = slice.read(1).unwrap();
    assert_eq!(&one[..], &appended[1][..]);
    let all = slice.read(1 << 20).unwrap();
    let expected: Vec<u8> = appended[1..first.next_offset as usize].concat();
    assert_eq!(&all[..], &expected[..]);
    // The active segment is not sealed.
    assert!(
        log.sealed_slice(log.log_end_offset() - 1)
            .unwrap()
            .is_none()
    );
    // A deleted segment stays readable through a slice taken before.
    let slice = log.sealed_slice(0).unwrap().unwrap();
    log.delete_segments_below(first.next_offset).unwrap();
    assert_eq!(slice.read(1).unwrap().len(), appended[0].len());
}
