//! What a gateway's HTTP listener shows the web: TLS, the origins whose pages may open a
//! WebSocket, and CORS for the HTTP API. Browsers attach `Origin` to every WebSocket
//! upgrade and cross-origin request; other clients do not, so these checks only bind
//! pages (a page on another site cannot log a user in with their cookie-less token
//! anyway, but it can with one it tricked them into typing, and CORS decides which
//! sites may call `/v1` from a page at all).

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::Args;

#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Web")]
pub struct Web {
    /// PEM certificate chain: the HTTP listener serves HTTPS and WSS (with --tls-key).
    #[arg(long = "tls-cert", env = "MRC_GATEWAY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long = "tls-key", env = "MRC_GATEWAY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Origins whose pages may open `/ws`, comma-separated (`https://chat.example.com`),
    /// or `*`. An upgrade from another origin gets 403 `forbidden`; one without `Origin`
    /// (not a browser) is always let through. Default: any origin.
    #[arg(
        long = "allowed-origins",
        env = "MRC_GATEWAY_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,
    /// Origins whose pages may call the HTTP API (`/v1`, CORS), comma-separated, or `*`.
    /// Preflights are answered for them. Default: none (no CORS headers).
    #[arg(
        long = "cors-origins",
        env = "MRC_GATEWAY_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,
}

impl Web {
    pub fn validate(&self) -> anyhow::Result<()> {
        for (flag, origins) in [
            ("--allowed-origins", &self.allowed_origins),
            ("--cors-origins", &self.cors_origins),
        ] {
            for origin in origins {
                valid_origin(origin).with_context(|| format!("{flag} {origin:?}"))?;
            }
        }
        for path in [&self.tls_cert, &self.tls_key].into_iter().flatten() {
            std::fs::metadata(path).with_context(|| format!("TLS file {}", path.display()))?;
        }
        Ok(())
    }
}

/// `*`, or what a browser sends as `Origin`: `scheme://host[:port]`, nothing after.
fn valid_origin(origin: &str) -> anyhow::Result<()> {
    if origin == "*" {
        return Ok(());
    }
    let Some((scheme, rest)) = origin.split_once("://") else {
        bail!("an origin is scheme://host[:port], e.g. https://chat.example.com");
    };
    if !matches!(scheme, "http" | "https") {
        bail!("the scheme must be http or https");
    }
    if rest.is_empty() || rest.contains(['/', '?', '#', ' ']) {
        bail!("no path, query or spaces after the host (browsers send none)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_what_browsers_send() {
        for ok in ["*", "https://chat.example.com", "http://127.0.0.1:8080"] {
            assert!(valid_origin(ok).is_ok(), "{ok}");
        }
        for bad in [
            "chat.example.com",
            "https://a.example/",
            "ftp://x",
            "https://",
        ] {
            assert!(valid_origin(bad).is_err(), "{bad}");
        }
    }
}
