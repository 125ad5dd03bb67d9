//! Token auth, manifest lists and corrupt blobs against a scripted registry: a tiny HTTP/1.1
//! server on 127.0.0.1:0 that serves an OCI layout through the distribution API, demands
//! `Bearer` tokens from its own token endpoint (which demands basic credentials), and can
//! corrupt a blob.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use hangar_image::oci::{self, Platform};
use hangar_image::testing::write_oci_layout;
use hangar_image::{Credentials, Digest, Error, PullOptions, Puller, PullerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{busybox, ls, reference, store, tmp};

const TOKEN: &str = "good-token";
const USER: &str = "robot";
const PASSWORD: &str = "s3cret";

struct Fake {
    layout: PathBuf,
    addr: String,
    multi: Vec<u8>,
    corrupt: Option<Digest>,
    hits: Mutex<HashMap<String, usize>>,
}

impl Fake {
    async fn start(layout: PathBuf, manifest: &Digest, corrupt: Option<Digest>) -> Arc<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let manifest_size = std::fs::metadata(layout.join("blobs/sha256").join(manifest.hex()))
            .expect("manifest blob")
            .len();
        let host = Platform::host();
        let multi = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": oci::DOCKER_MANIFEST_LIST,
            "manifests": [
                {"mediaType": oci::OCI_MANIFEST, "digest": Digest::of(b"arm").to_string(), "size": 3,
                 "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
                {"mediaType": oci::OCI_MANIFEST, "digest": manifest.to_string(), "size": manifest_size,
                 "platform": {"os": "linux", "architecture": host.architecture}},
                {"mediaType": oci::OCI_MANIFEST, "digest": Digest::of(b"att").to_string(), "size": 3,
                 "platform": {"os": "unknown", "architecture": "unknown"}}
            ]
        }))
        .expect("json");
        let fake = Arc::new(Self {
            layout,
            addr,
            multi,
            corrupt,
            hits: Mutex::new(HashMap::new()),
        });
        let server = fake.clone();
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let server = server.clone();
                tokio::spawn(async move { server.handle(sock).await });
            }
        });
        fake
    }

    fn hits(&self, prefix: &str) -> usize {
        self.hits
            .lock()
            .expect("hits")
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| *v)
            .sum()
    }

    async fn handle(&self, mut sock: TcpStream) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 65536 {
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let head = String::from_utf8_lossy(&buf).into_owned();
        let mut lines = head.split("\r\n");
        let target = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .unwrap_or("/")
            .to_owned();
        let headers: HashMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        *self
            .hits
            .lock()
            .expect("hits")
            .entry(target.clone())
            .or_default() += 1;
        let (status, content_type, extra, body) = self.route(&target, &headers);
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: {content_type}\r\nConnection: close\r\n{extra}\r\n",
            body.len()
        );
        let _ = sock.write_all(response.as_bytes()).await;
        let _ = sock.write_all(&body).await;
        let _ = sock.shutdown().await;
    }

    fn route(
        &self,
        target: &str,
        headers: &HashMap<String, String>,
    ) -> (&'static str, String, String, Vec<u8>) {
        let json = "application/json".to_owned();
        if let Some(query) = target.strip_prefix("/token?") {
            let expected = format!("Basic {}", base64(&format!("{USER}:{PASSWORD}")));
            if headers.get("authorization") != Some(&expected) {
                return (
                    "401 Unauthorized",
                    json,
                    String::new(),
                    br#"{"details":"bad credentials"}"#.to_vec(),
                );
            }
            let ok = query.contains("service=hangar-test")
                && query.contains("scope=repository%3Ahangar%2Ftest%3Apull");
            if !ok {
                return (
                    "400 Bad Request",
                    json,
                    String::new(),
                    query.as_bytes().to_vec(),
                );
            }
            return (
                "200 OK",
                json,
                String::new(),
                format!(r#"{{"token":"{TOKEN}","expires_in":300}}"#).into_bytes(),
            );
        }
        if headers.get("authorization").map(String::as_str) != Some(&format!("Bearer {TOKEN}")) {
            let challenge = format!(
                "WWW-Authenticate: Bearer realm=\"http://{}/token\",service=\"hangar-test\",scope=\"repository:hangar/test:pull\"\r\n",
                self.addr
            );
            return (
                "401 Unauthorized",
                json,
                challenge,
                br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#
                    .to_vec(),
            );
        }
        let not_found = |what: &str| {
            (
                "404 Not Found",
                "application/json".to_owned(),
                String::new(),
                format!(
                    r#"{{"errors":[{{"code":"MANIFEST_UNKNOWN","message":"{what} unknown"}}]}}"#
                )
                .into_bytes(),
            )
        };
        let blob = |digest: &str| -> Option<Vec<u8>> {
            let digest: Digest = digest.parse().ok()?;
            let mut bytes =
                std::fs::read(self.layout.join("blobs/sha256").join(digest.hex())).ok()?;
            if self.corrupt.as_ref() == Some(&digest)
                && let Some(b) = bytes.last_mut()
            {
                *b ^= 0xff;
            }
            Some(bytes)
        };
        if let Some(selector) = target.strip_prefix("/v2/hangar/test/manifests/") {
            let (bytes, media_type) = if selector == "multi" {
                (self.multi.clone(), oci::DOCKER_MANIFEST_LIST.to_owned())
            } else {
                let digest = if selector.starts_with("sha256:") {
                    selector.to_owned()
                } else {
                    let index: serde_json::Value = serde_json::from_slice(
                        &std::fs::read(self.layout.join("index.json")).expect("index"),
                    )
                    .expect("index json");
                    let found = index["manifests"].as_array().and_then(|m| {
                        m.iter().find(|d| {
                            d["annotations"][oci::ANNOTATION_REF_NAME].as_str() == Some(selector)
                        })
                    });
                    match found {
                        Some(d) => d["digest"].as_str().unwrap_or_default().to_owned(),
                        None => return not_found("manifest"),
                    }
                };
                match blob(&digest) {
                    Some(bytes) => (bytes, oci::OCI_MANIFEST.to_owned()),
                    None => return not_found("manifest"),
                }
            };
            let extra = format!("Docker-Content-Digest: {}\r\n", Digest::of(&bytes));
            return ("200 OK", media_type, extra, bytes);
        }
        if let Some(digest) = target.strip_prefix("/v2/hangar/test/blobs/") {
            return match blob(digest) {
                Some(bytes) => (
                    "200 OK",
                    "application/octet-stream".to_owned(),
                    String::new(),
                    bytes,
                ),
                None => not_found("blob"),
            };
        }
        if target == "/v2/" {
            return ("200 OK", json, String::new(), b"{}".to_vec());
        }
        not_found("name")
    }
}

