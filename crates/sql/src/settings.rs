//! Which of DataFusion's settings a client may change with `SET` and `RESET`.
//!
//! A PostgreSQL connection has a session state of its own (`pg::serve`), so what it sets holds
//! for its own statements only, as in PostgreSQL. HTTP requests and the CLI have no session
//! and share the engine's state: `SET` and `RESET` are refused there ([`refuse_sessionless`]).
//!
//! Even in a session, the settings that bound the server's resources or the checks made on
//! every statement are the server's own: `datafusion.runtime.*` (the memory limit and the spill
//! directory: a client could lift the one and write files into any directory with the other),
//! `datafusion.execution.*` (partitions, batch sizes, spill and writer buffers), `datafusion.
//! sql_parser.*` (the text checks of `depth` and `plan_size` parse with the defaults) and
//! `datafusion.catalog.*`. A client may change how plans are optimized and explained, how values
//! are formatted, and its time zone ([`ALLOWED`]). Other names (`client_encoding`, `DateStyle`,
//! `application_name`, which drivers set on connect) are not DataFusion's and are left to the
//! endpoint.
//!
//! ```
//! use sql::settings::check;
//! assert!(check("datafusion.optimizer.prefer_hash_join").is_ok());
//! assert!(check("DateStyle").is_ok());
//! assert!(check("datafusion.runtime.memory_limit").is_err());
//! ```

use datafusion::common::{DataFusionError, Result};
use datafusion::logical_expr::{LogicalPlan, Statement as PlanStatement};
use datafusion::sql::parser::{ResetStatement, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{ObjectName, Reset, Set, Statement};

/// The DataFusion settings a session may change: whole namespaces (ending in `.`) or names.
pub const ALLOWED: &[&str] = &[
    "datafusion.optimizer.",
    "datafusion.format.",
    "datafusion.explain.logical_plan_only",
    "datafusion.explain.physical_plan_only",
    "datafusion.explain.show_statistics",
    "datafusion.explain.show_sizes",
    "datafusion.explain.show_schema",
    "datafusion.explain.format",
    "datafusion.explain.analyze_level",
    "datafusion.execution.time_zone",
];

/// A `SET` or `RESET` a client may not run.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("permission denied to set parameter \"{name}\": it is the server's, for every client")]
    Server { name: String },
    #[error("RESET ALL is not supported: RESET each setting by its name")]
    ResetAll,
    #[error(
        "{statement} holds for a session, and an HTTP request has none: SET works over the PostgreSQL protocol (psql), for that connection"
    )]
    Sessionless { statement: &'static str },
}

/// What to do about [`Refused`].
pub const HINT: &str = "clients may set datafusion.optimizer.*, datafusion.format.*, datafusion.explain.* and the time zone; the server's settings come from its flags and config file";

/// Refuses setting the DataFusion setting `name` (as DataFusion names it: lower case, the
/// parts joined by dots) unless [`ALLOWED`].
pub fn check(name: &str) -> Result<()> {
    let name = name.to_lowercase();
    let allowed = !name.starts_with("datafusion.")
        || ALLOWED
            .iter()
            .any(|allowed| match allowed.strip_suffix('.') {
                Some(_) => name.starts_with(allowed),
                None => name == *allowed,
            });
    if allowed {
        return Ok(());
    }
    Err(DataFusionError::External(Box::new(Refused::Server {
        name,
    })))
}

/// The name DataFusion gives the setting `name` of a `SET` or `RESET`: the parts joined by dots,
/// in lower case (quoted or not).
fn setting_name(name: &ObjectName) -> String {
    name.0
        .iter()
        .map(|part| part.as_ident().map_or("", |ident| ident.value.as_str()))
        .collect::<Vec<_>>()
        .join(".")
        .to_lowercase()
}

