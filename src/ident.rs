//! Identities: user, gateway, center, session and message ids, and the one encoding that
//! turns a user id into a safe subject token or KV key.
//!
//! A user id is opaque UTF-8 (an email, a Chinese name, `a.b*>`), so it must never be
//! pasted raw into a subject: `.`, `*`, `>` and spaces would change where a message goes.
//! [`UserId::token`] maps every id to one token of `[A-Za-z0-9_=-]`: ids made only of
//! `[A-Za-z0-9_-]` stay as they are, every other id becomes `=` + base64url(bytes). No plain
//! id starts with `=`, so the mapping is injective and [`UserId::from_token`] inverts it.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// Longest user id, in bytes.
pub(crate) const MAX_USER_ID_BYTES: usize = 256;
/// Longest group id, in bytes.
pub(crate) const MAX_GROUP_ID_BYTES: usize = 128;
/// Longest gateway, center or session id, in bytes (they go into subjects raw).
pub(crate) const MAX_NODE_ID_BYTES: usize = 64;
/// Longest message id, in bytes.
pub(crate) const MAX_MESSAGE_ID_BYTES: usize = 128;

/// Why a string is not a valid id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("id is empty")]
    Empty,
    #[error("id is longer than {0} bytes")]
    TooLong(usize),
    #[error("id contains a control character")]
    ControlChar,
    #[error("id may only contain A-Z a-z 0-9 _ -")]
    Charset,
    #[error("token is not a valid encoding of an id")]
    BadToken,
}

/// True for the bytes that may stand raw in a subject token: `[A-Za-z0-9_-]`.
fn is_plain_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn is_plain(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_plain_byte)
}

/// Declares an id type holding validated text (each kind adds its own `new`): read as
/// `&str`, and maps keyed by it can be searched with a `&str` (an invalid id is simply
/// never found).
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            pub(crate) fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", &*self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

/// Declares an opaque id (any UTF-8 without control characters, up to `$max` bytes) that
/// reaches subjects and KV keys only through its token.
macro_rules! opaque_id {
    ($(#[$doc:meta])* $name:ident, $max:expr) => {
        id_type!($(#[$doc])* $name);

        impl $name {
            pub fn new(id: &str) -> Result<Self, IdError> {
                Self::check(id)?;
                Ok($name(Arc::from(id)))
            }

            /// Whether `id` is valid, without making one.
            pub(crate) fn check(id: &str) -> Result<(), IdError> {
                if id.is_empty() {
                    return Err(IdError::Empty);
                }
                if id.len() > $max {
                    return Err(IdError::TooLong($max));
                }
                if id.chars().any(char::is_control) {
                    return Err(IdError::ControlChar);
                }
                Ok(())
            }

            /// The subject-safe token for this id (see the module docs).
            pub fn token(&self) -> Cow<'_, str> {
                encode_token(&self.0)
            }

            /// Inverts the token; refuses anything `token` could not have produced.
            pub(crate) fn from_token(token: &str) -> Result<Self, IdError> {
                $name::new(&decode_token(token)?)
            }
        }
    };
}

fn encode_token(id: &str) -> Cow<'_, str> {
    if is_plain(id) {
        Cow::Borrowed(id)
    } else {
        let mut token = String::with_capacity(1 + id.len() * 4 / 3 + 2);
        token.push('=');
        URL_SAFE_NO_PAD.encode_string(id.as_bytes(), &mut token);
        Cow::Owned(token)
    }
}

fn decode_token(token: &str) -> Result<Cow<'_, str>, IdError> {
    match token.strip_prefix('=') {
        None if is_plain(token) => Ok(Cow::Borrowed(token)),
        None => Err(IdError::BadToken),
        Some(encoded) => {
            let bytes = URL_SAFE_NO_PAD
                .decode(encoded)
                .map_err(|_| IdError::BadToken)?;
            let id = String::from_utf8(bytes).map_err(|_| IdError::BadToken)?;
            // A plain id has exactly one spelling: the raw one.
            if is_plain(&id) {
                return Err(IdError::BadToken);
            }
            Ok(Cow::Owned(id))
        }
    }
}

opaque_id!(
    /// A validated user id: 1..=256 bytes of UTF-8 without control characters.
    UserId,
    MAX_USER_ID_BYTES
);
opaque_id!(
    /// A validated group id: 1..=128 bytes of UTF-8 without control characters.
    GroupId,
    MAX_GROUP_ID_BYTES
);

