//! The demo page (`--demo`): a two-user chat in the browser, to try MRC without writing a
//! client. `GET /` is the page, `/demo/demo.js` its script and `/demo/client/*.js` the
//! JavaScript client's own module files from `clients/js/src`, embedded at build time so
//! there is one copy of the client: the one its tests cover. No build step, no framework.
//!
//! The files are static, so they are served from the start, outside the gate; the page's
//! WebSocket goes through the gate like any client's. Without `--demo` none of these
//! routes exists and `/` is 404. It must never serve anything but these embedded files.

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const HTML: &str = "text/html; charset=utf-8";
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

const PAGE: &str = include_str!("demo/index.html");
const SCRIPT: &str = include_str!("demo/demo.js");

/// `(name, text)` of one file of the JavaScript client, `clients/js/src/<name>`.
macro_rules! client_file {
    ($name:literal) => {
        (
            $name,
            include_str!(concat!("../../../clients/js/src/", $name)),
        )
    };
}

/// The client's module files by name: `index.js` and everything it imports (a unit test
/// checks that every relative import of a served file is served).
const CLIENT: [(&str, &str); 7] = [
    client_file!("index.js"),
    client_file!("client.js"),
    client_file!("backoff.js"),
    client_file!("emitter.js"),
    client_file!("error.js"),
    client_file!("ids.js"),
    client_file!("inbox.js"),
];

/// The demo's routes, for any router state: they need none.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    axum::Router::new()
        .route("/", get(|| async { file(HTML, PAGE) }))
        .route("/demo/demo.js", get(|| async { file(JAVASCRIPT, SCRIPT) }))
        .route("/demo/client/{name}", get(client_file))
}

async fn client_file(Path(name): Path<String>) -> Response {
    match CLIENT.iter().find(|(file, _)| *file == name) {
        Some((_, text)) => file(JAVASCRIPT, text),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// An embedded file. `no-cache`: a browser revalidates, so a rebuilt gateway's page is
/// never mixed with an older cached client.
fn file(content_type: &'static str, body: &'static str) -> Response {
    let headers = [(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-cache")];
    (headers, body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The relative module paths `text` imports or re-exports (`from './x.js'`).
    fn imports(text: &str) -> Vec<&str> {
        text.split("from '")
            .skip(1)
            .filter_map(|rest| rest.split('\'').next())
            .filter(|path| path.starts_with('.'))
            .collect()
    }

    #[test]
    fn every_module_the_page_imports_is_served() {
        assert_eq!(imports(SCRIPT), ["./client/index.js"]);
        for (name, text) in CLIENT {
            for path in imports(text) {
                let file = path.trim_start_matches("./");
                assert!(
                    CLIENT.iter().any(|(served, _)| *served == file),
                    "{name} imports {path}, which demo.rs does not embed: add it to CLIENT"
                );
            }
        }
    }
}
