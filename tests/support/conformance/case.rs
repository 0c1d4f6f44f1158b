//! The case files (`tests/conformance/*.sql`): their format, and the parser.
//!
//! # Case file format
//!
//! Steps are separated by blank lines. A step is SQL text, preceded by
//! optional directive lines (`-- word ...`, before the first SQL line).
//! Without a directive the whole text goes in one simple-protocol Query
//! (`simple_query`), so a step may hold several statements. Comment lines
//! that are not directives stay in the SQL. A step with no SQL (only
//! comments) is skipped, which makes a comment block at the top of a file a
//! description.
//!
//! | directive | meaning |
//! | --- | --- |
//! | `-- extended` | extended protocol: `prepare_typed` once per session (cached by text and types, so a named statement is reused), then `query_raw` |
//! | `-- unnamed` | extended protocol with the unnamed statement (`query_typed_raw`: Parse/Bind/Describe/Execute/Sync) |
//! | `-- param TYPE VALUE` | a parameter for `extended`/`unnamed`; TYPE is a name from [`param_type`] or `-` (server infers it); VALUE is the rest of the line, `NULL` for null, or `@repeat N TEXT` for TEXT repeated N times |
//! | `-- copy-in` | `copy_in`: the first SQL line is `COPY ... FROM STDIN`, the lines after it are the data |
//! | `-- copy-in-rows N` | like `copy-in`, with N generated rows `i<TAB>row i` |
//! | `-- copy-out` | `copy_out` of the SQL (`COPY ... TO STDOUT`) |
//! | `-- repeat N` | run the step N times |
//! | `-- pool N` | (first step of a file only) rowgate's pool size for this case |
//! | `-- guard PROFILE` | (first step of a file only) rowgate's `[guard] profile` for this case (default `standard`) |
//! | `-- wire` | protocol messages written by hand, one a line (below) |
//!
//! A case with `-- wire` steps runs on a plain socket instead of
//! tokio-postgres; its other steps may only be simple SQL. A wire step
//! sends all its messages in one write and reads until a ReadyForQuery has
//! come for each `sync` and `query` (5 s at most; a timeout is recorded).
//! Names are as sent (`-` is the empty name); parameters and results are text.
//!
//! | line | message |
//! | --- | --- |
//! | `parse NAME SQL` | Parse, no parameter types |
//! | `bind PORTAL STMT [VALUE ...]` | Bind, text parameters (`NULL` for null) |
//! | `describe S\|P NAME` | Describe |
//! | `execute PORTAL [MAX_ROWS]` | Execute |
//! | `close S\|P NAME` | Close |
//! | `sync`, `flush` | Sync, Flush |
//! | `query SQL` | Query |
//! | `copydata TEXT`, `copydone`, `copyfail TEXT` | CopyData (TEXT and a newline), CopyDone, CopyFail |
//! | `fcall OID [VALUE ...]` | FunctionCall, text arguments and result |
//!
//! Add a case by adding the file and a `case!` line in tests/conformance.rs (a test checks
//! the two lists agree). A case rowgate fails goes in as
//! `case!(#[ignore = "reason"] name)`, the reason saying whether it is a
//! known limit, a choice by design, or an open bug.

use bytes::BytesMut;
use std::error::Error as StdError;
use tokio_postgres::types::{to_sql_checked, Format, IsNull, ToSql, Type};

/// A parameter of an `extended`/`unnamed` step: sent in binary for the
/// types below, as text for the others.
#[derive(Debug)]
pub(crate) struct Param {
    pub(crate) declared: Type,
    pub(crate) text: Option<String>,
}

pub(crate) fn param_type(name: &str) -> Option<Type> {
    Some(match name {
        "-" => Type::UNKNOWN,
        "bool" => Type::BOOL,
        "int2" => Type::INT2,
        "int4" => Type::INT4,
        "int8" => Type::INT8,
        "float4" => Type::FLOAT4,
        "float8" => Type::FLOAT8,
        "numeric" => Type::NUMERIC,
        "text" => Type::TEXT,
        "varchar" => Type::VARCHAR,
        "bytea" => Type::BYTEA,
        "json" => Type::JSON,
        "jsonb" => Type::JSONB,
        "date" => Type::DATE,
        "timestamp" => Type::TIMESTAMP,
        "timestamptz" => Type::TIMESTAMPTZ,
        "interval" => Type::INTERVAL,
        "uuid" => Type::UUID,
        "int4[]" => Type::INT4_ARRAY,
        "text[]" => Type::TEXT_ARRAY,
        _ => return None,
    })
}

pub(crate) fn binary(ty: &Type) -> bool {
    [
        Type::BOOL,
        Type::INT2,
        Type::INT4,
        Type::INT8,
        Type::FLOAT8,
        Type::TEXT,
        Type::VARCHAR,
        Type::BYTEA,
    ]
    .contains(ty)
}

