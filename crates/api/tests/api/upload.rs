//! Image uploads at the API edge: limits, tags, scoping (the host side is a fake that reads
//! the archive to its end; the real import is tested end to end in hangar-testkit).

use std::io::Read;
use std::sync::Arc;

use hangar_api::ApiConfig;
use hangar_domain::{
    ExecCommand, ExecResult, HostError, HostFuture, ImportedImage, Logs, MachineHost,
};

use super::{ACME, OTHER, create_app, create_machine, machine_body, server_full};
use crate::client::Client;

/// Reads the whole archive; "bad" archives (starting with `junk`) are refused.
struct ReadingHost;

impl MachineHost for ReadingHost {
    fn exec<'a>(&'a self, _: &'a str, _: ExecCommand) -> HostFuture<'a, ExecResult> {
        Box::pin(async { Err(HostError::NotRunning("fake".into())) })
    }
    fn processes<'a>(&'a self, _: &'a str) -> HostFuture<'a, Vec<hangar_api_types::ProcessStat>> {
        Box::pin(async { Err(HostError::NotRunning("fake".into())) })
    }
    fn logs<'a>(&'a self, _: &'a str, _: usize, _: bool) -> HostFuture<'a, Logs> {
        Box::pin(async {
            Ok(Logs {
                lines: Vec::new(),
                follow: None,
            })
        })
    }
    fn import_image<'a>(
        &'a self,
        reference: &'a str,
        mut archive: Box<dyn Read + Send>,
    ) -> HostFuture<'a, ImportedImage> {
        Box::pin(async move {
            let read = tokio::task::spawn_blocking(move || {
                let mut all = Vec::new();
                archive.read_to_end(&mut all).map(|_| all)
            })
            .await
            .map_err(|e| HostError::Failed(e.to_string()))?
            .map_err(|e| HostError::Invalid(e.to_string()))?;
            if read.starts_with(b"junk") {
                return Err(HostError::Invalid("not an image archive".into()));
            }
            Ok(ImportedImage {
                reference: reference.to_string(),
                digest: "sha256:00".into(),
                size: read.len() as u64,
            })
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_bounded_tagged_and_scoped() {
    let s = server_full(
        "upload",
        ApiConfig {
            max_image_bytes: 100_000,
            ..ApiConfig::default()
        },
        Some(Arc::new(ReadingHost)),
    )
    .await;
    let c = Client::new(s.addr, Some(ACME));
    create_app(&c, "up").await;
    let r = c
        .post_raw("/v1/apps/up/images?tag=v1", &[7u8; 90_000])
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json()["ref"], "registry.hangar.internal/up:v1");
    assert_eq!(r.json()["size"], 90_000);
    let r = c.post_raw("/v1/apps/up/images", b"x").await;
    assert_eq!(r.json()["ref"], "registry.hangar.internal/up:latest");
    // Past the limit: 413, however the body is sent.
    let r = c
        .post_raw("/v1/apps/up/images?tag=big", &vec![7u8; 300_000])
        .await;
    assert_eq!(r.status, 413, "{}", r.text);
    assert!(r.json()["error"].is_string());
    // Bad archives and tags: 400.
    let r = c.post_raw("/v1/apps/up/images?tag=v2", b"junk junk").await;
    assert_eq!(r.status, 400, "{}", r.text);
    for tag in ["..%2Fx", "a%3Ab", "-x", "%00"] {
        let r = c
            .post_raw(&format!("/v1/apps/up/images?tag={tag}"), b"x")
            .await;
        assert_eq!(r.status, 400, "{tag}: {}", r.text);
    }
    // Another org can not upload into the app, nor run what was uploaded to it.
    let other = Client::new(s.addr, Some(OTHER));
    assert_eq!(other.post_raw("/v1/apps/up/images", b"x").await.status, 404);
    create_app(&other, "theirs").await;
    for image in [
        "registry.hangar.internal/up:v1",
        "registry.hangar.internal/up/x:v1",
        "registry.hangar.internal/nope:v1",
    ] {
        let r = other
            .post("/v1/apps/theirs/machines", &machine_body(image))
            .await;
        assert_eq!(r.status, 400, "{image}: {}", r.text);
        assert!(
            r.json()["error"]
                .as_str()
                .is_some_and(|e| e.contains("not found"))
        );
    }
    // Any app of the uploading org can.
    create_app(&c, "up-two").await;
    create_machine(
        &c,
        "up-two",
        &machine_body("registry.hangar.internal/up:v1"),
    )
    .await;
    // Without a host agent: 501.
    let bare = server_full("upload-bare", ApiConfig::default(), None).await;
    let c = Client::new(bare.addr, Some(ACME));
    create_app(&c, "up").await;
    assert_eq!(c.post_raw("/v1/apps/up/images", b"x").await.status, 501);
    drop(s);
}
