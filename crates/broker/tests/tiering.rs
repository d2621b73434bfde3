//! The cold tier in the broker: sealed segments are uploaded, local copies leave the hot window
//! only once uploaded, cold reads give back the very batches that were produced, a restart
//! reloads the manifest, retention deletes objects manifest first, and rewrites add typed
//! columns to old objects without changing what Kafka reads.

use std::sync::Arc;

use arrow_array::Array;
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

/// Typed columns for tests: the value's length under the name the topic's `value.schema`
/// gives (the SQL layer supplies the real ones).
#[derive(Debug)]
struct Lengths(String);

impl tier::convert::ValueColumns for Lengths {
    fn fields(&self) -> arrow_schema::Fields {
        arrow_schema::Fields::from(vec![arrow_schema::Field::new(
            &self.0,
            arrow_schema::DataType::Int64,
            true,
        )])
    }

    fn describe(&self) -> String {
        format!("lengths: {}", self.0)
    }

    fn decode(
        &self,
        values: &arrow_array::BinaryViewArray,
    ) -> Result<(arrow_array::StructArray, arrow_array::ArrayRef), String> {
        let lengths: arrow_array::Int64Array =
            values.iter().map(|v| v.map(|v| v.len() as i64)).collect();
        let errors = arrow_array::new_null_array(&arrow_schema::DataType::Utf8, values.len());
        let fields =
            arrow_array::StructArray::try_new(self.fields(), vec![Arc::new(lengths)], None)
                .map_err(|error| error.to_string())?;
        Ok((fields, errors))
    }
}

fn typed_broker(dir: &std::path::Path, grace: Duration) -> Arc<Broker> {
    let mut config = config(dir);
    config.tiering.as_mut().unwrap().rewrite_grace = grace;
    let broker = Broker::open(config).unwrap();
    broker.tiering.as_ref().unwrap().set_value_columns(Arc::new(
        |topic: &broker::topics::Topic| {
            let config = topic.config();
            let declared = config.value_of("value.schema").trim();
            (!declared.is_empty()).then(|| {
                Arc::new(Lengths(declared.to_string())) as Arc<dyn tier::convert::ValueColumns>
            })
        },
    ));
    broker
}

/// The typed-columns description in each object's footer, read from the store's folder.
fn footer_schemas(dir: &std::path::Path, manifest: &tier::Manifest) -> Vec<Option<String>> {
    manifest
        .objects
        .iter()
        .map(|object| {
            let bytes = std::fs::read(dir.join("cold").join(&object.key)).unwrap();
            tier::convert::read_value_schema(&bytes::Bytes::from(bytes)).unwrap()
        })
        .collect()
}

fn parquet_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("cold/events/0"))
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".parquet")
        })
        .count()
}

