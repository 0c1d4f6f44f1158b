//! The small lexer the in-band recogniser reads statements with: words,
//! quoted identifiers, string literals, parameters, punctuation.

pub(super) struct Lexer<'a> {
    pub(super) s: &'a [u8],
    pub(super) i: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Tok {
    /// A keyword or unquoted identifier, lower-cased.
    Word(String),
    /// A double-quoted identifier, as written.
    Quoted(String),
    /// A string literal, unescaped.
    Str(String),
    /// `$n`.
    Param(u32),
    /// One punctuation byte.
    Punct(u8),
    /// Something else (a number, an operator): no form of ours.
    Other,
    End,
}

impl Lexer<'_> {
    pub(super) fn skip_blank(&mut self) {
        loop {
            while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
                self.i += 1;
            }
            let rest = &self.s[self.i..];
            if rest.starts_with(b"--") {
                while self.i < self.s.len() && self.s[self.i] != b'\n' {
                    self.i += 1;
                }
            } else if rest.starts_with(b"/*") {
                // Comments nest in PostgreSQL.
                let mut depth = 0usize;
                while self.i < self.s.len() {
                    if self.s[self.i..].starts_with(b"/*") {
                        depth += 1;
                        self.i += 2;
                    } else if self.s[self.i..].starts_with(b"*/") {
                        depth -= 1;
                        self.i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        self.i += 1;
                    }
                }
            } else {
                return;
            }
        }
    }

    pub(super) fn skip_blank_and_semicolons(&mut self) {
        loop {
            self.skip_blank();
            if self.s.get(self.i) == Some(&b';') {
                self.i += 1;
            } else {
                return;
            }
        }
    }

    pub(super) fn next(&mut self) -> Tok {
        self.skip_blank();
        let Some(&c) = self.s.get(self.i) else {
            return Tok::End;
        };
        let start = self.i;
        if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 {
            // E'...' strings: only when the literal needs no escape
            // processing (no backslash) is it read; otherwise Other.
            if (c == b'e' || c == b'E') && self.s.get(self.i + 1) == Some(&b'\'') {
                self.i += 1;
                return match self.string() {
                    Some(s) if !s.contains('\\') => Tok::Str(s),
                    _ => Tok::Other,
                };
            }
            while self.i < self.s.len()
                && (self.s[self.i].is_ascii_alphanumeric()
                    || self.s[self.i] == b'_'
                    || self.s[self.i] == b'$'
                    || self.s[self.i] >= 0x80)
            {
                self.i += 1;
            }
            return match std::str::from_utf8(&self.s[start..self.i]) {
                Ok(w) => Tok::Word(w.to_ascii_lowercase()),
                Err(_) => Tok::Other,
            };
        }
        match c {
            b'\'' => match self.string() {
                Some(s) => Tok::Str(s),
                None => Tok::Other,
            },
            b'"' => {
                self.i += 1;
                let mut out = Vec::new();
                loop {
                    match self.s.get(self.i) {
                        None => return Tok::Other,
                        Some(b'"') if self.s.get(self.i + 1) == Some(&b'"') => {
                            out.push(b'"');
                            self.i += 2;
                        }
                        Some(b'"') => {
                            self.i += 1;
                            break;
                        }
                        Some(&b) => {
                            out.push(b);
                            self.i += 1;
                        }
                    }
                }
                match String::from_utf8(out) {
                    Ok(s) => Tok::Quoted(s),
                    Err(_) => Tok::Other,
                }
            }
            b'$' => {
                self.i += 1;
                let digits = self.i;
                while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
                    self.i += 1;
                }
                std::str::from_utf8(&self.s[digits..self.i])
                    .ok()
                    .and_then(|d| d.parse().ok())
                    .map_or(Tok::Other, Tok::Param)
            }
            b'(' | b')' | b',' | b'.' | b';' | b'=' => {
                self.i += 1;
                Tok::Punct(c)
            }
            _ => {
                self.i += 1;
                Tok::Other
            }
        }
    }

    /// A '...' literal at `self.i` (`''` is a quote), standard-conforming.
    pub(super) fn string(&mut self) -> Option<String> {
        self.i += 1;
        let mut out = Vec::new();
        loop {
            match self.s.get(self.i) {
                None => return None,
                Some(b'\'') if self.s.get(self.i + 1) == Some(&b'\'') => {
                    out.push(b'\'');
                    self.i += 2;
                }
                Some(b'\'') => {
                    self.i += 1;
                    return String::from_utf8(out).ok();
                }
                Some(&b) => {
                    out.push(b);
                    self.i += 1;
                }
            }
        }
    }

    pub(super) fn word(&mut self, w: &str) -> bool {
        let save = self.i;
        if self.next() == Tok::Word(w.into()) {
            true
        } else {
            self.i = save;
            false
        }
    }

    pub(super) fn punct(&mut self, p: u8) -> bool {
        let save = self.i;
        if self.next() == Tok::Punct(p) {
            true
        } else {
            self.i = save;
            false
        }
    }

    /// A setting name (`a.b`, `"a"."b"`, `"a.b"`), as PostgreSQL folds it.
    pub(super) fn setting_name(&mut self) -> Option<String> {
        let part = |t: Tok| match t {
            Tok::Word(w) => Some(w),
            Tok::Quoted(q) => Some(q),
            _ => None,
        };
        let mut name = part(self.next())?;
        while self.punct(b'.') {
            name.push('.');
            name.push_str(&part(self.next())?);
        }
        Some(name)
    }

    /// The end of a statement: `;` or the end of the text. Returns the
    /// offset after it.
    pub(super) fn statement_end(&mut self) -> Option<usize> {
        match self.next() {
            Tok::End => Some(self.s.len()),
            Tok::Punct(b';') => Some(self.i),
            _ => None,
        }
    }
}
