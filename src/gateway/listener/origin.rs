//! Which web pages may use the gateway: the `Origin` of a WebSocket upgrade is checked
//! against `--allowed-origins` before the upgrade, and the HTTP API answers CORS for
//! `--cors-origins`. Only browsers send `Origin`; a request without it is not a page's
//! and passes (a native client or a backend could send any header it liked anyway).

use std::time::Duration;

use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The origins whose pages may open `/ws`.
pub(crate) struct Origins {
    /// Empty: any origin.
    allowed: Vec<HeaderValue>,
}

impl Origins {
    /// From `--allowed-origins`: none given, or `*`, allows any.
    pub(crate) fn new(allowed: &[String]) -> Self {
        let any = allowed.is_empty() || allowed.iter().any(|o| o == "*");
        let allowed = if any {
            Vec::new()
        } else {
            header_values(allowed)
        };
        Origins { allowed }
    }

    /// Whether a request with this `Origin` header (if any) may go on.
    pub(crate) fn allows(&self, origin: Option<&HeaderValue>) -> bool {
        match origin {
            _ if self.allowed.is_empty() => true,
            None => true,
            Some(origin) => self
                .allowed
                .iter()
                .any(|a| a.as_bytes().eq_ignore_ascii_case(origin.as_bytes())),
        }
    }
}

/// How long a browser may cache a preflight's answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// The CORS layer of the HTTP API for `--cors-origins` (`None`: no CORS headers, so
/// browsers keep pages of other origins out). Bearer tokens, not cookies, carry the
/// credentials, so credentialed CORS is never needed.
pub(crate) fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(header_values(origins))
    };
    let layer = CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([AUTHORIZATION, CONTENT_TYPE])
        .max_age(PREFLIGHT_MAX_AGE);
    Some(layer)
}

/// Origins as header values (validated by the config: they are ASCII).
fn header_values(origins: &[String]) -> Vec<HeaderValue> {
    origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_origins_pass_and_requests_without_one_always_do() {
        let origins = Origins::new(&["https://chat.example.com".into()]);
        let page = |o: &'static str| Some(HeaderValue::from_static(o));
        assert!(origins.allows(page("https://chat.example.com").as_ref()));
        assert!(origins.allows(page("HTTPS://CHAT.EXAMPLE.COM").as_ref()));
        assert!(!origins.allows(page("https://evil.example").as_ref()));
        assert!(origins.allows(None));
        assert!(Origins::new(&[]).allows(page("https://evil.example").as_ref()));
        assert!(Origins::new(&["*".into()]).allows(page("https://x.example").as_ref()));
    }
}
