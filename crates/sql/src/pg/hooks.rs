//! Statements answered here rather than by DataFusion: CTAS with options (Athena/Trino style),
//! and asyncpg's type introspection. Plus the settings functions drivers call, and the
//! [`Guard`] that checks each statement as `datafusion-postgres` runs it.

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use datafusion::arrow::datatypes::Schema;
use datafusion::common::{DFSchema, ParamValues};
use datafusion::logical_expr::{EmptyRelation, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{CreateTableOptions, SetExpr, Statement};
use datafusion_postgres::QueryHook;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire::api::results::{Response, Tag};
use datafusion_postgres::pgwire::api::{ClientInfo, Type};
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};

use crate::engine::Engine;

/// The first hook: each statement `datafusion-postgres` parsed (and rewrote) from the client's
/// text, checked when it is prepared and again when it runs, before any other hook or DataFusion
/// acts on it: the text checks of `plan_size` (which may not parse what `datafusion-postgres`
/// parses, e.g. `ABORT`, so a statement beside it would go unchecked), and a `CREATE OR REPLACE`
/// that would lose what it replaces (`Engine::check_replacing`, on the catalog as it is when the
/// statement runs, after the statements before it).
pub(super) struct Guard {
    engine: Weak<Engine>,
}

impl Guard {
    pub(super) fn new(engine: Weak<Engine>) -> Guard {
        Guard { engine }
    }

    /// Why `statement` is refused, if it is (`plan`: its plan, if made), as a hook's answer.
    async fn refuse<T>(
        &self,
        statement: &Statement,
        context: &SessionContext,
        plan: Option<&LogicalPlan>,
    ) -> Option<PgWireResult<T>> {
        let error = self.check(statement, context, plan).await.err()?;
        Some(Err(PgWireError::ApiError(Box::new(error))))
    }

    async fn check(
        &self,
        statement: &Statement,
        context: &SessionContext,
        plan: Option<&LogicalPlan>,
    ) -> datafusion::common::Result<()> {
        let Some(engine) = self.engine.upgrade() else {
            return Ok(());
        };
        crate::plan_size::check_statement(statement, &|name| {
            engine.topics().tables_read_by_view(name)
        })?;
        let replaces = match statement {
            Statement::CreateView(view) => view.or_replace,
            Statement::CreateTable(table) => table.or_replace,
            _ => false,
        };
        if !replaces {
            return Ok(());
        }
        let planned;
        let plan = match plan {
            Some(plan) => plan,
            None => {
                let statement = DfStatement::Statement(Box::new(statement.clone()));
                // What does not plan is reported when DataFusion plans it.
                let Ok(plan) = context.state().statement_to_plan(statement).await else {
                    return Ok(());
                };
                planned = plan;
                &planned
            }
        };
        engine.check_replacing(plan).await
    }
}

#[async_trait]
impl QueryHook for Guard {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        session_context: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        self.refuse(statement, session_context, None).await
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        session_context: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        self.refuse(statement, session_context, None).await
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        logical_plan: &LogicalPlan,
        _params: &ParamValues,
        session_context: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        self.refuse(statement, session_context, Some(logical_plan))
            .await
    }
}

pub(super) struct LakestreamHook {
    engine: Weak<Engine>,
}

fn is_ctas(statement: &Statement) -> bool {
    matches!(statement, Statement::CreateTable(create)
        if create.query.is_some() && matches!(create.table_options, CreateTableOptions::With(_)))
}

impl LakestreamHook {
    pub(super) fn new(engine: Weak<Engine>) -> LakestreamHook {
        LakestreamHook { engine }
    }

    /// Runs `statement` if it is a CTAS with options (DataFusion does not plan those itself).
    async fn run_ctas(&self, statement: &Statement) -> Option<PgWireResult<Response>> {
        if !is_ctas(statement) {
            return None;
        }
        Some(self.execute_ctas(statement).await)
    }

