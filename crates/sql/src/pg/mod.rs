//! The PostgreSQL wire endpoint: `pgwire` connections served by `datafusion-postgres`'s query
//! handlers, so psql, psycopg, asyncpg and BI tools connect with any user name (or SCRAM users)
//! to the database `lakestream`.
//!
//! What this module adds around them:
//! - **Cancellation.** Each connection is watched: when the client closes its socket, the
//!   connection's task is dropped and with it the running query. A CancelRequest (psql's Ctrl-C,
//!   psycopg's `conn.cancel()`) ends the connection's current statement with 57014 and keeps the
//!   connection (`session`).
//! - **Errors as PostgreSQL reports them**: SQLSTATE, position and hint (`crate::sqlstate`).
//! - **Hooks** (`hooks`): CTAS with options, and the type introspection of asyncpg.
//! - **Column types in `pg_catalog`** that tools can use: `_timestamp` is a `timestamp`, not
//!   `text` (`types`).
//! - **A session state per connection**, so `SET` holds for that connection only, as in
//!   PostgreSQL; the settings that are the server's are refused (`crate::settings`).

mod hooks;
mod session;
pub(crate) mod types;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::prelude::SessionContext;
use datafusion_postgres::DfSessionService;
use datafusion_postgres::QueryHook;
use datafusion_postgres::pgwire::api::auth::noop::NoopStartupHandler;
use datafusion_postgres::pgwire::api::auth::sasl::SASLAuthStartupHandler;
use datafusion_postgres::pgwire::api::auth::sasl::scram::{ScramAuth, gen_salted_password};
use datafusion_postgres::pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use datafusion_postgres::pgwire::api::cancel::CancelHandler;
use datafusion_postgres::pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use datafusion_postgres::pgwire::api::{ClientInfo, PgWireServerHandlers, PidSecretKeyGenerator};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::cancel::CancelRequest;
use datafusion_postgres::pgwire::messages::startup::SecretKey;
use datafusion_postgres::pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use datafusion_postgres::pgwire::tokio::process_socket;
use futures::Sink;
use parking_lot::Mutex;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::engine::Engine;
pub use hooks::{current_setting, set_config};
use session::Session;

/// SCRAM iterations for stored passwords (PostgreSQL's default).
const SCRAM_ITERATIONS: usize = 4096;

/// Users allowed in with SCRAM-SHA-256: name → (salt, salted password). Empty: no
/// authentication, any user name is accepted.
#[derive(Debug, Default, Clone)]
pub struct Users(HashMap<String, (Vec<u8>, Vec<u8>)>);

impl Users {
    /// From `name:password` pairs.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Users {
        Users(
            pairs
                .into_iter()
                .map(|(name, password)| {
                    let salt = uuid::Uuid::new_v4().as_bytes().to_vec();
                    let salted = gen_salted_password(password, &salt, SCRAM_ITERATIONS);
                    (name.to_string(), (salt, salted))
                })
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[async_trait]
impl AuthSource for Users {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let name = login.user().unwrap_or_default();
        match self.0.get(name) {
            Some((salt, salted)) => Ok(Password::new(Some(salt.clone()), salted.clone())),
            None => Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".into(),
                "28P01".into(),
                format!("password authentication failed for user \"{name}\""),
            )))),
        }
    }
}

