//! Pulling images from a registry speaking the distribution API v2 (Docker Hub, GHCR, a
//! self-hosted `registry:2`, Debian's `docker-registry`, …).
//!
//! Flow: resolve the manifest (an index or manifest list is narrowed to the wanted platform),
//! verify its digest (and `Docker-Content-Digest`), store it; fetch the config; then every
//! layer not already unpacked is downloaded (at most [`PullerConfig::max_concurrent_downloads`]
//! at once across *all* pulls of this [`Puller`]), verified against its digest and size,
//! stored, and unpacked (bounded too). Finally the image is recorded and the reference tagged.
//!
//! Auth: requests go out anonymously (or with basic credentials once a registry asked for
//! them); on `401` the `WWW-Authenticate` challenge decides: `Bearer realm=…,service=…,scope=…`
//! fetches a token from the realm (sending basic credentials if we have some) and retries;
//! `Basic` retries with the credentials. Tokens live for one pull.
//!
//! Bounds: manifests, configs, token and error bodies are read up to a size limit; blob
//! bodies may not exceed their announced size; timeouts on connect and on each read.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::Image;
use crate::import::choose_platform;
use crate::oci::{self, Index, Manifest, ManifestKind, Platform};
use crate::reference::Reference;
use crate::store::{ImageStore, MAX_METADATA_BYTES, TempGuard};

const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";
const MAX_SMALL_BODY: u64 = 1024 * 1024;

/// Username and password (or token) for a registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or access token.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Host-wide settings of a [`Puller`].
#[derive(Debug, Clone)]
pub struct PullerConfig {
    /// Layer downloads in flight at once, across all pulls (docker's default is 3).
    pub max_concurrent_downloads: usize,
    /// Layer unpacks in flight at once, across all pulls.
    pub max_concurrent_unpacks: usize,
    /// Registries (`host[:port]`) spoken to over plain http.
    pub insecure_registries: Vec<String>,
    /// Credentials per registry (`host[:port]`, `docker.io` for Docker Hub).
    pub credentials: HashMap<String, Credentials>,
    /// Platform picked from manifest lists.
    pub platform: Platform,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Timeout of each read from the network.
    pub read_timeout: Duration,
    /// A [`PullEvent::LayerProgress`] is sent each time this many more bytes arrived.
    pub progress_every_bytes: u64,
    /// User agent.
    pub user_agent: String,
}

