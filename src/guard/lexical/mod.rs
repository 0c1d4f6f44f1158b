//! A small lexer for SQL text (words, quotes, comments, semicolons), and
//! what rowgate reads with it on every simple query, where a full parse
//! would cost too much: a statement's effect on the transaction
//! ([`classify`]), the session settings it changes ([`session_effects`]),
//! and a lone `DEALLOCATE` ([`deallocate`]). It never decides security: a
//! misread statement only runs without identity (RLS then shows nothing)
//! or gets PostgreSQL's own error; the guard and `[session_state]` read the
//! real parse tree.

mod classify;
mod deallocate;
mod settings;

pub use classify::{
    classify, ends_a_transaction, is_single_statement, leading_modes, ModeSettings, TxnEffect,
    TxnModes, ISOLATION_LEVELS,
};
pub use deallocate::{deallocate, Deallocate};
pub use settings::{session_effects, session_effects_of, SessionEffects, SessionOp};

/// Which of a few words the text holds anywhere (in a literal or comment
/// too: a superset is safe, the readers below then look closer), ASCII
/// case aside. One pass over the text for all of them: the core asks on
/// every simple query, and a window scan per word cost more than lexing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mentions(u8);

impl Mentions {
    const WORDS: [&'static [u8]; 7] = [
        b"set", b"discard", b"u&", b"prepare", b"dealloc", b"copy", b"stdin",
    ];
    const SET: u8 = 1 << 0;
    const DISCARD: u8 = 1 << 1;
    const ESCAPE: u8 = 1 << 2;
    const PREPARE: u8 = 1 << 3;
    const DEALLOC: u8 = 1 << 4;
    const COPY: u8 = 1 << 5;
    const STDIN: u8 = 1 << 6;

    /// Reads `sql` once.
    pub fn of(sql: &[u8]) -> Mentions {
        // The words' first letters (s, d, u, p, c) as a bit set: most
        // bytes are passed over after one test.
        let firsts = Self::WORDS.iter().fold(0, |m, w| m | letter_bit(w[0]));
        let mut found = 0u8;
        for i in 0..sql.len() {
            if letter_bit(sql[i]) & firsts == 0 {
                continue;
            }
            let rest = &sql[i..];
            for (bit, w) in Self::WORDS.iter().enumerate() {
                if rest.len() >= w.len() && rest[..w.len()].eq_ignore_ascii_case(w) {
                    found |= 1 << bit;
                }
            }
        }
        Mentions(found)
    }

    fn has(self, bits: u8) -> bool {
        self.0 & bits != 0
    }

    /// `set` (SET, RESET, set_config) or `discard`, or a `U&` escape that
    /// could spell either: the text may change session settings.
    pub fn session_words(self) -> bool {
        self.has(Self::SET | Self::DISCARD | Self::ESCAPE)
    }

    /// A `U&` escape (an identifier or string spelled in code points).
    pub fn escape(self) -> bool {
        self.has(Self::ESCAPE)
    }

    /// PREPARE, DEALLOCATE or DISCARD: the text may change the session's
    /// prepared statements.
    pub fn prepared_words(self) -> bool {
        self.has(Self::PREPARE | Self::DEALLOC | Self::DISCARD)
    }

    /// Both `copy` and `stdin`: the text may start a COPY FROM STDIN.
    pub fn copy_in_words(self) -> bool {
        self.0 & (Self::COPY | Self::STDIN) == Self::COPY | Self::STDIN
    }
}

/// A bit for an ASCII letter (either case), 0 for any other byte.
fn letter_bit(b: u8) -> u32 {
    let l = (b | 0x20).wrapping_sub(b'a');
    if l < 26 {
        1 << l
    } else {
        0
    }
}

enum Token {
    Word(Word),
    Semicolon,
    Other,
}

/// Words up to this long are kept inline (every keyword, and most names).
const INLINE: usize = 30;

/// A word of SQL text, lower-cased. The lexer reads several per statement
/// on every simple query, several times over; a word as long as a keyword
/// costs no allocation.
#[derive(Clone, Debug)]
enum Word {
    Inline { len: u8, bytes: [u8; INLINE] },
    Long(String),
}

impl Default for Word {
    fn default() -> Self {
        Word::Inline {
            len: 0,
            bytes: [0; INLINE],
        }
    }
}

impl Word {
    /// `raw` lower-cased; the lexer passes only ASCII letters, digits, `_`
    /// and `$`.
    fn lower(raw: &[u8]) -> Word {
        if raw.len() > INLINE {
            return Word::Long(String::from_utf8_lossy(raw).to_ascii_lowercase());
        }
        let mut bytes = [0; INLINE];
        for (b, r) in bytes.iter_mut().zip(raw) {
            *b = r.to_ascii_lowercase();
        }
        Word::Inline {
            len: raw.len() as u8,
            bytes,
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // ASCII by construction; an empty word otherwise.
            Word::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..*len as usize]).unwrap_or("")
            }
            Word::Long(s) => s,
        }
    }
}

