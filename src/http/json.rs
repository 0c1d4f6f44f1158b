//! Results and errors in the JSON shapes of Neon's SQL-over-HTTP, which
//! `@neondatabase/serverless` reads: `{fields, rows, command, rowCount,
//! rowAsArray}` per statement, and the fields of a PostgreSQL error under
//! the names node-postgres gives them.

use super::pgconn::{DbError, Field, QueryResult};
use serde_json::{json, Map, Value};

/// How rows are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RowFormat {
    /// Rows as arrays of values (`Neon-Array-Mode: true`), else objects
    /// keyed by column name.
    pub array_mode: bool,
    /// Every non-NULL value as its PostgreSQL text (`Neon-Raw-Text-Output:
    /// true`, what the driver always asks for: it parses types itself),
    /// else booleans, small integers, floats and JSON as JSON values.
    pub raw_text: bool,
}

/// One statement's result as JSON.
pub fn result(r: &QueryResult, format: RowFormat) -> Value {
    let fields: Vec<Value> = r.fields.iter().map(field).collect();
    let rows: Vec<Value> = r
        .rows
        .iter()
        .map(|row| {
            let values = row.iter().zip(&r.fields).map(|(v, f)| match v {
                None => Value::Null,
                Some(text) => {
                    let text = String::from_utf8_lossy(text);
                    if format.raw_text {
                        Value::String(text.into_owned())
                    } else {
                        text_to_json(&text, f.type_oid)
                    }
                }
            });
            if format.array_mode {
                Value::Array(values.collect())
            } else {
                // A later column of the same name wins, as in node-postgres.
                let mut obj = Map::new();
                for (f, v) in r.fields.iter().zip(values) {
                    obj.insert(f.name.clone(), v);
                }
                Value::Object(obj)
            }
        })
        .collect();
    let (command, row_count) = command_and_count(&r.tag);
    json!({
        "fields": fields,
        "command": command,
        "rowCount": row_count,
        "rows": rows,
        "rowAsArray": format.array_mode,
    })
}

fn field(f: &Field) -> Value {
    json!({
        "name": f.name,
        "dataTypeID": f.type_oid,
        "tableID": f.table_oid,
        "columnID": f.column,
        "dataTypeSize": f.type_size,
        "dataTypeModifier": f.type_modifier,
        "format": "text",
    })
}

/// `INSERT 0 3` -> (`INSERT`, 3); `SELECT 2` -> (`SELECT`, 2); `BEGIN` ->
/// (`BEGIN`, null). For INSERT the first number is an OID, the second the
/// row count.
pub fn command_and_count(tag: &str) -> (&str, Option<u64>) {
    let mut words = tag.split(' ');
    let command = words.next().unwrap_or_default();
    let count = if command == "INSERT" {
        words.nth(1)
    } else {
        words.next()
    };
    (command, count.and_then(|n| n.parse().ok()))
}

/// Error fields by protocol code and the names the driver copies onto
/// its `NeonDbError` (node-postgres' names).
const ERROR_FIELDS: &[(u8, &str)] = &[
    (b'M', "message"),
    (b'C', "code"),
    (b'D', "detail"),
    (b'H', "hint"),
    (b'P', "position"),
    (b'p', "internalPosition"),
    (b'q', "internalQuery"),
    (b'W', "where"),
    (b's', "schema"),
    (b't', "table"),
    (b'c', "column"),
    (b'd', "dataType"),
    (b'n', "constraint"),
    (b'F', "file"),
    (b'L', "line"),
    (b'R', "routine"),
];

/// A PostgreSQL error as the JSON body of an HTTP 400.
pub fn error(e: &DbError) -> Value {
    let mut obj = Map::new();
    for (code, name) in ERROR_FIELDS {
        if let Some(v) = e.get(*code) {
            obj.insert((*name).into(), Value::String(v.into()));
        }
    }
    // The untranslated severity (V) when the server sent one.
    if let Some(s) = e.get(b'V').or(e.get(b'S')) {
        obj.insert("severity".into(), Value::String(s.into()));
    }
    obj.entry("message")
        .or_insert_with(|| Value::String("error".into()));
    Value::Object(obj)
}

