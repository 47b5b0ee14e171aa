//! Uploaded pictures (avatars, logos): the one place an untrusted image is decoded.
//!
//! Safety: the type is sniffed from the bytes (PNG, JPEG or WebP; a name or declared type is
//! ignored), the size is capped before anything is decoded, the header's dimensions are
//! checked against the pixel limits before the pixels are, and the decoder runs under an
//! allocation limit — a decompression bomb is refused from its header and can never allocate
//! more than the limit. Callers keep only re-encoded renditions, never the upload (metadata
//! such as EXIF location does not survive). CPU-bound: call on a blocking thread. Never
//! stores anything.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, ImageReader, Limits, imageops::FilterType};
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult, ErrorCode};

/// The largest upload accepted.
pub const MAX_BYTES: usize = 5 * 1024 * 1024;
/// The largest side, and the most pixels, of an accepted picture.
pub const MAX_SIDE: u32 = 4096;
pub const MAX_PIXELS: u64 = 16 * 1024 * 1024;
/// The most memory the decoder may allocate.
const MAX_ALLOC: u64 = 128 * 1024 * 1024;

/// A decoded upload and the hex digest of its bytes (an ETag base).
pub struct Decoded {
    pub image: DynamicImage,
    pub etag: String,
}

fn invalid(detail: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidImage, detail.into())
}

/// Checks and decodes `bytes`; `what` names the picture in problems ("an avatar").
pub fn decode(bytes: &[u8], what: &str) -> ApiResult<Decoded> {
    if bytes.len() > MAX_BYTES {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("{what} may be at most {MAX_BYTES} bytes"),
        ));
    }
    let format = match image::guess_format(bytes) {
        Ok(f @ (ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::WebP)) => f,
        _ => {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                format!(
                    "{what} must be a PNG, JPEG or WebP image (judged by its bytes, not its name)"
                ),
            ));
        }
    };
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    let reader = || {
        let mut r = ImageReader::with_format(Cursor::new(bytes), format);
        r.limits(limits.clone());
        r
    };
    let too_large = || {
        ApiError::new(
            ErrorCode::ImageTooLarge,
            format!("{what} may be at most {MAX_SIDE}×{MAX_SIDE} and {MAX_PIXELS} pixels"),
        )
    };
    let (w, h) = reader().into_dimensions().map_err(|e| match e {
        image::ImageError::Limits(_) => too_large(),
        other => invalid(format!("the {format:?} header cannot be read: {other}")),
    })?;
    if w == 0 || h == 0 {
        return Err(invalid("the image is empty"));
    }
    if w > MAX_SIDE || h > MAX_SIDE || u64::from(w) * u64::from(h) > MAX_PIXELS {
        return Err(too_large());
    }
    let image = reader().decode().map_err(|e| match e {
        image::ImageError::Limits(_) => too_large(),
        other => invalid(format!("the {format:?} image cannot be decoded: {other}")),
    })?;
    Ok(Decoded {
        image,
        etag: hex::encode(&Sha256::digest(bytes)[..16]),
    })
}

fn encode_webp(img: DynamicImage) -> ApiResult<Vec<u8>> {
    let rgba = DynamicImage::ImageRgba8(img.to_rgba8());
    let mut out = Vec::new();
    rgba.write_with_encoder(image::codecs::webp::WebPEncoder::new_lossless(&mut out))
        .map_err(ApiError::internal)?;
    Ok(out)
}

/// A square `side`×`side` WebP cropped to fill.
pub fn webp_square(img: &DynamicImage, side: u32) -> ApiResult<Vec<u8>> {
    encode_webp(img.resize_to_fill(side, side, FilterType::Lanczos3))
}

/// A WebP that fits within `max_side` on both sides, aspect ratio kept (never enlarged).
pub fn webp_fit(img: &DynamicImage, max_side: u32) -> ApiResult<Vec<u8>> {
    if img.width() <= max_side && img.height() <= max_side {
        return encode_webp(img.clone());
    }
    encode_webp(img.resize(max_side, max_side, FilterType::Lanczos3))
}
