//! In-band identity for service logins ([`crate::auth::inband`] recognises
//! the statements): `SET LOCAL rowgate.token = '<jwt>'` and `select
//! set_config('rowgate.token', $1, true)` are answered by rowgate itself,
//! in order with the server's replies, and never forwarded (so the token
//! reaches no upstream log and no `pg_stat_activity`). A verified token
//! makes its user the identity injected for the rest of the transaction;
//! when the transaction ends the service's own identity (its
//! `default_identity`, or none) is back.
//!
//! Verifying a token may need a JWKS fetch, which the core cannot do: it
//! asks the driver ([`super::Action::Verify`]), holds the message, and
//! takes it up again with the answer ([`Core::verified`]).

use super::client_in::refuse_in_batch;
use super::expect::{Expect, Kind};
use super::{Action, Core, Hold, IdentityState, Link, Txn};
use crate::auth::inband::{self, reply, Inband, Portal, Switch, TokenAt, Tracker};
use crate::auth::Identity;
use crate::client::service_login::Login;
use crate::wire::backend::{self, Severity};
use crate::wire::{frontend, put_frame, Frame, Reader};
use sha2::{Digest, Sha256};

/// A session's in-band state: the kind of login, the identity to go back
/// to, the statements it prepared in-band, and the last verification.
pub struct InbandSession {
    login: Login,
    /// A service login's own identity, which every transaction goes back
    /// to. None for every other login: those never switch, and every idle
    /// client would carry a copy.
    base: Option<Box<Identity>>,
    tracker: Tracker,
    /// The driver's answer for a token (the token's digest, and it); boxed
    /// for the same reason.
    verified: Option<Box<([u8; 32], Verdict)>>,
}

/// A token's verification: its user, or the SQLSTATE and message to refuse
/// it with.
pub type Verdict = Result<Identity, (&'static str, String)>;

impl InbandSession {
    /// For a session that logged in as `login` with `identity`.
    pub fn new(login: Login, identity: &Identity) -> InbandSession {
        InbandSession {
            base: login.service().map(|_| Box::new(identity.clone())),
            login,
            tracker: Tracker::default(),
            verified: None,
        }
    }
}

/// What happens to a client message after the in-band check.
pub(super) enum Intercept {
    /// Not an in-band message: carry on with it as usual.
    NotMine(Frame),
    /// Answered (or refused) here.
    Done,
    /// Waiting for the driver to verify a token.
    Parked,
    /// Carry on with this message instead (the rest of a multi-statement
    /// query whose first statement was the in-band one).
    Forward(Frame),
}

fn error(code: &str, message: &str) -> bytes::Bytes {
    backend::error_response(Severity::Error, code, message)
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.trim().as_bytes()).into()
}

impl Core {
    /// The service this session logged in as, if it is a service login.
    pub fn service(&self) -> Option<std::sync::Arc<crate::auth::Service>> {
        self.inband.login.service().cloned()
    }

    /// The driver's verification of `token`: the held message is taken up
    /// again with it.
    pub fn verified(&mut self, token: &str, verdict: Verdict) {
        self.inband.verified = Some(Box::new((digest(token), verdict)));
        let Link::Attached(a) = &mut self.link else {
            return;
        };
        if let Hold::Verify(frame) = std::mem::replace(&mut a.hold, Hold::None) {
            self.forward(frame);
        }
    }

    /// The verdict for `token`, if the driver has given it; otherwise asks
    /// for it and holds `frame`.
    fn verdict(&mut self, token: &str, frame: &Frame) -> Option<Verdict> {
        let d = digest(token);
        if let Some((known, v)) = self.inband.verified.as_deref() {
            if *known == d {
                return Some(v.clone());
            }
        }
        if let Link::Attached(a) = &mut self.link {
            a.hold = Hold::Verify(frame.clone());
            self.actions.push_back(Action::Verify(token.to_owned()));
        }
        None
    }

    /// Called for every batch message once it has a connection, before the
    /// guard sees it.
    pub(super) fn inband_intercept(&mut self, frame: Frame) -> Intercept {
        if !self.attached() {
            return Intercept::NotMine(frame);
        }
        match frame.tag() {
            b'Q' => self.inband_query(frame),
            b'P' => self.inband_parse(frame),
            b'B' => self.inband_bind(frame),
            b'D' | b'E' | b'C' => self.inband_portal(frame),
            _ => Intercept::NotMine(frame),
        }
    }