/// Serves the engine's session over the PostgreSQL protocol on `addr`, on the SQL runtime;
/// with `users`, clients authenticate with SCRAM-SHA-256.
pub fn serve(
    engine: &Arc<Engine>,
    addr: SocketAddr,
    users: Users,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    let hooks: Vec<Arc<dyn QueryHook>> = vec![
        // First: it checks each statement before another hook or DataFusion acts on it.
        Arc::new(hooks::Guard::new(Arc::downgrade(engine))),
        Arc::new(datafusion_postgres::hooks::cursor::CursorStatementHook),
        Arc::new(datafusion_postgres::hooks::set_show::SetShowHook),
        Arc::new(datafusion_postgres::hooks::transactions::TransactionStatementHook),
        Arc::new(hooks::LakestreamHook::new(Arc::downgrade(engine))),
    ];
    let server = Arc::new(Server {
        context: engine.context().clone(),
        hooks,
        users: (!users.is_empty()).then(|| Arc::new(users)),
        connections: Arc::new(Connections::default()),
        engine: Arc::downgrade(engine),
    });
    engine.runtime().spawn(async move {
        let listener = TcpListener::bind(addr).await?;
        loop {
            match listener.accept().await {
                Ok((socket, _)) => {
                    tokio::spawn(Arc::clone(&server).serve_connection(socket));
                }
                Err(error) => {
                    // Out of file descriptors, most likely: let some connections end.
                    tracing::warn!(%error, "accepting a PostgreSQL connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
}

/// The answer when the engine has gone while a connection was still open.
fn stopping() -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".into(),
        "57P01".into(),
        "terminating connection: the server is stopping".into(),
    )))
}

/// What all connections share.
struct Server {
    /// The engine's session, whose state each connection starts from.
    context: SessionContext,
    hooks: Vec<Arc<dyn QueryHook>>,
    users: Option<Arc<Users>>,
    connections: Arc<Connections>,
    engine: Weak<Engine>,
}

impl Server {
    /// Runs one connection until it ends or its client goes away, whichever comes first:
    /// dropping the connection's future drops the query it is running.
    async fn serve_connection(self: Arc<Self>, socket: TcpStream) {
        let connection = Arc::new(Connection::default());
        let gone = socket.as_fd().try_clone_to_owned().map(peer_closed);
        let handlers = ConnectionHandlers::new(&self, &connection);
        let served = process_socket(socket, None, handlers);
        match gone {
            Ok(gone) => tokio::select! {
                result = served => if let Err(error) = result {
                    tracing::debug!(%error, "PostgreSQL connection");
                },
                () = gone => tracing::debug!("PostgreSQL client closed its connection"),
            },
            Err(error) => {
                tracing::warn!(%error, "cannot watch a PostgreSQL connection for its close");
                let _ = served.await;
            }
        }
        self.connections.remove(&connection);
    }
}

/// Resolves when the peer of the socket `fd` (a duplicate of the connection's descriptor) has
/// closed or reset it, even while unread requests wait in the socket's buffer (the kernel
/// reports the peer's FIN on its own, as EPOLLRDHUP).
async fn peer_closed(fd: OwnedFd) {
    // SAFETY: `fd` is an `OwnedFd`, open and the same descriptor for as long as the
    // `AsyncFd` owns it.
    let Ok(fd) = (unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }) else {
        return std::future::pending().await;
    };
    loop {
        let Ok(mut guard) = fd.readable().await else {
            return std::future::pending().await;
        };
        let ready = guard.ready();
        if ready.is_read_closed() || ready.is_error() {
            return;
        }
        // Readable data is the connection's to read; wait for the next change.
        guard.clear_ready();
    }
}

/// One client connection as cancellation sees it.
#[derive(Debug)]
struct Connection {
    /// Bumped by each CancelRequest for this connection.
    cancels: watch::Sender<u64>,
    /// The process id this connection was given, once started (0 before).
    pid: AtomicI32,
}

impl Default for Connection {
    fn default() -> Self {
        Connection {
            cancels: watch::Sender::new(0),
            pid: AtomicI32::new(0),
        }
    }
}

impl Connection {
    fn cancel(&self) {
        self.cancels.send_modify(|count| *count += 1);
    }

    /// Resolves at the first CancelRequest after this call.
    fn cancelled(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut cancels = self.cancels.subscribe();
        async move {
            if cancels.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// The live connections by process id, with their secret keys, for CancelRequests.
#[derive(Debug)]
struct Connections {
    next_pid: AtomicI32,
    by_pid: Mutex<HashMap<i32, (i32, Weak<Connection>)>>,
}

impl Default for Connections {
    fn default() -> Self {
        Connections {
            next_pid: AtomicI32::new(1000),
            by_pid: Mutex::new(HashMap::new()),
        }
    }
}

impl Connections {
    fn register(&self, connection: &Arc<Connection>) -> (i32, i32) {
        let pid = self.next_pid.fetch_add(1, Ordering::Relaxed);
        let key = uuid::Uuid::new_v4().as_u128() as i32;
        connection.pid.store(pid, Ordering::Relaxed);
        self.by_pid
            .lock()
            .insert(pid, (key, Arc::downgrade(connection)));
        (pid, key)
    }

    fn remove(&self, connection: &Connection) {
        let pid = connection.pid.load(Ordering::Relaxed);
        if pid != 0 {
            self.by_pid.lock().remove(&pid);
        }
    }

    fn cancel(&self, request: &CancelRequest) {
        let found = self.by_pid.lock().get(&request.pid).cloned();
        match found {
            Some((key, connection)) if request.secret_key.eq_value(&SecretKey::I32(key)) => {
                if let Some(connection) = connection.upgrade() {
                    tracing::debug!(pid = request.pid, "PostgreSQL cancel request");
                    connection.cancel();
                }
            }
            _ => tracing::debug!(
                pid = request.pid,
                "PostgreSQL cancel request for no connection"
            ),
        }
    }
}

#[async_trait]
impl CancelHandler for Connections {
    async fn on_cancel_request(&self, request: CancelRequest) {
        self.cancel(&request);
    }
}

/// Gives a connection its process id and secret key at startup, and registers it for
/// CancelRequests under them.
struct BackendKeys {
    connections: Arc<Connections>,
    connection: Arc<Connection>,
}

impl PidSecretKeyGenerator for BackendKeys {
    fn generate(&self, _client: &dyn ClientInfo) -> (i32, SecretKey) {
        let (pid, key) = self.connections.register(&self.connection);
        (pid, SecretKey::I32(key))
    }
}

/// Startup without authentication.
struct Open(BackendKeys);

impl NoopStartupHandler for Open {
    fn pid_secret_key_generator(&self) -> &dyn PidSecretKeyGenerator {
        &self.0
    }
}

enum Startup {
    Open(Open),
    Scram(SASLAuthStartupHandler<DefaultServerParameterProvider>),
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match self {
            Startup::Open(open) => open.on_startup(client, message).await,
            Startup::Scram(scram) => scram.on_startup(client, message).await,
        }
    }
}

/// The handlers of one connection (`process_socket` asks for them once per connection).
struct ConnectionHandlers {
    session: Arc<Session>,
    startup: Arc<Startup>,
    connections: Arc<Connections>,
}

impl ConnectionHandlers {
    fn new(server: &Server, connection: &Arc<Connection>) -> ConnectionHandlers {
        let keys = BackendKeys {
            connections: Arc::clone(&server.connections),
            connection: Arc::clone(connection),
        };
        let startup = match &server.users {
            None => Startup::Open(Open(keys)),
            Some(users) => {
                // One per connection: the SASL exchange keeps its state in the handler.
                let mut scram = ScramAuth::new(Arc::clone(users) as Arc<dyn AuthSource>);
                scram.set_iterations(SCRAM_ITERATIONS);
                Startup::Scram(
                    SASLAuthStartupHandler::new(
                        Arc::new(DefaultServerParameterProvider::default()),
                    )
                    .with_scram(scram)
                    .with_pid_secret_key_generator(Arc::new(keys)),
                )
            }
        };
        // A session state of its own, so that what the connection SETs (within `settings`)
        // holds for it alone; the catalogs, the memory pool and the SQL runtime are shared.
        let context = SessionContext::new_with_state(server.context.state());
        let service = DfSessionService::new_with_hooks(Arc::new(context), server.hooks.clone());
        ConnectionHandlers {
            session: Arc::new(Session::new(
                Arc::new(service),
                Arc::clone(connection),
                server.engine.clone(),
            )),
            startup: Arc::new(startup),
            connections: Arc::clone(&server.connections),
        }
    }
}

impl PgWireServerHandlers for ConnectionHandlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.session)
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.session)
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::clone(&self.startup)
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::clone(&self.connections)
    }
}
