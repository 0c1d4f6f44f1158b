//! The wire side of a conformance case: decoding the bytes the server sent
//! (framed by `rowgate::wire`) into a comparable transcript, and encoding
//! the protocol messages of a `-- wire` step.

use bytes::{Buf, BytesMut};
use rowgate::wire::{next_frame, peek_frame_len, put_frame, MAX_MESSAGE_LEN};

/// How many ReadyForQuery messages `buf` holds, and whether it ends with one.
pub(crate) fn count_ready(buf: &[u8]) -> (usize, bool) {
    let (mut i, mut n, mut last) = (0, 0, false);
    while let Ok(Some(len)) = peek_frame_len(&buf[i..], MAX_MESSAGE_LEN) {
        if buf.len() < i + len {
            return (n, false);
        }
        last = buf[i] == b'Z';
        n += last as usize;
        i += len;
    }
    (n, last && i == buf.len())
}

// ---------------------------------------------------------------------------
// Decoding the transcript.
// ---------------------------------------------------------------------------

/// Types and tables created by a case get different OIDs in two databases.
pub(crate) fn oid(o: u32) -> String {
    if o >= 16384 {
        "user".into()
    } else {
        o.to_string()
    }
}

pub(crate) fn value(v: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    if v.len() > 200 {
        let d = Sha256::digest(v);
        return format!("<{} bytes sha256 {}>", v.len(), hex::encode(&d[..8]));
    }
    match std::str::from_utf8(v) {
        Ok(s) if !s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') => format!("{s:?}"),
        _ => format!("x{}", hex::encode(v)),
    }
}

pub(crate) fn cstr(b: &mut &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    let s = String::from_utf8_lossy(&b[..end]).into_owned();
    *b = &b[(end + 1).min(b.len())..];
    s
}

/// Masks the number in `\"s<N>\"` and `\"p<N>\"` (quoted names inside a
/// decoded message field).
pub(crate) fn generic_names(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find("\\\"") {
        out.push_str(&rest[..i + 2]);
        rest = &rest[i + 2..];
        let b = rest.as_bytes();
        if b.len() > 1 && (b[0] == b's' || b[0] == b'p') {
            let digits = b[1..].iter().take_while(|c| c.is_ascii_digit()).count();
            if digits > 0 && b.get(1 + digits) == Some(&b'\\') {
                out.push(b[0] as char);
                out.push('N');
                rest = &rest[1 + digits..];
            }
        }
    }
    out.push_str(rest);
    out
}

pub(crate) fn decode_transcript(mut buf: BytesMut) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        match next_frame(&mut buf, MAX_MESSAGE_LEN) {
            Ok(Some(frame)) => out.push(decode_message(frame.tag(), frame.body())),
            Ok(None) if buf.len() >= 5 => {
                out.push(format!("incomplete message {:?}", buf[0] as char));
                break;
            }
            Ok(None) => break,
            Err(e) => {
                out.push(format!("unframeable bytes: {e}"));
                break;
            }
        }
    }
    if !buf.is_empty() {
        out.push(format!("{} stray bytes", buf.len()));
    }
    sort_parameter_status_runs(&mut out);
    out
}

/// ParameterStatus messages in a row are compared as a set: the server
/// reports the settings a RESET ALL changed in its own order (PostgreSQL 18
/// in another one than 15), and no client depends on it.
fn sort_parameter_status_runs(out: &mut [String]) {
    let mut i = 0;
    while i < out.len() {
        let run = out[i..].iter().take_while(|m| m.starts_with("S ")).count();
        out[i..i + run].sort();
        i += run.max(1);
    }
}

pub(crate) fn decode_message(tag: u8, mut b: &[u8]) -> String {
    let t = tag as char;
    match tag {
        b'T' => {
            let n = b.get_u16();
            let cols: Vec<String> = (0..n)
                .map(|_| {
                    let name = cstr(&mut b);
                    let table = b.get_u32();
                    let attnum = b.get_i16();
                    let ty = b.get_u32();
                    let len = b.get_i16();
                    let typmod = b.get_i32();
                    let fmt = b.get_i16();
                    let table = if table == 0 { "-" } else { "t" };
                    format!("{name}:{}:{table}.{attnum}:{len}:{typmod}:{fmt}", oid(ty))
                })
                .collect();
            format!("T {}", cols.join(" | "))
        }
        b'D' => {
            let n = b.get_i16();
            let vals: Vec<String> = (0..n)
                .map(|_| {
                    let len = b.get_i32();
                    if len < 0 {
                        "NULL".into()
                    } else {
                        let v = value(&b[..len as usize]);
                        b.advance(len as usize);
                        v
                    }
                })
                .collect();
            format!("D {}", vals.join(" | "))
        }
        b'E' | b'N' => {
            let mut fields = Vec::new();
            while !b.is_empty() && b[0] != 0 {
                let code = b[0] as char;
                b = &b[1..];
                let value = cstr(&mut b);
                // The line in PostgreSQL's source that raised it: no client
                // reads it, and an error rowgate raises in PostgreSQL's
                // place (0A000 for a changed result shape) has none.
                if code != 'L' {
                    fields.push(format!("{code}={value:?}"));
                }
            }
            format!("{t} {}", fields.join(" "))
        }
        b'C' => format!("C {}", cstr(&mut b)),
        b'S' => {
            let k = cstr(&mut b);
            format!("S {k}={}", cstr(&mut b))
        }
        b'Z' => format!("Z {}", b[0] as char),
        b't' => {
            let n = b.get_u16();
            let oids: Vec<String> = (0..n).map(|_| oid(b.get_u32())).collect();
            format!("t {}", oids.join(","))
        }
        b'G' | b'H' | b'W' => format!("{t} {}", hex::encode(b)),
        b'd' => format!("d {}", value(b)),
        b'A' => {
            let _pid = b.get_i32();
            let chan = cstr(&mut b);
            format!("A {chan} {}", cstr(&mut b))
        }
        b'V' => {
            let len = b.get_i32();
            if len < 0 {
                "V NULL".into()
            } else {
                format!("V {}", value(&b[..len as usize]))
            }
        }
        b'1' | b'2' | b'3' | b'n' | b's' | b'I' | b'c' => t.to_string(),
        _ => format!("{t} {}", value(b)),
    }
}

