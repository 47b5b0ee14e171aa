//! Avatars: an uploaded picture becomes square WebP variants (64 and 256 px) stored with the
//! user; served with an ETag.
//!
//! Safety: the upload is checked and decoded by [`crate::picture`] (sniffed type, size and
//! pixel limits before decoding, bounded allocation) on a blocking thread, and only the
//! resized variants are kept. Never serves another tenant's avatar: rows live in the
//! tenant's schema.

use serde_json::json;

use crate::audit::{self, Actor, Change};
use crate::db::TenantDb;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::ids::UserId;

/// The largest upload accepted.
pub const MAX_BYTES: usize = crate::picture::MAX_BYTES;
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

/// Checks and resizes an upload (CPU-bound: call it on a blocking thread).
pub fn process(bytes: &[u8]) -> ApiResult<Variants> {
    let decoded = crate::picture::decode(bytes, "an avatar")?;
    Ok(Variants {
        small: crate::picture::webp_square(&decoded.image, SIZES[0])?,
        large: crate::picture::webp_square(&decoded.image, SIZES[1])?,
        etag: decoded.etag,
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
    use image::{DynamicImage, ImageFormat};
    use std::io::Cursor;

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