    fn inband_parse(&mut self, frame: Frame) -> Intercept {
        let Ok(p) = frontend::parse_parts(frame.body()) else {
            return Intercept::NotMine(frame);
        };
        match self.inband.tracker.parse(p.name, p.spec) {
            Inband::None => Intercept::NotMine(frame),
            Inband::SessionLevel => {
                self.refuse_extended(error("42501", inband::session_level_message()));
                Intercept::Done
            }
            _ if self.inband.login.service().is_none() => {
                self.inband.tracker.close(b'S', p.name);
                self.refuse_extended(error("42501", inband::not_a_service_message()));
                Intercept::Done
            }
            _ => {
                self.emit(backend::parse_complete());
                Intercept::Done
            }
        }
    }

    fn inband_bind(&mut self, frame: Frame) -> Intercept {
        let Ok(b) = frontend::bind_parts(frame.body()) else {
            return Intercept::NotMine(frame);
        };
        let Some(prepared) = self.inband.tracker.statement(b.statement).cloned() else {
            self.inband.tracker.bind(b.portal, None);
            return Intercept::NotMine(frame);
        };
        let token = match &prepared.form {
            Inband::SetLocal { token, .. }
            | Inband::SetConfig {
                token: TokenAt::Literal(token),
                ..
            } => Ok(token.clone()),
            _ => match inband::bind_first_param(b.rest) {
                Ok(Some(t)) => String::from_utf8(t.to_vec())
                    .map_err(|_| ("28P01", "rowgate: rowgate.token is not UTF-8".to_string())),
                Ok(None) => Err((
                    "28000",
                    "rowgate: rowgate.token is NULL: no user for this transaction".to_string(),
                )),
                Err(why) => Err(("08P01", format!("rowgate: malformed Bind: {why}"))),
            },
        };
        let format = inband::bind_result_format(b.rest).unwrap_or(0);
        let portal = b.portal.to_vec();
        let outcome = match token {
            Ok(token) => match self.verdict(&token, &frame) {
                None => return Intercept::Parked,
                Some(v) => self.switch_to(v, &token).map(|()| token),
            },
            Err(e) => Err(e),
        };
        match outcome {
            Ok(token) => {
                let bound = Portal {
                    form: prepared.form,
                    token,
                    format,
                };
                self.inband.tracker.bind(&portal, Some(bound));
                self.emit(reply::bind_complete());
            }
            Err((code, message)) => {
                self.inband.tracker.bind(&portal, None);
                self.refuse_extended(error(code, &message));
            }
        }
        Intercept::Done
    }

    /// Describe, Execute and Close of an in-band statement or portal.
    fn inband_portal(&mut self, frame: Frame) -> Intercept {
        let body = frame.body();
        let answer = match frame.tag() {
            b'D' => match frontend::target(body, "Describe") {
                Ok(t) if t.kind == b'S' => self
                    .inband
                    .tracker
                    .statement(t.name)
                    .map(|p| p.describe_statement().freeze()),
                Ok(t) => self.inband.tracker.portal(t.name).map(Portal::describe),
                Err(_) => None,
            },
            b'E' => match Reader::new(body, "Execute").cstr() {
                Ok(name) => self
                    .inband
                    .tracker
                    .portal(name)
                    .map(|p| p.execute().freeze()),
                Err(_) => None,
            },
            _ => match frontend::target(body, "Close") {
                Ok(t) if self.inband.tracker.close(t.kind, t.name) => {
                    Some(backend::close_complete())
                }
                _ => None,
            },
        };
        match answer {
            Some(a) => {
                self.emit(a);
                Intercept::Done
            }
            None => Intercept::NotMine(frame),
        }
    }

