//! The glue between a session and in-band identity
//! ([`crate::auth::inband`]): the few `HOOK(sidecar)` calls in the old
//! session files land here. A recognised statement is answered by rowgate
//! itself, in order with the server's replies, and never forwarded (so the
//! token reaches no upstream log and no `pg_stat_activity`); a verified
//! token makes the user the identity injected for the rest of the
//! transaction; when the transaction ends the service's own identity (its
//! `default_identity`, or none) is back.

use bytes::{BufMut, BytesMut};
use sha2::{Digest, Sha256};

use super::expect::{Expect, Kind, ParseNote};
use super::service_login::Login;
use super::session::{IdentityState, Session, Upstream};
use crate::auth::inband::{self, reply, Inband, Portal, Switch, TokenAt, Tracker};
use crate::auth::Identity;
use crate::guard::TxnModes;
use crate::wire::backend::{self, Severity};
use crate::wire::frontend;
use crate::wire::{next_frame, Frame, Reader, MAX_MESSAGE_LEN};

/// A session's in-band state: the kind of login, the identity to go back
/// to, and the tracker of in-band statements.
pub(super) struct InbandSession {
    login: Login,
    base: Identity,
    tracker: Tracker,
}

impl InbandSession {
    /// For a session that logged in as `login` with `identity`.
    pub fn new(login: Login, identity: &Identity) -> InbandSession {
        InbandSession {
            login,
            base: identity.clone(),
            tracker: Tracker::default(),
        }
    }
}

/// What the session does with a client message after the hook.
pub(super) enum Intercept {
    /// Not an in-band message: carry on as usual.
    NotMine,
    /// Answered (or refused) here.
    Done,
    /// Carry on with this message instead (the rest of a multi-statement
    /// query whose first statement was the in-band one).
    Forward(Frame),
}

/// SQL that always fails to parse: sent in place of a refused in-band
/// statement so that the server aborts a transaction block as for any
/// failed statement (the client sees rowgate's error instead).
const REFUSED_SQL: &[u8] = b"rowgate refused this statement";

fn error(code: &str, message: &str) -> bytes::Bytes {
    backend::error_response(Severity::Error, code, message)
}

/// A Query frame carrying `sql`.
fn query_frame(sql: &[u8]) -> Result<Frame, super::session::End> {
    let mut b = BytesMut::with_capacity(sql.len() + 6);
    b.put_u8(b'Q');
    b.put_i32((sql.len() + 5) as i32);
    b.put_slice(sql);
    b.put_u8(0);
    next_frame(&mut b, MAX_MESSAGE_LEN)?.ok_or(super::session::End::Desync(
        "rebuilt query frame incomplete",
    ))
}

