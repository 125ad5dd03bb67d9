//! `POST /v1/apps/{app}/images?tag=T`: upload an image archive (`docker save` or an OCI
//! layout tar, plain or gzipped) into the host's image store, for machines of that app.
//! Hangar's own call (the reference pushes to its registry instead): the image is stored as
//! `registry.hangar.internal/<app>:<tag>`, which machine configs of the app's org then name.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::StatusCode;
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::apps::visible_app;
use super::machines::{first, query_pairs};
use crate::auth::Caller;
use crate::{ApiError, ApiState};

/// Registry host of uploaded images (never contacted: the images are in the host's store).
pub const UPLOAD_REGISTRY: &str = "registry.hangar.internal";

/// Chunks buffered between the connection and the importer.
const PIPE_CHUNKS: usize = 8;

/// Valid Docker tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// The request body as a blocking reader fed by the connection (bounded channel).
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    buf: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.buf.is_empty() {
            // Only ever read on a blocking thread (the host imports in spawn_blocking).
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.buf = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf.split_to(n));
        Ok(n)
    }
}

pub(crate) async fn upload(
    State(s): State<ApiState>,
    c: Caller,
    Path(app): Path<String>,
    RawQuery(raw): RawQuery,
    request: Request,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let a = visible_app(&s, &c, &app)?;
    let q = query_pairs(raw.as_deref());
    let tag = first(&q, "tag").unwrap_or("latest");
    if !valid_tag(tag) {
        return Err(ApiError::bad_request(format!(
            "tag {tag:?} is not a valid image tag ([A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})"
        )));
    }
    let host = s.host.clone().ok_or_else(|| {
        ApiError::not_implemented("image upload on a server without a host agent")
    })?;
    let reference = format!("{UPLOAD_REGISTRY}/{}:{tag}", a.name);
    let limit = s.config.max_image_bytes;
    let (tx, rx) = tokio::sync::mpsc::channel(PIPE_CHUNKS);
    let too_large = Arc::new(AtomicBool::new(false));
    let over = too_large.clone();
    let mut body = request.into_body().into_data_stream();
    let pump = async move {
        let mut total: u64 = 0;
        while let Some(chunk) = body.next().await {
            let item = match chunk {
                Ok(b) => {
                    total += b.len() as u64;
                    if total > limit {
                        over.store(true, Ordering::Release);
                        Err(std::io::Error::other("upload larger than the limit"))
                    } else {
                        Ok(b)
                    }
                }
                Err(e) => Err(std::io::Error::other(format!("reading the upload: {e}"))),
            };
            let stop = item.is_err();
            if tx.send(item).await.is_err() || stop {
                break;
            }
        }
    };
    let reader = Box::new(ChannelReader {
        rx,
        buf: Bytes::new(),
    });
    let (imported, ()) = tokio::join!(host.import_image(&reference, reader), pump);
    if too_large.load(Ordering::Acquire) {
        return Err(ApiError::too_large(
            usize::try_from(limit).unwrap_or(usize::MAX),
        ));
    }
    let imported = imported?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "ref": imported.reference,
            "digest": imported.digest,
            "size": imported.size,
        })),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        for ok in [
            "latest",
            "v1.2.3",
            "_x",
            "deployment-01HZ",
            &"a".repeat(128),
        ] {
            assert!(valid_tag(ok), "{ok}");
        }
        for bad in ["", "-x", ".x", "a/b", "a:b", "a b", "ä", &"a".repeat(129)] {
            assert!(!valid_tag(bad), "{bad}");
        }
    }
}