impl Default for PullerConfig {
    fn default() -> Self {
        Self {
            max_concurrent_downloads: 3,
            max_concurrent_unpacks: 2,
            insecure_registries: Vec::new(),
            credentials: HashMap::new(),
            platform: Platform::host(),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            progress_every_bytes: 1024 * 1024,
            user_agent: concat!("hangar/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// Per-pull options.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Plain http for this registry (e.g. `127.0.0.1:5000`).
    pub insecure: bool,
    /// Credentials for this pull (override [`PullerConfig::credentials`]).
    pub credentials: Option<Credentials>,
    /// Platform (overrides [`PullerConfig::platform`]).
    pub platform: Option<Platform>,
}

/// Progress of a pull, for machine events and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PullEvent {
    /// The manifest is known.
    Resolved {
        /// What is pulled.
        reference: Reference,
        /// The platform manifest's digest.
        digest: Digest,
        /// Number of layers.
        layers: usize,
        /// Sum of the layer blob sizes.
        total_bytes: u64,
    },
    /// A layer needs no download (unpacked or blob present).
    LayerCached {
        /// Position in the image (0 = base).
        index: usize,
        /// Blob digest.
        digest: Digest,
        /// Blob size.
        size: u64,
    },
    /// Bytes of a layer download so far.
    LayerProgress {
        /// Position in the image.
        index: usize,
        /// Blob digest.
        digest: Digest,
        /// Bytes received.
        done: u64,
        /// Blob size.
        total: u64,
    },
    /// A layer blob arrived and was verified.
    LayerDownloaded {
        /// Position in the image.
        index: usize,
        /// Blob digest.
        digest: Digest,
        /// Blob size.
        size: u64,
    },
    /// A layer is unpacked (now or earlier) and ready to mount.
    LayerReady {
        /// Position in the image.
        index: usize,
        /// Uncompressed digest.
        diff_id: Digest,
    },
    /// The image is stored and tagged.
    Done {
        /// What was pulled.
        reference: Reference,
        /// The image's manifest digest.
        digest: Digest,
        /// Bytes downloaded by this pull (0 when everything was cached).
        downloaded_bytes: u64,
    },
}

/// Receives [`PullEvent`]s; called from the pulling tasks, so keep it cheap.
pub type ProgressFn = Arc<dyn Fn(&PullEvent) + Send + Sync>;

/// Pulls images into an [`ImageStore`]. Cheap to clone; clones share the bounds.
#[derive(Debug, Clone)]
pub struct Puller {
    store: ImageStore,
    http: reqwest::Client,
    config: Arc<PullerConfig>,
    downloads: Arc<Semaphore>,
    unpacks: Arc<Semaphore>,
}

#[derive(Debug, Clone)]
enum Auth {
    Anonymous,
    Basic(Credentials),
    Bearer(String),
}

#[derive(Debug)]
struct Session {
    http: reqwest::Client,
    registry: String,
    base: String,
    repository: String,
    credentials: Option<Credentials>,
    auth: Mutex<Auth>,
}

impl Puller {
    /// A puller for `store`.
    pub fn new(store: ImageStore, config: PullerConfig) -> Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(config.user_agent.clone())
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            .redirect(reqwest::redirect::Policy::limited(10))
            .build()
            .map_err(|e| Error::Internal(format!("http client: {e}")))?;
        Ok(Self {
            store,
            http,
            downloads: Arc::new(Semaphore::new(config.max_concurrent_downloads.max(1))),
            unpacks: Arc::new(Semaphore::new(config.max_concurrent_unpacks.max(1))),
            config: Arc::new(config),
        })
    }

    /// The store pulled into.
    pub fn store(&self) -> &ImageStore {
        &self.store
    }

    /// Returns the local image `reference` names, pulling it only if it is not stored.
    pub async fn ensure(
        &self,
        reference: &Reference,
        options: &PullOptions,
        progress: Option<ProgressFn>,
    ) -> Result<Image> {
        let store = self.store.clone();
        let r = reference.clone();
        let local = tokio::task::spawn_blocking(move || store.resolve(&r))
            .await
            .map_err(|e| Error::Internal(format!("lookup task: {e}")))??;
        match local {
            Some(image) => Ok(image),
            None => self.pull(reference, options, progress).await,
        }
    }

    /// Pulls `reference` (always asking the registry for the manifest; blobs and layers
    /// already stored are not downloaded again) and tags it.
    pub async fn pull(
        &self,
        reference: &Reference,
        options: &PullOptions,
        progress: Option<ProgressFn>,
    ) -> Result<Image> {
        let emit = |event: PullEvent| {
            if let Some(p) = &progress {
                p(&event);
            }
        };
        let registry = reference.registry().to_owned();
        let insecure = options.insecure || self.config.insecure_registries.contains(&registry);
        let scheme = if insecure { "http" } else { "https" };
        let credentials = options
            .credentials
            .clone()
            .or_else(|| self.config.credentials.get(&registry).cloned());
        let session = Arc::new(Session {
            http: self.http.clone(),
            base: format!("{scheme}://{}/v2/", reference.api_host()),
            registry,
            repository: reference.repository().to_owned(),
            credentials,
            auth: Mutex::new(Auth::Anonymous),
        });
        let platform = options
            .platform
            .clone()
            .unwrap_or_else(|| self.config.platform.clone());
        let mut pins = self.store.pins();

        // Manifest (through an index if need be).
        let (mut digest, mut media_type, mut body) = session
            .manifest(&reference.manifest_selector(), reference.digest())
            .await?;
        let mut hops = 0;
        loop {
            match oci::classify(Some(&media_type), &body) {
                ManifestKind::Image => break,
                ManifestKind::Index => {
                    hops += 1;
                    if hops > 4 {
                        return Err(Error::InvalidImage(format!(
                            "{reference}: indexes nested too deeply"
                        )));
                    }
                    let index: Index = serde_json::from_slice(&body).map_err(|e| {
                        Error::InvalidImage(format!("index {digest} of {reference}: {e}"))
                    })?;
                    let chosen = choose_platform(&index, &platform, &reference.to_string())?;
                    (digest, media_type, body) = session
                        .manifest(&chosen.digest.to_string(), Some(&chosen.digest))
                        .await?;
                }
                ManifestKind::Schema1 => {
                    return Err(Error::Unsupported(format!(
                        "{reference} has a docker schema 1 manifest (re-push it with a current docker)"
                    )));
                }
                ManifestKind::Unknown => {
                    return Err(Error::InvalidImage(format!(
                        "{reference}: the registry sent {media_type:?}, not an image manifest"
                    )));
                }
            }
        }
        let manifest: Manifest = serde_json::from_slice(&body)
            .map_err(|e| Error::InvalidImage(format!("manifest {digest} of {reference}: {e}")))?;
        pins.add(&digest);
        self.store.put_blob_bytes(&body)?;

        // Config.
        let config_digest = manifest.config.digest.clone();
        pins.add(&config_digest);
        let config = match self.store.read_blob(&config_digest, MAX_METADATA_BYTES) {
            Ok(bytes) => bytes,
            Err(_) => {
                let bytes = session
                    .small_blob(&config_digest, manifest.config.size)
                    .await?;
                self.store.put_blob_bytes(&bytes)?;
                bytes
            }
        };
        let media_type = Some(media_type.as_str())
            .filter(|t| t.contains("manifest"))
            .or(manifest.media_type.as_deref())
            .unwrap_or(oci::OCI_MANIFEST)
            .to_owned();
        let image = ImageStore::image_from_parts(digest.clone(), &media_type, &manifest, &config)?;
        emit(PullEvent::Resolved {
            reference: reference.clone(),
            digest: digest.clone(),
            layers: image.layers.len(),
            total_bytes: image.layers.iter().map(|l| l.size).sum(),
        });

        // Layers.
        let mut tasks = JoinSet::new();
        let (alive, mut all_done) = tokio::sync::mpsc::channel::<()>(1);
        for (index, layer) in image.layers.iter().enumerate() {
            pins.add(&layer.digest);
            pins.add(&layer.diff_id);
            let job = LayerJob {
                index,
                digest: layer.digest.clone(),
                diff_id: layer.diff_id.clone(),
                size: layer.size,
                store: self.store.clone(),
                session: session.clone(),
                downloads: self.downloads.clone(),
                unpacks: self.unpacks.clone(),
                progress: progress.clone(),
                every: self.config.progress_every_bytes.max(1),
                alive: alive.clone(),
            };
            tasks.spawn(job.run());
        }
        drop(alive);
        let mut downloaded_bytes = 0;
        let mut failed = None;
        while let Some(result) = tasks.join_next().await {
            match result.map_err(|e| Error::Internal(format!("layer task: {e}"))) {
                Ok(Ok(n)) => downloaded_bytes += n,
                // The first failure ends the pull: the other layers stop (their cancellation
                // comes back here as a join error, not reported).
                Ok(Err(e)) | Err(e) => {
                    if failed.is_none() {
                        failed = Some(e);
                        tasks.abort_all();
                    }
                }
            }
        }
        // An unpack runs on a blocking thread and outlives its cancelled task: the pull
        // returns once that work is done too, so that a failed pull leaves nothing behind.
        let _ = all_done.recv().await;
        if let Some(e) = failed {
            return Err(e);
        }

        let store = self.store.clone();
        let (img, r, d) = (image.clone(), reference.clone(), digest.clone());
        tokio::task::spawn_blocking(move || {
            store.save_image(&img)?;
            store.tag(&r, &d)
        })
        .await
        .map_err(|e| Error::Internal(format!("save task: {e}")))??;
        drop(pins);
        emit(PullEvent::Done {
            reference: reference.clone(),
            digest,
            downloaded_bytes,
        });
        Ok(image)
    }
}

struct LayerJob {
    index: usize,
    digest: Digest,
    diff_id: Digest,
    size: u64,
    store: ImageStore,
    session: Arc<Session>,
    downloads: Arc<Semaphore>,
    unpacks: Arc<Semaphore>,
    progress: Option<ProgressFn>,
    every: u64,
    /// Held by the job and by its blocking unpack: the pull waits until every copy is gone.
    alive: tokio::sync::mpsc::Sender<()>,
}

impl LayerJob {
    fn emit(&self, event: PullEvent) {
        if let Some(p) = &self.progress {
            p(&event);
        }
    }

