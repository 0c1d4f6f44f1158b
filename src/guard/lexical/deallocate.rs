//! A lone `DEALLOCATE`, which names one of the client's statements.

use super::{Lexer, Token};

/// What a lone `DEALLOCATE` statement names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deallocate {
    /// `DEALLOCATE [PREPARE] name` (name as written, lower-cased unless quoted).
    One(String),
    /// `DEALLOCATE [PREPARE] ALL`.
    All,
}

/// Recognises a text that is exactly one `DEALLOCATE` statement.
pub fn deallocate(sql: &[u8]) -> Option<Deallocate> {
    let mut lx = Lexer { s: sql, i: 0 };
    match lx.next_token() {
        Some(Token::Word(w)) if w == "deallocate" => {}
        _ => return None,
    }
    let mut target = lx.next_token();
    if matches!(&target, Some(Token::Word(w)) if w == "prepare") {
        target = lx.next_token();
    }
    let result = match target {
        Some(Token::Word(w)) if w == "all" => Deallocate::All,
        Some(Token::Word(w)) => Deallocate::One(w.to_string()),
        Some(Token::Other) if sql.get(lx.i.checked_sub(1)?) == Some(&b'"') => {
            // A quoted name: the text between the quotes, as written.
            let end = lx.i - 1;
            let start = sql[..end].iter().rposition(|&c| c == b'"')? + 1;
            Deallocate::One(String::from_utf8_lossy(&sql[start..end]).into_owned())
        }
        _ => return None,
    };
    lx.only_this_statement(false).then_some(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deallocate_is_recognised() {
        assert_eq!(
            deallocate(b"DEALLOCATE s1"),
            Some(Deallocate::One("s1".into()))
        );
        assert_eq!(
            deallocate(b"deallocate prepare \"S 1\";"),
            Some(Deallocate::One("S 1".into()))
        );
        assert_eq!(deallocate(b"DEALLOCATE ALL"), Some(Deallocate::All));
        assert_eq!(deallocate(b"DEALLOCATE s1; select 1"), None);
        assert_eq!(deallocate(b"select 1"), None);
    }
}
