//! A bound on how deeply a statement nests, worked out from its tokens before it is parsed.
//!
//! The SQL parser builds a chain of operators (`a OR b OR c ...`, `1 + 1 + ...`), of set
//! operations and of joins in a loop, as a tree as deep as the chain is long. DataFusion then
//! clones, rewrites and drops that tree recursively, and a chain of a few thousand links
//! overflows a thread's stack, which aborts the whole server. So a statement whose tokens allow
//! a tree deeper than [`DEPTH_MAX`] is refused first, with SQLSTATE 54001 (statement too
//! complex), as PostgreSQL refuses what would exceed its stack and DuckDB what exceeds its
//! `max_expression_depth`. Parentheses cannot nest deeper than the parser's own limit (50).
//!
//! The bound counts, within each parenthesis (or `CASE ... END`), the operators between two
//! separators (a comma, a clause keyword such as `WHERE` or `THEN`), plus the set operations,
//! joins and `FROM` list items, plus what the parentheses inside hold. It never counts less
//! than the depth of the tree the parser would build; it may count up to twice that, for
//! chains such as `a = 1 OR a = 2 OR ...`, which stay allowed to 1000 alternatives. A list
//! (`IN (...)`, `VALUES`, a select list) is flat and not limited.

use datafusion::common::DataFusionError;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

/// The deepest bound a statement may have. The SQL threads' stacks ([`crate::engine::SQL_STACK_BYTES`])
/// hold several times this depth through planning and execution, in debug builds too.
pub const DEPTH_MAX: usize = 2000;

/// A statement refused because it may nest deeper than [`DEPTH_MAX`].
#[derive(Debug, thiserror::Error)]
#[error(
    "the statement is too complex: it chains more than {DEPTH_MAX} operators, joins or set operations (at character {position})"
)]
pub struct TooDeep {
    /// 1-based character offset of the token where the bound passed the limit.
    pub position: usize,
}

/// What to do about [`TooDeep`].
pub const HINT: &str =
    "write many alternatives of one column as `column IN (a, b, ...)`, or split the statement";

/// Refuses `sql` if it may nest deeper than [`DEPTH_MAX`]. Text that does not tokenize passes:
/// the parser reports it.
pub fn check(sql: &str) -> Result<(), DataFusionError> {
    match deepest(sql, DEPTH_MAX) {
        Some(position) => Err(DataFusionError::External(Box::new(TooDeep { position }))),
        None => Ok(()),
    }
}

/// One parenthesis level, as its tokens go by.
#[derive(Default)]
struct Level {
    /// Operators since the last separator.
    operators: usize,
    /// The deepest parenthesis closed since the last separator.
    inner: usize,
    /// The deepest `operators + inner` of the segments before.
    widest: usize,
    /// Set operations, joins and `FROM` items of the level: they nest across separators.
    chain: usize,
    in_from: bool,
}

impl Level {
    fn end_segment(&mut self) {
        self.widest = self.bound_of_segments();
        self.operators = 0;
        self.inner = 0;
    }

    fn bound_of_segments(&self) -> usize {
        self.widest.max(self.operators + self.inner)
    }

    /// The bound of what the level holds so far.
    fn bound(&self) -> usize {
        self.chain + self.bound_of_segments() + 1
    }

    /// What the level adds on the way to a parenthesis opened where it stands.
    fn on_the_way(&self) -> usize {
        self.chain + self.operators + 1
    }
}

