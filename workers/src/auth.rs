//! Connection auth: an optional HS256 JWT in the handshake's `auth.token`, guests when allowed.

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Who a socket belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Stable id (JWT `sub`, or `guest-<socket id>`); the socket joins room `user:<id>`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Connected without a token.
    pub guest: bool,
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    name: Option<String>,
}

/// Why a connection is refused (sent to the client as `connect_error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token and guests are not allowed.
    #[error("authentication required: pass auth.token")]
    Required,
    /// The token is not valid (bad signature, expired, no `exp`, malformed). The client is
    /// told no more than that; the cause goes to the worker's debug log.
    #[error("invalid token")]
    Invalid,
}

/// Clock skew tolerated on `exp` (`RTSUP_JWT_LEEWAY` seconds overrides it).
pub const DEFAULT_JWT_LEEWAY_SECS: u64 = 60;

/// Decide who connects, from the handshake `auth` payload. Tokens must carry `sub` and `exp`.
pub fn authenticate(
    auth: Option<&Value>,
    secret: Option<&str>,
    allow_guests: bool,
    socket_id: &str,
) -> Result<User, AuthError> {
    authenticate_with_leeway(
        auth,
        secret,
        allow_guests,
        socket_id,
        DEFAULT_JWT_LEEWAY_SECS,
    )
}

/// [`authenticate`] with a chosen clock-skew leeway on `exp`.
pub fn authenticate_with_leeway(
    auth: Option<&Value>,
    secret: Option<&str>,
    allow_guests: bool,
    socket_id: &str,
    leeway_secs: u64,
) -> Result<User, AuthError> {
    let token = auth.and_then(|a| a.get("token")).and_then(Value::as_str);
    match (token, secret) {
        (Some(token), Some(secret)) => {
            let mut validation = Validation::new(Algorithm::HS256);
            validation.required_spec_claims.clear();
            validation.required_spec_claims.insert("sub".into());
            validation.required_spec_claims.insert("exp".into());
            validation.leeway = leeway_secs;
            let data = decode::<Claims>(
                token,
                &DecodingKey::from_secret(secret.as_bytes()),
                &validation,
            )
            .map_err(|e| {
                tracing::debug!(error = %e, "token refused");
                AuthError::Invalid
            })?;
            let name = data.claims.name.unwrap_or_else(|| data.claims.sub.clone());
            Ok(User {
                id: data.claims.sub,
                name,
                guest: false,
            })
        }
        _ if allow_guests => {
            let name = auth
                .and_then(|a| a.get("name"))
                .and_then(Value::as_str)
                .map(|n| {
                    n.chars()
                        .filter(|c| !c.is_control())
                        .take(40)
                        .collect::<String>()
                })
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| format!("guest-{}", &socket_id[..socket_id.len().min(6)]));
            Ok(User {
                id: format!("guest-{socket_id}"),
                name,
                guest: true,
            })
        }
        (Some(_), None) | (None, _) => Err(AuthError::Required),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    fn token(secret: &str, claims: Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("encode")
    }

    #[test]
    fn valid_token_names_the_user() {
        let t = token(
            "s3cret",
            json!({"sub": "42", "name": "Ada", "exp": 4_000_000_000u64}),
        );
        let u = authenticate(Some(&json!({"token": t})), Some("s3cret"), false, "abc").expect("ok");
        assert_eq!(
            u,
            User {
                id: "42".into(),
                name: "Ada".into(),
                guest: false
            }
        );
    }

    #[test]
    fn bad_tokens_and_missing_tokens() {
        let t = token("other", json!({"sub": "42", "exp": 4_000_000_000u64}));
        assert_eq!(
            authenticate(Some(&json!({"token": t})), Some("s3cret"), true, "a"),
            Err(AuthError::Invalid)
        );
        let expired = token("s3cret", json!({"sub": "42", "exp": 1}));
        assert_eq!(
            authenticate(Some(&json!({"token": expired})), Some("s3cret"), true, "a"),
            Err(AuthError::Invalid)
        );
        // A token that never expires is refused, and the client learns nothing more.
        let forever = token("s3cret", json!({"sub": "42"}));
        let refused = authenticate(Some(&json!({"token": forever})), Some("s3cret"), true, "a");
        assert_eq!(refused, Err(AuthError::Invalid));
        assert_eq!(AuthError::Invalid.to_string(), "invalid token");
        assert_eq!(
            authenticate(None, Some("s3cret"), false, "a"),
            Err(AuthError::Required)
        );
        let g = authenticate(
            Some(&json!({"name": "Bob"})),
            Some("s3cret"),
            true,
            "sockid",
        )
        .expect("guest");
        assert_eq!((g.name.as_str(), g.guest), ("Bob", true));
    }
}
