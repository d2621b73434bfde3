//! One connection's query handlers: `datafusion-postgres`'s, with the current statement ending
//! at a CancelRequest (while it plans and while its rows stream) and errors in PostgreSQL's
//! form.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use datafusion::common::DataFusionError;
use datafusion::sql::sqlparser::parser::ParserError;
use datafusion_postgres::DfSessionService;
use datafusion_postgres::pgwire::api::portal::{Format, Portal};
use datafusion_postgres::pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use datafusion_postgres::pgwire::api::results::{FieldInfo, QueryResponse, Response};
use datafusion_postgres::pgwire::api::stmt::QueryParser;
use datafusion_postgres::pgwire::api::store::PortalStore;
use datafusion_postgres::pgwire::api::{ClientInfo, ClientPortalStore, Type};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::PgWireBackendMessage;
use futures::future::{FutureExt, Shared};
use futures::{Sink, StreamExt};

use datafusion_postgres::arrow_pg::datatypes::df::encode_dataframe;
use datafusion_postgres::pgwire::types::format::FormatOptions;

use super::{Connection, hooks};
use crate::engine::Engine;
use crate::sqlstate;

type Cancelled = Shared<Pin<Box<dyn Future<Output = ()> + Send>>>;
type DfStatement = <DfSessionService as ExtendedQueryHandler>::Statement;

pub(super) struct Session {
    inner: Arc<DfSessionService>,
    parser: Arc<Parser>,
    connection: Arc<Connection>,
    engine: Weak<Engine>,
}

impl Session {
    pub(super) fn new(
        inner: Arc<DfSessionService>,
        connection: Arc<Connection>,
        engine: Weak<Engine>,
    ) -> Session {
        let parser = Arc::new(Parser {
            inner: inner.query_parser(),
            engine: engine.clone(),
        });
        Session {
            inner,
            parser,
            connection,
            engine,
        }
    }

    fn cancelled(&self) -> Cancelled {
        (Box::pin(self.connection.cancelled()) as Pin<Box<dyn Future<Output = ()> + Send>>).shared()
    }

    /// Rows that stop with 57014 at a CancelRequest, and errors in PostgreSQL's form.
    fn guard(&self, response: Response, cancelled: Cancelled) -> Response {
        let Response::Query(query) = response else {
            return response;
        };
        let command_tag = query.command_tag().to_string();
        let schema = query.row_schema();
        let engine = self.engine.clone();
        let rows = query.data_rows;
        let rows = futures::stream::unfold(Some((rows, cancelled)), move |state| {
            let engine = engine.clone();
            async move {
                let (mut rows, mut cancelled) = state?;
                tokio::select! {
                    biased;
                    () = &mut cancelled => Some((Err(PgWireError::QueryCanceled), None)),
                    row = rows.next() => {
                        let row = row?.map_err(|error| to_pg(error, None, &engine));
                        Some((row, Some((rows, cancelled))))
                    }
                }
            }
        });
        let mut guarded = QueryResponse::new(schema, rows);
        guarded.set_command_tag(&command_tag);
        Response::Query(guarded)
    }
}

#[async_trait]
impl SimpleQueryHandler for Session {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        refuse_too_complex(query, &self.engine)?;
        let cancelled = self.cancelled();
        let responses = tokio::select! {
            biased;
            () = cancelled.clone() => return Err(PgWireError::QueryCanceled),
            responses = SimpleQueryHandler::do_query(self.inner.as_ref(), client, query) => responses,
        };
        let responses = responses.map_err(|error| to_pg(error, Some(query), &self.engine))?;
        Ok(responses
            .into_iter()
            .map(|response| self.guard(response, cancelled.clone()))
            .collect())
    }
}

