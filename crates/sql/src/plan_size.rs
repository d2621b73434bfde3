//! A bound on the work of planning a statement, checked on its logical plan before any rewrite.
//!
//! DataFusion's optimizer is fast for the statements people write, but some cost grows much
//! faster than their text:
//! - common table expressions (or views) that each use the one before twice stand for a plan
//!   that doubles with each of them: 16 of them, a few hundred bytes of SQL, took 30 s and
//!   2.9 GiB;
//! - a join of n relations takes about n³ (128 joins: 1.6 s; 256 `FROM` items: 2.5 s; 2,000,
//!   which the nesting bound of [`crate::depth`] allows, would take hours);
//! - a union of n branches takes about n² (1,900 branches: 3.4 s).
//!
//! Planning does not yield, so a client that disconnects cannot stop it, and each such
//! statement holds one of the SQL threads. So two checks refuse such statements with SQLSTATE
//! 54001 (statement too complex):
//! - [`check_text`], before a statement is planned (with [`crate::depth::check`]): the SQL
//!   planner itself copies a common table expression's plan into each use, so a statement may
//!   read at most [`RELATIONS_MAX`] tables once they are expanded, which is counted on the
//!   parsed text.
//! - [`check_view`], when a view is created: the planner copies a view's plan into each use
//!   too, so a view's plan may have at most [`NODES_MAX`] nodes.
//! - [`PlanSize`], the first analyzer rule, on every logical plan before the optimizer rewrites
//!   it: at most [`NODES_MAX`] plan nodes, [`JOINS_MAX`] joins and subqueries, and
//!   [`JOIN_COLUMNS_MAX`] columns summed over the joins.

use std::collections::HashMap;
use std::ops::ControlFlow;

use datafusion::catalog::TableProvider;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::logical_expr::LogicalPlan;
use datafusion::optimizer::AnalyzerRule;
use datafusion::sql::parser::{CopyToSource, DFParser, Statement as DfStatement};
use datafusion::sql::planner::IdentNormalizer;
use datafusion::sql::sqlparser::ast::{
    Ident, ObjectName, ObjectType, Query, Statement, Visit, Visitor,
};
use datafusion::sql::sqlparser::dialect::{Dialect, GenericDialect, PostgreSqlDialect};
use datafusion::sql::sqlparser::parser::Parser;

/// The most tables a statement may read once its common table expressions and views are
/// expanded, each use of one reading what its definition reads.
pub const RELATIONS_MAX: usize = 1000;

/// The most plan nodes a statement (or a view) may have: a union of about 800 `SELECT`s of a
/// topic (900 have 2,233 nodes; 500 plan in 0.25 s in the release build).
pub const NODES_MAX: usize = 2000;

/// The most joins a statement may have, subqueries in expressions counted as joins (the
/// optimizer turns most into joins): 65 relations joined plan in about 0.2 s.
pub const JOINS_MAX: usize = 64;

/// The most columns a statement's joins may produce, summed over the joins: the optimizer's
/// work on a join tree grows with its joins times their width (64 joins of a 106-column topic
/// took 2.2 s, with `SELECT *` 5.5 s: 227,000 columns). 32 joins of that topic (59,000) plan
/// in 0.26 s; a 1,000-column topic may be joined 12 times.
pub const JOIN_COLUMNS_MAX: usize = 100_000;

/// A statement refused because planning it could take too long.
#[derive(Debug, thiserror::Error)]
pub enum TooLarge {
    #[error(
        "the statement is too complex to plan: it reads more than {RELATIONS_MAX} tables once its common table expressions and views are expanded ({relations})"
    )]
    Relations { relations: usize },
    #[error(
        "the statement is too complex to plan: it has more than {NODES_MAX} plan steps once its common table expressions and views are expanded ({nodes})"
    )]
    Nodes { nodes: usize },
    #[error(
        "the statement is too complex to plan: it has more than {JOINS_MAX} joins and subqueries ({joins})"
    )]
    Joins { joins: usize },
    #[error(
        "the statement is too complex to plan: its joins produce more than {JOIN_COLUMNS_MAX} columns in all, summed over the joins ({columns})"
    )]
    JoinColumns { columns: usize },
}