// Type OIDs whose text converts to a JSON value other than a string.
const BOOL: u32 = 16;
const INT2: u32 = 21;
const INT4: u32 = 23;
const FLOAT4: u32 = 700;
const FLOAT8: u32 = 701;
const JSON: u32 = 114;
const JSONB: u32 = 3802;

/// The element type of the array types whose elements convert.
fn array_element(oid: u32) -> Option<u32> {
    Some(match oid {
        1000 => BOOL,
        1005 => INT2,
        1007 => INT4,
        1021 => FLOAT4,
        1022 => FLOAT8,
        199 => JSON,
        3807 => JSONB,
        // Arrays of every other type: elements stay text.
        1009 | 1015 | 1016 | 1231 | 1183 | 1115 | 1182 | 1185 | 2951 | 1001 | 1028 => 25,
        _ => return None,
    })
}

/// A value's text as JSON, the way Neon's proxy converts it without raw
/// text output: booleans, int2/int4 and floats as JSON (NaN and infinities
/// as strings), json/jsonb parsed, arrays of those as JSON arrays,
/// everything else (int8 and numeric included, which JSON numbers would
/// round) as the string PostgreSQL sent.
pub fn text_to_json(text: &str, type_oid: u32) -> Value {
    if let Some(elem) = array_element(type_oid) {
        return parse_array(text, elem).unwrap_or_else(|| Value::String(text.into()));
    }
    scalar(text, type_oid)
}

fn scalar(text: &str, type_oid: u32) -> Value {
    let converted = match type_oid {
        BOOL => Some(Value::Bool(text == "t")),
        INT2 | INT4 => text.parse::<i32>().ok().map(Value::from),
        FLOAT4 | FLOAT8 => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number),
        JSON | JSONB => serde_json::from_str(text).ok(),
        _ => None,
    };
    converted.unwrap_or_else(|| Value::String(text.into()))
}

/// Parses a PostgreSQL array literal (`{1,2,NULL}`, `{{a,"b c"},{d,e}}`).
/// `None` for what it does not read (explicit bounds `[1:2]={...}`), which
/// then stays a string.
fn parse_array(text: &str, elem: u32) -> Option<Value> {
    let mut chars = text.chars().peekable();
    let v = parse_array_at(&mut chars, elem)?;
    chars.next().is_none().then_some(v)
}