    /// Downloads (if needed) and unpacks one layer; returns the bytes downloaded.
    async fn run(self) -> Result<u64> {
        if self.store.has_layer(&self.diff_id) {
            self.emit(PullEvent::LayerCached {
                index: self.index,
                digest: self.digest.clone(),
                size: self.size,
            });
            self.emit(PullEvent::LayerReady {
                index: self.index,
                diff_id: self.diff_id.clone(),
            });
            return Ok(0);
        }
        let mut downloaded = 0;
        if self.store.has_blob(&self.digest) {
            self.emit(PullEvent::LayerCached {
                index: self.index,
                digest: self.digest.clone(),
                size: self.size,
            });
        } else {
            let permit = self
                .downloads
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| Error::Internal(format!("download semaphore: {e}")))?;
            if self.store.has_blob(&self.digest) {
                // Another pull fetched it while we waited for the permit.
                self.emit(PullEvent::LayerCached {
                    index: self.index,
                    digest: self.digest.clone(),
                    size: self.size,
                });
            } else {
                self.download().await?;
                downloaded = self.size;
                // Reported while the permit is held, so events never show more downloads
                // in flight than the bound.
                self.emit(PullEvent::LayerDownloaded {
                    index: self.index,
                    digest: self.digest.clone(),
                    size: self.size,
                });
            }
            drop(permit);
        }
        let permit = self
            .unpacks
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| Error::Internal(format!("unpack semaphore: {e}")))?;
        let (store, digest, diff_id, alive) = (
            self.store.clone(),
            self.digest.clone(),
            self.diff_id.clone(),
            self.alive.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let _alive = alive;
            store.ensure_layer(&digest, &diff_id)
        })
        .await
        .map_err(|e| Error::Internal(format!("unpack task: {e}")))??;
        drop(permit);
        self.emit(PullEvent::LayerReady {
            index: self.index,
            diff_id: self.diff_id.clone(),
        });
        Ok(downloaded)
    }

    async fn download(&self) -> Result<()> {
        let url = format!(
            "{}{}/blobs/{}",
            self.session.base, self.session.repository, self.digest
        );
        let mut response = self.session.get(&url, None).await?;
        let mut guard = TempGuard::new(self.store.temp_path("pull"));
        let mut file = tokio::fs::File::create(guard.path())
            .await
            .map_err(|e| Error::io("create", guard.path(), e))?;
        let mut hasher = Sha256::new();
        let mut done: u64 = 0;
        let mut next_report = self.every;
        self.emit(PullEvent::LayerProgress {
            index: self.index,
            digest: self.digest.clone(),
            done: 0,
            total: self.size,
        });
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.session.net_error(&e))?
        {
            done += chunk.len() as u64;
            if done > self.size {
                return Err(Error::SizeMismatch {
                    what: format!("blob {}", self.digest),
                    expected: self.size,
                    actual: done,
                });
            }
            hasher.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(|e| Error::io("write", guard.path(), e))?;
            if done >= next_report || done == self.size {
                next_report = done + self.every;
                self.emit(PullEvent::LayerProgress {
                    index: self.index,
                    digest: self.digest.clone(),
                    done,
                    total: self.size,
                });
            }
        }
        if done != self.size {
            return Err(Error::SizeMismatch {
                what: format!("blob {}", self.digest),
                expected: self.size,
                actual: done,
            });
        }
        let actual = Digest::from_hasher(hasher);
        if actual != self.digest {
            return Err(Error::DigestMismatch {
                what: format!("blob from {url}"),
                expected: self.digest.clone(),
                actual,
            });
        }
        file.sync_all()
            .await
            .map_err(|e| Error::io("sync", guard.path(), e))?;
        drop(file);
        self.store.commit_blob(&mut guard, &self.digest)
    }
}