/// The 1-based character position at which the bound of `sql` first passes `limit`, if it does.
fn deepest(sql: &str, limit: usize) -> Option<usize> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize_with_location()
        .ok()?;
    let mut levels = vec![Level::default()];
    // What the levels below the current one add to it.
    let mut below = 0usize;
    for token in &tokens {
        let keyword = match &token.token {
            Token::Word(word) => word.keyword,
            _ => Keyword::NoKeyword,
        };
        let opens =
            matches!(token.token, Token::LParen | Token::LBracket) || keyword == Keyword::CASE;
        let closes = levels.len() > 1
            && (matches!(token.token, Token::RParen | Token::RBracket) || keyword == Keyword::END);
        let level = levels.last_mut().expect("the statement's own level stays");
        if opens {
            below += level.on_the_way();
            levels.push(Level::default());
        } else if closes {
            let closed = levels.pop().expect("more than one level is open").bound();
            let parent = levels.last_mut().expect("the statement's own level stays");
            below -= parent.on_the_way();
            parent.inner = parent.inner.max(closed);
        } else {
            match &token.token {
                Token::Comma => {
                    level.end_segment();
                    level.chain += usize::from(level.in_from);
                }
                Token::SemiColon => {
                    // The next statement is a tree of its own.
                    levels = vec![Level::default()];
                    below = 0;
                }
                Token::Word(_) if chains(keyword) => {
                    level.end_segment();
                    level.chain += 1;
                    level.in_from |= keyword == Keyword::JOIN;
                }
                Token::Word(_) if separates(keyword) => {
                    level.end_segment();
                    // A join's condition keeps the `FROM` list going.
                    level.in_from = keyword == Keyword::FROM
                        || (level.in_from && matches!(keyword, Keyword::ON | Keyword::USING));
                }
                token if is_operator(token, keyword) => level.operators += 1,
                _ => continue,
            }
        }
        let level = levels.last().expect("the statement's own level stays");
        if below + level.bound() > limit {
            let start = token.span.start;
            return Some(crate::sqlstate::position(sql, start.line, start.column).unwrap_or(1));
        }
    }
    None
}

/// Keywords that join what comes before and after into a deeper tree, and end a segment.
fn chains(keyword: Keyword) -> bool {
    matches!(
        keyword,
        Keyword::UNION | Keyword::INTERSECT | Keyword::EXCEPT | Keyword::JOIN
    )
}

/// Keywords that start a new, separate expression of the same level.
fn separates(keyword: Keyword) -> bool {
    matches!(
        keyword,
        Keyword::SELECT
            | Keyword::FROM
            | Keyword::WHERE
            | Keyword::GROUP
            | Keyword::HAVING
            | Keyword::ORDER
            | Keyword::LIMIT
            | Keyword::OFFSET
            | Keyword::WHEN
            | Keyword::THEN
            | Keyword::ELSE
            | Keyword::ON
            | Keyword::USING
            | Keyword::VALUES
            | Keyword::SET
            | Keyword::WINDOW
            | Keyword::QUALIFY
            | Keyword::RETURNING
    )
}