/// What to do about [`TooLarge`].
pub const HINT: &str =
    "split the statement, or keep an intermediate result with CREATE TABLE ... AS and query that";

/// How many tables a view reads, by the view's name (`None`: not a view).
pub type Views<'a> = &'a dyn Fn(&str) -> Option<usize>;

/// Refuses `sql` before it is planned if it nests too deeply ([`crate::depth::check`]) or reads
/// more than [`RELATIONS_MAX`] tables once its common table expressions and `views` are
/// expanded. Text that does not parse passes: the planner reports it.
pub fn check_text(sql: &str, views: Views<'_>) -> Result<()> {
    crate::depth::check(sql)?;
    // PostgreSQL's dialect (the PostgreSQL endpoint's), else DataFusion's generic one (the
    // engine's, which takes more, such as `backquoted` names); `CREATE TABLE ... WITH (...) AS`
    // only parses with sqlparser's own parser (`crate::ctas`).
    let dialects: [&dyn Dialect; 2] = [&PostgreSqlDialect {}, &GenericDialect {}];
    let most = |most: usize, relations: Result<usize>| relations.map(|n| most.max(n));
    let datafusion = dialects.iter().find_map(|dialect| {
        let statements = DFParser::parse_sql_with_dialect(sql, *dialect).ok()?;
        let mut relations = statements
            .iter()
            .map(|statement| expanded_relations(statement, views));
        Some(relations.try_fold(0, most))
    });
    let relations = datafusion.or_else(|| {
        dialects.iter().find_map(|dialect| {
            let statements = Parser::parse_sql(*dialect, sql).ok()?;
            let mut relations = statements
                .iter()
                .map(|statement| read_by(views, |c| statement.visit(c)));
            Some(relations.try_fold(0, most))
        })
    });
    match relations.transpose()? {
        Some(relations) => at_most(relations),
        None => Ok(()),
    }
}

/// [`check_text`]'s checks on one parsed `statement`, as the PostgreSQL endpoint runs it
/// (`datafusion-postgres` parses and rewrites the client's text on its own, so what it runs
/// is checked again: `pg::hooks::Guard`).
pub fn check_statement(statement: &Statement, views: Views<'_>) -> Result<()> {
    at_most(read_by(views, |c| statement.visit(c))?)
}

fn at_most(relations: usize) -> Result<()> {
    if relations > RELATIONS_MAX {
        return Err(DataFusionError::External(Box::new(TooLarge::Relations {
            relations,
        })));
    }
    Ok(())
}

/// The tables `statement` reads, common table expressions and views expanded; an error for a
/// statement refused outright ([`Expansion::pre_visit_statement`]).
fn expanded_relations(statement: &DfStatement, views: Views<'_>) -> Result<usize> {
    match statement {
        DfStatement::Statement(statement) => read_by(views, |c| statement.visit(c)),
        DfStatement::Explain(explain) => expanded_relations(&explain.statement, views),
        DfStatement::Reset(_) => crate::settings::check_reset(statement).map(|()| 0),
        DfStatement::CopyTo(copy) => match &copy.source {
            CopyToSource::Query(query) => read_by(views, |c| query.visit(c)),
            CopyToSource::Relation(_) => Ok(1),
        },
        _ => Ok(0),
    }
}

/// The tables read by what `visit` walks, common table expressions and views expanded.
fn read_by(
    views: Views<'_>,
    visit: impl FnOnce(&mut Expansion) -> ControlFlow<DataFusionError>,
) -> Result<usize> {
    let mut expansion = Expansion {
        views,
        definitions: HashMap::new(),
        weights: HashMap::new(),
        open: Vec::new(),
        total: 0,
    };
    match visit(&mut expansion) {
        ControlFlow::Break(refused) => Err(refused),
        ControlFlow::Continue(()) => Ok(expansion.total),
    }
}

/// Counts the tables a statement reads as the planner expands it, from its syntax tree: each
/// use of a common table expression reads what its definition read. Names are matched across
/// scopes, so a shadowed name may count more than is read, never less.
struct Expansion<'a> {
    views: Views<'a>,
    /// The queries that define a common table expression, by address, with its name.
    definitions: HashMap<*const Query, String>,
    /// What a use of each common table expression reads.
    weights: HashMap<String, usize>,
    /// The queries being walked, innermost last: the name each defines, and what it read.
    open: Vec<(Option<String>, usize)>,
    /// What the statement reads outside the definitions.
    total: usize,
}