/// The registry's JSON error body: `{"errors":[{"code":…,"message":…}]}`.
fn registry_message(status: StatusCode, body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorItem>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorItem {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let detail = match serde_json::from_slice::<Errors>(body) {
        Ok(errors) if !errors.errors.is_empty() => errors
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.code, e.message))
            .collect::<Vec<_>>()
            .join("; "),
        _ => String::from_utf8_lossy(&body[..body.len().min(200)])
            .trim()
            .to_owned(),
    };
    if detail.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {detail}")
    }
}

/// Reads a body up to `limit` bytes.
async fn read_limited(
    response: &mut Response,
    limit: u64,
    what: &str,
) -> reqwest::Result<Result<Vec<u8>>> {
    let mut out = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if out.len() as u64 + chunk.len() as u64 > limit {
            return Ok(Err(Error::TooLarge {
                what: what.to_owned(),
                limit,
            }));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Ok(out))
}

/// Parses `WWW-Authenticate: Scheme k="v", k2=v2` (quoted values may hold commas and
/// backslash escapes). Total: garbage gives odd parameters, never a panic.
pub(crate) fn parse_challenge(header: &str) -> Option<(String, HashMap<String, String>)> {
    let header = header.trim();
    if header.is_empty() {
        return None;
    }
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && *c != ',') {
            key.push(c);
        }
        if chars.next() != Some('=') {
            if chars.peek().is_none() {
                break;
            }
            continue;
        }
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => value.extend(chars.next()),
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != ',') {
                value.push(c);
            }
        }
        let key = key.trim().to_ascii_lowercase();
        if !key.is_empty() {
            params.insert(key, value.trim().to_owned());
        }
    }
    Some((scheme.to_ascii_lowercase(), params))
}

