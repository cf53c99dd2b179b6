//! `mrc token`: mints a client token (JWT) the gateways accept, with the crate they
//! verify with: HS256 from the shared secret (`--secret`, or the gateways'
//! `MRC_GATEWAY_JWT_SECRET`), RS256 or ES256 from a PEM private key (`--key`; the
//! gateways hold the public half in `--jwt-public-key`). For development and for backends
//! that issue tokens from a script; an app's login server would mint its own.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// HS256 shared secret (the gateways' --jwt-secret).
    #[arg(
        long,
        env = "MRC_GATEWAY_JWT_SECRET",
        hide_env_values = true,
        required_unless_present = "key",
        conflicts_with = "key"
    )]
    secret: Option<String>,
    /// PEM private key: RSA signs RS256, EC P-256 signs ES256.
    #[arg(long)]
    key: Option<PathBuf>,
    /// The user the token logs in as.
    #[arg(long)]
    sub: String,
    /// How long the token is valid: seconds, or with a unit (90s, 15m, 1h, 7d).
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    ttl: Duration,
    /// Space-separated scopes (`mrc:send` lets it use the HTTP send API).
    #[arg(long)]
    scope: Option<String>,
    /// `iss`, for gateways with --jwt-issuer.
    #[arg(long)]
    iss: Option<String>,
    /// `aud`, for gateways with --jwt-audience.
    #[arg(long)]
    aud: Option<String>,
}

/// What the gateways' --jwt-secret must be at least.
const MIN_SECRET_BYTES: usize = 32;

/// Prints the token on stdout.
pub fn run(args: Args) -> anyhow::Result<u8> {
    if args.sub.is_empty() || args.sub.chars().any(char::is_control) {
        bail!("--sub is not a valid user id (PROTOCOL.md 1)");
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let mut claims = serde_json::json!({
        "sub": args.sub,
        "iat": now,
        "exp": now + args.ttl.as_secs(),
    });
    for (name, value) in [
        ("scope", &args.scope),
        ("iss", &args.iss),
        ("aud", &args.aud),
    ] {
        if let Some(value) = value {
            claims[name] = value.as_str().into();
        }
    }
    let (algorithm, key) = match (&args.secret, &args.key) {
        (Some(secret), _) if secret.len() < MIN_SECRET_BYTES => {
            bail!("the gateways take secrets of at least {MIN_SECRET_BYTES} bytes")
        }
        (Some(secret), _) => (
            Algorithm::HS256,
            EncodingKey::from_secret(secret.as_bytes()),
        ),
        (None, Some(path)) => private_key(path)?,
        (None, None) => bail!("give --secret or --key"),
    };
    let token = jsonwebtoken::encode(&Header::new(algorithm), &claims, &key)?;
    println!("{token}");
    Ok(0)
}

/// The signing key in `path` and the algorithm it signs with.
fn private_key(path: &PathBuf) -> anyhow::Result<(Algorithm, EncodingKey)> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if let Ok(key) = EncodingKey::from_rsa_pem(&pem) {
        return Ok((Algorithm::RS256, key));
    }
    let key = EncodingKey::from_ec_pem(&pem)
        .with_context(|| format!("{} is neither an RSA nor an EC private key", path.display()))?;
    Ok((Algorithm::ES256, key))
}

/// `90`, `90s`, `15m`, `1h`, `7d`.
fn parse_ttl(text: &str) -> Result<Duration, String> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected e.g. 90s, 15m, 1h, 7d"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit is s, m, h or d")),
    };
    Ok(Duration::from_secs(n * seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_take_a_unit() {
        assert_eq!(parse_ttl("90").unwrap().as_secs(), 90);
        assert_eq!(parse_ttl("15m").unwrap().as_secs(), 900);
        assert_eq!(parse_ttl("7d").unwrap().as_secs(), 604_800);
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("h").is_err());
    }
}
