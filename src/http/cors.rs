//! CORS for browsers that call `/sql` with their user's token (Neon's Data
//! API pattern). Only configured origins: a request carrying any other
//! `Origin` is refused before it reaches the database, preflight or not.
//! Requests without `Origin` (servers, serverless functions) pass as they
//! are; CORS is a browser's rule.

use super::App;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::sync::Arc;

/// The request headers a browser may send: the ones the Neon driver uses
/// (Neon's proxy allows the same list) and `Content-Type`.
pub const ALLOWED_HEADERS: &str = "Authorization, Neon-Connection-String, Neon-Raw-Text-Output, Neon-Array-Mode, Neon-Pool-Opt-In, Neon-Batch-Read-Only, Neon-Batch-Isolation-Level, Neon-Batch-Deferrable, Content-Type";

/// How long a browser may cache a preflight answer (seconds).
const MAX_AGE: &str = "86400";

/// What to do with a request, from its headers alone.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// No `Origin`: not a browser's cross-origin request.
    NotCors,
    /// An allowed origin's preflight: answer it here.
    Preflight(HeaderValue),
    /// An allowed origin's request: run it, then add the CORS headers.
    Allowed(HeaderValue),
    /// Any other origin.
    Refused,
}

/// Decides for a request with `method` and `headers`.
pub fn decide(allowed: &[String], method: &Method, headers: &HeaderMap) -> Decision {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Decision::NotCors;
    };
    let known = origin
        .to_str()
        .is_ok_and(|o| allowed.iter().any(|a| a.eq_ignore_ascii_case(o)));
    if !known {
        return Decision::Refused;
    }
    if method == Method::OPTIONS && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
        Decision::Preflight(origin.clone())
    } else {
        Decision::Allowed(origin.clone())
    }
}

/// The middleware.
pub async fn layer(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    match decide(
        &app.config.cors_allowed_origins,
        req.method(),
        req.headers(),
    ) {
        Decision::NotCors => next.run(req).await,
        Decision::Refused => {
            crate::metrics::incr("rowgate_http_errors_total", "cors_refused");
            (
                StatusCode::FORBIDDEN,
                axum::Json(json!({
                    "message": "rowgate: this origin may not call rowgate; add it to [http] cors_allowed_origins",
                    "code": "28000",
                })),
            )
                .into_response()
        }
        Decision::Preflight(origin) => {
            let mut resp = StatusCode::NO_CONTENT.into_response();
            let h = resp.headers_mut();
            allow_origin(h, origin);
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("POST, GET, OPTIONS"),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(ALLOWED_HEADERS),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static(MAX_AGE),
            );
            resp
        }
        Decision::Allowed(origin) => {
            let mut resp = next.run(req).await;
            allow_origin(resp.headers_mut(), origin);
            resp
        }
    }
}

fn allow_origin(h: &mut HeaderMap, origin: HeaderValue) {
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    // The answer differs by origin: caches must keep them apart.
    h.append(header::VARY, HeaderValue::from_static("Origin"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn only_configured_origins_pass() {
        let allowed = vec!["https://app.example.com".to_string()];
        assert_eq!(
            decide(&allowed, &Method::POST, &HeaderMap::new()),
            Decision::NotCors
        );
        assert_eq!(
            decide(
                &allowed,
                &Method::POST,
                &headers(&[("origin", "https://app.example.com")])
            ),
            Decision::Allowed(HeaderValue::from_static("https://app.example.com"))
        );
        for other in [
            "https://evil.example.com",
            "null",
            "https://app.example.com.evil.test",
        ] {
            assert_eq!(
                decide(&allowed, &Method::POST, &headers(&[("origin", other)])),
                Decision::Refused,
                "{other}"
            );
        }
        assert_eq!(
            decide(
                &[],
                &Method::POST,
                &headers(&[("origin", "https://app.example.com")])
            ),
            Decision::Refused
        );
    }

    #[test]
    fn preflight_needs_the_request_method_header() {
        let allowed = vec!["http://localhost:3000".to_string()];
        let pre = headers(&[
            ("origin", "http://localhost:3000"),
            ("access-control-request-method", "POST"),
        ]);
        assert!(matches!(
            decide(&allowed, &Method::OPTIONS, &pre),
            Decision::Preflight(_)
        ));
        let plain = headers(&[("origin", "http://localhost:3000")]);
        assert!(matches!(
            decide(&allowed, &Method::OPTIONS, &plain),
            Decision::Allowed(_)
        ));
    }
}