impl Session {
    fn net_error(&self, e: &reqwest::Error) -> Error {
        let mut message = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        Error::Registry {
            registry: self.registry.clone(),
            status: None,
            message,
        }
    }

    fn auth_header(&self) -> Option<HeaderValue> {
        let auth = self
            .auth
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let value = match auth {
            Auth::Anonymous => return None,
            Auth::Basic(c) => format!(
                "Basic {}",
                base64(&format!("{}:{}", c.username, c.password))
            ),
            Auth::Bearer(token) => format!("Bearer {token}"),
        };
        let mut value = HeaderValue::from_str(&value).ok()?;
        value.set_sensitive(true);
        Some(value)
    }

    /// GET with auth; on 401 authenticates once and retries. Non-2xx becomes an error.
    async fn get(&self, url: &str, accept: Option<&str>) -> Result<Response> {
        for attempt in 0..2 {
            let mut request = self.http.get(url);
            if let Some(accept) = accept {
                request = request.header(ACCEPT, accept);
            }
            if let Some(auth) = self.auth_header() {
                request = request.header(AUTHORIZATION, auth);
            }
            let mut response = request.send().await.map_err(|e| self.net_error(&e))?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && attempt == 0 {
                let challenge = response
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                self.authenticate(challenge.as_deref()).await?;
                continue;
            }
            if status.is_success() {
                return Ok(response);
            }
            let body = read_limited(&mut response, 64 * 1024, "error body")
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            let message = registry_message(status, &body);
            return Err(match status {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Error::Unauthorized {
                    registry: self.registry.clone(),
                    message,
                },
                _ => Error::Registry {
                    registry: self.registry.clone(),
                    status: Some(status.as_u16()),
                    message: format!("GET {url}: {message}"),
                },
            });
        }
        Err(Error::Unauthorized {
            registry: self.registry.clone(),
            message: "credentials rejected".to_owned(),
        })
    }