/// Whether a token makes an operator node: any symbol that is not punctuation or a literal, and
/// the keyword operators.
fn is_operator(token: &Token, keyword: Keyword) -> bool {
    match token {
        Token::Word(_) => matches!(
            keyword,
            Keyword::AND
                | Keyword::OR
                | Keyword::NOT
                | Keyword::IS
                | Keyword::IN
                | Keyword::LIKE
                | Keyword::ILIKE
                | Keyword::BETWEEN
                | Keyword::SIMILAR
                | Keyword::XOR
                | Keyword::COLLATE
                | Keyword::AT
                | Keyword::OVERLAPS
                | Keyword::REGEXP
                | Keyword::RLIKE
                | Keyword::DIV
        ),
        Token::EOF
        | Token::Number(..)
        | Token::Char(..)
        | Token::SingleQuotedString(..)
        | Token::DoubleQuotedString(..)
        | Token::TripleSingleQuotedString(..)
        | Token::TripleDoubleQuotedString(..)
        | Token::DollarQuotedString(..)
        | Token::SingleQuotedByteStringLiteral(..)
        | Token::DoubleQuotedByteStringLiteral(..)
        | Token::TripleSingleQuotedByteStringLiteral(..)
        | Token::TripleDoubleQuotedByteStringLiteral(..)
        | Token::SingleQuotedRawStringLiteral(..)
        | Token::DoubleQuotedRawStringLiteral(..)
        | Token::TripleSingleQuotedRawStringLiteral(..)
        | Token::TripleDoubleQuotedRawStringLiteral(..)
        | Token::NationalStringLiteral(..)
        | Token::QuoteDelimitedStringLiteral(..)
        | Token::NationalQuoteDelimitedStringLiteral(..)
        | Token::EscapedStringLiteral(..)
        | Token::UnicodeStringLiteral(..)
        | Token::HexStringLiteral(..)
        | Token::Whitespace(..)
        | Token::Placeholder(..)
        | Token::Period
        | Token::Colon
        | Token::LBrace
        | Token::RBrace
        | Token::Backslash
        | Token::Assignment => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound_passes(sql: &str, limit: usize) -> bool {
        deepest(sql, limit).is_some()
    }

    #[test]
    fn long_chains_are_refused_where_they_pass_the_limit() {
        let plus = format!("SELECT {}", vec!["1"; 101].join(" + "));
        assert!(bound_passes(&plus, 100));
        assert!(!bound_passes(&plus, 110));
        let position = deepest(&plus, 100).unwrap();
        // Near the 100th `+`: "SELECT " then "1 + " per link.
        assert!((390..=410).contains(&position), "{position}");

        let ors = joined(60, |i| format!("a = {i}"), " OR ");
        assert!(bound_passes(&format!("SELECT * FROM t WHERE {ors}"), 100));
        assert!(!bound_passes(&format!("SELECT * FROM t WHERE {ors}"), 130));

        let unions = vec!["SELECT 1"; 120].join(" UNION ALL ");
        assert!(bound_passes(&unions, 100));
        let joins = joined(120, |i| format!("JOIN t{i} ON t{i}.x = t.x"), " ");
        assert!(bound_passes(&format!("SELECT * FROM t {joins}"), 100));
        let from = joined(120, |i| format!("t{i}"), ", ");
        assert!(bound_passes(&format!("SELECT * FROM {from}"), 100));
    }

    #[test]
    fn chains_inside_parentheses_add_to_the_ones_around() {
        let inner = vec!["x"; 60].join(" + ");
        let outer = vec![format!("({inner})"); 3].join(" * ");
        assert!(!bound_passes(&format!("SELECT {inner}"), 100));
        assert!(bound_passes(
            &format!("SELECT a + {}", vec![outer.as_str(); 30].join(" - ")),
            100
        ));
        // Nested CASE chains count like parentheses.
        let case = format!("SELECT CASE WHEN {inner} > 0 THEN {inner} ELSE 0 END + {inner}");
        assert!(bound_passes(&case, 100));
        assert!(!bound_passes(&case, 130));
    }

    /// `n` items made by `item`, joined by `separator`.
    fn joined(n: usize, item: impl Fn(usize) -> String, separator: &str) -> String {
        (0..n).map(item).collect::<Vec<_>>().join(separator)
    }

    #[test]
    fn flat_lists_and_separate_clauses_are_not_limited() {
        let flat = [
            format!(
                "SELECT * FROM t WHERE a IN ({})",
                joined(5000, |i| i.to_string(), ", ")
            ),
            format!(
                "INSERT INTO t VALUES {}",
                joined(5000, |i| format!("({i}, -{i}, 'x')"), ", ")
            ),
            format!(
                "SELECT {} FROM t",
                joined(5000, |i| format!("a + {i} AS c{i}"), ", ")
            ),
            format!(
                "SELECT CASE {} END FROM t",
                joined(5000, |i| format!("WHEN a = {i} THEN 'v{i}'"), " ")
            ),
        ];
        for sql in &flat {
            assert!(!bound_passes(sql, 100), "{}", &sql[..60]);
        }
        // Statements of a batch are separate trees.
        let statement = format!("SELECT {}", vec!["1"; 60].join(" + "));
        assert!(!bound_passes(&[statement.as_str(); 5].join("; "), 100));
        // Text that does not tokenize is the parser's to report.
        assert!(check("SELECT 'unterminated").is_ok());
    }
}