fn parse_array_at(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    elem: u32,
) -> Option<Value> {
    if chars.next()? != '{' {
        return None;
    }
    let mut out = Vec::new();
    if chars.peek() == Some(&'}') {
        chars.next();
        return Some(Value::Array(out));
    }
    loop {
        match chars.peek()? {
            '{' => out.push(parse_array_at(chars, elem)?),
            '"' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next()? {
                        '\\' => s.push(chars.next()?),
                        '"' => break,
                        c => s.push(c),
                    }
                }
                out.push(scalar(&s, elem));
            }
            _ => {
                let mut s = String::new();
                while let Some(&c) = chars.peek() {
                    if c == ',' || c == '}' {
                        break;
                    }
                    s.push(c);
                    chars.next();
                }
                if s == "NULL" {
                    out.push(Value::Null);
                } else {
                    out.push(scalar(s.trim(), elem));
                }
            }
        }
        match chars.next()? {
            ',' => continue,
            '}' => return Some(Value::Array(out)),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn field(name: &str, type_oid: u32) -> Field {
        Field {
            name: name.into(),
            table_oid: 0,
            column: 0,
            type_oid,
            type_size: -1,
            type_modifier: -1,
        }
    }

    fn sample() -> QueryResult {
        QueryResult {
            fields: vec![field("id", INT4), field("note", 25), field("ok", BOOL)],
            rows: vec![
                vec![
                    Some(Bytes::from_static(b"1")),
                    Some(Bytes::from_static(b"hi")),
                    Some(Bytes::from_static(b"t")),
                ],
                vec![
                    Some(Bytes::from_static(b"2")),
                    None,
                    Some(Bytes::from_static(b"f")),
                ],
            ],
            tag: "SELECT 2".into(),
        }
    }

    #[test]
    fn the_driver_shape_in_array_and_raw_text_mode() {
        let v = result(
            &sample(),
            RowFormat {
                array_mode: true,
                raw_text: true,
            },
        );
        assert_eq!(v["command"], "SELECT");
        assert_eq!(v["rowCount"], 2);
        assert_eq!(v["rowAsArray"], true);
        assert_eq!(v["rows"], json!([["1", "hi", "t"], ["2", null, "f"]]));
        assert_eq!(
            v["fields"][0],
            json!({"name": "id", "dataTypeID": 23, "tableID": 0, "columnID": 0,
                   "dataTypeSize": -1, "dataTypeModifier": -1, "format": "text"})
        );
    }

    #[test]
    fn object_mode_with_typed_values() {
        let v = result(&sample(), RowFormat::default());
        assert_eq!(
            v["rows"],
            json!([{"id": 1, "note": "hi", "ok": true}, {"id": 2, "note": null, "ok": false}])
        );
        assert_eq!(v["rowAsArray"], false);
    }

    #[test]
    fn command_tags_give_counts_where_there_are_any() {
        assert_eq!(command_and_count("INSERT 0 3"), ("INSERT", Some(3)));
        assert_eq!(command_and_count("UPDATE 7"), ("UPDATE", Some(7)));
        assert_eq!(command_and_count("BEGIN"), ("BEGIN", None));
        assert_eq!(command_and_count(""), ("", None));
        let mut r = sample();
        r.tag = "CREATE TABLE".into();
        assert_eq!(result(&r, RowFormat::default())["rowCount"], Value::Null);
    }

    #[test]
    fn typed_values_follow_neons_conversion() {
        assert_eq!(text_to_json("42", INT4), json!(42));
        assert_eq!(
            text_to_json("9007199254740993", 20),
            json!("9007199254740993")
        );
        assert_eq!(text_to_json("1.5", FLOAT8), json!(1.5));
        assert_eq!(text_to_json("NaN", FLOAT8), json!("NaN"));
        assert_eq!(text_to_json("Infinity", FLOAT4), json!("Infinity"));
        assert_eq!(text_to_json(r#"{"a": [1]}"#, JSONB), json!({"a": [1]}));
        assert_eq!(text_to_json("12.50", 1700), json!("12.50"));
        assert_eq!(text_to_json("{1,NULL,3}", 1007), json!([1, null, 3]));
        assert_eq!(
            text_to_json(r#"{{a,"b \"c\""},{NULL,"NULL"}}"#, 1009),
            json!([["a", "b \"c\""], [null, "NULL"]])
        );
        assert_eq!(text_to_json("{t,f}", 1000), json!([true, false]));
        assert_eq!(text_to_json("{}", 1007), json!([]));
        assert_eq!(text_to_json("[0:1]={1,2}", 1007), json!("[0:1]={1,2}"));
        assert_eq!(text_to_json("{1,2", 1007), json!("{1,2"));
    }

    #[test]
    fn errors_carry_every_field_under_node_postgres_names() {
        let e = DbError {
            fields: vec![
                (b'S', "ERROR".into()),
                (b'V', "ERROR".into()),
                (b'C', "23505".into()),
                (
                    b'M',
                    "duplicate key value violates unique constraint \"t_pkey\"".into(),
                ),
                (b'D', "Key (id)=(1) already exists.".into()),
                (b's', "public".into()),
                (b't', "t".into()),
                (b'n', "t_pkey".into()),
                (b'P', "15".into()),
            ],
        };
        let v = error(&e);
        assert_eq!(v["code"], "23505");
        assert_eq!(v["severity"], "ERROR");
        assert_eq!(v["detail"], "Key (id)=(1) already exists.");
        assert_eq!(v["constraint"], "t_pkey");
        assert_eq!(v["table"], "t");
        assert_eq!(v["position"], "15");
        assert!(v.get("hint").is_none());
        assert_eq!(error(&DbError::default())["message"], "error");
    }
}