#[test]
fn a_declared_schema_rewrites_old_objects_one_per_pass_and_fetches_stay_identical() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime();
    let broker = typed_broker(dir.path(), Duration::from_secs(3600));
    let topic_config =
        TopicConfig::from_pairs([("segment.bytes", "4096"), ("local.retention.bytes", "0")])
            .unwrap();
    let topic = broker.topics.create("events", 1, 1, topic_config).unwrap();
    let partition = topic.partition(0).unwrap();
    let produced = produce(&broker, &partition, 0, 300);
    let tiering = broker.tiering.as_ref().unwrap();
    runtime.block_on(tiering.tick(&broker));
    let before = partition.cold_manifest().unwrap();
    let count = before.objects.len();
    assert!(count >= 3, "{before:?}");
    assert!(
        footer_schemas(dir.path(), &before)
            .iter()
            .all(Option::is_none)
    );
    // Without a declared schema nothing is rewritten.
    runtime.block_on(tiering.tick(&broker));
    assert_eq!(partition.cold_manifest().unwrap().objects, before.objects);

    let mut declared = topic.config();
    declared.set("value.schema", "size").unwrap();
    broker.topics.set_config("events", declared).unwrap();
    let ranges = |manifest: &tier::Manifest| -> Vec<(i64, i64)> {
        manifest
            .objects
            .iter()
            .map(|object| (object.base_offset(), object.next_offset()))
            .collect()
    };
    for pass in 1..=count {
        runtime.block_on(tiering.tick(&broker));
        let manifest = partition.cold_manifest().unwrap();
        // One object per pass, one new manifest version each, the same offsets tiled.
        assert_eq!(manifest.version, before.version + pass as u64);
        assert_eq!(ranges(&manifest), ranges(&before));
        let typed = manifest
            .objects
            .iter()
            .filter(|object| object.value_schema.as_deref() == Some("lengths: size"))
            .count();
        assert_eq!(typed, pass);
        let m = &tiering.metrics;
        assert_eq!(
            m.rewrites.load(std::sync::atomic::Ordering::Relaxed),
            pass as u64
        );
        assert_eq!(
            m.rewrite_pending_objects
                .load(std::sync::atomic::Ordering::Relaxed),
            (count - pass) as i64
        );
        assert_eq!(
            read_all(&runtime, &broker, &partition, 0),
            produced.concat()
        );
    }
    let after = partition.cold_manifest().unwrap();
    assert_eq!(
        footer_schemas(dir.path(), &after),
        vec![Some("lengths: size".to_string()); count]
    );
    // The replaced objects wait out the grace period: a reader handed one before the swap
    // still reads it.
    assert_eq!(parquet_files(dir.path()), 2 * count);
    let old = runtime.block_on(tiering.load(&before.objects[0])).unwrap();
    assert_eq!(old.base_offset(), 0);
    runtime.block_on(tiering.tick(&broker));
    assert_eq!(partition.cold_manifest().unwrap().version, after.version);

    // A restart removes them as orphans; the data reads back the same.
    broker.shutdown();
    drop(broker);
    let broker = typed_broker(dir.path(), Duration::ZERO);
    let partition = broker.topics.get("events").unwrap().partition(0).unwrap();
    runtime.block_on(broker.tiering.as_ref().unwrap().tick(&broker));
    assert_eq!(partition.cold_manifest().unwrap().objects, after.objects);
    assert_eq!(parquet_files(dir.path()), count);
    assert_eq!(
        read_all(&runtime, &broker, &partition, 0),
        produced.concat()
    );

    // Another schema: every object is rewritten again, and with no grace the replaced objects
    // go at the next pass.
    let topic = broker.topics.get("events").unwrap();
    let mut declared = topic.config();
    declared.set("value.schema", "bytes").unwrap();
    broker.topics.set_config("events", declared).unwrap();
    let tiering = broker.tiering.as_ref().unwrap();
    for _ in 0..=count {
        runtime.block_on(tiering.tick(&broker));
    }
    let last = partition.cold_manifest().unwrap();
    assert_eq!(
        footer_schemas(dir.path(), &last),
        vec![Some("lengths: bytes".to_string()); count]
    );
    assert_eq!(parquet_files(dir.path()), count);
    assert_eq!(
        tiering
            .metrics
            .retired_objects
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert_eq!(
        read_all(&runtime, &broker, &partition, 0),
        produced.concat()
    );
}

#[test]
fn an_object_that_cannot_be_rewritten_does_not_hold_back_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime();
    let broker = typed_broker(dir.path(), Duration::ZERO);
    let topic_config =
        TopicConfig::from_pairs([("segment.bytes", "4096"), ("local.retention.bytes", "0")])
            .unwrap();
    let topic = broker.topics.create("events", 1, 1, topic_config).unwrap();
    let partition = topic.partition(0).unwrap();
    produce(&broker, &partition, 0, 200);
    let tiering = broker.tiering.as_ref().unwrap();
    runtime.block_on(tiering.tick(&broker));
    let before = partition.cold_manifest().unwrap();
    let count = before.objects.len();
    // The first object goes bad in the store.
    std::fs::write(
        dir.path().join("cold").join(&before.objects[0].key),
        b"garbage",
    )
    .unwrap();

    let mut declared = topic.config();
    declared.set("value.schema", "size").unwrap();
    broker.topics.set_config("events", declared).unwrap();
    for _ in 0..count + 1 {
        runtime.block_on(tiering.tick(&broker));
    }
    let after = partition.cold_manifest().unwrap();
    let m = &tiering.metrics;
    let load =
        |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(load(&m.rewrite_errors), 1);
    assert_eq!(load(&m.rewrites), count as u64 - 1);
    // The bad object is still named, unchanged; every other one has the columns.
    assert_eq!(after.objects[0], before.objects[0]);
    assert!(
        after.objects[1..]
            .iter()
            .all(|object| object.value_schema.as_deref() == Some("lengths: size"))
    );
    assert_eq!(
        m.rewrite_pending_objects
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(tiering.rewrite_pending(&topic, &after), 1);
}
