//! The PostgreSQL wire endpoint (`datafusion-postgres`): psql, psycopg, asyncpg and BI tools
//! connect with any user name to the database `lakestream`. Statements DataFusion does not plan
//! itself (CTAS with options) go through a hook.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use datafusion::arrow::datatypes::Schema;
use datafusion::common::{DFSchema, ParamValues};
use datafusion::logical_expr::{EmptyRelation, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{CreateTableOptions, Statement};
use datafusion_postgres::DfSessionService;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::pgwire::api::auth::sasl::SASLAuthStartupHandler;
use datafusion_postgres::pgwire::api::auth::sasl::scram::{ScramAuth, gen_salted_password};
use datafusion_postgres::pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use datafusion_postgres::pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use datafusion_postgres::pgwire::api::results::{Response, Tag};
use datafusion_postgres::pgwire::api::{ClientInfo, PgWireServerHandlers};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::{QueryHook, ServerOptions};

use crate::engine::Engine;

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

/// The query handlers of `datafusion-postgres` behind SCRAM-SHA-256.
struct ScramHandlers {
    session: Arc<DfSessionService>,
    users: Arc<Users>,
}

impl PgWireServerHandlers for ScramHandlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.session)
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.session)
    }

    /// One per connection: the SASL exchange keeps its state in the handler.
    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        let mut scram = ScramAuth::new(Arc::clone(&self.users) as Arc<dyn AuthSource>);
        scram.set_iterations(SCRAM_ITERATIONS);
        Arc::new(
            SASLAuthStartupHandler::new(Arc::new(DefaultServerParameterProvider::default()))
                .with_scram(scram),
        )
    }
}

/// Serves the engine's session over the PostgreSQL protocol on `addr`, on the SQL runtime;
/// with `users`, clients authenticate with SCRAM-SHA-256.
pub fn serve(
    engine: &Arc<Engine>,
    addr: SocketAddr,
    users: Users,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    let options = ServerOptions::new()
        .with_host(addr.ip().to_string())
        .with_port(addr.port());
    let context = Arc::new(engine.context().clone());
    let hooks: Vec<Arc<dyn QueryHook>> = vec![
        Arc::new(CursorStatementHook),
        Arc::new(SetShowHook),
        Arc::new(TransactionStatementHook),
        Arc::new(LakestreamHook {
            engine: Arc::downgrade(engine),
        }),
    ];
    if users.is_empty() {
        return engine.runtime().spawn(async move {
            datafusion_postgres::serve_with_hooks(context, &options, hooks).await
        });
    }
    let handlers = ScramHandlers {
        session: Arc::new(DfSessionService::new_with_hooks(context, hooks)),
        users: Arc::new(users),
    };
    engine.runtime().spawn(async move {
        datafusion_postgres::serve_with_handlers(Arc::new(handlers), &options).await
    })
}

struct LakestreamHook {
    engine: Weak<Engine>,
}

fn is_ctas(statement: &Statement) -> bool {
    matches!(statement, Statement::CreateTable(create)
        if create.query.is_some() && matches!(create.table_options, CreateTableOptions::With(_)))
}

impl LakestreamHook {
    /// Runs `statement` if it is a CTAS with options (DataFusion does not plan those itself).
    async fn run_ctas(&self, statement: &Statement) -> Option<PgWireResult<Response>> {
        if !is_ctas(statement) {
            return None;
        }
        Some(self.execute_ctas(statement).await)
    }

    async fn execute_ctas(&self, statement: &Statement) -> PgWireResult<Response> {
        let engine = self
            .engine
            .upgrade()
            .ok_or_else(|| user_error("the server is stopping".into()))?;
        let output = engine
            .query(&statement.to_string())
            .await
            .map_err(|error| user_error(error.to_string()))?;
        let rows = output
            .batches
            .first()
            .and_then(|batch| {
                batch
                    .column(0)
                    .as_any()
                    .downcast_ref::<arrow::array::Int64Array>()
                    .map(|rows| rows.value(0))
            })
            .unwrap_or(0);
        Ok(Response::Execution(
            Tag::new("SELECT").with_rows(rows as usize),
        ))
    }
}

fn user_error(message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        "XX000".into(),
        message,
    )))
}

#[async_trait]
impl QueryHook for LakestreamHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _session_context: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        self.run_ctas(statement).await
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _session_context: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        if !is_ctas(statement) {
            return None;
        }
        // Planned when executed; nothing to describe.
        let schema = DFSchema::try_from(Schema::empty()).expect("an empty schema");
        Some(Ok(LogicalPlan::EmptyRelation(EmptyRelation {
            produce_one_row: false,
            schema: Arc::new(schema),
        })))
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _logical_plan: &LogicalPlan,
        _params: &ParamValues,
        _session_context: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        self.run_ctas(statement).await
    }
}

/// `current_setting(name)`, which drivers such as asyncpg call while introspecting types: the
/// settings a client may ask about, with PostgreSQL's values.
pub fn current_setting() -> datafusion::logical_expr::ScalarUDF {
    use datafusion::arrow::array::{Array, AsArray, StringArray};
    use datafusion::arrow::datatypes::DataType;
    use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};

    fn value(name: &str) -> &'static str {
        match name.to_ascii_lowercase().as_str() {
            "search_path" => "public",
            "server_version" => "16.0",
            "server_version_num" => "160000",
            "server_encoding" | "client_encoding" => "UTF8",
            "datestyle" => "ISO, MDY",
            "timezone" => "UTC",
            "standard_conforming_strings" => "on",
            "integer_datetimes" => "on",
            "max_identifier_length" => "63",
            _ => "",
        }
    }
    create_udf(
        "current_setting",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let names = arrays[0].as_string::<i32>();
            let values: StringArray = (0..names.len())
                .map(|row| (!names.is_null(row)).then(|| value(names.value(row))))
                .collect();
            Ok(ColumnarValue::Array(Arc::new(values)))
        }),
    )
}

/// `set_config(name, value, is_local)`, which asyncpg calls before introspecting types: settings
/// do not change anything here, so it answers the value, as PostgreSQL does.
pub fn set_config() -> datafusion::logical_expr::ScalarUDF {
    use datafusion::arrow::datatypes::DataType;
    use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};

    create_udf(
        "set_config",
        vec![DataType::Utf8, DataType::Utf8, DataType::Boolean],
        DataType::Utf8,
        Volatility::Volatile,
        Arc::new(|args: &[ColumnarValue]| Ok(args[1].clone())),
    )
}