#[async_trait]
impl ExtendedQueryHandler for Session {
    type Statement = DfStatement;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        Arc::clone(&self.parser)
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if is_type_introspection(&portal.statement.statement) {
            return self.answer_type_introspection(client, portal).await;
        }
        let cancelled = self.cancelled();
        let response = tokio::select! {
            biased;
            () = cancelled.clone() => return Err(PgWireError::QueryCanceled),
            response = ExtendedQueryHandler::do_query(self.inner.as_ref(), client, portal, max_rows) => response,
        };
        // The client's text is not kept with a prepared statement: no position here.
        let response = response.map_err(|error| to_pg(error, None, &self.engine))?;
        Ok(self.guard(response, cancelled))
    }
}

impl Session {
    /// asyncpg's type introspection, with the oids of its `oid[]` parameter (which
    /// `datafusion-postgres` would read as another type).
    async fn answer_type_introspection<C>(
        &self,
        client: &C,
        portal: &Portal<DfStatement>,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo,
    {
        let engine = self.engine.upgrade().ok_or_else(super::stopping)?;
        let oids = portal
            .parameters
            .first()
            .and_then(|raw| raw.as_deref())
            .and_then(|raw| hooks::decode_oids(raw, portal.parameter_format.is_binary(0)));
        let frame = engine
            .context()
            .sql(&hooks::type_introspection(oids.as_deref()))
            .await
            .map_err(|error| to_pg(PgWireError::ApiError(Box::new(error)), None, &self.engine))?;
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        let response = encode_dataframe(frame, &portal.result_column_format, Some(options)).await?;
        Ok(Response::Query(response))
    }
}

fn is_type_introspection(statement: &DfStatement) -> bool {
    statement
        .1
        .as_ref()
        .is_some_and(|(statement, _)| hooks::is_type_introspection(statement))
}

/// `datafusion-postgres`'s parser, with errors in PostgreSQL's form (the position is in the
/// client's text).
pub(super) struct Parser {
    inner: Arc<datafusion_postgres::Parser>,
    engine: Weak<Engine>,
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = DfStatement;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Self::Statement>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        refuse_too_complex(sql, &self.engine)?;
        self.inner
            .parse_sql(client, sql, types)
            .await
            .map_err(|error| to_pg(error, Some(sql), &self.engine))
    }

    fn get_parameter_types(&self, statement: &Self::Statement) -> PgWireResult<Vec<Type>> {
        if is_type_introspection(statement) {
            return Ok(vec![Type::OID_ARRAY]);
        }
        self.inner.get_parameter_types(statement)
    }

    fn get_result_schema(
        &self,
        statement: &Self::Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        self.inner.get_result_schema(statement, column_format)
    }
}

/// 54001 for a statement that may nest too deeply or read too many tables to plan
/// (`Engine::check_text`), before `datafusion-postgres` parses it. Each statement it parses is
/// checked again as it runs (`hooks::Guard`).
fn refuse_too_complex(sql: &str, engine: &Weak<Engine>) -> PgWireResult<()> {
    engine
        .upgrade()
        .ok_or_else(super::stopping)?
        .check_text(sql)
        .map_err(|error| to_pg(PgWireError::ApiError(Box::new(error)), Some(sql), engine))
}

/// An error of DataFusion or of the SQL parser as PostgreSQL would report it for `sql`.
fn to_pg(error: PgWireError, sql: Option<&str>, engine: &Weak<Engine>) -> PgWireError {
    let PgWireError::ApiError(inner) = error else {
        return error;
    };
    let topics_hint = || match engine.upgrade() {
        Some(engine) => engine.topics().topics_hint(),
        None => String::new(),
    };
    let pg = if let Some(error) = inner.downcast_ref::<DataFusionError>() {
        sqlstate::from_datafusion(error, sql, topics_hint)
    } else if let Some(error) = inner.downcast_ref::<ParserError>() {
        sqlstate::from_parser(error, sql)
    } else {
        return PgWireError::ApiError(inner);
    };
    PgWireError::UserError(Box::new(error_info(pg)))
}

pub(super) fn error_info(pg: sqlstate::PgError) -> ErrorInfo {
    let mut info = ErrorInfo::new("ERROR".into(), pg.code.into(), pg.message);
    info.position = pg.position.map(|position| position.to_string());
    info.hint = pg.hint;
    info
}