impl Session {
    /// HOOK target: called for every batch message after the batch has a
    /// connection, before the guard sees it.
    pub(super) async fn inband_intercept(
        &mut self,
        frame: &Frame,
    ) -> Result<Intercept, super::session::End> {
        let body = frame.body();
        match frame.tag() {
            b'Q' => {
                self.inband_query(body.strip_suffix(b"\0").unwrap_or(body))
                    .await
            }
            b'P' => {
                let p = frontend::parse_parts(body)?;
                match self.inband.tracker.parse(p.name, p.spec) {
                    Inband::None => Ok(Intercept::NotMine),
                    Inband::SessionLevel => {
                        self.refuse_in_batch(error("42501", inband::session_level_message()));
                        Ok(Intercept::Done)
                    }
                    _ if self.inband.login.service().is_none() => {
                        self.inband.tracker.close(b'S', p.name);
                        self.refuse_in_batch(error("42501", inband::not_a_service_message()));
                        Ok(Intercept::Done)
                    }
                    _ => {
                        self.emit(backend::parse_complete());
                        Ok(Intercept::Done)
                    }
                }
            }
            b'B' => {
                let b = frontend::bind_parts(body)?;
                let Some(prepared) = self.inband.tracker.statement(b.statement).cloned() else {
                    self.inband.tracker.bind(b.portal, None);
                    return Ok(Intercept::NotMine);
                };
                let token = match &prepared.form {
                    Inband::SetLocal { token, .. }
                    | Inband::SetConfig {
                        token: TokenAt::Literal(token),
                        ..
                    } => Ok(token.clone()),
                    _ => match inband::bind_first_param(b.rest) {
                        Ok(Some(t)) => String::from_utf8(t.to_vec()).map_err(|_| {
                            ("28P01", "rowgate: rowgate.token is not UTF-8".to_string())
                        }),
                        Ok(None) => Err((
                            "28000",
                            "rowgate: rowgate.token is NULL: no user for this transaction"
                                .to_string(),
                        )),
                        Err(why) => Err(("08P01", format!("rowgate: malformed Bind: {why}"))),
                    },
                };
                let format = inband::bind_result_format(b.rest).unwrap_or(0);
                let outcome = match token {
                    Ok(token) => self.switch_to(&token).await.map(|()| token),
                    Err(e) => Err(e),
                };
                match outcome {
                    Ok(token) => {
                        self.inband.tracker.bind(
                            b.portal,
                            Some(Portal {
                                form: prepared.form,
                                token,
                                format,
                            }),
                        );
                        self.emit(reply::bind_complete());
                    }
                    Err((code, message)) => {
                        self.inband.tracker.bind(b.portal, None);
                        self.refuse_in_batch(error(code, &message));
                    }
                }
                Ok(Intercept::Done)
            }
            b'D' => {
                let t = frontend::target(body, "Describe")?;
                let answer = match t.kind {
                    b'S' => self
                        .inband
                        .tracker
                        .statement(t.name)
                        .map(|p| p.describe_statement().freeze()),
                    _ => self.inband.tracker.portal(t.name).map(Portal::describe),
                };
                Ok(match answer {
                    Some(a) => {
                        self.emit(a);
                        Intercept::Done
                    }
                    None => Intercept::NotMine,
                })
            }
            b'E' => {
                let name = Reader::new(body, "Execute").cstr()?;
                match self.inband.tracker.portal(name).map(Portal::execute) {
                    Some(a) => {
                        self.emit(a.freeze());
                        Ok(Intercept::Done)
                    }
                    None => Ok(Intercept::NotMine),
                }
            }
            b'C' => {
                let t = frontend::target(body, "Close")?;
                if self.inband.tracker.close(t.kind, t.name) {
                    self.emit(backend::close_complete());
                    Ok(Intercept::Done)
                } else {
                    Ok(Intercept::NotMine)
                }
            }
            _ => Ok(Intercept::NotMine),
        }
    }

    async fn inband_query(&mut self, sql: &[u8]) -> Result<Intercept, super::session::End> {
        let form = inband::recognize(sql);
        let token = match &form {
            Inband::None => return Ok(Intercept::NotMine),
            Inband::SessionLevel => {
                self.refuse_query(error("42501", inband::session_level_message()));
                return Ok(Intercept::Done);
            }
            _ if self.inband.login.service().is_none() => {
                self.refuse_query(error("42501", inband::not_a_service_message()));
                return Ok(Intercept::Done);
            }
            Inband::SetConfig {
                token: TokenAt::Param,
                ..
            } => {
                // `$1` in a simple query: PostgreSQL says there is no
                // parameter; so does the server, given the statement
                // without the token (there is none in it).
                return Ok(Intercept::NotMine);
            }
            Inband::SetLocal { token, .. }
            | Inband::SetConfig {
                token: TokenAt::Literal(token),
                ..
            } => token.clone(),
        };
        let rest = form.rest(sql);
        if rest.is_some_and(inband::ends_transaction) {
            self.refuse_query(error("0A000", "rowgate: a query string that sets rowgate.token must not also end the transaction (send COMMIT or ROLLBACK on its own)"));
            return Ok(Intercept::Done);
        }
        let status = match &self.upstream {
            Upstream::Attached(a) => a.status,
            Upstream::Detached => b'I',
        };
        if status == b'E' {
            self.emit(error(
                "25P02",
                "current transaction is aborted, commands ignored until end of transaction block",
            ));
            self.emit(backend::ready_for_query(b'E'));
            return Ok(Intercept::Done);
        }
        if status == b'I' && rest.is_none() {
            // As PostgreSQL: outside a transaction block a transaction-
            // local setting is gone at once; nobody runs as this user. The
            // token is still checked, so a service learns it is bad.
            match self.verify(&token).await {
                Ok(_) => {
                    self.emit(reply::set_local_outside_transaction());
                    self.emit(reply::simple(&form, &token).freeze());
                    self.emit(backend::ready_for_query(b'I'));
                }
                Err((code, message)) => {
                    self.emit(error(code, &message));
                    self.emit(backend::ready_for_query(b'I'));
                }
            }
            if matches!(&self.upstream, Upstream::Attached(a) if a.expect.is_empty()) {
                self.release();
            }
            return Ok(Intercept::Done);
        }
        if let Err((code, message)) = self.switch_to(&token).await {
            self.refuse_query(error(code, &message));
            return Ok(Intercept::Done);
        }
        self.emit(reply::simple(&form, &token).freeze());
        match rest {
            Some(rest) => Ok(Intercept::Forward(query_frame(rest)?)),
            None => {
                self.emit(backend::ready_for_query(status));
                Ok(Intercept::Done)
            }
        }
    }