/// Declares an id that may stand raw in a subject: `[A-Za-z0-9_-]`, 1..=64 bytes.
macro_rules! node_id {
    ($(#[$doc:meta])* $name:ident) => {
        id_type!($(#[$doc])* $name);

        impl $name {
            pub fn new(id: &str) -> Result<Self, IdError> {
                if id.is_empty() {
                    return Err(IdError::Empty);
                }
                if id.len() > MAX_NODE_ID_BYTES {
                    return Err(IdError::TooLong(MAX_NODE_ID_BYTES));
                }
                if !is_plain(id) {
                    return Err(IdError::Charset);
                }
                Ok(Self(Arc::from(id)))
            }

            /// A fresh random id (a NUID: 22 alphanumerics).
            #[allow(dead_code, reason = "not every kind of id is generated")]
            pub(crate) fn generate() -> Self {
                Self(Arc::from(nuid::next().as_str()))
            }
        }
    };
}

node_id!(
    /// Names one gateway process; its deliver subject is `<prefix>.gw.<id>.deliver`.
    GatewayId
);
node_id!(
    /// Names one center process in logs, broadcasts and service stats.
    CenterId
);
node_id!(
    /// Names one client connection; the directory's fencing token.
    SessionId
);
node_id!(
    /// A device class a client declares at login (`mobile`, `desktop`, `web`...), for the
    /// `device` login policy.
    DeviceClass
);

/// A message id: chosen by the sender (1..=128 bytes, no control characters) or generated.
/// Every delivery of one message carries the same id so clients can drop duplicates.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct MessageId(Arc<str>);

impl MessageId {
    pub(crate) fn new(id: &str) -> Result<Self, IdError> {
        if id.is_empty() {
            return Err(IdError::Empty);
        }
        if id.len() > MAX_MESSAGE_ID_BYTES {
            return Err(IdError::TooLong(MAX_MESSAGE_ID_BYTES));
        }
        if id.chars().any(char::is_control) {
            return Err(IdError::ControlChar);
        }
        Ok(MessageId(Arc::from(id)))
    }

    pub(crate) fn generate() -> Self {
        MessageId(Arc::from(nuid::next().as_str()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const AWKWARD: &[&str] = &[
        "alice",
        "bob_42-x",
        "a.b",
        "*",
        ">",
        "a b",
        "alice@example.com",
        "张伟",
        "mrc.gw.x.deliver",
        "=alice",
        "=",
        "-",
        "ünïcödé",
        "a>b.*",
        "tab\u{a0}nbsp",
    ];

    #[test]
    fn token_round_trips_every_awkward_id() {
        for id in AWKWARD {
            let user = UserId::new(id).unwrap();
            let token = user.token();
            assert_eq!(
                UserId::from_token(&token).unwrap(),
                user,
                "round trip of {id:?}"
            );
        }
    }

    #[test]
    fn token_uses_only_the_safe_charset() {
        for id in AWKWARD {
            let user = UserId::new(id).unwrap();
            let token = user.token();
            assert!(!token.is_empty());
            assert!(
                token.bytes().all(|b| is_plain_byte(b) || b == b'='),
                "{id:?} gave unsafe token {token:?}"
            );
        }
    }

    #[test]
    fn plain_ids_stay_as_they_are_and_others_are_marked() {
        assert_eq!(UserId::new("alice").unwrap().token(), "alice");
        assert_eq!(UserId::new("Bob_1-2").unwrap().token(), "Bob_1-2");
        assert!(UserId::new("a.b").unwrap().token().starts_with('='));
        assert!(UserId::new("=alice").unwrap().token().starts_with('='));
    }

    #[test]
    fn token_is_injective() {
        let tokens: HashSet<String> = AWKWARD
            .iter()
            .map(|id| UserId::new(id).unwrap().token().into_owned())
            .collect();
        assert_eq!(tokens.len(), AWKWARD.len());
    }

    #[test]
    fn token_is_injective_over_generated_ids() {
        let alphabet = ['a', '.', '=', '*', '>', ' ', '张', '_', '-', 'Z'];
        let mut seen = HashSet::new();
        let mut tokens = HashSet::new();
        // Every string of length 1..=3 over the alphabet.
        let mut ids = vec![String::new()];
        for _ in 0..3 {
            let mut next = Vec::new();
            for prefix in &ids {
                for c in alphabet {
                    let mut id = prefix.clone();
                    id.push(c);
                    next.push(id);
                }
            }
            for id in &next {
                let user = UserId::new(id).unwrap();
                seen.insert(id.clone());
                let token = user.token().into_owned();
                assert_eq!(UserId::from_token(&token).unwrap(), user);
                tokens.insert(token);
            }
            ids = next;
        }
        assert_eq!(seen.len(), tokens.len());
    }

    #[test]
    fn foreign_tokens_are_refused() {
        // The plain spelling of an id is its only token.
        let aliased = format!("={}", URL_SAFE_NO_PAD.encode("alice"));
        assert_eq!(UserId::from_token(&aliased), Err(IdError::BadToken));
        assert_eq!(UserId::from_token("a.b"), Err(IdError::BadToken));
        assert_eq!(UserId::from_token("=!!"), Err(IdError::BadToken));
        assert_eq!(UserId::from_token(""), Err(IdError::BadToken));
        let not_utf8 = format!("={}", URL_SAFE_NO_PAD.encode([0xff, 0xfe]));
        assert_eq!(UserId::from_token(&not_utf8), Err(IdError::BadToken));
    }

    #[test]
    fn user_ids_are_validated() {
        assert_eq!(UserId::new(""), Err(IdError::Empty));
        assert_eq!(UserId::new("a\nb"), Err(IdError::ControlChar));
        assert_eq!(UserId::new("a\u{7f}"), Err(IdError::ControlChar));
        assert!(UserId::new(&"x".repeat(256)).is_ok());
        assert_eq!(UserId::new(&"x".repeat(257)), Err(IdError::TooLong(256)));
        // 86 three-byte characters are 258 bytes.
        assert!(UserId::new(&"张".repeat(86)).is_err());
    }

    #[test]
    fn node_ids_allow_only_the_subject_charset() {
        assert!(GatewayId::new("gw-1_a").is_ok());
        assert_eq!(GatewayId::new("gw.1"), Err(IdError::Charset));
        assert_eq!(GatewayId::new("gw*"), Err(IdError::Charset));
        assert_eq!(CenterId::new(""), Err(IdError::Empty));
        assert!(GatewayId::new(GatewayId::generate().as_str()).is_ok());
    }
}
