//! Errors as PostgreSQL reports them: a SQLSTATE code for the kind of failure, the position of
//! what went wrong in the statement (a 1-based character offset, which psql shows as
//! `LINE 1: ... ^`), and a hint.
//!
//! ```
//! # use sql::sqlstate::position;
//! // line 2, column 6 of "SELECT *\nFROM nowhere" is character 15
//! assert_eq!(position("SELECT *\nFROM nowhere", 2, 6), Some(15));
//! ```
//!
//! DataFusion reports line and column for parse errors, relative to the text it parsed. The
//! PostgreSQL endpoint plans a re-printed statement, so for unknown names the position is that
//! of the name in the client's own text.

use datafusion::arrow::error::ArrowError;
use datafusion::common::{DataFusionError, SchemaError};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::ParserError;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

pub const SYNTAX_ERROR: &str = "42601";
pub const UNDEFINED_TABLE: &str = "42P01";
pub const UNDEFINED_COLUMN: &str = "42703";
pub const AMBIGUOUS_COLUMN: &str = "42702";
pub const UNDEFINED_FUNCTION: &str = "42883";
pub const DATATYPE_MISMATCH: &str = "42804";
pub const SYNTAX_OR_RULE_VIOLATION: &str = "42000";
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
pub const DIVISION_BY_ZERO: &str = "22012";
pub const NUMERIC_OUT_OF_RANGE: &str = "22003";
pub const INVALID_TEXT_REPRESENTATION: &str = "22P02";
pub const DATA_EXCEPTION: &str = "22000";
pub const OUT_OF_MEMORY: &str = "53200";
pub const QUERY_CANCELED: &str = "57014";
pub const STATEMENT_TOO_COMPLEX: &str = "54001";
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
pub const WRONG_OBJECT_TYPE: &str = "42809";
pub const INTERNAL_ERROR: &str = "XX000";

/// One error as a PostgreSQL client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError {
    pub code: &'static str,
    pub message: String,
    /// 1-based character offset into the statement.
    pub position: Option<usize>,
    pub hint: Option<String>,
}

impl PgError {
    fn new(code: &'static str, message: impl Into<String>) -> PgError {
        PgError {
            code,
            message: message.into(),
            position: None,
            hint: None,
        }
    }
}

/// What was named that does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unknown {
    Table(String),
    Column(String),
    Function(String),
}

/// The table an error says is unknown (its last name part, as DataFusion resolved it).
pub fn unknown_table(error: &DataFusionError) -> Option<String> {
    match unknown(error.find_root()) {
        Some(Unknown::Table(name)) => Some(name),
        _ => None,
    }
}

fn unknown(root: &DataFusionError) -> Option<Unknown> {
    match root {
        DataFusionError::SchemaError(error, _) => match error.as_ref() {
            SchemaError::FieldNotFound { field, .. } => Some(Unknown::Column(field.name.clone())),
            _ => None,
        },
        DataFusionError::Plan(message) => {
            // "table 'lakestream.public.x' not found"
            if let Some(rest) = message.strip_prefix("table '")
                && let Some((name, _)) = rest.split_once("' not found")
            {
                let name = name.rsplit('.').next().unwrap_or(name);
                return Some(Unknown::Table(name.to_string()));
            }
            // "Invalid function 'x'.\nDid you mean 'y'?"
            if let Some(rest) = message.strip_prefix("Invalid function '")
                && let Some((name, _)) = rest.split_once('\'')
            {
                return Some(Unknown::Function(name.to_string()));
            }
            None
        }
        _ => None,
    }
}

/// 54001 for a statement refused before it is planned (`depth`, `plan_size`).
fn too_complex(message: String, position: Option<usize>, hint: &str) -> PgError {
    PgError {
        code: STATEMENT_TOO_COMPLEX,
        message,
        position,
        hint: Some(hint.to_string()),
    }
}

