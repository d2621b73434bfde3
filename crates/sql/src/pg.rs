//! The PostgreSQL wire endpoint (`datafusion-postgres`): psql, psycopg, asyncpg and BI tools
//! connect with any user name to the database `lakestream`. Statements DataFusion does not plan
//! itself (CTAS with options) go through a hook.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use datafusion::arrow::datatypes::Schema;
use datafusion::common::{DFSchema, ParamValues};
use datafusion::logical_expr::{EmptyRelation, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{CreateTableOptions, Statement};
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::pgwire::api::ClientInfo;
use datafusion_postgres::pgwire::api::results::{Response, Tag};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::{QueryHook, ServerOptions};

use crate::engine::Engine;

/// Serves the engine's session over the PostgreSQL protocol on `addr`, on the SQL runtime.
pub fn serve(
    engine: &Arc<Engine>,
    addr: SocketAddr,
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
    engine
        .runtime()
        .spawn(async move { datafusion_postgres::serve_with_hooks(context, &options, hooks).await })
}

struct LakestreamHook {
    engine: Weak<Engine>,
}

fn is_ctas(statement: &Statement) -> bool {
    matches!(statement, Statement::CreateTable(create)
        if create.query.is_some() && matches!(create.table_options, CreateTableOptions::With(_)))
}

impl LakestreamHook {
    async fn run_ctas(&self, statement: &Statement) -> PgWireResult<Response> {
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
        if !is_ctas(statement) {
            return None;
        }
        Some(self.run_ctas(statement).await)
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
        if !is_ctas(statement) {
            return None;
        }
        Some(self.run_ctas(statement).await)
    }
}
