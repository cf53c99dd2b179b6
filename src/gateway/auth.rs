//! Who a client is: JWT verification (HS256 with a shared secret, RS256 or ES256 with a
//! public key), the opt-in insecure dev mode, and the HTTP API key.
//!
//! The algorithm is fixed by the configured key, never taken from the token, so `alg:
//! none` and algorithm confusion (an HS256 token "signed" with the RSA public key) are
//! refused. `exp` is required; `exp` and `nbf` are checked with a small leeway.

use std::sync::{Arc, RwLock};

use anyhow::{bail, Context as _};
use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};

use crate::config;
use crate::ident::{DeviceClass, UserId};
use crate::protocol::client::{FrameError, TokenClaims};
use crate::protocol::code::ErrorCode;
use crate::sync;

/// The scope that lets a token use the HTTP send API.
pub(crate) const SEND_SCOPE: &str = "mrc:send";

/// A declared device class, checked.
pub(crate) fn device_class(device: &str) -> Result<DeviceClass, FrameError> {
    DeviceClass::new(device).map_err(|e| FrameError::new(ErrorCode::BadId, format!("device: {e}")))
}

/// A verified client.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub(crate) user: UserId,
    /// The token carried the `mrc:send` scope.
    pub(crate) may_send_http: bool,
    /// The device class the client declared, if any.
    pub(crate) device: Option<DeviceClass>,
}

/// How clients and backends prove who they are. The keys can be replaced while the
/// gateway runs ([`Auth::reload`], on SIGHUP): the next login or API request uses them.
pub(crate) struct Auth {
    keys: RwLock<Arc<Keys>>,
    max_id_bytes: usize,
}

/// What `--jwt-*`, `--insecure-dev-auth` and `--api-key` configure.
struct Keys {
    jwt: Option<(DecodingKey, Validation)>,
    dev: bool,
    api_key: Option<String>,
}

fn unauthorized(message: impl Into<String>) -> FrameError {
    FrameError::new(ErrorCode::Unauthorized, message)
}

impl Auth {
    pub(crate) fn from_config(auth: &config::Auth, max_id_bytes: usize) -> anyhow::Result<Self> {
        if auth.insecure_dev_auth {
            tracing::warn!("INSECURE: --insecure-dev-auth lets any client log in as any user; never use it in production");
        }
        Ok(Auth {
            keys: RwLock::new(Arc::new(Keys::from_config(auth)?)),
            max_id_bytes,
        })
    }

    /// Takes the keys of a reloaded configuration; sessions already logged in stay.
    pub(crate) fn reload(&self, auth: &config::Auth) -> anyhow::Result<()> {
        let keys = Keys::from_config(auth)?;
        *sync::write(&self.keys) = Arc::new(keys);
        Ok(())
    }

    fn keys(&self) -> Arc<Keys> {
        sync::read(&self.keys).clone()
    }
}

impl Keys {
    fn from_config(auth: &config::Auth) -> anyhow::Result<Self> {
        let jwt = match (&auth.jwt_secret, &auth.jwt_public_key) {
            (Some(secret), None) => Some((
                DecodingKey::from_secret(secret.as_bytes()),
                Algorithm::HS256,
            )),
            (None, Some(path)) => {
                let pem =
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
                    Some((key, Algorithm::RS256))
                } else if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
                    Some((key, Algorithm::ES256))
                } else {
                    bail!("{} is not a PEM RSA or EC public key", path.display());
                }
            }
            (None, None) => None,
            (Some(_), Some(_)) => bail!("choose --jwt-secret or --jwt-public-key, not both"),
        };
        let jwt = jwt.map(|(key, algorithm)| {
            let mut validation = Validation::new(algorithm);
            validation.validate_nbf = true;
            validation.leeway = auth.jwt_leeway_secs;
            let mut required = vec!["exp", "sub"];
            if let Some(iss) = &auth.jwt_issuer {
                validation.set_issuer(&[iss]);
                required.push("iss");
            }
            match &auth.jwt_audience {
                Some(aud) => {
                    validation.set_audience(&[aud]);
                    required.push("aud");
                }
                None => validation.validate_aud = false,
            }
            validation.set_required_spec_claims(&required);
            (key, validation)
        });
        Ok(Keys {
            jwt,
            dev: auth.insecure_dev_auth,
            api_key: auth.api_key.clone(),
        })
    }
}

impl Auth {
    /// Checks a client token.
    pub(crate) fn verify(&self, token: &str) -> Result<Identity, FrameError> {
        let keys = self.keys();
        let Some((key, validation)) = &keys.jwt else {
            return Err(unauthorized("this gateway does not accept tokens"));
        };
        let data = decode::<TokenClaims>(token, key, validation)
            .map_err(|e| unauthorized(format!("token refused: {e}")))?;
        let user = self.user(&data.claims.sub)?;
        let may_send_http = data
            .claims
            .scope
            .as_deref()
            .unwrap_or("")
            .split(' ')
            .any(|s| s == SEND_SCOPE);
        Ok(Identity {
            user,
            may_send_http,
            device: None,
        })
    }

    /// A `login` frame: a token (checked), or a bare user id in insecure dev mode. When
    /// both are given they must agree. `device` is the declared device class.
    pub(crate) fn login(
        &self,
        user: Option<&str>,
        token: Option<&str>,
        device: Option<&str>,
    ) -> Result<Identity, FrameError> {
        let mut identity = self.credentials(user, token)?;
        identity.device = device.map(device_class).transpose()?;
        Ok(identity)
    }