impl std::ops::Deref for Word {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq<str> for Word {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl std::fmt::Display for Word {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for Word {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
}

impl Lexer<'_> {
    fn peek(&self, k: usize) -> Option<u8> {
        self.s.get(self.i + k).copied()
    }

    /// Skips white space and comments (`--` to end of line, nested `/* */`).
    fn skip_blank(&mut self) {
        loop {
            match (self.peek(0), self.peek(1)) {
                (Some(c), _) if c.is_ascii_whitespace() => self.i += 1,
                (Some(b'-'), Some(b'-')) => {
                    while let Some(c) = self.peek(0) {
                        self.i += 1;
                        if c == b'\n' {
                            break;
                        }
                    }
                }
                (Some(b'/'), Some(b'*')) => {
                    let mut depth = 0usize;
                    while self.i < self.s.len() {
                        match (self.peek(0), self.peek(1)) {
                            (Some(b'/'), Some(b'*')) => {
                                depth += 1;
                                self.i += 2;
                            }
                            (Some(b'*'), Some(b'/')) => {
                                depth -= 1;
                                self.i += 2;
                                if depth == 0 {
                                    break;
                                }
                            }
                            _ => self.i += 1,
                        }
                    }
                }
                _ => return,
            }
        }
    }

    fn next_token(&mut self) -> Option<Token> {
        self.skip_blank();
        let c = self.peek(0)?;
        if c == b';' {
            self.i += 1;
            return Some(Token::Semicolon);
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            let start = self.i;
            while matches!(self.peek(0), Some(c) if c.is_ascii_alphanumeric() || c == b'_' || c == b'$')
            {
                self.i += 1;
            }
            return Some(Token::Word(Word::lower(&self.s[start..self.i])));
        }
        self.skip_other();
        Some(Token::Other)
    }

    /// Skips one non-word token: a quoted string or identifier, a
    /// dollar-quoted string, or a single character.
    fn skip_other(&mut self) {
        match self.peek(0) {
            Some(q @ (b'\'' | b'"')) => {
                self.i += 1;
                while let Some(c) = self.peek(0) {
                    self.i += 1;
                    if c == q {
                        if self.peek(0) == Some(q) {
                            self.i += 1; // doubled quote
                        } else {
                            return;
                        }
                    }
                }
            }
            Some(b'$') => {
                let start = self.i;
                let mut j = self.i + 1;
                while matches!(self.s.get(j), Some(c) if c.is_ascii_alphanumeric() || *c == b'_') {
                    j += 1;
                }
                if self.s.get(j) == Some(&b'$') {
                    let tag = &self.s[start..=j];
                    self.i = j + 1;
                    while self.i < self.s.len() {
                        if self.s[self.i..].starts_with(tag) {
                            self.i += tag.len();
                            return;
                        }
                        self.i += 1;
                    }
                } else {
                    self.i += 1;
                }
            }
            _ => self.i += 1,
        }
    }

    /// Reads a plain single-quoted literal at the cursor (no escapes), for
    /// `set_config('name', ...)`.
    fn quoted_literal(&mut self) -> Option<String> {
        if self.peek(0) != Some(b'\'') {
            return None;
        }
        let start = self.i + 1;
        let end = start + self.s[start..].iter().position(|&c| c == b'\'')?;
        if self.s.get(end + 1) == Some(&b'\'') {
            return None; // doubled quote: not a plain name
        }
        self.i = end + 1;
        Some(String::from_utf8_lossy(&self.s[start..end]).into_owned())
    }

    /// Whether nothing but blanks and semicolons follows the current
    /// statement (`ended`: its end was already read).
    fn only_this_statement(&mut self, ended: bool) -> bool {
        if !ended {
            loop {
                match self.next_token() {
                    None => return true,
                    Some(Token::Semicolon) => break,
                    Some(_) => {}
                }
            }
        }
        loop {
            match self.next_token() {
                None => return true,
                Some(Token::Semicolon) => {}
                Some(_) => return false,
            }
        }
    }
}

#[cfg(test)]
mod mentions_tests {
    use super::Mentions;

    #[test]
    fn mentions_finds_each_word_in_any_case() {
        let m = |s: &str| Mentions::of(s.as_bytes());
        assert_eq!(
            m("SELECT abalance FROM pgbench_accounts WHERE aid = 1"),
            Mentions::default()
        );
        assert!(m("ReSeT all").session_words());
        assert!(m("select set_config('a','b',false)").session_words());
        assert!(m("DISCARD ALL").session_words() && m("DISCARD ALL").prepared_words());
        assert!(m("select U&\"d\\0061ta\"").escape());
        assert!(m("PrePare x as select 1").prepared_words());
        assert!(m("deallocate x").prepared_words());
        assert!(m("COPY t FROM STDIN").copy_in_words());
        assert!(!m("COPY t TO STDOUT").copy_in_words());
        assert!(!m("prep").prepared_words());
        // At the very end, and overlapping.
        assert!(m("x set").session_words());
        assert!(m("sset").session_words());
    }
}
