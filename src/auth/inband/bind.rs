//! Reading a Bind's first parameter and result format, and a Parse's first
//! parameter type, for the in-band statements.

/// A value of Bind parameter `$1` from a Bind's parameter part (`rest` of
/// [`crate::wire::frontend::BindParts`]): the bytes in text or binary
/// format (the same for `text`/`varchar`), `None` for NULL.
pub fn bind_first_param(rest: &[u8]) -> Result<Option<&[u8]>, &'static str> {
    let mut r = Cursor { b: rest, i: 0 };
    let nformats = r.i16()?;
    r.skip(2 * usize::try_from(nformats).map_err(|_| "negative format count")?)?;
    let nparams = r.i16()?;
    if nparams < 1 {
        return Err("rowgate.token needs its value as parameter $1");
    }
    let len = r.i32()?;
    if len < 0 {
        return Ok(None);
    }
    r.take(len as usize).map(Some)
}

/// The result format a Bind asks for column 1 (0 text, 1 binary).
pub fn bind_result_format(rest: &[u8]) -> Result<i16, &'static str> {
    let mut r = Cursor { b: rest, i: 0 };
    let nformats = r.i16()?;
    r.skip(2 * usize::try_from(nformats).map_err(|_| "negative format count")?)?;
    let nparams = r.i16()?;
    for _ in 0..nparams.max(0) {
        let len = r.i32()?;
        if len > 0 {
            r.skip(len as usize)?;
        }
    }
    let nresults = r.i16()?;
    if nresults >= 1 {
        r.i16()
    } else {
        Ok(0)
    }
}

/// The declared type of parameter 1 in a Parse payload (query, then
/// parameter types), 0 when not given.
pub fn parse_first_param_type(spec: &[u8]) -> u32 {
    let Some(nul) = spec.iter().position(|&b| b == 0) else {
        return 0;
    };
    let mut r = Cursor {
        b: &spec[nul + 1..],
        i: 0,
    };
    match (r.i16(), r.i32()) {
        (Ok(n), Ok(oid)) if n >= 1 => oid as u32,
        _ => 0,
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        let end = self.i.checked_add(n).ok_or("message too short")?;
        let out = self.b.get(self.i..end).ok_or("message too short")?;
        self.i = end;
        Ok(out)
    }
    fn skip(&mut self, n: usize) -> Result<(), &'static str> {
        self.take(n).map(|_| ())
    }
    fn i16(&mut self) -> Result<i16, &'static str> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Result<i32, &'static str> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// The OID of `text`.
pub(super) const TEXT_OID: u32 = 25;