    fn credentials(&self, user: Option<&str>, token: Option<&str>) -> Result<Identity, FrameError> {
        match (token, user) {
            (Some(token), user) => {
                let identity = self.verify(token)?;
                if user.is_some_and(|u| u != identity.user.as_str()) {
                    return Err(unauthorized("`user` differs from the token's subject"));
                }
                Ok(identity)
            }
            (None, Some(user)) if self.keys().dev => Ok(Identity {
                user: self.user(user)?,
                may_send_http: false,
                device: None,
            }),
            (None, Some(_)) => Err(unauthorized("this gateway requires a token")),
            (None, None) => Err(unauthorized("no credentials")),
        }
    }

    /// A user id within the configured length.
    pub(crate) fn user(&self, id: &str) -> Result<UserId, FrameError> {
        if id.len() > self.max_id_bytes {
            return Err(FrameError::new(
                ErrorCode::BadId,
                format!("user id longer than {} bytes", self.max_id_bytes),
            ));
        }
        UserId::new(id).map_err(|e| FrameError::new(ErrorCode::BadId, format!("user id: {e}")))
    }

    /// Whether `presented` is the configured API key (compared in constant time).
    pub(crate) fn is_api_key(&self, presented: &str) -> bool {
        let keys = self.keys();
        let Some(key) = &keys.api_key else {
            return false;
        };
        let (a, b) = (key.as_bytes(), presented.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn config() -> config::Auth {
        config::Auth {
            insecure_dev_auth: false,
            jwt_secret: Some(SECRET.into()),
            jwt_public_key: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_leeway_secs: 0,
            api_key: Some("k3y".into()),
        }
    }

    fn token(claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn now() -> u64 {
        crate::protocol::now_ms() / 1000
    }

    #[test]
    fn valid_tokens_name_the_user_and_scopes() {
        let auth = Auth::from_config(&config(), 256).unwrap();
        let id = auth
            .verify(&token(
                serde_json::json!({"sub": "张伟", "exp": now() + 60}),
            ))
            .unwrap();
        assert_eq!(id.user.as_str(), "张伟");
        assert!(!id.may_send_http);
        let t = token(serde_json::json!({"sub": "a", "exp": now() + 60, "scope": "read mrc:send"}));
        assert!(auth.verify(&t).unwrap().may_send_http);
    }

    #[test]
    fn expired_early_unsigned_and_forged_tokens_are_refused() {
        let auth = Auth::from_config(&config(), 256).unwrap();
        let refused = |t: &str| auth.verify(t).unwrap_err().code;
        assert_eq!(
            refused(&token(serde_json::json!({"sub": "a", "exp": now() - 60}))),
            ErrorCode::Unauthorized
        );
        assert_eq!(
            refused(&token(
                serde_json::json!({"sub": "a", "exp": now() + 600, "nbf": now() + 300})
            )),
            ErrorCode::Unauthorized
        );
        assert_eq!(
            refused(&token(serde_json::json!({"sub": "a"}))),
            ErrorCode::Unauthorized
        );
        // alg "none": header {"alg":"none","typ":"JWT"}, no signature.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhIiwiZXhwIjo5OTk5OTk5OTk5fQ.";
        assert_eq!(refused(none), ErrorCode::Unauthorized);
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "a", "exp": now() + 60}),
            &EncodingKey::from_secret(b"another secret, also 32 bytes long"),
        )
        .unwrap();
        assert_eq!(refused(&forged), ErrorCode::Unauthorized);
        assert_eq!(refused("garbage"), ErrorCode::Unauthorized);
    }

    #[test]
    fn bare_user_logins_need_dev_mode() {
        let auth = Auth::from_config(&config(), 256).unwrap();
        assert_eq!(
            auth.login(Some("alice"), None, None).unwrap_err().code,
            ErrorCode::Unauthorized
        );
        let dev = Auth::from_config(
            &config::Auth {
                insecure_dev_auth: true,
                ..config()
            },
            8,
        )
        .unwrap();
        assert_eq!(
            dev.login(Some("alice"), None, None).unwrap().user.as_str(),
            "alice"
        );
        assert_eq!(
            dev.login(Some("much-too-long"), None, None)
                .unwrap_err()
                .code,
            ErrorCode::BadId
        );
        let t = token(serde_json::json!({"sub": "bob", "exp": now() + 60}));
        assert_eq!(
            dev.login(Some("alice"), Some(&t), None).unwrap_err().code,
            ErrorCode::Unauthorized
        );
        assert_eq!(
            dev.login(Some("bob"), Some(&t), Some("mobile"))
                .unwrap()
                .user
                .as_str(),
            "bob"
        );
    }

    #[test]
    fn api_key_must_match_exactly() {
        let auth = Auth::from_config(&config(), 256).unwrap();
        assert!(auth.is_api_key("k3y"));
        assert!(!auth.is_api_key("k3"));
        assert!(!auth.is_api_key("k3y "));
        let keyless = Auth::from_config(
            &config::Auth {
                api_key: None,
                ..config()
            },
            256,
        )
        .unwrap();
        assert!(!keyless.is_api_key(""));
    }
}