    async fn execute_ctas(&self, statement: &Statement) -> PgWireResult<Response> {
        let engine = self.engine.upgrade().ok_or_else(super::stopping)?;
        let output = engine
            .query(&statement.to_string())
            .await
            .map_err(|error| PgWireError::ApiError(Box::new(error)))?;
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
        session_context: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        if is_type_introspection(statement) {
            // For the columns; `Session` answers it when executed.
            return Some(
                session_context
                    .state()
                    .create_logical_plan(&type_introspection(None))
                    .await
                    .map_err(|error| PgWireError::ApiError(Box::new(error))),
            );
        }
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

/// asyncpg's type introspection (`WITH RECURSIVE typeinfo_tree ...` over `pg_type` with `::oid`
/// and `::regtype` casts, which DataFusion does not plan). asyncpg sends it, as a prepared
/// statement with the wanted type oids as `$1` (an `oid[]`), for every result type it has no
/// codec of its own for: arrays other than text[] and oid[], and the `record[]` of `_headers`.
pub(super) fn is_type_introspection(statement: &Statement) -> bool {
    let Statement::Query(query) = statement else {
        return false;
    };
    matches!(query.body.as_ref(), SetExpr::Select(_))
        && query.with.as_ref().is_some_and(|with| {
            with.recursive
                && with
                    .cte_tables
                    .iter()
                    .any(|table| table.alias.name.value == "typeinfo_tree")
        })
}

/// The array types result columns can have (`arrow-pg` maps Arrow lists to these), each with
/// its element type, which asyncpg knows.
const ARRAY_TYPES: [(Type, Type); 16] = [
    (Type::BOOL_ARRAY, Type::BOOL),
    (Type::INT2_ARRAY, Type::INT2),
    (Type::INT4_ARRAY, Type::INT4),
    (Type::INT8_ARRAY, Type::INT8),
    (Type::NUMERIC_ARRAY, Type::NUMERIC),
    (Type::FLOAT4_ARRAY, Type::FLOAT4),
    (Type::FLOAT8_ARRAY, Type::FLOAT8),
    (Type::TEXT_ARRAY, Type::TEXT),
    (Type::VARCHAR_ARRAY, Type::VARCHAR),
    (Type::BYTEA_ARRAY, Type::BYTEA),
    (Type::DATE_ARRAY, Type::DATE),
    (Type::TIME_ARRAY, Type::TIME),
    (Type::TIMESTAMP_ARRAY, Type::TIMESTAMP),
    (Type::TIMESTAMPTZ_ARRAY, Type::TIMESTAMPTZ),
    (Type::INTERVAL_ARRAY, Type::INTERVAL),
    (Type::RECORD_ARRAY, Type::RECORD),
];

/// The answer to asyncpg's introspection, in its columns: the rows of [`ARRAY_TYPES`] whose
/// oid is one of `oids` (all without). Every column has a type asyncpg decodes without asking
/// again: kind and delimiter are PostgreSQL's `"char"`, which asyncpg reads as bytes; the
/// columns about composites, domains and ranges are NULL.
pub(super) fn type_introspection(oids: Option<&[u32]>) -> String {
    let rows: Vec<String> = ARRAY_TYPES
        .iter()
        .filter(|(array, _)| oids.is_none_or(|oids| oids.contains(&array.oid())))
        .map(|(array, element)| {
            format!(
                "({}, '{}', {}, '{}')",
                array.oid(),
                array.name(),
                element.oid(),
                element.name()
            )
        })
        .collect();
    let filter = if rows.is_empty() { " WHERE false" } else { "" };
    let rows = if rows.is_empty() {
        "(0, '', 0, '')".to_string()
    } else {
        rows.join(", ")
    };
    format!(
        "SELECT CAST(column1 AS BIGINT) AS oid, 'pg_catalog' AS ns, column2 AS name, \
         X'62' AS kind, CAST(NULL AS BIGINT) AS basetype, CAST(column3 AS BIGINT) AS elemtype, \
         X'2C' AS elemdelim, CAST(NULL AS BIGINT) AS range_subtype, \
         CAST(NULL AS TEXT) AS attrtypoids, CAST(NULL AS TEXT) AS attrnames, 0 AS depth, \
         CAST(NULL AS TEXT) AS basetype_name, column4 AS elemtype_name, \
         CAST(NULL AS TEXT) AS range_subtype_name \
         FROM (VALUES {rows}){filter}"
    )
}

/// The oids of an `oid[]` parameter, in PostgreSQL's binary array format or as text `{1,2}`.
pub(super) fn decode_oids(raw: &[u8], binary: bool) -> Option<Vec<u32>> {
    if !binary {
        let text = std::str::from_utf8(raw).ok()?.trim();
        let inner = text.strip_prefix('{')?.strip_suffix('}')?;
        return inner
            .split(',')
            .filter(|item| !item.trim().is_empty())
            .map(|item| item.trim().parse().ok())
            .collect();
    }
    let word = |at: usize| -> Option<i32> {
        Some(i32::from_be_bytes(raw.get(at..at + 4)?.try_into().ok()?))
    };
    let dimensions = word(0)?;
    if dimensions == 0 {
        return Some(Vec::new());
    }
    if dimensions != 1 {
        return None;
    }
    // dimensions, has-nulls flag, element oid, then (length, lower bound) per dimension
    let count = usize::try_from(word(12)?).ok()?;
    let mut at = 20;
    let mut oids = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let length = word(at)?;
        at += 4;
        if length < 0 {
            continue; // NULL
        }
        oids.push(u32::from_be_bytes(raw.get(at..at + 4)?.try_into().ok()?));
        at += usize::try_from(length).ok()?;
    }
    Some(oids)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oid_arrays() {
        assert_eq!(decode_oids(b"{2287,1016}", false), Some(vec![2287, 1016]));
        assert_eq!(decode_oids(b"{}", false), Some(vec![]));
        let mut binary = Vec::new();
        for word in [1i32, 0, 26, 2, 1, 4, 2287, 4, 1016] {
            binary.extend_from_slice(&word.to_be_bytes());
        }
        assert_eq!(decode_oids(&binary, true), Some(vec![2287, 1016]));
        assert_eq!(decode_oids(&binary[..30], true), None);
        assert_eq!(decode_oids(&0i32.to_be_bytes(), true), Some(vec![]));
    }
}