/// `error` for a client that sent `sql`. `topics_hint` says which topics exist, for an unknown
/// table.
pub fn from_datafusion(
    error: &DataFusionError,
    sql: Option<&str>,
    topics_hint: impl FnOnce() -> String,
) -> PgError {
    let error = error.iter().next().unwrap_or(error);
    let root = error.find_root();
    let mut pg = match root {
        DataFusionError::SQL(parser, _) => return from_parser(parser, sql),
        DataFusionError::ArrowError(arrow, _) => from_arrow(arrow),
        DataFusionError::Plan(message) => from_plan_message(message),
        DataFusionError::SchemaError(schema, _) => match schema.as_ref() {
            SchemaError::FieldNotFound {
                field,
                valid_fields,
            } => {
                let mut names: Vec<&str> = valid_fields.iter().map(|f| f.name.as_str()).collect();
                names.dedup();
                let mut pg = PgError::new(
                    UNDEFINED_COLUMN,
                    format!("column \"{}\" does not exist", field.name),
                );
                if !names.is_empty() {
                    pg.hint = Some(format!("the columns are: {}", names.join(", ")));
                }
                pg
            }
            SchemaError::AmbiguousReference { .. } => {
                PgError::new(AMBIGUOUS_COLUMN, root.message())
            }
            _ => PgError::new(SYNTAX_OR_RULE_VIOLATION, root.message()),
        },
        DataFusionError::NotImplemented(message) => {
            PgError::new(FEATURE_NOT_SUPPORTED, message.clone())
        }
        DataFusionError::ResourcesExhausted(message) => PgError::new(
            OUT_OF_MEMORY,
            format!("the query needs more memory than it may use: {message}"),
        ),
        DataFusionError::Execution(message) => from_execution_message(message),
        DataFusionError::External(external) => {
            if let Some(arrow) = external.downcast_ref::<ArrowError>() {
                from_arrow(arrow)
            } else if let Some(deep) = external.downcast_ref::<crate::depth::TooDeep>() {
                return too_complex(deep.to_string(), Some(deep.position), crate::depth::HINT);
            } else if let Some(large) = external.downcast_ref::<crate::plan_size::TooLarge>() {
                return too_complex(large.to_string(), None, crate::plan_size::HINT);
            } else if let Some(refused) = external.downcast_ref::<crate::settings::Refused>() {
                let code = match refused {
                    crate::settings::Refused::Server { .. } => INSUFFICIENT_PRIVILEGE,
                    _ => FEATURE_NOT_SUPPORTED,
                };
                let mut pg = PgError::new(code, refused.to_string());
                pg.hint = Some(crate::settings::HINT.to_string());
                return pg;
            } else {
                PgError::new(INTERNAL_ERROR, root.message())
            }
        }
        _ => PgError::new(INTERNAL_ERROR, root.message()),
    };
    match unknown(root) {
        Some(Unknown::Table(name)) => {
            pg.code = UNDEFINED_TABLE;
            pg.message = format!("relation \"{name}\" does not exist");
            pg.hint = Some(topics_hint());
            pg.position = sql.and_then(|sql| position_of_name(sql, &name, NameKind::Table));
        }
        Some(Unknown::Column(name)) => {
            pg.code = UNDEFINED_COLUMN;
            pg.position = sql.and_then(|sql| position_of_name(sql, &name, NameKind::Column));
        }
        Some(Unknown::Function(name)) => {
            pg.code = UNDEFINED_FUNCTION;
            pg.position = sql.and_then(|sql| position_of_name(sql, &name, NameKind::Function));
        }
        None => {}
    }
    pg
}

/// A statement that does not parse: 42601, at the line and column the parser reports.
pub fn from_parser(error: &ParserError, sql: Option<&str>) -> PgError {
    let text = match error {
        ParserError::TokenizerError(text) | ParserError::ParserError(text) => text.clone(),
        ParserError::RecursionLimitExceeded => "the statement nests too deeply".to_string(),
    };
    let (message, at) = split_location(&text);
    let position = match (at, sql) {
        (Some((line, column)), Some(sql)) => position(sql, line, column),
        // `datafusion-postgres` parses tokens it has rewritten, which carry no location: the
        // SQL parser on the client's own text finds the same error, with its location.
        (None, Some(sql)) => {
            match datafusion::sql::sqlparser::parser::Parser::parse_sql(&PostgreSqlDialect {}, sql)
            {
                Err(ParserError::ParserError(again) | ParserError::TokenizerError(again)) => {
                    split_location(&again)
                        .1
                        .and_then(|(line, column)| position(sql, line, column))
                }
                _ => None,
            }
        }
        _ => None,
    };
    // The end of the input has no location: PostgreSQL points just past the last character.
    let position = position.or_else(|| {
        let sql = sql?.trim_end();
        message
            .ends_with("found: EOF")
            .then(|| sql.chars().count() + 1)
    });
    let message = message
        .strip_prefix("sql parser error: ")
        .unwrap_or(&message)
        .to_string();
    PgError {
        code: SYNTAX_ERROR,
        message: format!("syntax error: {message}"),
        position,
        hint: None,
    }
}

