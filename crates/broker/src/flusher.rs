//! Group commit: one thread fsyncs every partition appended to since its last round, then moves
//! their high watermarks, which wakes `acks=all` producers and long-polling fetches. Appends that
//! arrive during an fsync are covered by the next round, so many produce requests share one fsync.

use std::sync::Arc;

use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;

use crate::partition::Partition;

#[derive(Default)]
struct Queue {
    partitions: Vec<Arc<Partition>>,
    stopping: bool,
}

/// Partitions fsynced at once in one round.
const FLUSH_THREADS_MAX: usize = 8;

fn flush_or_abort(partition: &Partition) {
    if let Err(error) = partition.flush() {
        // An fsync that fails may have dropped dirty pages: going on could acknowledge data
        // that is not on disk. Stop, and let recovery establish what is durable.
        tracing::error!(
            topic = %partition.topic,
            partition = partition.index,
            %error,
            "fsync failed; stopping the broker to protect acknowledged data"
        );
        std::process::abort();
    }
}

pub struct Flusher {
    queue: Mutex<Queue>,
    wake: Condvar,
    /// Bumped after every round that moved data: long-polling fetches wait on it.
    rounds: watch::Sender<u64>,
}

impl Flusher {
    pub fn new() -> Arc<Flusher> {
        Arc::new(Flusher {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            rounds: watch::Sender::new(0),
        })
    }

    /// Starts the flusher thread.
    pub fn start(self: &Arc<Self>) -> std::thread::JoinHandle<()> {
        let flusher = self.clone();
        std::thread::Builder::new()
            .name("flusher".into())
            .spawn(move || flusher.run())
            .expect("spawning the flusher thread")
    }

    pub fn schedule(&self, partition: Arc<Partition>) {
        let mut queue = self.queue.lock();
        queue.partitions.push(partition);
        drop(queue);
        self.wake.notify_one();
    }

    pub fn subscribe_rounds(&self) -> watch::Receiver<u64> {
        self.rounds.subscribe()
    }

    pub fn stop(&self) {
        self.queue.lock().stopping = true;
        self.wake.notify_one();
    }

    fn run(&self) {
        loop {
            let partitions = {
                let mut queue = self.queue.lock();
                while queue.partitions.is_empty() && !queue.stopping {
                    self.wake.wait(&mut queue);
                }
                if queue.partitions.is_empty() && queue.stopping {
                    return;
                }
                std::mem::take(&mut queue.partitions)
            };
            // The fsyncs of one round run side by side, so the file system can commit them in
            // one journal transaction instead of one after the other.
            for chunk in partitions.chunks(FLUSH_THREADS_MAX) {
                std::thread::scope(|scope| {
                    for partition in chunk.iter().skip(1) {
                        scope.spawn(|| flush_or_abort(partition));
                    }
                    flush_or_abort(&chunk[0]);
                });
            }
            self.rounds.send_modify(|round| *round += 1);
        }
    }
}
