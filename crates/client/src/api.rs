//! The Machines API over HTTP.

use std::time::Duration;

use hangar_api_types::{
    App, AppLogsPage, CreateMachineRequest, ExecRequest, ExecResponse, Lease, ListAppsResponse,
    LogEntry, Machine, MachineEvent, ProcessStat, RegionsResponse, StopRequest,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The API answered with an error status.
    #[error("{message} (HTTP {status})")]
    Api {
        /// HTTP status.
        status: u16,
        /// The error body's `error`.
        message: String,
        /// The error body's `status` (e.g. `failed_precondition`).
        code: Option<String>,
    },
    /// The API could not be reached.
    #[error(
        "can not reach the Hangar API at {url} (is hangard running? --api-url / HANGAR_API_URL)"
    )]
    Transport {
        /// Base URL.
        url: String,
        /// Cause.
        #[source]
        source: reqwest::Error,
    },
    /// The answer was not what the API sends.
    #[error("unexpected answer from the API: {0}")]
    Decode(String),
    /// A local file could not be read.
    #[error("{0}")]
    Io(String),
}

impl ClientError {
    /// The HTTP status, for API errors.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Result of calls.
pub type Result<T> = std::result::Result<T, ClientError>;

/// A client for one API and token.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

pub(crate) fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Which lines of an app's log stream to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    /// Only lines about this machine.
    pub instance: Option<String>,
    /// Only lines of this region.
    pub region: Option<String>,
}

impl LogFilter {
    /// `&instance=…&region=…` for the set filters.
    fn query(&self) -> String {
        let mut q = String::new();
        if let Some(i) = &self.instance {
            q.push_str(&format!("&instance={}", enc(i)));
        }
        if let Some(r) = &self.region {
            q.push_str(&format!("&region={}", enc(r)));
        }
        q
    }
}