    async fn authenticate(&self, challenge: Option<&str>) -> Result<()> {
        let unauthorized = |message: String| Error::Unauthorized {
            registry: self.registry.clone(),
            message,
        };
        let Some((scheme, params)) = challenge.and_then(parse_challenge) else {
            return Err(unauthorized(
                "401 without a WWW-Authenticate challenge".to_owned(),
            ));
        };
        match scheme.as_str() {
            "basic" => {
                let Some(credentials) = self.credentials.clone() else {
                    return Err(unauthorized(
                        "the registry requires credentials (basic auth) and none are configured"
                            .to_owned(),
                    ));
                };
                *self.auth.lock().unwrap_or_else(PoisonError::into_inner) =
                    Auth::Basic(credentials);
                Ok(())
            }
            "bearer" => {
                let realm = params
                    .get("realm")
                    .ok_or_else(|| unauthorized("Bearer challenge without realm".to_owned()))?;
                let mut url = reqwest::Url::parse(realm)
                    .map_err(|e| unauthorized(format!("bad token realm {realm:?}: {e}")))?;
                // Credentials go to the realm: never in clear text for an https registry.
                if url.scheme() != "https" && self.base.starts_with("https:") {
                    return Err(unauthorized(format!(
                        "token realm {realm} is not https while the registry is"
                    )));
                }
                {
                    let mut query = url.query_pairs_mut();
                    if let Some(service) = params.get("service") {
                        query.append_pair("service", service);
                    }
                    let scope = params
                        .get("scope")
                        .cloned()
                        .unwrap_or_else(|| format!("repository:{}:pull", self.repository));
                    query.append_pair("scope", &scope);
                }
                let mut request = self.http.get(url);
                if let Some(c) = &self.credentials {
                    request = request.basic_auth(&c.username, Some(&c.password));
                }
                let mut response = request.send().await.map_err(|e| self.net_error(&e))?;
                let status = response.status();
                let body = read_limited(&mut response, MAX_SMALL_BODY, "token response")
                    .await
                    .map_err(|e| self.net_error(&e))??;
                if !status.is_success() {
                    return Err(unauthorized(format!(
                        "token endpoint {realm}: {}",
                        registry_message(status, &body)
                    )));
                }
                #[derive(serde::Deserialize)]
                struct TokenResponse {
                    #[serde(default)]
                    token: Option<String>,
                    #[serde(default)]
                    access_token: Option<String>,
                }
                let parsed: TokenResponse = serde_json::from_slice(&body)
                    .map_err(|e| unauthorized(format!("token endpoint {realm}: {e}")))?;
                let token = parsed
                    .token
                    .or(parsed.access_token)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| unauthorized(format!("token endpoint {realm} sent no token")))?;
                *self.auth.lock().unwrap_or_else(PoisonError::into_inner) = Auth::Bearer(token);
                Ok(())
            }
            other => Err(unauthorized(format!("unsupported auth scheme {other:?}"))),
        }
    }

    /// Fetches a manifest; verifies it against `pinned` (if any) and the registry's
    /// `Docker-Content-Digest`. Returns digest, media type and body.
    async fn manifest(
        &self,
        selector: &str,
        pinned: Option<&Digest>,
    ) -> Result<(Digest, String, Vec<u8>)> {
        let url = format!("{}{}/manifests/{selector}", self.base, self.repository);
        let mut response = match self.get(&url, Some(MANIFEST_ACCEPT)).await {
            Err(Error::Registry {
                status: Some(404), ..
            }) => {
                return Err(Error::NotFound(format!(
                    "{}/{}:{selector} (manifest unknown to the registry)",
                    self.registry, self.repository
                )));
            }
            other => other?,
        };
        let media_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_owned())
            .unwrap_or_default();
        let announced = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok());
        let body = read_limited(&mut response, MAX_METADATA_BYTES, "manifest")
            .await
            .map_err(|e| self.net_error(&e))??;
        let digest = Digest::of(&body);
        for expected in pinned.into_iter().chain(announced.as_ref()) {
            if *expected != digest {
                return Err(Error::DigestMismatch {
                    what: format!("manifest {url}"),
                    expected: expected.clone(),
                    actual: digest,
                });
            }
        }
        Ok((digest, media_type, body))
    }

    /// Fetches a small blob (a config) into memory and verifies it.
    async fn small_blob(&self, digest: &Digest, size: u64) -> Result<Vec<u8>> {
        let url = format!("{}{}/blobs/{digest}", self.base, self.repository);
        let limit = size.min(MAX_METADATA_BYTES);
        let mut response = self.get(&url, None).await?;
        let body = read_limited(&mut response, limit, "config blob")
            .await
            .map_err(|e| self.net_error(&e))??;
        let actual = Digest::of(&body);
        if actual != *digest {
            return Err(Error::DigestMismatch {
                what: format!("blob {url}"),
                expected: digest.clone(),
                actual,
            });
        }
        Ok(body)
    }
}