    fn inband_query(&mut self, frame: Frame) -> Intercept {
        let body = frame.body();
        let sql = body.strip_suffix(b"\0").unwrap_or(body);
        let form = inband::recognize(sql);
        let token = match &form {
            Inband::None => return Intercept::NotMine(frame),
            Inband::SessionLevel => {
                self.refuse_simple(error("42501", inband::session_level_message()));
                return Intercept::Done;
            }
            _ if self.inband.login.service().is_none() => {
                self.refuse_simple(error("42501", inband::not_a_service_message()));
                return Intercept::Done;
            }
            // `$1` in a simple query: the server says there is no
            // parameter, given the statement (no token in it).
            Inband::SetConfig {
                token: TokenAt::Param,
                ..
            } => return Intercept::NotMine(frame),
            Inband::SetLocal { token, .. }
            | Inband::SetConfig {
                token: TokenAt::Literal(token),
                ..
            } => token.clone(),
        };
        let rest = form.rest(sql).map(<[u8]>::to_vec);
        if rest.as_deref().is_some_and(inband::ends_transaction) {
            self.refuse_simple(error("0A000", "rowgate: a query string that sets rowgate.token must not also end the transaction (send COMMIT or ROLLBACK on its own)"));
            return Intercept::Done;
        }
        let Link::Attached(a) = &self.link else {
            return Intercept::NotMine(frame);
        };
        let status = match a.txn {
            Txn::Idle => b'I',
            Txn::Failed => b'E',
            _ => b'T',
        };
        if status == b'E' {
            self.emit(error(
                "25P02",
                "current transaction is aborted, commands ignored until end of transaction block",
            ));
            self.emit(backend::ready_for_query(b'E'));
            return Intercept::Done;
        }
        let Some(verdict) = self.verdict(&token, &frame) else {
            return Intercept::Parked;
        };
        if status == b'I' && rest.is_none() {
            // As PostgreSQL: outside a transaction block a transaction-
            // local setting is gone at once; nobody runs as this user. The
            // token is still checked, so a service learns it is bad.
            match verdict {
                Ok(_) => {
                    self.emit(reply::set_local_outside_transaction());
                    self.emit(reply::simple(&form, &token).freeze());
                }
                Err((code, message)) => self.emit(error(code, &message)),
            }
            self.emit(backend::ready_for_query(b'I'));
            self.after_own_answer();
            return Intercept::Done;
        }
        if let Err((code, message)) = self.switch_to(verdict, &token) {
            self.refuse_simple(error(code, &message));
            return Intercept::Done;
        }
        self.emit(reply::simple(&form, &token).freeze());
        match rest {
            Some(rest) => forward_rest(&rest),
            None => {
                self.emit(backend::ready_for_query(status));
                Intercept::Done
            }
        }
    }

    /// Makes the verified token's user the transaction's identity.
    fn switch_to(&mut self, verdict: Verdict, token: &str) -> Result<(), (&'static str, String)> {
        let identity = verdict?;
        // Only a service login has an identity to go back to, so only it
        // may switch (the callers refuse the others first).
        if self.inband.base.is_none() {
            return Err(("42501", inband::not_a_service_message().to_string()));
        }
        match self.inband.tracker.switch(digest(token)) {
            Switch::Same => Ok(()),
            Switch::Different => Err(("42501", inband::second_token_message().to_string())),
            Switch::First => {
                self.identity = identity;
                self.encode_settings();
                if let Link::Attached(a) = &mut self.link {
                    if let Txn::Open {
                        block,
                        identity: IdentityState::Set,
                        sure,
                    } = a.txn
                    {
                        // The transaction already ran with the service's
                        // own identity: the user's goes in before the next
                        // statement (no transaction modes: too late now).
                        a.txn = Txn::Open {
                            block,
                            identity: IdentityState::Reassert,
                            sure,
                        };
                    }
                }
                crate::metrics::incr("rowgate_inband_identities_total", "");
                Ok(())
            }
        }
    }

    /// The transaction ended (the server said so, or the client's
    /// statement ends it mid-batch): the in-band user is gone.
    pub(super) fn inband_transaction_over(&mut self) {
        if self.inband.tracker.active() {
            if let Some(base) = &self.inband.base {
                self.identity = Identity::clone(base);
            }
            self.encode_settings();
        }
        self.inband.tracker.transaction_over();
        self.inband.verified = None;
    }

    /// Queues a reply of rowgate's own, in order with the server's.
    fn emit(&mut self, bytes: bytes::Bytes) {
        match &mut self.link {
            Link::Attached(a) => {
                a.queue.push(Expect::forward(Kind::Emit(bytes)));
                self.drain_emits();
            }
            _ => self.to_client.extend_from_slice(&bytes),
        }
    }

    /// After rowgate answered a whole simple Query itself: the connection
    /// goes back if nothing else is in flight.
    fn after_own_answer(&mut self) {
        if let Link::Attached(a) = &self.link {
            if a.queue.settled() && a.status == b'I' && !a.pinned {
                self.release();
            }
        }
    }

    fn refuse_extended(&mut self, error: bytes::Bytes) {
        if let Link::Attached(a) = &mut self.link {
            refuse_in_batch(a, &mut self.to_server, error);
        }
    }

    fn refuse_simple(&mut self, error: bytes::Bytes) {
        self.refuse_upstream(b'Q', error);
    }
}

/// The statements after `SET LOCAL rowgate.token = '...'` in one query
/// string, as a Query of their own for the session to handle.
fn forward_rest(rest: &[u8]) -> Intercept {
    let mut b = bytes::BytesMut::with_capacity(rest.len() + 6);
    put_frame(&mut b, b'Q', |o| {
        o.extend_from_slice(rest);
        o.extend_from_slice(&[0]);
    });
    match crate::wire::next_frame(&mut b, crate::wire::MAX_MESSAGE_LEN) {
        Ok(Some(f)) => Intercept::Forward(f),
        _ => Intercept::Done,
    }
}
