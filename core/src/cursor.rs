//! The opaque pagination cursor: a list position (any serialisable key) as URL-safe base64
//! of its JSON, and back.
//!
//! Foundation: services build cursors for the pages they return and extractors read them;
//! neither needs the other. A cursor this API did not issue is `invalid-cursor`, never a panic.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ErrorCode};

/// Encodes a position in a list as an opaque string.
pub fn encode_cursor<K: Serialize>(key: &K) -> String {
    use base64::Engine;
    let json = serde_json::to_vec(key).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

/// Decodes a cursor made by [`encode_cursor`]; anything else is `invalid-cursor`.
pub fn decode_cursor<K: DeserializeOwned>(raw: &str) -> Result<K, ApiError> {
    use base64::Engine;
    let invalid = || {
        ApiError::new(
            ErrorCode::InvalidCursor,
            "the cursor is not one this API issued",
        )
    };
    if raw.len() > 512 {
        return Err(invalid());
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw)
        .map_err(|_| invalid())?;
    serde_json::from_slice(&bytes).map_err(|_| invalid())
}
