//! The cold tier in the broker: sealed segments are uploaded, local copies leave the hot window
//! only once uploaded, cold reads give back the very batches that were produced, a restart
//! reloads the manifest, and retention deletes objects manifest first.

use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::partition::Partition;
use broker::tiering::{ColdRead, TieringConfig};
use broker::topic_config::TopicConfig;
use broker::{Broker, BrokerConfig};

const RECORDS_PER_BATCH: usize = 5;

fn config(dir: &std::path::Path) -> BrokerConfig {
    let mut config = BrokerConfig::for_data_dir(dir.join("data"));
    let mut tiering = TieringConfig::new(tier::StoreLocation::Local(dir.join("cold")));
    tiering.object_bytes = 8 * 1024;
    config.tiering = Some(tiering);
    config
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Appends `count` batches to the partition and waits until they are durable; returns them
/// as stored (offsets assigned).
fn produce(
    broker: &Broker,
    partition: &Arc<Partition>,
    first: usize,
    count: usize,
) -> Vec<Vec<u8>> {
    let mut stored = Vec::new();
    for n in first..first + count {
        let base = partition.log_end_offset();
        let mut builder = records::BatchBuilder::new(0);
        for r in 0..RECORDS_PER_BATCH {
            let value = format!("value {n}/{r} {}", "x".repeat(n % 50));
            builder = builder.record(
                Some(format!("key{}", n % 7).as_bytes()),
                Some(value.as_bytes()),
                1_000 * n as i64 + r as i64,
            );
        }
        let mut batch = builder.build();
        let header = records::validate_batch(&batch).unwrap();
        partition
            .append(&mut [(header, &mut batch[..])], false, &broker.flusher)
            .unwrap();
        records::set_base_offset(&mut batch, base).unwrap();
        stored.push(batch);
    }
    let end = partition.log_end_offset();
    let deadline = Instant::now() + Duration::from_secs(10);
    while partition.high_watermark() < end {
        assert!(Instant::now() < deadline, "flush did not happen");
        std::thread::sleep(Duration::from_millis(5));
    }
    stored
}

/// Reads the whole partition from `from` through the tier (cold) and the local log.
fn read_all(
    runtime: &tokio::runtime::Runtime,
    broker: &Broker,
    partition: &Partition,
    from: i64,
) -> Vec<u8> {
    let tiering = broker.tiering.as_ref().unwrap();
    // Cold reads prefetch the next object on the runtime.
    let _runtime = runtime.enter();
    let mut offset = from;
    let mut out = Vec::new();
    while offset < partition.high_watermark() {
        let read = if offset < partition.local_start_offset() {
            match tiering.read(partition, offset, 3_000).unwrap() {
                ColdRead::Ready(read) => read,
                ColdRead::Load(entry) => {
                    runtime.block_on(tiering.load(&entry)).unwrap();
                    continue;
                }
            }
        } else {
            partition.read(offset, 3_000).unwrap()
        };
        assert!(!read.records.is_empty(), "nothing at offset {offset}");
        for batch in records::stored_batches(&read.records) {
            let (header, range) = batch.unwrap();
            out.extend_from_slice(&read.records[range]);
            offset = header.last_offset() + 1;
        }
    }
    out
}

#[test]
fn segments_move_to_the_cold_tier_and_read_back_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime();
    let broker = Broker::open(config(dir.path())).unwrap();
    let topic_config =
        TopicConfig::from_pairs([("segment.bytes", "4096"), ("local.retention.bytes", "0")])
            .unwrap();
    let topic = broker.topics.create("events", 1, 1, topic_config).unwrap();
    let partition = topic.partition(0).unwrap();
    let produced = produce(&broker, &partition, 0, 300);
    let tiering = broker.tiering.as_ref().unwrap();
    runtime.block_on(tiering.tick(&broker));

    let manifest = partition.cold_manifest().expect("the manifest is loaded");
    assert!(manifest.objects.len() >= 2, "{manifest:?}");
    assert_eq!(manifest.start_offset(), Some(0));
    // Everything sealed went cold, and left local disk: only the active segment stays.
    assert_eq!(partition.sealed_segments(), vec![]);
    assert_eq!(manifest.next_offset(), Some(partition.local_start_offset()));
    assert_eq!(partition.log_start_offset(), 0);
    assert!(
        std::fs::read_dir(dir.path().join("cold/events/0"))
            .unwrap()
            .count()
            > manifest.objects.len()
    );

    // Uncompressed CreateTime batches come back byte for byte, across the cold/hot boundary.
    assert_eq!(
        read_all(&runtime, &broker, &partition, 0),
        produced.concat()
    );
    // A read in the middle of a batch starts at that batch.
    let middle = read_all(&runtime, &broker, &partition, 7);
    assert_eq!(middle, produced[1..].concat());

    // Timestamps in the cold tier: the first record at or after the time.
    let found = runtime
        .block_on(tiering.offset_for_timestamp(&partition, 1_000 * 10 + 3))
        .unwrap();
    assert_eq!(
        found,
        Some((10 * RECORDS_PER_BATCH as i64 + 3, 1_000 * 10 + 3))
    );

    // A restart reloads the manifest; the cold data is still there.
    broker.shutdown();
    drop(broker);
    let broker = Broker::open(config(dir.path())).unwrap();
    let partition = broker.topics.get("events").unwrap().partition(0).unwrap();
    assert!(partition.cold_manifest().is_none());
    runtime.block_on(broker.tiering.as_ref().unwrap().tick(&broker));
    assert_eq!(partition.cold_manifest().unwrap().objects, manifest.objects);
    assert_eq!(
        read_all(&runtime, &broker, &partition, 0),
        produced.concat()
    );

    // Retention over the whole log: objects go, manifest first; the log start moves.
    let mut retained = broker.topics.get("events").unwrap().config();
    retained.set("retention.bytes", "6000").unwrap();
    broker.topics.set_config("events", retained).unwrap();
    runtime.block_on(broker.tiering.as_ref().unwrap().tick(&broker));
    let after = partition.cold_manifest().unwrap();
    assert!(after.objects.len() < manifest.objects.len(), "{after:?}");
    assert!(partition.log_start_offset() > 0);
    let start = partition.log_start_offset();
    let first_kept = produced
        .iter()
        .position(|batch| records::BatchHeader::parse(batch).unwrap().base_offset == start)
        .expect("the log starts at a batch boundary");
    assert_eq!(
        read_all(&runtime, &broker, &partition, start),
        produced[first_kept..].concat()
    );
    for object in &manifest.objects[..manifest.objects.len() - after.objects.len()] {
        assert!(
            !dir.path().join("cold").join(&object.key).exists(),
            "{} was not deleted",
            object.key
        );
    }
}