impl Client {
    /// A client of the API at `base` (e.g. `http://127.0.0.1:4280`) with `token`.
    pub fn new(base: &str, token: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // Over plain http no certificate is checked: not loading the system's roots
            // (~150 files) saves every CLI command several milliseconds.
            .tls_built_in_root_certs(!base.starts_with("http://"))
            .build()
            .map_err(|e| ClientError::Transport {
                url: base.to_string(),
                source: e,
            })?;
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http,
        })
    }

    /// The API's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let resp =
            req.bearer_auth(&self.token)
                .send()
                .await
                .map_err(|e| ClientError::Transport {
                    url: self.base.clone(),
                    source: e,
                })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let message = body["error"]
            .as_str()
            .or_else(|| body["message"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| {
                if text.is_empty() {
                    format!("HTTP {status}")
                } else {
                    text
                }
            });
        Err(ClientError::Api {
            status,
            message,
            code: body["status"]
                .as_str()
                .or_else(|| body["code"].as_str())
                .map(str::to_string),
        })
    }

    async fn json<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T> {
        let resp = self.send(req).await?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        if bytes.is_empty() {
            return serde_json::from_str("null").map_err(|e| ClientError::Decode(e.to_string()));
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.json(self.http.get(self.url(path))).await
    }

    pub(crate) async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        let body = serde_json::to_vec(body).map_err(|e| ClientError::Decode(e.to_string()))?;
        self.json(
            self.http
                .post(self.url(path))
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    pub(crate) async fn delete(&self, path: &str) -> Result<()> {
        self.send(self.http.delete(self.url(path)))
            .await
            .map(|_| ())
    }

    // Apps.

    /// `GET /v1/apps/{app}`; `None` when it does not exist.
    pub async fn app(&self, app: &str) -> Result<Option<App>> {
        match self.get(&format!("/v1/apps/{}", enc(app))).await {
            Ok(a) => Ok(Some(a)),
            Err(ClientError::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `POST /v1/apps`.
    pub async fn create_app(&self, app: &str, org: &str, network: Option<&str>) -> Result<()> {
        let mut body = json!({"app_name": app, "org_slug": org});
        if let Some(n) = network {
            body["network"] = json!(n);
        }
        self.post::<_, Value>("/v1/apps", &body).await.map(|_| ())
    }

    /// `GET /v1/apps?org_slug=`.
    pub async fn apps(&self, org: Option<&str>) -> Result<ListAppsResponse> {
        match org {
            Some(o) => self.get(&format!("/v1/apps?org_slug={}", enc(o))).await,
            None => self.get("/v1/apps").await,
        }
    }

    /// `DELETE /v1/apps/{app}`.
    pub async fn delete_app(&self, app: &str) -> Result<()> {
        self.delete(&format!("/v1/apps/{}", enc(app))).await
    }

    // Machines.

    fn m(app: &str, id: &str) -> String {
        format!("/v1/apps/{}/machines/{}", enc(app), enc(id))
    }

    /// `GET /v1/apps/{app}/machines`.
    pub async fn machines(&self, app: &str) -> Result<Vec<Machine>> {
        self.get(&format!("/v1/apps/{}/machines", enc(app))).await
    }

    /// `GET …/machines/{id}`.
    pub async fn machine(&self, app: &str, id: &str) -> Result<Machine> {
        self.get(&Self::m(app, id)).await
    }

    /// `POST …/machines`.
    pub async fn create_machine(&self, app: &str, req: &CreateMachineRequest) -> Result<Machine> {
        self.post(&format!("/v1/apps/{}/machines", enc(app)), req)
            .await
    }

    /// `POST …/machines/{id}` (update; a new version), with the lease nonce if held.
    pub async fn update_machine(
        &self,
        app: &str,
        id: &str,
        req: &CreateMachineRequest,
        nonce: Option<&str>,
    ) -> Result<Machine> {
        let body = serde_json::to_vec(req).map_err(|e| ClientError::Decode(e.to_string()))?;
        let mut r = self
            .http
            .post(self.url(&Self::m(app, id)))
            .header("content-type", "application/json")
            .body(body);
        if let Some(n) = nonce {
            r = r.header("fly-machine-lease-nonce", n);
        }
        self.json(r).await
    }

    async fn action(&self, app: &str, id: &str, verb: &str, body: Value) -> Result<()> {
        self.post::<_, Value>(&format!("{}/{verb}", Self::m(app, id)), &body)
            .await
            .map(|_| ())
    }

    /// `POST …/start`.
    pub async fn start(&self, app: &str, id: &str) -> Result<()> {
        self.action(app, id, "start", json!({})).await
    }

    /// `POST …/stop`.
    pub async fn stop(&self, app: &str, id: &str, req: &StopRequest) -> Result<()> {
        self.action(
            app,
            id,
            "stop",
            serde_json::to_value(req).unwrap_or_default(),
        )
        .await
    }

    /// `POST …/suspend`.
    pub async fn suspend(&self, app: &str, id: &str) -> Result<()> {
        self.action(app, id, "suspend", json!({})).await
    }

    /// `POST …/restart`.
    pub async fn restart(&self, app: &str, id: &str) -> Result<()> {
        self.action(app, id, "restart", json!({})).await
    }

    /// `POST …/cordon` or `…/uncordon`.
    pub async fn cordon(&self, app: &str, id: &str, on: bool) -> Result<()> {
        let verb = if on { "cordon" } else { "uncordon" };
        self.action(app, id, verb, json!({})).await
    }

    /// `DELETE …/machines/{id}?force=`.
    pub async fn destroy(&self, app: &str, id: &str, force: bool) -> Result<()> {
        self.delete(&format!("{}?force={force}", Self::m(app, id)))
            .await
    }

    /// `GET …/wait`: until the machine is `state` (≤ 60 s per call; longer waits loop).
    pub async fn wait(
        &self,
        app: &str,
        id: &str,
        state: &str,
        instance_id: Option<&str>,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let secs = left.as_secs().clamp(1, 60);
            let mut path = format!("{}/wait?state={state}&timeout={secs}", Self::m(app, id));
            if let Some(i) = instance_id {
                path.push_str(&format!("&instance_id={}", enc(i)));
            }
            match self.get::<Value>(&path).await {
                Ok(_) => return Ok(()),
                Err(ClientError::Api { status: 408, .. })
                    if tokio::time::Instant::now() < deadline => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// `GET …/events`.
    pub async fn events(&self, app: &str, id: &str) -> Result<Vec<MachineEvent>> {
        self.get(&format!("{}/events", Self::m(app, id))).await
    }

    /// `POST …/lease`: acquires the machine's lease for `ttl` seconds.
    pub async fn lease(&self, app: &str, id: &str, ttl: u64, description: &str) -> Result<Lease> {
        self.post(
            &format!("{}/lease", Self::m(app, id)),
            &json!({"ttl": ttl, "description": description}),
        )
        .await
    }

    /// `DELETE …/lease` with the nonce.
    pub async fn release(&self, app: &str, id: &str, nonce: &str) -> Result<()> {
        self.send(
            self.http
                .delete(self.url(&format!("{}/lease", Self::m(app, id))))
                .header("fly-machine-lease-nonce", nonce),
        )
        .await
        .map(|_| ())
    }

    /// `POST …/exec`.
    pub async fn exec(&self, app: &str, id: &str, req: &ExecRequest) -> Result<ExecResponse> {
        self.post(&format!("{}/exec", Self::m(app, id)), req).await
    }

    /// `GET …/ps`.
    pub async fn ps(&self, app: &str, id: &str) -> Result<Vec<ProcessStat>> {
        self.get(&format!("{}/ps", Self::m(app, id))).await
    }

    /// `GET …/logs?tail=N`: the machine's last lines.
    pub async fn logs(&self, app: &str, id: &str, tail: usize) -> Result<Vec<LogEntry>> {
        self.get(&format!("{}/logs?tail={tail}", Self::m(app, id)))
            .await
    }

    /// `GET …/logs?follow=true`: calls `each` for every line as it comes, until the machine is
    /// destroyed, the stream ends, or `each` returns false.
    pub async fn follow_logs(
        &self,
        app: &str,
        id: &str,
        tail: usize,
        mut each: impl FnMut(LogEntry) -> bool,
    ) -> Result<()> {
        let mut resp = self
            .send(self.http.get(self.url(&format!(
                "{}/logs?tail={tail}&follow=true",
                Self::m(app, id)
            ))))
            .await?;
        let mut buf: Vec<u8> = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| ClientError::Transport {
            url: self.base.clone(),
            source: e,
        })? {
            buf.extend_from_slice(&chunk);
            while let Some(i) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                if let Ok(e) = serde_json::from_slice::<LogEntry>(&line)
                    && !each(e)
                {
                    return Ok(());
                }
            }
            if buf.len() > 1 << 20 {
                buf.clear();
            }
        }
        Ok(())
    }

    /// `GET /v1/apps/{app}/logs?tail=N`: the app's newest lines across its machines, with
    /// the platform's (`runner`, `proxy`), oldest first.
    pub async fn app_logs(
        &self,
        app: &str,
        filter: &LogFilter,
        tail: usize,
    ) -> Result<Vec<LogEntry>> {
        self.get(&format!(
            "/v1/apps/{}/logs?tail={tail}{}",
            enc(app),
            filter.query()
        ))
        .await
    }

    /// `GET /v1/apps/{app}/logs?follow=true`: the newest `tail` lines, then every line as it
    /// comes (from machines started later too); calls `each` until the stream ends (the app
    /// was deleted, the server stopped) or `each` returns false.
    pub async fn follow_app_logs(
        &self,
        app: &str,
        filter: &LogFilter,
        tail: usize,
        mut each: impl FnMut(LogEntry) -> bool,
    ) -> Result<()> {
        let mut resp = self
            .send(self.http.get(self.url(&format!(
                "/v1/apps/{}/logs?tail={tail}&follow=true{}",
                enc(app),
                filter.query()
            ))))
            .await?;
        let mut buf: Vec<u8> = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| ClientError::Transport {
            url: self.base.clone(),
            source: e,
        })? {
            buf.extend_from_slice(&chunk);
            while let Some(i) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                if let Ok(e) = serde_json::from_slice::<LogEntry>(&line)
                    && !each(e)
                {
                    return Ok(());
                }
            }
            if buf.len() > 1 << 20 {
                buf.clear();
            }
        }
        Ok(())
    }

    /// `GET /api/v1/apps/{app}/logs?next_token=`: one page of the app's stream from the
    /// reference's polling endpoint (empty token: the newest lines).
    pub async fn poll_app_logs(
        &self,
        app: &str,
        filter: &LogFilter,
        next_token: &str,
    ) -> Result<AppLogsPage> {
        self.get(&format!(
            "/api/v1/apps/{}/logs?next_token={}{}",
            enc(app),
            enc(next_token),
            filter.query()
        ))
        .await
    }

    /// `POST /v1/apps/{app}/images?tag=` with a `docker save` / OCI archive file; returns the
    /// reference machines use.
    pub async fn upload_image(
        &self,
        app: &str,
        tag: &str,
        archive: &std::path::Path,
    ) -> Result<String> {
        self.upload_image_with_progress(app, tag, archive, |_, _| {})
            .await
    }

    /// [`Client::upload_image`], calling `progress(sent, total)` as the archive is read into
    /// the request (bytes).
    pub async fn upload_image_with_progress(
        &self,
        app: &str,
        tag: &str,
        archive: &std::path::Path,
        progress: impl Fn(u64, u64) + Send + Sync + 'static,
    ) -> Result<String> {
        use tokio::io::AsyncReadExt as _;
        let file = tokio::fs::File::open(archive)
            .await
            .map_err(|e| ClientError::Io(format!("{}: {e}", archive.display())))?;
        let total = file.metadata().await.map(|m| m.len()).unwrap_or(0);
        let chunks = futures_util::stream::unfold(
            (file, 0u64, progress),
            move |(mut file, sent, progress)| async move {
                let mut buf = vec![0u8; 256 * 1024];
                match file.read(&mut buf).await {
                    Ok(0) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        let sent = sent + n as u64;
                        progress(sent, total);
                        Some((Ok(buf), (file, sent, progress)))
                    }
                    Err(e) => Some((Err(e), (file, sent, progress))),
                }
            },
        );
        let v: Value = self
            .json(
                self.http
                    .post(self.url(&format!("/v1/apps/{}/images?tag={}", enc(app), enc(tag))))
                    .header("content-type", "application/x-tar")
                    .header("content-length", total.to_string())
                    .body(reqwest::Body::wrap_stream(chunks)),
            )
            .await?;
        v["ref"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| ClientError::Decode("no ref in the upload answer".into()))
    }

    /// `GET /v1/platform/regions`.
    pub async fn regions(&self) -> Result<RegionsResponse> {
        self.get("/v1/platform/regions").await
    }

    /// `POST /v1/tokens` (admin): a token for `org`.
    pub async fn create_token(&self, org: &str) -> Result<String> {
        let v: Value = self.post("/v1/tokens", &json!({"org_slug": org})).await?;
        v["token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| ClientError::Decode("no token in the answer".into()))
    }

    /// `POST /v1/orgs` (admin).
    pub async fn create_org(&self, slug: &str) -> Result<()> {
        self.post::<_, Value>("/v1/orgs", &json!({"slug": slug}))
            .await
            .map(|_| ())
    }

    // Volumes.

    fn vol(app: &str, id: &str) -> String {
        format!("/v1/apps/{}/volumes/{}", enc(app), enc(id))
    }

    async fn put<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        let body = serde_json::to_vec(body).map_err(|e| ClientError::Decode(e.to_string()))?;
        self.json(
            self.http
                .put(self.url(path))
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    /// `GET /v1/apps/{app}/volumes`.
    pub async fn volumes(&self, app: &str) -> Result<Vec<hangar_api_types::Volume>> {
        self.get(&format!("/v1/apps/{}/volumes", enc(app))).await
    }

    /// `GET …/volumes/{id}`.
    pub async fn volume(&self, app: &str, id: &str) -> Result<hangar_api_types::Volume> {
        self.get(&Self::vol(app, id)).await
    }

    /// `POST …/volumes`: a new volume (blank, or from `snapshot_id` / `source_volume_id`).
    pub async fn create_volume(
        &self,
        app: &str,
        req: &hangar_api_types::CreateVolumeRequest,
    ) -> Result<hangar_api_types::Volume> {
        self.post(&format!("/v1/apps/{}/volumes", enc(app)), req)
            .await
    }

    /// `PUT …/volumes/{id}`: snapshot retention and daily snapshots.
    pub async fn update_volume(
        &self,
        app: &str,
        id: &str,
        req: &hangar_api_types::UpdateVolumeRequest,
    ) -> Result<hangar_api_types::Volume> {
        self.put(&Self::vol(app, id), req).await
    }

    /// `PUT …/volumes/{id}/extend`: grows the volume to `size_gb`.
    pub async fn extend_volume(
        &self,
        app: &str,
        id: &str,
        size_gb: i64,
    ) -> Result<hangar_api_types::ExtendVolumeResponse> {
        self.put(
            &format!("{}/extend", Self::vol(app, id)),
            &hangar_api_types::ExtendVolumeRequest { size_gb },
        )
        .await
    }

    /// `DELETE …/volumes/{id}` (refused while a machine mounts it).
    pub async fn destroy_volume(&self, app: &str, id: &str) -> Result<hangar_api_types::Volume> {
        self.json(self.http.delete(self.url(&Self::vol(app, id))))
            .await
    }

    /// `GET …/volumes/{id}/snapshots`, newest first.
    pub async fn volume_snapshots(
        &self,
        app: &str,
        id: &str,
    ) -> Result<Vec<hangar_api_types::VolumeSnapshot>> {
        self.get(&format!("{}/snapshots", Self::vol(app, id))).await
    }

    /// `POST …/volumes/{id}/snapshots`: takes a snapshot (`running` until the host took it).
    pub async fn create_volume_snapshot(
        &self,
        app: &str,
        id: &str,
    ) -> Result<hangar_api_types::VolumeSnapshot> {
        self.post(&format!("{}/snapshots", Self::vol(app, id)), &json!({}))
            .await
    }

    /// `GET /v1/apps/{app}/secrets` (names and digests).
    pub async fn secrets(&self, app: &str) -> Result<hangar_api_types::SecretsListResponse> {
        self.get(&format!("/v1/apps/{}/secrets", enc(app))).await
    }

    /// `POST /v1/apps/{app}/secrets`: `Some` sets, `None` removes; returns the new version.
    pub async fn set_secrets(
        &self,
        app: &str,
        values: std::collections::BTreeMap<String, Option<String>>,
    ) -> Result<u64> {
        let r: hangar_api_types::SetSecretsResponse = self
            .post(
                &format!("/v1/apps/{}/secrets", enc(app)),
                &hangar_api_types::SetSecretsRequest { values },
            )
            .await?;
        Ok(r.version)
    }

    // IP assignments.

    /// `GET /v1/apps/{app}/ip_assignments`.
    pub async fn ip_assignments(&self, app: &str) -> Result<Vec<hangar_api_types::IpAssignment>> {
        let r: hangar_api_types::ListIpAssignmentsResponse = self
            .get(&format!("/v1/apps/{}/ip_assignments", enc(app)))
            .await?;
        Ok(r.ips)
    }

    /// `POST /v1/apps/{app}/ip_assignments`.
    pub async fn allocate_ip(
        &self,
        app: &str,
        req: &hangar_api_types::AllocateIpRequest,
    ) -> Result<hangar_api_types::IpAssignment> {
        self.post(&format!("/v1/apps/{}/ip_assignments", enc(app)), req)
            .await
    }

    /// `DELETE /v1/apps/{app}/ip_assignments/{ip}`.
    pub async fn release_ip(&self, app: &str, ip: &str) -> Result<()> {
        self.delete(&format!("/v1/apps/{}/ip_assignments/{}", enc(app), enc(ip)))
            .await
    }
}