/// "message at Line: 1, Column: 8" → ("message", (1, 8)).
fn split_location(text: &str) -> (String, Option<(u64, u64)>) {
    let Some((message, at)) = text.rsplit_once(" at Line: ") else {
        return (text.to_string(), None);
    };
    let location = at
        .split_once(", Column: ")
        .and_then(|(line, column)| Some((line.trim().parse().ok()?, column.trim().parse().ok()?)));
    match location {
        Some(location) => (message.to_string(), Some(location)),
        None => (text.to_string(), None),
    }
}

fn from_plan_message(message: &str) -> PgError {
    if message.starts_with("Invalid function") || message.contains("No function matches") {
        // "Invalid function 'x'.\nDid you mean 'y'?"
        let (first, rest) = message.split_once('\n').unwrap_or((message, ""));
        let mut pg = PgError::new(UNDEFINED_FUNCTION, first.trim_end_matches('.'));
        if !rest.trim().is_empty() {
            pg.hint = Some(rest.trim().to_string());
        }
        return pg;
    }
    if message.contains("Cannot infer common")
        || message.contains("coerc")
        || message.contains("Cannot automatically convert")
    {
        return PgError::new(DATATYPE_MISMATCH, message);
    }
    if message.starts_with("Unsupported") {
        return PgError::new(FEATURE_NOT_SUPPORTED, message);
    }
    // `Engine::check_replacing`: what CREATE OR REPLACE would replace is another kind of object.
    if message.contains("is a table, not a view") || message.contains("CREATE OR REPLACE does not")
    {
        return PgError::new(WRONG_OBJECT_TYPE, message);
    }
    PgError::new(SYNTAX_OR_RULE_VIOLATION, message)
}

fn from_execution_message(message: &str) -> PgError {
    let lower = message.to_ascii_lowercase();
    let code = if lower.contains("divide by zero") || lower.contains("division by zero") {
        DIVISION_BY_ZERO
    } else if lower.contains("overflow") {
        NUMERIC_OUT_OF_RANGE
    } else if lower.contains("cast") || lower.contains("parse") {
        INVALID_TEXT_REPRESENTATION
    } else {
        INTERNAL_ERROR
    };
    PgError::new(code, message)
}

fn from_arrow(error: &ArrowError) -> PgError {
    let code = match error {
        ArrowError::DivideByZero => DIVISION_BY_ZERO,
        ArrowError::ArithmeticOverflow(_) => NUMERIC_OUT_OF_RANGE,
        ArrowError::CastError(_) | ArrowError::ParseError(_) => INVALID_TEXT_REPRESENTATION,
        // A value that does not decode in a strict topic.
        ArrowError::JsonError(_) | ArrowError::CsvError(_) => INVALID_TEXT_REPRESENTATION,
        ArrowError::InvalidArgumentError(_) => DATA_EXCEPTION,
        ArrowError::MemoryError(_) => OUT_OF_MEMORY,
        ArrowError::ExternalError(inner) => {
            return match inner.downcast_ref::<DataFusionError>() {
                Some(inner) => from_datafusion(inner, None, String::new),
                None => PgError::new(INTERNAL_ERROR, error.to_string()),
            };
        }
        _ => INTERNAL_ERROR,
    };
    PgError::new(code, error.to_string())
}

/// The 1-based character offset of `line`:`column` (both 1-based, as the SQL parser reports
/// them) in `sql`.
pub fn position(sql: &str, line: u64, column: u64) -> Option<usize> {
    if line == 0 || column == 0 {
        return None;
    }
    let skipped: usize = sql
        .split_inclusive('\n')
        .take(line as usize - 1)
        .map(|text| text.chars().count())
        .sum();
    let chars = sql.chars().count();
    let offset = skipped + column as usize;
    // One past the end is where "unexpected end of input" points.
    (offset <= chars + 1).then_some(offset)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    Table,
    Column,
    Function,
}

