//! Avatars: an uploaded picture becomes square WebP variants (64 and 256 px) stored with the
//! user; served with an ETag.
//!
//! Safety: the type is sniffed from the bytes (PNG, JPEG or WebP; the name and declared type
//! are ignored), the size is capped before anything is decoded, the header's dimensions are
//! checked against the pixel limits before the pixels are, and the decoder runs under an
//! allocation limit on a blocking thread — a decompression bomb is refused from its header
//! and can never allocate more than the limit. Only the resized variants are kept, never the
//! upload (so metadata such as EXIF location does not survive). Never serves another
//! tenant's avatar: rows live in the tenant's schema.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, ImageReader, Limits, imageops::FilterType};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::audit::{self, Actor, Change};
use crate::db::TenantDb;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::ids::UserId;

/// The largest upload accepted.
pub const MAX_BYTES: usize = 5 * 1024 * 1024;
/// The largest side, and the most pixels, of an accepted picture.
pub const MAX_SIDE: u32 = 4096;
pub const MAX_PIXELS: u64 = 16 * 1024 * 1024;
/// The most memory the decoder may allocate.
const MAX_ALLOC: u64 = 128 * 1024 * 1024;
/// The sides of the stored variants.
pub const SIZES: [u32; 2] = [64, 256];

/// The stored variants of one upload.
#[derive(Debug)]
pub struct Variants {
    /// Hex digest of the upload: the variants' ETag base.
    pub etag: String,
    pub small: Vec<u8>,
    pub large: Vec<u8>,
}

fn invalid(detail: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidImage, detail.into())
}

fn webp(img: &DynamicImage, side: u32) -> ApiResult<Vec<u8>> {
    let square = img.resize_to_fill(side, side, FilterType::Lanczos3);
    let rgba = DynamicImage::ImageRgba8(square.to_rgba8());
    let mut out = Vec::new();
    rgba.write_with_encoder(image::codecs::webp::WebPEncoder::new_lossless(&mut out))
        .map_err(ApiError::internal)?;
    Ok(out)
}

/// Checks and resizes an upload (CPU-bound: call it on a blocking thread).
pub fn process(bytes: &[u8]) -> ApiResult<Variants> {
    if bytes.len() > MAX_BYTES {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("an avatar may be at most {MAX_BYTES} bytes"),
        ));
    }
    let format = match image::guess_format(bytes) {
        Ok(f @ (ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::WebP)) => f,
        _ => {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "an avatar must be a PNG, JPEG or WebP image (judged by its bytes, not its name)",
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
            format!("an avatar may be at most {MAX_SIDE}×{MAX_SIDE} and {MAX_PIXELS} pixels"),
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
    let img = reader().decode().map_err(|e| match e {
        image::ImageError::Limits(_) => too_large(),
        other => invalid(format!("the {format:?} image cannot be decoded: {other}")),
    })?;
    Ok(Variants {
        etag: hex::encode(&Sha256::digest(bytes)[..16]),
        small: webp(&img, SIZES[0])?,
        large: webp(&img, SIZES[1])?,
    })
}

/// Stores `bytes` as `user`'s avatar; returns the ETag base.
pub async fn put(db: &TenantDb, actor: &Actor, user: UserId, bytes: Vec<u8>) -> ApiResult<String> {
    let variants = tokio::task::spawn_blocking(move || process(&bytes))
        .await
        .map_err(ApiError::internal)??;
    db.transaction(async |tx| {
        let status = super::repo::get(tx.conn(), user)
            .await?
            .map(|u| u.status)
            .ok_or_else(|| ApiError::not_found("user"))?;
        if status == "deleted" {
            return Err(ApiError::new(ErrorCode::Conflict, "the user was deleted"));
        }
        super::repo::put_avatar(
            tx.conn(),
            user,
            &variants.etag,
            &variants.small,
            &variants.large,
        )
        .await?;
        audit::record(
            tx.conn(),
            actor,
            Change {
                action: "user.avatar_updated",
                target_type: "user",
                target_id: Some(user.to_string()),
                data: json!({"etag": variants.etag, "bytes": variants.small.len() + variants.large.len()}),
            },
        )
        .await?;
        Ok::<_, ApiError>(())
    })
    .await?;
    Ok(variants.etag)
}

/// `user`'s avatar at `side` (one of [`SIZES`]): (ETag base, WebP bytes).
pub async fn get(db: &TenantDb, user: UserId, side: u32) -> ApiResult<(String, Vec<u8>)> {
    let large = side == SIZES[1];
    db.read(async |conn| Ok::<_, ApiError>(super::repo::avatar(conn, user, large).await?))
        .await?
        .ok_or_else(|| ApiError::not_found("avatar"))
}

/// Removes `user`'s avatar (404 if there is none).
pub async fn delete(db: &TenantDb, actor: &Actor, user: UserId) -> ApiResult<()> {
    db.transaction(async |tx| {
        if !super::repo::delete_avatar(tx.conn(), user).await? {
            return Err(ApiError::not_found("avatar"));
        }
        audit::record(
            tx.conn(),
            actor,
            Change {
                action: "user.avatar_removed",
                target_type: "user",
                target_id: Some(user.to_string()),
                data: json!({}),
            },
        )
        .await?;
        Ok::<_, ApiError>(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 128]));
        let mut out = Cursor::new(Vec::new());
        DynamicImage::ImageRgb8(img)
            .write_to(&mut out, ImageFormat::Png)
            .unwrap();
        out.into_inner()
    }

    #[test]
    fn pictures_become_square_webp_variants() {
        let v = process(&png(300, 120)).unwrap();
        for (bytes, side) in [(&v.small, 64), (&v.large, 256)] {
            assert_eq!(&bytes[..4], b"RIFF");
            let img = image::load_from_memory_with_format(bytes, ImageFormat::WebP).unwrap();
            assert_eq!((img.width(), img.height()), (side, side));
        }
        assert_eq!(v.etag.len(), 32);
    }

    #[test]
    fn lies_floods_and_other_formats_are_refused_by_their_bytes() {
        let gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".to_vec();
        assert_eq!(
            process(&gif).unwrap_err().code,
            ErrorCode::UnsupportedMediaType
        );
        let mut broken = png(10, 10);
        broken.truncate(60);
        assert_eq!(process(&broken).unwrap_err().code, ErrorCode::InvalidImage);
        // A header claiming 60,000 × 60,000 pixels is refused before any pixel is decoded.
        let mut flood = png(1, 1);
        flood[16..20].copy_from_slice(&60_000u32.to_be_bytes());
        flood[20..24].copy_from_slice(&60_000u32.to_be_bytes());
        let crc = crc32(&flood[12..29]);
        flood[29..33].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(process(&flood).unwrap_err().code, ErrorCode::ImageTooLarge);
        assert_eq!(
            process(&vec![0u8; MAX_BYTES + 1]).unwrap_err().code,
            ErrorCode::PayloadTooLarge
        );
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
}
