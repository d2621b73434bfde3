//! `__consumer_offsets` does not grow for ever: after enough commits the live offsets are
//! rewritten and the older segments deleted, and a restart still finds every committed offset.

use std::time::{Duration, Instant};

use broker::offsets::{CommittedOffset, OFFSETS_TOPIC};
use broker::{Broker, BrokerConfig};

fn committed(offset: i64) -> Option<CommittedOffset> {
    Some(CommittedOffset {
        offset,
        leader_epoch: 0,
        metadata: format!("m{offset}"),
        commit_timestamp_ms: 1,
    })
}

fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn snapshots_keep_the_offsets_and_drop_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig::for_data_dir(dir.path().to_path_buf());
    config.offsets_snapshot_after_records = 100;
    let broker = Broker::open(config.clone()).unwrap();
    let offsets_partition = broker
        .topics
        .get(OFFSETS_TOPIC)
        .unwrap()
        .partition(0)
        .unwrap();
    let store = &broker.groups.offsets;
    // 3 live keys in 2 groups, committed 60 times each; one key deleted at the end.
    let mut last = 0;
    for round in 0..60 {
        last = store
            .write(
                "g1",
                &[
                    (("t".into(), 0), committed(round)),
                    (("t".into(), 1), committed(round * 2)),
                ],
                &broker.flusher,
            )
            .unwrap();
        last = last.max(
            store
                .write(
                    "g2",
                    &[(("u".into(), 0), committed(round * 3))],
                    &broker.flusher,
                )
                .unwrap(),
        );
    }
    store
        .write("g2", &[(("u".into(), 0), None)], &broker.flusher)
        .unwrap();
    // The ticker takes the snapshot: the log start moves past the history.
    wait_until("a snapshot", || offsets_partition.log_start_offset() > last);
    assert_eq!(store.get("g1", "t", 1), committed(118));
    broker.shutdown();
    drop(broker);

    let broker = Broker::open(config).unwrap();
    let store = &broker.groups.offsets;
    assert_eq!(store.get("g1", "t", 0), committed(59));
    assert_eq!(store.get("g1", "t", 1), committed(118));
    assert_eq!(
        store.get("g2", "u", 0),
        None,
        "a deleted offset stays deleted"
    );
    assert_eq!(store.groups(), vec!["g1".to_string()]);
    broker.shutdown();
}