fn base64(input: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = input.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(c.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(c.get(2).copied().unwrap_or(0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn creds() -> PullOptions {
    PullOptions {
        insecure: true,
        credentials: Some(Credentials {
            username: USER.into(),
            password: PASSWORD.into(),
        }),
        ..PullOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_flow() {
    let dir = tmp("auth-bearer");
    let layout = dir.join("layout");
    let manifest = write_oci_layout(&busybox(), &layout, "v1").expect("layout");
    let fake = Fake::start(layout, &manifest, None).await;
    let store = store(&dir);
    let puller = Puller::new(store.clone(), PullerConfig::default()).expect("puller");
    let r = reference(&format!("{}/hangar/test:v1", fake.addr));

    let err = puller
        .pull(
            &r,
            &PullOptions {
                insecure: true,
                ..PullOptions::default()
            },
            None,
        )
        .await
        .expect_err("no credentials for the token endpoint");
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");

    let image = puller
        .pull(&r, &creds(), None)
        .await
        .expect("pull with token");
    assert_eq!(image.digest, manifest);
    assert_eq!(
        fake.hits("/token"),
        2,
        "one token per pull (one failed, one used)"
    );
    assert_eq!(
        fake.hits("/v2/hangar/test/blobs/"),
        3,
        "config + 2 layers, once each"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_list_resolves_to_the_host_platform() {
    let dir = tmp("auth-list");
    let layout = dir.join("layout");
    let manifest = write_oci_layout(&busybox(), &layout, "v1").expect("layout");
    let fake = Fake::start(layout, &manifest, None).await;
    let store = store(&dir);
    let puller = Puller::new(store.clone(), PullerConfig::default()).expect("puller");
    let r = reference(&format!("{}/hangar/test:multi", fake.addr));
    let image = puller.pull(&r, &creds(), None).await.expect("pull list");
    assert_eq!(image.digest, manifest);
    assert_eq!(
        store.resolve(&r).expect("resolve").map(|i| i.digest),
        Some(manifest)
    );

    let s390x = PullOptions {
        platform: Some(Platform {
            os: "linux".into(),
            architecture: "s390x".into(),
            variant: None,
        }),
        ..creds()
    };
    let err = puller.pull(&r, &s390x, None).await.expect_err("no s390x");
    match &err {
        Error::NoMatchingPlatform { available, .. } => {
            assert!(available.contains("linux/arm64/v8"), "{err}");
            assert!(!available.contains("unknown"), "{err}");
        }
        other => panic!("expected NoMatchingPlatform, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_blobs_are_rejected() {
    let dir = tmp("auth-corrupt");
    let layout = dir.join("layout");
    let image = busybox();
    let manifest = write_oci_layout(&image, &layout, "v1").expect("layout");
    // The manifest names the gzip base layer: corrupt exactly that one.
    let m: oci::Manifest = serde_json::from_slice(
        &std::fs::read(layout.join("blobs/sha256").join(manifest.hex())).expect("manifest"),
    )
    .expect("json");
    let victim = m.layers[0].digest.clone();
    let fake = Fake::start(layout, &manifest, Some(victim.clone())).await;
    let store = store(&dir);
    let puller = Puller::new(store.clone(), PullerConfig::default()).expect("puller");
    let r = reference(&format!("{}/hangar/test:v1", fake.addr));
    let err = puller.pull(&r, &creds(), None).await.expect_err("corrupt");
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert!(!store.has_blob(&victim));
    assert!(!store.has_layer(&Digest::of(&image.layers[0])));
    assert!(store.resolve(&r).expect("resolve").is_none());
    // The pull returned after the other layer's work ended too: no temp is left.
    assert!(ls(&store.root().join("tmp")).is_empty());
}
