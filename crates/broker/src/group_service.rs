//! The broker side of consumer groups: the `groups::Coordinator` state machine behind a lock,
//! the requests it has parked (each waiting on a oneshot channel), a ticker thread that drives
//! session and rebalance timeouts, and the durable offset store.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use groups::{Coordinator, CoordinatorConfig, Response, Token};
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::offsets::OffsetStore;

/// How often timeouts are checked: the resolution of session and rebalance deadlines.
const TICK_INTERVAL: Duration = Duration::from_millis(100);

pub struct GroupService {
    coordinator: Mutex<Coordinator>,
    parked: Mutex<HashMap<Token, oneshot::Sender<Response>>>,
    next_token: AtomicU64,
    started: Instant,
    stopping: AtomicBool,
    flusher: Arc<crate::flusher::Flusher>,
    pub offsets: OffsetStore,
}

impl GroupService {
    pub fn new(
        offsets: OffsetStore,
        broker: &crate::BrokerConfig,
        flusher: Arc<crate::flusher::Flusher>,
    ) -> GroupService {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(std::process::id()) << 32;
        let config = CoordinatorConfig {
            initial_rebalance_delay_ms: broker.group_initial_rebalance_delay_ms,
            consumer_heartbeat_interval_ms: broker.group_consumer_heartbeat_interval_ms,
            consumer_session_timeout_ms: broker.group_consumer_session_timeout_ms,
            member_id_seed: seed,
            ..CoordinatorConfig::default()
        };
        GroupService {
            coordinator: Mutex::new(Coordinator::new(config)),
            parked: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(1),
            started: Instant::now(),
            stopping: AtomicBool::new(false),
            flusher,
            offsets,
        }
    }

    /// Milliseconds on a monotonic clock: the coordinator's time.
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Runs `operation` on the coordinator with a fresh token whose answer arrives on the
    /// returned channel (at once or after a rebalance).
    pub fn park(
        &self,
        operation: impl FnOnce(&mut Coordinator, u64, Token) -> Vec<(Token, Response)>,
    ) -> oneshot::Receiver<Response> {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = oneshot::channel();
        self.parked.lock().insert(token, sender);
        let answers = {
            let mut coordinator = self.coordinator.lock();
            operation(&mut coordinator, self.now_ms(), token)
        };
        self.deliver(answers);
        receiver
    }

    /// Runs an operation that answers at once.
    pub fn with<T>(&self, operation: impl FnOnce(&mut Coordinator, u64) -> T) -> T {
        let mut coordinator = self.coordinator.lock();
        operation(&mut coordinator, self.now_ms())
    }

    pub fn deliver(&self, answers: Vec<(Token, Response)>) {
        if answers.is_empty() {
            return;
        }
        let mut parked = self.parked.lock();
        for (token, response) in answers {
            if let Some(sender) = parked.remove(&token) {
                // The client may have gone; its answer is dropped.
                let _ = sender.send(response);
            }
        }
    }

    /// Starts the thread that expires sessions and ends rebalances on time.
    pub fn start_ticker(self: &Arc<Self>) -> std::thread::JoinHandle<()> {
        let service = self.clone();
        std::thread::Builder::new()
            .name("group-ticker".into())
            .spawn(move || {
                while !service.stopping.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK_INTERVAL);
                    let answers = service.with(|coordinator, now_ms| coordinator.tick(now_ms));
                    service.deliver(answers);
                    if let Err(error) = service.offsets.snapshot_if_due(&service.flusher) {
                        tracing::warn!(%error, "committed offsets snapshot failed; will retry");
                    }
                }
            })
            .expect("spawning the group ticker")
    }

    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }
}
