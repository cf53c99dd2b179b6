//! Client tokens for tests, signed with the test keys in `tests/keys/`.

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};

pub const SECRET: &str = "test-secret-0123456789abcdef-0123456789";
pub const API_KEY: &str = "test-api-key";

pub fn key_path(name: &str) -> String {
    format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims for `sub`, valid for a minute from now, plus `extra` fields.
pub fn claims(sub: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut claims = serde_json::json!({"sub": sub, "exp": now() + 60, "iat": now()});
    if let serde_json::Value::Object(extra) = extra {
        claims.as_object_mut().unwrap().extend(extra);
    }
    claims
}

/// Seconds from now, for `exp` and `nbf`.
pub fn at(offset: i64) -> i64 {
    now() + offset
}

pub fn hs256(claims: &serde_json::Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

pub fn rs256(claims: &serde_json::Value) -> String {
    let pem = std::fs::read(key_path("rsa-private.pem")).unwrap();
    encode(
        &Header::new(Algorithm::RS256),
        claims,
        &EncodingKey::from_rsa_pem(&pem).unwrap(),
    )
    .unwrap()
}

pub fn es256(claims: &serde_json::Value) -> String {
    let pem = std::fs::read(key_path("ec-private.pem")).unwrap();
    encode(
        &Header::new(Algorithm::ES256),
        claims,
        &EncodingKey::from_ec_pem(&pem).unwrap(),
    )
    .unwrap()
}

/// An HS256 token whose "secret" is the RSA public key file: the classic algorithm
/// confusion attack on a verifier that takes the algorithm from the token.
pub fn confused(claims: &serde_json::Value) -> String {
    let public = std::fs::read(key_path("rsa-public.pem")).unwrap();
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(&public),
    )
    .unwrap()
}

/// An unsigned token (`alg: none`).
pub fn unsigned(claims: &serde_json::Value) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap());
    format!("{header}.{body}.")
}