/// Where `name` is written in `sql` (PostgreSQL points at the start of a qualified name): for
/// a table, preferably after FROM, JOIN or a comma; for a function, followed by `(`.
pub fn position_of_name(sql: &str, name: &str, kind: NameKind) -> Option<usize> {
    let tokens: Vec<TokenWithSpan> = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize_with_location()
        .ok()?
        .into_iter()
        .filter(|token| !matches!(token.token, Token::Whitespace(_)))
        .collect();
    let is_name = |token: &Token| match token {
        Token::Word(word) if word.quote_style.is_some() => word.value == name,
        Token::Word(word) => word.value.eq_ignore_ascii_case(name),
        _ => false,
    };
    let mut first = None;
    for (index, token) in tokens.iter().enumerate() {
        if !is_name(&token.token) {
            continue;
        }
        if kind == NameKind::Function
            && !matches!(tokens.get(index + 1).map(|t| &t.token), Some(Token::LParen))
        {
            continue;
        }
        // Back to the start of `a.b.name`.
        let mut start = index;
        while start >= 2
            && tokens[start - 1].token == Token::Period
            && matches!(tokens[start - 2].token, Token::Word(_))
        {
            start -= 2;
        }
        let at = &tokens[start].span.start;
        let offset = position(sql, at.line, at.column)?;
        let after_from = start > 0
            && match &tokens[start - 1].token {
                Token::Word(word) => matches!(
                    word.keyword,
                    Keyword::FROM
                        | Keyword::JOIN
                        | Keyword::INTO
                        | Keyword::TABLE
                        | Keyword::UPDATE
                ),
                Token::Comma => true,
                _ => false,
            };
        if kind != NameKind::Table || after_from {
            return Some(offset);
        }
        first.get_or_insert(offset);
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_position(sql: &str, line: u64, column: u64, expect: Option<usize>) {
        assert_eq!(
            position(sql, line, column),
            expect,
            "{sql:?} {line}:{column}"
        );
    }

    #[test]
    fn positions_from_line_and_column() {
        check_position("SELECT 1", 1, 1, Some(1));
        check_position("SELECT 1", 1, 8, Some(8));
        check_position("SELECT 1", 1, 9, Some(9)); // the end of the input
        check_position("SELECT 1", 1, 10, None);
        check_position("SELECT *\nFROM t", 2, 1, Some(10));
        check_position("SELECT *\r\nFROM t", 2, 6, Some(16));
        check_position("SELECT 'é'\nFROM t", 2, 6, Some(17)); // characters, not bytes
        check_position("SELECT 1", 0, 0, None);
    }

    fn check_name(sql: &str, name: &str, kind: NameKind, expect: Option<usize>) {
        assert_eq!(
            position_of_name(sql, name, kind),
            expect,
            "{name} in {sql:?}"
        );
    }

    #[test]
    fn positions_of_names() {
        use NameKind::*;
        check_name("SELECT * FROM nope", "nope", Table, Some(15));
        check_name("select *\n  from NOPE", "nope", Table, Some(17));
        check_name("SELECT * FROM public.nope", "nope", Table, Some(15));
        check_name(
            "SELECT * FROM lakestream.public.nope",
            "nope",
            Table,
            Some(15),
        );
        check_name("SELECT nope FROM nope", "nope", Table, Some(18));
        check_name("SELECT * FROM iot, nope", "nope", Table, Some(20));
        check_name(
            "SELECT * FROM iot JOIN nope ON true",
            "nope",
            Table,
            Some(24),
        );
        check_name(r#"SELECT * FROM "Nope""#, "Nope", Table, Some(15));
        check_name(r#"SELECT * FROM "Nope""#, "nope", Table, None);
        check_name("SELECT 'nope' FROM iot", "nope", Table, None);
        check_name("SELECT a, nope FROM iot", "nope", Column, Some(11));
        check_name("SELECT a, iot.nope FROM iot", "nope", Column, Some(11));
        check_name("SELECT nope, nope(1) FROM iot", "nope", Function, Some(14));
        check_name("SELECT 1 FROM iot WHERE \"broken", "nope", Column, None);
    }

    fn check_parse(sql: &str, code: &str, expect_position: Option<usize>) {
        let parser =
            datafusion::sql::sqlparser::parser::Parser::parse_sql(&PostgreSqlDialect {}, sql);
        let error = parser.expect_err(sql);
        let pg = from_parser(&error, Some(sql));
        assert_eq!(
            (pg.code, pg.position),
            (code, expect_position),
            "{sql:?}: {pg:?}"
        );
    }

    #[test]
    fn parse_errors_point_at_the_token() {
        check_parse("SELEC 1", SYNTAX_ERROR, Some(1));
        check_parse("SELECT * FROM iot WHERE", SYNTAX_ERROR, Some(24));
        check_parse("SELECT *\nFROM iot\nWHERE )", SYNTAX_ERROR, Some(25));
    }

    /// DataFusion's own errors, so that a change of its messages shows here.
    #[tokio::test]
    async fn datafusion_errors() {
        let context = datafusion::prelude::SessionContext::new();
        context.sql("CREATE TABLE t (a INT, b TEXT)").await.unwrap();
        let check = |sql: &'static str, code: &'static str, position: Option<usize>| {
            let context = context.clone();
            async move {
                let error = match context.sql(sql).await {
                    Ok(frame) => frame.collect().await.expect_err(sql),
                    Err(error) => error,
                };
                let pg = from_datafusion(&error, Some(sql), || "topics".into());
                assert_eq!(
                    (pg.code, pg.position),
                    (code, position),
                    "{sql}: {error} → {pg:?}"
                );
                pg
            }
        };
        let table = check("SELECT * FROM nope", UNDEFINED_TABLE, Some(15)).await;
        assert_eq!(table.hint.as_deref(), Some("topics"));
        let column = check("SELECT a,\n  nope FROM t", UNDEFINED_COLUMN, Some(13)).await;
        assert_eq!(column.hint.as_deref(), Some("the columns are: a, b"));
        check("SELECT flor(a) FROM t", UNDEFINED_FUNCTION, Some(8)).await;
        check("SELECT * FROM t WHERE", SYNTAX_ERROR, Some(22)).await;
        check("SELECT 1 / 0", DIVISION_BY_ZERO, None).await;
        check("SELECT CAST('x' AS INT)", INVALID_TEXT_REPRESENTATION, None).await;
    }

    #[test]
    fn codes_and_hints() {
        let hint = || "the topics are: a, b".to_string();
        let plan = |m: &str| DataFusionError::Plan(m.to_string());

        let table = from_datafusion(
            &plan("table 'lakestream.public.nope' not found"),
            Some("SELECT * FROM nope"),
            hint,
        );
        assert_eq!(
            table,
            PgError {
                code: UNDEFINED_TABLE,
                message: "relation \"nope\" does not exist".into(),
                position: Some(15),
                hint: Some("the topics are: a, b".into()),
            }
        );
        let function = from_datafusion(
            &plan("Invalid function 'flor'.\nDid you mean 'floor'?"),
            Some("SELECT flor(1)"),
            hint,
        );
        assert_eq!(function.code, UNDEFINED_FUNCTION);
        assert_eq!(function.position, Some(8));
        assert_eq!(function.hint.as_deref(), Some("Did you mean 'floor'?"));

        let arrow = |e| DataFusionError::ArrowError(Box::new(e), None);
        assert_eq!(
            from_datafusion(&arrow(ArrowError::DivideByZero), None, hint).code,
            DIVISION_BY_ZERO
        );
        assert_eq!(
            from_datafusion(&arrow(ArrowError::CastError("x".into())), None, hint).code,
            INVALID_TEXT_REPRESENTATION
        );
        let wrapped =
            DataFusionError::Context("ctx".into(), Box::new(arrow(ArrowError::DivideByZero)));
        assert_eq!(from_datafusion(&wrapped, None, hint).code, DIVISION_BY_ZERO);
        assert_eq!(
            from_datafusion(&DataFusionError::NotImplemented("x".into()), None, hint).code,
            FEATURE_NOT_SUPPORTED
        );
        assert_eq!(
            from_datafusion(&DataFusionError::ResourcesExhausted("x".into()), None, hint).code,
            OUT_OF_MEMORY
        );
    }
}