// ---------------------------------------------------------------------------
// Parameters.
// ---------------------------------------------------------------------------

/// Encodes wire lines; returns the bytes and how many ReadyForQuery they
/// are owed.
pub(crate) fn encode_wire(lines: &[String]) -> (BytesMut, usize) {
    use postgres_protocol::message::frontend;
    use postgres_protocol::IsNull as PIsNull;
    let name = |s: &str| {
        if s == "-" {
            String::new()
        } else {
            s.to_string()
        }
    };
    let mut out = BytesMut::new();
    let mut readies = 0;
    for line in lines {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        let mut args = rest.split_whitespace();
        match word {
            "parse" => {
                let (n, sql) = rest.split_once(' ').unwrap_or((rest, ""));
                frontend::parse(&name(n), sql, [], &mut out).unwrap();
            }
            "bind" => {
                let portal = name(args.next().unwrap_or("-"));
                let stmt = name(args.next().unwrap_or("-"));
                let values: Vec<Option<String>> =
                    args.map(|v| (v != "NULL").then(|| v.to_string())).collect();
                frontend::bind(
                    &portal,
                    &stmt,
                    [],
                    values,
                    |v, buf| match v {
                        Some(v) => {
                            buf.extend_from_slice(v.as_bytes());
                            Ok(PIsNull::No)
                        }
                        None => Ok(PIsNull::Yes),
                    },
                    [],
                    &mut out,
                )
                .map_err(|_| "bind")
                .unwrap();
            }
            "describe" | "close" => {
                let kind = args.next().unwrap_or("S").as_bytes()[0];
                let n = name(args.next().unwrap_or("-"));
                if word == "describe" {
                    frontend::describe(kind, &n, &mut out).unwrap();
                } else {
                    frontend::close(kind, &n, &mut out).unwrap();
                }
            }
            "execute" => {
                let portal = name(args.next().unwrap_or("-"));
                let max: i32 = args.next().map_or(0, |m| m.parse().unwrap());
                frontend::execute(&portal, max, &mut out).unwrap();
            }
            "sync" => {
                frontend::sync(&mut out);
                readies += 1;
            }
            "flush" => frontend::flush(&mut out),
            "query" => {
                frontend::query(rest, &mut out).unwrap();
                readies += 1;
            }
            "copydata" => {
                let data = format!("{rest}\n");
                frontend::CopyData::new(data.as_bytes())
                    .unwrap()
                    .write(&mut out);
            }
            "copydone" => frontend::copy_done(&mut out),
            "raw" => {
                // Any message type with a text body, as a broken or hostile
                // client might send it (`raw H junk`: a Flush with a body).
                let (tag, body) = rest.split_once(' ').unwrap_or((rest, ""));
                let tag = tag.as_bytes()[0];
                put_frame(&mut out, tag, |b| b.extend_from_slice(body.as_bytes()));
                if matches!(tag, b'S' | b'Q') {
                    readies += 1;
                }
            }
            "copyfail" => frontend::copy_fail(rest, &mut out).unwrap(),
            "fcall" => {
                // FunctionCall: OID, text arguments, text result.
                use bytes::BufMut;
                let oid: u32 = args.next().unwrap().parse().unwrap();
                let values: Vec<&str> = args.collect();
                put_frame(&mut out, b'F', |b| {
                    b.put_u32(oid);
                    b.put_i16(1);
                    b.put_i16(0);
                    b.put_i16(values.len() as i16);
                    for v in &values {
                        if *v == "NULL" {
                            b.put_i32(-1);
                        } else {
                            b.put_i32(v.len() as i32);
                            b.put_slice(v.as_bytes());
                        }
                    }
                    b.put_i16(0);
                });
                readies += 1;
            }
            other => panic!("unknown wire message {other:?} in {line:?}"),
        }
    }
    (out, readies)
}
