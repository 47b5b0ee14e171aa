//! A strict `multipart/form-data` reader for upload bodies already held in memory (their
//! size is bounded by the body limit before they are read).

use crate::error::{ApiError, ApiResult, ErrorCode};

/// One part of the body.
#[derive(Debug)]
pub struct Part<'a> {
    pub name: String,
    pub filename: Option<String>,
    pub data: &'a [u8],
}

fn malformed(detail: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::MalformedMultipart, detail.into())
}

/// The boundary of a `multipart/form-data` content type; 415 for anything else.
pub fn boundary(content_type: Option<&str>) -> ApiResult<String> {
    let ct = content_type.unwrap_or_default();
    let mut parts = ct.split(';').map(str::trim);
    if !parts
        .next()
        .is_some_and(|m| m.eq_ignore_ascii_case("multipart/form-data"))
    {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "uploads are multipart/form-data with the parts `component` and `manifest`",
        ));
    }
    for p in parts {
        if let Some((k, v)) = p.split_once('=')
            && k.trim().eq_ignore_ascii_case("boundary")
        {
            let b = v.trim().trim_matches('"');
            if (1..=70).contains(&b.len()) {
                return Ok(b.to_string());
            }
        }
    }
    Err(malformed("the content type has no valid boundary"))
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if from > hay.len() {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// A parameter of a `Content-Disposition` header (`name="x"`).
fn param(header: &str, key: &str) -> Option<String> {
    header.split(';').map(str::trim).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(key)
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

/// Splits the body into its parts.
pub fn parse<'a>(body: &'a [u8], boundary: &str) -> ApiResult<Vec<Part<'a>>> {
    let delim = format!("--{boundary}");
    let delim = delim.as_bytes();
    let mut pos = find(body, delim, 0).ok_or_else(|| malformed("no part starts"))? + delim.len();
    let mut parts = Vec::new();
    loop {
        if body[pos..].starts_with(b"--") {
            return Ok(parts);
        }
        if !body[pos..].starts_with(b"\r\n") {
            return Err(malformed("a boundary is not followed by a line break"));
        }
        pos += 2;
        let head_end =
            find(body, b"\r\n\r\n", pos).ok_or_else(|| malformed("a part has no header end"))?;
        let head = std::str::from_utf8(&body[pos..head_end])
            .map_err(|_| malformed("part headers are not UTF-8"))?;
        let mut name = None;
        let mut filename = None;
        for line in head.split("\r\n") {
            let Some((k, v)) = line.split_once(':') else {
                return Err(malformed("a part header has no colon"));
            };
            if k.trim().eq_ignore_ascii_case("content-disposition") {
                name = param(v, "name");
                filename = param(v, "filename");
            }
        }
        let name = name.ok_or_else(|| malformed("a part has no name"))?;
        let data_start = head_end + 4;
        let mut end_delim = b"\r\n".to_vec();
        end_delim.extend_from_slice(delim);
        let data_end =
            find(body, &end_delim, data_start).ok_or_else(|| malformed("a part does not end"))?;
        parts.push(Part {
            name,
            filename,
            data: &body[data_start..data_end],
        });
        if parts.len() > 10 {
            return Err(malformed("too many parts"));
        }
        pos = data_end + end_delim.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_split_and_garbage_refused() {
        let body = b"--XX\r\nContent-Disposition: form-data; name=\"manifest\"\r\n\r\n{\"a\":1}\r\n--XX\r\nContent-Disposition: form-data; name=\"component\"; filename=\"p.wasm\"\r\nContent-Type: application/wasm\r\n\r\n\0asm\r\n\x01\r\n--XX--\r\n";
        let b = boundary(Some("multipart/form-data; boundary=XX")).unwrap();
        let parts = parse(body, &b).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name, "manifest");
        assert_eq!(parts[0].data, b"{\"a\":1}");
        assert_eq!(parts[1].filename.as_deref(), Some("p.wasm"));
        assert_eq!(parts[1].data, b"\0asm\r\n\x01");
        assert_eq!(
            boundary(Some("application/json")).unwrap_err().code,
            ErrorCode::UnsupportedMediaType
        );
        assert_eq!(
            boundary(Some("multipart/form-data")).unwrap_err().code,
            ErrorCode::MalformedMultipart
        );
        for bad in [
            &b"nothing"[..],
            b"--XX\r\nno colon\r\n\r\nx\r\n--XX--",
            b"--XX\r\nContent-Disposition: form-data; name=a\r\n\r\nunterminated",
        ] {
            assert_eq!(
                parse(bad, "XX").unwrap_err().code,
                ErrorCode::MalformedMultipart
            );
        }
    }
}