impl Expansion<'_> {
    fn add(&mut self, read: usize) {
        match self.open.last_mut() {
            Some((_, so_far)) => *so_far = so_far.saturating_add(read),
            None => self.total = self.total.saturating_add(read),
        }
    }
}

impl Visitor for Expansion<'_> {
    type Break = DataFusionError;

    /// Statements that would let a client escape the checks, for every client: a schema or
    /// catalog of its own (whose views `register_table` of `public` does not see), or settings
    /// that are the server's ([`crate::settings`]: parser settings this check does not parse
    /// with, the memory limit).
    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<DataFusionError> {
        let refused = match statement {
            Statement::CreateSchema { .. } | Statement::CreateDatabase { .. } => {
                "lakestream has one schema for topics, tables and views, `public`: CREATE SCHEMA and CREATE DATABASE are not supported"
            }
            Statement::Drop {
                object_type: ObjectType::Schema | ObjectType::Database,
                ..
            } => {
                "the schemas `public` (topics, tables and views), `pg_catalog` and `information_schema` are the server's and every client's: DROP SCHEMA and DROP DATABASE are not supported"
            }
            Statement::Set(_) | Statement::Reset(_) => {
                return match crate::settings::check_statement(statement) {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(refused) => ControlFlow::Break(refused),
                };
            }
            _ => return ControlFlow::Continue(()),
        };
        ControlFlow::Break(DataFusionError::NotImplemented(refused.into()))
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<DataFusionError> {
        for cte in query.with.iter().flat_map(|with| &with.cte_tables) {
            let name = normalized(&cte.alias.name);
            self.definitions
                .insert(std::ptr::from_ref(cte.query.as_ref()), name);
        }
        let defines = self.definitions.get(&std::ptr::from_ref(query)).cloned();
        self.open.push((defines, 0));
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<DataFusionError> {
        match self.open.pop() {
            // A definition reads nothing until it is used.
            // Two definitions the planner tells apart may fold to one name here: the larger
            // counts for both.
            Some((Some(name), read)) => {
                let weight = self.weights.entry(name).or_default();
                *weight = (*weight).max(read).max(1);
            }
            Some((None, read)) => self.add(read),
            None => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<DataFusionError> {
        // The planner finds a common table expression by the whole name as written, dots and
        // all (`s.c0` names a CTE called "s.c0"), a view by its last part.
        let parts: Vec<String> = relation
            .0
            .iter()
            .map(|part| part.as_ident().map(normalized).unwrap_or_default())
            .collect();
        let cte = self.weights.get(&parts.join(".")).copied();
        let view = || parts.last().and_then(|name| (self.views)(name));
        self.add(cte.or_else(view).unwrap_or(1).max(1));
        ControlFlow::Continue(())
    }
}

/// A name as the planner compares it (DataFusion's own normalizer: unquoted names folded to
/// lower case, in ASCII only).
fn normalized(ident: &Ident) -> String {
    IdentNormalizer::default().normalize(ident.clone())
}

/// The analyzer rule that refuses a [`TooLarge`] plan; it must run first.
#[derive(Debug, Default)]
pub struct PlanSize;

impl AnalyzerRule for PlanSize {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        check(&plan)?;
        Ok(plan)
    }

    fn name(&self) -> &str {
        "plan_size"
    }
}

/// Refuses `plan` if it is [`TooLarge`].
pub fn check(plan: &LogicalPlan) -> Result<()> {
    let size = measure(plan)?;
    let too_large = if size.nodes > NODES_MAX {
        TooLarge::Nodes { nodes: size.nodes }
    } else if size.joins > JOINS_MAX {
        TooLarge::Joins { joins: size.joins }
    } else if size.join_columns > JOIN_COLUMNS_MAX {
        TooLarge::JoinColumns {
            columns: size.join_columns,
        }
    } else {
        return Ok(());
    };
    Err(DataFusionError::External(Box::new(too_large)))
}

/// Refuses a view whose plan is [`TooLarge`] when it is created, so that each view a statement
/// names stands for a bounded plan; returns how many tables it reads (`None`: not a view).
pub fn check_view(table: &dyn TableProvider) -> Result<Option<usize>> {
    let Some(plan) = table.get_logical_plan() else {
        return Ok(None);
    };
    check(&plan)?;
    Ok(Some(tables_read(&plan)))
}

/// How many tables `plan` reads, views expanded.
pub fn tables_read(plan: &LogicalPlan) -> usize {
    measure(plan).map_or(usize::MAX, |size| size.scans)
}

/// What a plan holds (saturating).
#[derive(Clone, Copy)]
struct Size {
    nodes: usize,
    joins: usize,
    /// The columns the joins produce, summed.
    join_columns: usize,
    /// Table scans (a view's counted as the scans of its plan).
    scans: usize,
}

impl Size {
    fn add(self, other: Size) -> Size {
        Size {
            nodes: self.nodes.saturating_add(other.nodes),
            joins: self.joins.saturating_add(other.joins),
            join_columns: self.join_columns.saturating_add(other.join_columns),
            scans: self.scans.saturating_add(other.scans),
        }
    }

    const ZERO: Size = Size {
        nodes: 0,
        joins: 0,
        join_columns: 0,
        scans: 0,
    };

    /// A node by itself.
    fn of_node(plan: &LogicalPlan) -> Size {
        let join = matches!(plan, LogicalPlan::Join(_));
        Size {
            nodes: 1,
            joins: usize::from(join),
            join_columns: if join {
                plan.schema().fields().len()
            } else {
                0
            },
            scans: 0,
        }
    }
}

/// The size of `plan`, views and subqueries included. It stops counting once past
/// [`NODES_MAX`] nodes, so a plan whose parts are shared (a view that is not `public`'s, for
/// one) costs no more than that to measure, however many paths it has.
fn measure(plan: &LogicalPlan) -> Result<Size> {
    let mut size = Size::of_node(plan);
    for input in plan.inputs() {
        size = size.add(measure(input)?);
        if size.nodes > NODES_MAX {
            return Ok(size);
        }
    }
    plan.apply_subqueries(|subquery| {
        // The optimizer makes most subqueries joins; `subquery` is the subquery's own node.
        size = size.add(Size::of_node(subquery)).add(Size {
            joins: 1,
            ..Size::ZERO
        });
        for input in subquery.inputs() {
            size = size.add(measure(input)?);
        }
        Ok(match size.nodes > NODES_MAX {
            true => TreeNodeRecursion::Stop,
            false => TreeNodeRecursion::Continue,
        })
    })?;
    if size.nodes > NODES_MAX {
        return Ok(size);
    }
    if let LogicalPlan::TableScan(scan) = plan {
        // A view's plan is inlined where it is scanned.
        size = match scan.source.get_logical_plan() {
            Some(view) => size.add(measure(&view)?),
            None => size.add(Size {
                scans: 1,
                ..Size::ZERO
            }),
        };
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    /// A session with a table `t`.
    async fn with_table() -> SessionContext {
        let context = SessionContext::new();
        let created = context.sql("CREATE TABLE t (a BIGINT, b TEXT)").await;
        created.unwrap();
        context
    }

    /// The size of `sql`'s logical plan over a table `t`, as written (before any rewrite).
    async fn size_of(sql: &str) -> Size {
        let context = with_table().await;
        let plan = context.state().create_logical_plan(sql).await.unwrap();
        measure(&plan).unwrap()
    }

    fn joins(n: usize) -> String {
        joins_of("t", "a", n)
    }

    /// `n` joins of `table` to itself on `column`.
    fn joins_of(table: &str, column: &str, n: usize) -> String {
        let mut sql = format!("SELECT count(*) FROM {table} t0");
        for i in 1..=n {
            let p = i - 1;
            sql += &format!(" JOIN {table} t{i} ON t{p}.{column} = t{i}.{column}");
        }
        sql
    }

    /// Common table expressions that each use the one before twice: the last stands for 2^n
    /// scans of `t`. `define(i)` is the i-th's name where it is defined, `name(i)` where used.
    fn chain(n: usize, define: impl Fn(usize) -> String, name: impl Fn(usize) -> String) -> String {
        let mut ctes = vec![format!("{} AS (SELECT a FROM t)", define(0))];
        for i in 1..=n {
            let p = name(i - 1);
            let union = format!("SELECT a FROM {p} UNION ALL SELECT a FROM {p}");
            ctes.push(format!("{} AS ({union})", define(i)));
        }
        ctes.join(", ")
    }

    fn doubling(n: usize) -> String {
        let ctes = chain(n, |i| format!("c{i}"), |i| format!("c{i}"));
        format!("WITH {ctes} SELECT count(*) FROM c{n}")
    }

    #[tokio::test]
    async fn joins_and_subqueries_are_counted() {
        assert_eq!(size_of(&joins(3)).await.joins, 3);
        assert_eq!(size_of("SELECT * FROM t, t u, t v").await.joins, 2);
        let subqueries = "SELECT a FROM t WHERE a IN (SELECT a FROM t) \
                          AND EXISTS (SELECT 1 FROM t u WHERE u.a = t.a) \
                          AND b = (SELECT max(b) FROM t)";
        assert_eq!(size_of(subqueries).await.joins, 3);
        assert_eq!(size_of("SELECT a FROM t WHERE a > 1").await.joins, 0);
    }

    #[tokio::test]
    async fn a_view_stands_for_its_expanded_plan_and_is_refused_past_the_limit() {
        let context = with_table().await;
        context
            .sql("CREATE VIEW v0 AS SELECT a FROM t")
            .await
            .unwrap();
        let mut read = Vec::new();
        for i in 1..=9 {
            let p = i - 1;
            let view =
                format!("CREATE VIEW v{i} AS SELECT a FROM v{p} UNION ALL SELECT a FROM v{p}");
            context.sql(&view).await.unwrap();
            let table = context.table_provider(format!("v{i}")).await.unwrap();
            read.push(check_view(table.as_ref()));
        }
        // Each view reads twice what the one before reads; the ninth has too many nodes.
        let tables: Vec<_> = read[..8]
            .iter()
            .map(|r| r.as_ref().unwrap().unwrap())
            .collect();
        assert_eq!(tables, [2, 4, 8, 16, 32, 64, 128, 256]);
        assert!(matches!(&read[8], Err(DataFusionError::External(e)) if e.is::<TooLarge>()));
        let plain = context.table_provider("t").await.unwrap();
        assert!(check_view(plain.as_ref()).unwrap().is_none());
    }

    #[test]
    fn the_text_check_counts_each_use_of_a_common_table_expression() {
        let relations = |sql: &str| {
            let statements = DFParser::parse_sql_with_dialect(sql, &PostgreSqlDialect {}).unwrap();
            expanded_relations(&statements[0], &|_| None).unwrap()
        };
        assert_eq!(relations("SELECT * FROM t JOIN u ON t.a = u.a"), 2);
        // c0 reads 1; c1 uses c0 twice: 2; C2 (unquoted: c2) uses c1 twice: 4; used 3 times.
        let sql = "WITH c0 AS (SELECT a FROM t), c1 AS (SELECT a FROM c0, c0 x), \
                   C2 AS (SELECT * FROM c1 UNION ALL SELECT * FROM c1) \
                   SELECT * FROM c2, c2 y WHERE a IN (SELECT a FROM c2)";
        assert_eq!(relations(sql), 12);
        assert_eq!(relations(&format!("EXPLAIN {sql}")), 12);
        // An unused definition reads nothing; a recursive one reads itself once.
        assert_eq!(relations("WITH c AS (SELECT * FROM t, u) SELECT 1"), 0);
        let recursive = "WITH RECURSIVE r AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM r WHERE n < 5) \
                         SELECT * FROM r";
        assert_eq!(relations(recursive), 1);
        assert!(check_text(&doubling(9), &|_| None).is_ok());
        let refused = check_text(&doubling(10), &|_| None).unwrap_err();
        assert!(
            refused.to_string().contains("reads more than 1000 tables"),
            "{refused}"
        );
        // 2^60 tables: counted, not expanded; CTAS with options is checked too.
        assert!(check_text(&doubling(60), &|_| None).is_err());
        let ctas = format!(
            "CREATE TABLE x WITH (format = 'parquet') AS {}",
            doubling(12)
        );
        assert!(check_text(&ctas, &|_| None).is_err());
        // Names in backquotes parse with the engine's generic dialect only.
        let backquoted = doubling(12).replace("c1 ", "`c1` ").replace("c1)", "`c1`)");
        assert!(DFParser::parse_sql_with_dialect(&backquoted, &PostgreSqlDialect {}).is_err());
        assert!(check_text(&backquoted, &|_| None).is_err());
        // A view counts the tables it reads.
        let views = |name: &str| (name == "v").then_some(400);
        assert!(check_text("SELECT * FROM v, v x", &views).is_ok());
        assert!(check_text("SELECT * FROM v, public.v x, V y", &views).is_err());
        assert!(check_text("SELECT * FROM \"V\", \"V\" x, \"V\" y", &views).is_ok());
        // A CTE is found by its whole name, dots and all; unquoted names fold ASCII only.
        let dotted = chain(12, |i| format!("\"s.c{i}\""), |i| format!("s.c{i}"));
        let dotted = format!("WITH {dotted} SELECT count(*) FROM s.c12");
        assert!(check_text(&dotted, &|_| None).is_err(), "{dotted}");
        let accented = chain(12, |i| format!("É{i}"), |i| format!("É{i}"));
        let folded = format!("WITH {accented}, é12 AS (SELECT 1 AS a) SELECT count(*) FROM É12");
        assert!(check_text(&folded, &|_| None).is_err(), "{folded}");
        // What would escape the checks is refused for every client.
        for refused in [
            "CREATE SCHEMA s",
            "CREATE DATABASE d",
            "DROP SCHEMA public CASCADE",
            "DROP SCHEMA IF EXISTS pg_catalog",
            "DROP DATABASE lakestream",
        ] {
            let error = check_text(refused, &|_| None).unwrap_err();
            assert!(
                matches!(error, DataFusionError::NotImplemented(_)),
                "{refused}: {error}"
            );
        }
        // And the server's settings (`crate::settings`), in either parser's statements.
        for refused in [
            "SET datafusion.sql_parser.dialect = 'MySQL'",
            "SET \"datafusion\".\"runtime\".memory_limit = '1T'",
            "RESET datafusion.runtime.memory_limit",
        ] {
            let error = check_text(refused, &|_| None).unwrap_err();
            assert!(
                error.find_root().to_string().contains("permission denied"),
                "{refused}: {error}"
            );
        }
        assert!(check_text("SET datafusion.optimizer.max_passes = 2", &|_| None).is_ok());
    }

    #[tokio::test]
    async fn the_rule_refuses_what_is_too_large_and_passes_the_rest() {
        let context = with_table().await;
        let plan = |sql: String| {
            let state = context.state();
            async move { state.create_logical_plan(&sql).await.unwrap() }
        };
        let refused = |result: Result<LogicalPlan>| match result {
            Err(DataFusionError::External(error)) => error.downcast::<TooLarge>().unwrap(),
            other => panic!("not refused: {other:?}"),
        };
        let config = ConfigOptions::default();
        let rule = PlanSize;
        assert!(rule.analyze(plan(joins(JOINS_MAX)).await, &config).is_ok());
        let error = refused(rule.analyze(plan(joins(JOINS_MAX + 1)).await, &config));
        assert!(matches!(*error, TooLarge::Joins { joins } if joins == JOINS_MAX + 1));
        assert!(rule.analyze(plan(doubling(6)).await, &config).is_ok());
        let error = refused(rule.analyze(plan(doubling(9)).await, &config));
        assert!(matches!(*error, TooLarge::Nodes { .. }), "{error}");
        let wide: Vec<_> = (0..200).map(|i| format!("{i} AS c{i}")).collect();
        let wide = format!("CREATE TABLE wide AS SELECT {}", wide.join(", "));
        context.sql(&wide).await.unwrap();
        // Joins of 2, 3, ... relations of 200 columns: 200 * (2 + 3 + ... + n) columns.
        let wide_joins = |n| plan(joins_of("wide", "c0", n));
        assert!(rule.analyze(wide_joins(30).await, &config).is_ok());
        let error = refused(rule.analyze(wide_joins(31).await, &config));
        assert!(
            matches!(*error, TooLarge::JoinColumns { columns } if columns == 200 * (2..=32).sum::<usize>()),
            "{error}"
        );
    }
}
