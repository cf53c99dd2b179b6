//! An error reply on NATS, beyond its JSON body `{"error":{"code","message"}}`: the NATS
//! micro-service headers `Nats-Service-Error` (`<code>: <message>`) and
//! `Nats-Service-Error-Code` (the code's HTTP-like status, [`ErrorCode::status`]), so NATS
//! tooling (`nats req`, `nats micro`) and clients that only read headers see a failure
//! without parsing the body. Centers and the gateways' backend ingress both send them.
//!
//! [`ErrorCode::status`]: super::code::ErrorCode::status

use async_nats::service::error::Error as ServiceError;
use async_nats::service::{NATS_SERVICE_ERROR, NATS_SERVICE_ERROR_CODE};
use async_nats::HeaderMap;

use super::nats::ErrorBody;

/// The headers of an error reply.
pub(crate) fn headers(error: &ErrorBody) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(NATS_SERVICE_ERROR, description(error).as_str());
    headers.insert(
        NATS_SERVICE_ERROR_CODE,
        error.code.status().to_string().as_str(),
    );
    headers
}

/// The same error as async-nats's service framework counts it (`num_errors`, `last_error`).
pub(crate) fn service_error(error: &ErrorBody) -> ServiceError {
    ServiceError {
        status: description(error),
        code: usize::from(error.code.status()),
    }
}

/// `<code>: <message>` on one line: a header value must not break the protocol line, and
/// messages may quote ids a client chose (async-nats does not check header values).
fn description(error: &ErrorBody) -> String {
    format!("{}: {}", error.code, error.message)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::code::ErrorCode;

    #[test]
    fn headers_name_the_code_and_its_status_on_one_line() {
        let error = ErrorBody {
            code: ErrorCode::BadId,
            message: "user \"a\r\nb\": invalid".to_string(),
        };
        let headers = headers(&error);
        let text = headers.get(NATS_SERVICE_ERROR).unwrap().as_str();
        assert_eq!(text, "bad_id: user \"a  b\": invalid");
        assert_eq!(
            headers.get(NATS_SERVICE_ERROR_CODE).unwrap().as_str(),
            "400"
        );
        let counted = service_error(&error);
        assert_eq!((counted.code, counted.status.as_str()), (400, text));
    }
}