    async fn verify(&self, token: &str) -> Result<Identity, (&'static str, String)> {
        let Some(service) = self.inband.login.service() else {
            return Err(("42501", inband::not_a_service_message().to_string()));
        };
        self.shared
            .auth
            .verify_inband(token, service)
            .await
            .map_err(|e| (e.sqlstate(), format!("rowgate: rowgate.token refused: {e}")))
    }

    /// Verifies `token` and makes its user the transaction's identity.
    async fn switch_to(&mut self, token: &str) -> Result<(), (&'static str, String)> {
        let identity = self.verify(token).await?;
        let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        match self.inband.tracker.switch(digest) {
            Switch::Same => Ok(()),
            Switch::Different => Err(("42501", inband::second_token_message().to_string())),
            Switch::First => {
                self.identity = identity;
                self.encode_settings();
                if let Upstream::Attached(a) = &mut self.upstream {
                    if a.identity == IdentityState::Set {
                        // The transaction already ran with the service's own
                        // identity: inject again before the next statement.
                        // Every mode counts as chosen, so no SET
                        // TRANSACTION (too late now) goes with it.
                        a.identity = IdentityState::Pending(TxnModes::ALL);
                    }
                }
                crate::metrics::incr("rowgate_inband_identities_total", "");
                Ok(())
            }
        }
    }

    /// HOOK target: the transaction ended (the server said so, or the
    /// client's statement ends it mid-batch): the in-band user is gone.
    pub(super) fn inband_transaction_over(&mut self) {
        if self.inband.tracker.active() {
            self.identity = self.inband.base.clone();
            self.encode_settings();
        }
        self.inband.tracker.transaction_over();
    }

    /// Queues a reply of rowgate's own, in order with the server's.
    fn emit(&mut self, bytes: bytes::Bytes) {
        match &mut self.upstream {
            Upstream::Attached(a) => {
                a.expect.push_back(Expect::forward(Kind::Emit(bytes)));
                self.drain_emits();
            }
            Upstream::Detached => self.cwbuf.extend_from_slice(&bytes),
        }
    }

    /// Fails an extended-protocol message: a Parse that fails on purpose
    /// goes upstream in its place, so the server skips to Sync and aborts
    /// a transaction block; the client sees `error`.
    fn refuse_in_batch(&mut self, error: bytes::Bytes) {
        if let Upstream::Attached(a) = &mut self.upstream {
            let mut spec = REFUSED_SQL.to_vec();
            spec.extend_from_slice(b"\0\0\0");
            frontend::put_parse(&mut a.out, b"", &spec);
            a.unnamed_here = false;
            a.expect
                .push_back(Expect::refused(Kind::Parse(ParseNote::default()), error));
        }
    }

    /// Fails a simple Query the same way (the server aborts the block).
    fn refuse_query(&mut self, error: bytes::Bytes) {
        if let Upstream::Attached(a) = &mut self.upstream {
            let mut q = BytesMut::new();
            q.put_u8(b'Q');
            q.put_i32((REFUSED_SQL.len() + 5) as i32);
            q.put_slice(REFUSED_SQL);
            q.put_u8(0);
            a.out.extend_from_slice(&q);
            a.expect.push_back(Expect::refused(Kind::Query, error));
        }
    }
}