/// Refuses a parsed `SET` or `RESET` of a setting that is not the client's to change.
pub fn check_statement(statement: &Statement) -> Result<()> {
    match statement {
        Statement::Set(Set::SingleAssignment { variable, .. }) => check(&setting_name(variable)),
        Statement::Set(Set::ParenthesizedAssignments { variables, .. }) => variables
            .iter()
            .try_for_each(|variable| check(&setting_name(variable))),
        Statement::Set(Set::MultipleAssignments { assignments }) => assignments
            .iter()
            .try_for_each(|assignment| check(&setting_name(&assignment.name))),
        Statement::Reset(reset) => match &reset.reset {
            Reset::ALL => Err(DataFusionError::External(Box::new(Refused::ResetAll))),
            Reset::ConfigurationParameter(name) => check(&setting_name(name)),
        },
        _ => Ok(()),
    }
}

/// [`check_statement`] for DataFusion's own `RESET`.
pub fn check_reset(reset: &DfStatement) -> Result<()> {
    match reset {
        DfStatement::Reset(ResetStatement::Variable(name)) => check(&setting_name(name)),
        _ => Ok(()),
    }
}

/// Refuses a planned statement that would change the state shared by every HTTP request:
/// `SET`, `RESET` and `PREPARE` last for a session.
pub fn refuse_sessionless(plan: &LogicalPlan) -> Result<()> {
    let statement = match plan {
        LogicalPlan::Statement(PlanStatement::SetVariable(_)) => "SET",
        LogicalPlan::Statement(PlanStatement::ResetVariable(_)) => "RESET",
        LogicalPlan::Statement(PlanStatement::Prepare(_)) => "PREPARE",
        LogicalPlan::Statement(PlanStatement::Deallocate(_)) => "DEALLOCATE",
        _ => return Ok(()),
    };
    Err(DataFusionError::External(Box::new(Refused::Sessionless {
        statement,
    })))
}

#[cfg(test)]
mod tests {
    use datafusion::sql::parser::DFParser;

    use super::*;

    fn refused(sql: &str) -> bool {
        let statement = DFParser::parse_sql(sql).unwrap().pop_front().unwrap();
        let result = match &statement {
            DfStatement::Statement(statement) => check_statement(statement),
            other => check_reset(other),
        };
        result.is_err()
    }

    #[test]
    fn the_servers_settings_are_refused_however_they_are_spelt() {
        for sql in [
            "SET datafusion.runtime.memory_limit = '100G'",
            "SET datafusion.runtime.temp_directory = '/etc'",
            "SET DataFusion.Runtime.Memory_Limit TO '1G'",
            "SET \"datafusion\".\"runtime\".\"memory_limit\" = '1G'",
            "SET \"datafusion.runtime\".memory_limit = '1G'",
            "SET datafusion.execution.target_partitions = 1000",
            "SET datafusion.execution.batch_size = 100000000",
            "SET datafusion.sql_parser.dialect = 'MySQL'",
            "SET datafusion.catalog.information_schema = false",
            "SET datafusion.explain.tree_maximum_render_width = 100000000",
            "RESET datafusion.runtime.memory_limit",
            "RESET \"datafusion\".runtime.memory_limit",
        ] {
            assert!(refused(sql), "{sql}");
        }
    }

    #[test]
    fn a_sessions_own_settings_and_other_names_pass() {
        for sql in [
            "SET datafusion.optimizer.prefer_hash_join = false",
            "SET datafusion.explain.format = 'tree'",
            "SET datafusion.format.null = 'NULL'",
            "SET datafusion.execution.time_zone = '+01:00'",
            "SET TIME ZONE 'UTC'",
            "SET timezone = 'UTC'",
            "SET client_encoding = 'UTF8'",
            "SET extra_float_digits = 3",
            "RESET datafusion.optimizer.prefer_hash_join",
        ] {
            assert!(!refused(sql), "{sql}");
        }
    }

    #[test]
    fn reset_all_is_refused() {
        let statement = datafusion::sql::sqlparser::parser::Parser::parse_sql(
            &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
            "RESET ALL",
        )
        .unwrap();
        assert!(check_statement(&statement[0]).is_err());
    }
}