impl ToSql for Param {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        use bytes::BufMut;
        let Some(text) = &self.text else {
            return Ok(IsNull::Yes);
        };
        if !binary(ty) {
            out.put_slice(text.as_bytes());
            return Ok(IsNull::No);
        }
        match *ty {
            Type::BOOL => out.put_u8(matches!(text.as_str(), "t" | "true") as u8),
            Type::INT2 => out.put_i16(text.parse()?),
            Type::INT4 => out.put_i32(text.parse()?),
            Type::INT8 => out.put_i64(text.parse()?),
            Type::FLOAT8 => out.put_f64(text.parse()?),
            Type::BYTEA => out.put_slice(&hex::decode(text.trim_start_matches("\\x"))?),
            _ => out.put_slice(text.as_bytes()),
        }
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, ty: &Type) -> Format {
        if binary(ty) {
            Format::Binary
        } else {
            Format::Text
        }
    }

    to_sql_checked!();
}

// ---------------------------------------------------------------------------
// Parsing case files.
// ---------------------------------------------------------------------------

pub(crate) struct Case {
    pub(crate) pool: usize,
    /// rowgate's `[guard] profile` for this case.
    pub(crate) guard: String,
    pub(crate) steps: Vec<Step>,
    /// rowgate answers some of the case's messages itself (a malformed
    /// message is never forwarded): errors are compared without the F
    /// and R fields, which name PostgreSQL's source file and routine.
    pub(crate) rowgate_answers: bool,
}

pub(crate) struct Step {
    pub(crate) sql: String,
    pub(crate) kind: Kind,
    pub(crate) params: Vec<Param>,
    pub(crate) repeat: usize,
}

pub(crate) enum Kind {
    Simple,
    Extended,
    Unnamed,
    CopyIn(CopyData),
    CopyOut,
    /// Protocol message lines.
    Wire(Vec<String>),
}

pub(crate) enum CopyData {
    Inline(String),
    Rows(usize),
}

pub(crate) fn parse_case(text: &str) -> Result<Case, String> {
    let mut case = Case {
        rowgate_answers: false,
        pool: 2,
        guard: "standard".into(),
        steps: Vec::new(),
    };
    let mut blocks: Vec<Vec<&str>> = vec![Vec::new()];
    for line in text.lines() {
        if line.trim().is_empty() {
            if !blocks.last().unwrap().is_empty() {
                blocks.push(Vec::new());
            }
        } else {
            blocks.last_mut().unwrap().push(line);
        }
    }
    for (n, block) in blocks.iter().enumerate() {
        let mut kind = Kind::Simple;
        let mut params = Vec::new();
        let mut repeat = 1;
        let mut copy_rows = None;
        let mut i = 0;
        while let Some(line) = block.get(i) {
            let Some(d) = line.strip_prefix("-- ") else {
                break;
            };
            let (word, rest) = d.split_once(' ').unwrap_or((d, ""));
            match word {
                "extended" => kind = Kind::Extended,
                "unnamed" => kind = Kind::Unnamed,
                "copy-in" => kind = Kind::CopyIn(CopyData::Inline(String::new())),
                "copy-in-rows" => {
                    copy_rows = Some(rest.trim().parse().map_err(|_| "copy-in-rows N")?);
                    kind = Kind::CopyIn(CopyData::Rows(0));
                }
                "copy-out" => kind = Kind::CopyOut,
                "wire" => kind = Kind::Wire(Vec::new()),
                "repeat" => repeat = rest.trim().parse().map_err(|_| "repeat N")?,
                "pool" if case.steps.is_empty() => {
                    case.pool = rest.trim().parse().map_err(|_| "pool N")?
                }
                "guard" if case.steps.is_empty() => case.guard = rest.trim().to_string(),
                "rowgate-answers" if case.steps.is_empty() => case.rowgate_answers = true,
                "param" => {
                    let (ty, v) = rest.split_once(' ').unwrap_or((rest, ""));
                    let declared = param_type(ty).ok_or(format!("unknown param type {ty}"))?;
                    let text = match v {
                        "NULL" => None,
                        v if v.starts_with("@repeat ") => {
                            let mut it = v.splitn(3, ' ').skip(1);
                            let n: usize = it
                                .next()
                                .unwrap_or("")
                                .parse()
                                .map_err(|_| "@repeat N TEXT")?;
                            Some(it.next().unwrap_or("").repeat(n))
                        }
                        v => Some(v.to_string()),
                    };
                    params.push(Param { declared, text });
                }
                _ => break, // an ordinary comment: part of the SQL
            }
            i += 1;
        }
        let body = &block[i..];
        if body.iter().all(|l| l.trim_start().starts_with("--")) {
            continue;
        }
        let sql = match &mut kind {
            Kind::CopyIn(data) => {
                *data = match copy_rows {
                    Some(n) => CopyData::Rows(n),
                    None => CopyData::Inline(body[1..].iter().map(|l| format!("{l}\n")).collect()),
                };
                body[0].to_string()
            }
            Kind::Wire(lines) => {
                *lines = body.iter().map(|l| l.to_string()).collect();
                body.join("\n")
            }
            _ if body == ["<empty>"] => String::new(),
            _ => body.join("\n"),
        };
        if !params.is_empty() && !matches!(kind, Kind::Extended | Kind::Unnamed) {
            return Err(format!("block {}: params need extended or unnamed", n + 1));
        }
        case.steps.push(Step {
            sql,
            kind,
            params,
            repeat,
        });
    }
    Ok(case)
}

// ---------------------------------------------------------------------------
// A plain-socket session for `-- wire` steps.
// ---------------------------------------------------------------------------