#[test]
fn nothing_leaves_local_disk_before_it_is_uploaded() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime();
    let broker = Broker::open(config(dir.path())).unwrap();
    let topic_config = TopicConfig::from_pairs([
        ("segment.bytes", "4096"),
        ("local.retention.bytes", "0"),
        ("remote.storage.enable", "false"),
    ])
    .unwrap();
    let topic = broker
        .topics
        .create("local", 1, 1, topic_config.clone())
        .unwrap();
    let partition = topic.partition(0).unwrap();
    let produced = produce(&broker, &partition, 0, 100);
    runtime.block_on(broker.tiering.as_ref().unwrap().tick(&broker));
    // Remote storage off: nothing uploaded, nothing deleted.
    assert_eq!(partition.cold_manifest().unwrap().objects, vec![]);
    assert_eq!(partition.local_start_offset(), 0);

    // The store goes away (a folder that cannot be created): uploads fail, local stays.
    std::fs::remove_dir_all(dir.path().join("cold")).unwrap();
    std::fs::write(dir.path().join("cold"), b"not a folder").unwrap();
    let mut enabled = topic_config;
    enabled.set("remote.storage.enable", "true").unwrap();
    broker.topics.set_config("local", enabled).unwrap();
    runtime.block_on(broker.tiering.as_ref().unwrap().tick(&broker));
    let tiering = broker.tiering.as_ref().unwrap();
    assert!(
        tiering
            .metrics
            .upload_errors
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    assert!(
        tiering
            .metrics
            .pending_segments
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    assert_eq!(partition.local_start_offset(), 0);
    assert_eq!(
        read_all(&runtime, &broker, &partition, 0),
        produced.concat()
    );

    // It comes back: uploads complete and local segments go.
    std::fs::remove_file(dir.path().join("cold")).unwrap();
    std::fs::create_dir(dir.path().join("cold")).unwrap();
    runtime.block_on(tiering.tick(&broker));
    assert!(partition.local_start_offset() > 0);
    assert_eq!(
        tiering
            .metrics
            .pending_segments
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert_eq!(
        read_all(&runtime, &broker, &partition, 0),
        produced.concat()
    );
}

#[test]
fn a_missing_or_corrupt_object_is_an_error_never_wrong_data() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime();
    let broker = Broker::open(config(dir.path())).unwrap();
    let topic_config =
        TopicConfig::from_pairs([("segment.bytes", "4096"), ("local.retention.bytes", "0")])
            .unwrap();
    let topic = broker.topics.create("broken", 1, 1, topic_config).unwrap();
    let partition = topic.partition(0).unwrap();
    produce(&broker, &partition, 0, 200);
    let tiering = broker.tiering.as_ref().unwrap();
    runtime.block_on(tiering.tick(&broker));
    let manifest = partition.cold_manifest().unwrap();
    assert!(manifest.objects.len() >= 3, "{manifest:?}");
    let _runtime = runtime.enter();

    let cold = dir.path().join("cold");
    let missing = &manifest.objects[0];
    std::fs::remove_file(cold.join(&missing.key)).unwrap();
    let corrupt = &manifest.objects[1];
    let mut bytes = std::fs::read(cold.join(&corrupt.key)).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle..middle + 64].fill(0xAB);
    std::fs::write(cold.join(&corrupt.key), bytes).unwrap();
    // Another object of the same offsets but not the one the manifest names: wrong data.
    let swapped = &manifest.objects[2];
    std::fs::copy(cold.join(&manifest.objects[3].key), cold.join(&swapped.key)).unwrap();

    for (entry, what) in [
        (missing, "does not have it"),
        (corrupt, "corrupt"),
        (swapped, "manifest says"),
    ] {
        let error = match tiering
            .read(&partition, entry.base_offset(), 1 << 20)
            .unwrap()
        {
            ColdRead::Load(wanted) => {
                assert_eq!(&wanted, entry);
                runtime
                    .block_on(tiering.load(&wanted))
                    .expect_err("a load error")
            }
            ColdRead::Ready(read) => {
                panic!("served {} bytes from a broken object", read.records.len())
            }
        };
        assert_eq!(
            error.code,
            kafka_protocol::error::ResponseError::KafkaStorageError
        );
        assert!(error.message.contains(what), "{what}: {}", error.message);
    }
    assert!(
        tiering
            .cache
            .stats
            .errors
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 3
    );
}