/// Standard base64 with padding (for the basic auth header).
fn base64(input: &str) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b1 = chunk.get(1).copied().unwrap_or(0);
        let b2 = chunk.get(2).copied().unwrap_or(0);
        let n = (u32::from(chunk[0]) << 16) | (u32::from(b1) << 8) | u32::from(b2);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(TABLE[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_parsing() {
        let (scheme, p) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull,push""#,
        )
        .expect("test");
        assert_eq!(scheme, "bearer");
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["service"], "registry.docker.io");
        assert_eq!(p["scope"], "repository:library/nginx:pull,push");
        let (scheme, p) = parse_challenge(r#"Basic realm="Registry \"Realm\"""#).expect("test");
        assert_eq!(scheme, "basic");
        assert_eq!(p["realm"], "Registry \"Realm\"");
        let (_, p) = parse_challenge("Bearer realm=http://x/t, service=reg").expect("test");
        assert_eq!(p["realm"], "http://x/t");
        assert_eq!(p["service"], "reg");
        assert!(parse_challenge("").is_none());
        for s in [
            "Bearer",
            "Bearer =",
            "Bearer a=\"",
            "Bearer a=\"\\",
            "x ,,,=,\"é\"=ü",
            "a b",
        ] {
            let _ = parse_challenge(s);
        }
    }

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(""), "");
        assert_eq!(base64("f"), "Zg==");
        assert_eq!(base64("fo"), "Zm8=");
        assert_eq!(base64("foo"), "Zm9v");
        assert_eq!(base64("foobar"), "Zm9vYmFy");
        assert_eq!(base64("user:pass"), "dXNlcjpwYXNz");
    }

    #[test]
    fn registry_messages() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#;
        assert_eq!(
            registry_message(StatusCode::NOT_FOUND, body),
            "HTTP 404 Not Found: MANIFEST_UNKNOWN: manifest unknown"
        );
        assert_eq!(
            registry_message(StatusCode::BAD_GATEWAY, b""),
            "HTTP 502 Bad Gateway"
        );
    }
}
