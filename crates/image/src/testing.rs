//! Test support (cargo feature `testing`; never in production builds): temporary directories
//! that clean up after themselves (mounts included), an offline-built busybox test image in
//! OCI-layout and `docker save` form, a layer builder that can also write hostile entries, and
//! a real registry process (Debian's `docker-registry`) with `skopeo` to push to it.
//!
//! Needs the Debian packages `busybox-static`, `docker-registry` and `skopeo`; when one is
//! missing the helpers return an error naming the package, so tests fail with a clear message.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::json;

use crate::digest::Digest;
use crate::oci;

/// Where `busybox-static` installs busybox.
pub const BUSYBOX: &str = "/usr/bin/busybox";
/// Debian's registry binary (package `docker-registry`).
pub const DOCKER_REGISTRY: &str = "/usr/bin/docker-registry";
/// `skopeo` (package `skopeo`).
pub const SKOPEO: &str = "/usr/bin/skopeo";
/// User of [`Registry::start_with_basic_auth`].
pub const REGISTRY_USER: &str = "hangar";
/// Password of [`Registry::start_with_basic_auth`].
pub const REGISTRY_PASSWORD: &str = "hangar-secret";
/// bcrypt of [`REGISTRY_PASSWORD`] (cost 5, for speed).
const REGISTRY_PASSWORD_BCRYPT: &str =
    "$2b$05$C3eEGHspli6oarh9K16NJex3Erdq2.aCr/593w5F5CI817F4gCpyW";

fn missing(what: &str, package: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{what} not found: install it with `apt-get install -y {package}`"),
    )
}

/// A unique directory under `std::env::temp_dir()`, removed on drop after unmounting (lazily)
/// anything still mounted beneath it, so a failing test leaves nothing behind.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `TMP/hangar-<prefix>-<pid>-<n>-<nanos>`.
    pub fn new(prefix: &str) -> io::Result<Self> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "hangar-{prefix}-{}-{}-{nanos}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&path)?;
        Ok(Self {
            path: fs::canonicalize(&path)?,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `path().join(rel)`.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Ok(mounts) = crate::rootfs::mountinfo() {
            let mut under: Vec<PathBuf> = mounts
                .into_iter()
                .map(|m| m.mount_point)
                .filter(|p| p.starts_with(&self.path))
                .collect();
            // Deepest first.
            under.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
            for p in under {
                let _ = rustix::mount::unmount(&p, rustix::mount::UnmountFlags::DETACH);
            }
        }
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Builds a layer tar in memory. The plain methods write ordinary entries; [`LayerBuilder::raw`]
/// writes the name and link bytes verbatim (`..`, absolute paths) for hostile-archive tests.
#[derive(Debug)]
pub struct LayerBuilder {
    out: Vec<u8>,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerBuilder {
    /// An empty layer.
    pub fn new() -> Self {
        Self { out: Vec::new() }
    }

    /// Appends an entry with the name and link name written verbatim (≤ 100 bytes each).
    #[allow(clippy::too_many_arguments)]
    pub fn raw_owned(
        &mut self,
        kind: tar::EntryType,
        path: &[u8],
        link: &[u8],
        data: &[u8],
        mode: u32,
        uid: u64,
        gid: u64,
    ) -> &mut Self {
        let mut header = tar::Header::new_ustar();
        {
            let old = header.as_old_mut();
            let n = path.len().min(old.name.len());
            old.name[..n].copy_from_slice(&path[..n]);
            let n = link.len().min(old.linkname.len());
            old.linkname[..n].copy_from_slice(&link[..n]);
        }
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_uid(uid);
        header.set_gid(gid);
        header.set_mtime(1_700_000_000);
        header.set_size(data.len() as u64);
        header.set_cksum();
        self.out.extend_from_slice(header.as_bytes());
        self.out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.out.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    /// [`LayerBuilder::raw_owned`] owned by root.
    pub fn raw(
        &mut self,
        kind: tar::EntryType,
        path: &[u8],
        link: &[u8],
        data: &[u8],
        mode: u32,
    ) -> &mut Self {
        self.raw_owned(kind, path, link, data, mode, 0, 0)
    }

    /// A directory.
    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        self.raw(tar::EntryType::Directory, path.as_bytes(), b"", b"", mode)
    }

    /// A regular file owned by root.
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> &mut Self {
        self.raw(tar::EntryType::Regular, path.as_bytes(), b"", data, mode)
    }

    /// A regular file with an owner.
    pub fn file_owned(
        &mut self,
        path: &str,
        mode: u32,
        uid: u64,
        gid: u64,
        data: &[u8],
    ) -> &mut Self {
        self.raw_owned(
            tar::EntryType::Regular,
            path.as_bytes(),
            b"",
            data,
            mode,
            uid,
            gid,
        )
    }

    /// A symlink.
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.raw(
            tar::EntryType::Symlink,
            path.as_bytes(),
            target.as_bytes(),
            b"",
            0o777,
        )
    }

    /// A hard link to an earlier entry.
    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.raw(
            tar::EntryType::Link,
            path.as_bytes(),
            target.as_bytes(),
            b"",
            0o644,
        )
    }

    /// A PAX extended header applying `records` to the next entry.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut data = Vec::new();
        for (key, value) in records {
            // "LEN key=value\n", where LEN counts itself.
            let body = key.len() + value.len() + 3;
            let mut len = body + body.to_string().len();
            if len.to_string().len() != body.to_string().len() {
                len += 1;
            }
            data.extend_from_slice(format!("{len} {key}=").as_bytes());
            data.extend_from_slice(value);
            data.push(b'\n');
        }
        self.raw(
            tar::EntryType::XHeader,
            b"././@PaxHeader",
            b"",
            &data,
            0o644,
        )
    }

    /// The tar bytes (with the end-of-archive marker).
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.out);
        out.extend(std::iter::repeat_n(0u8, 1024));
        out
    }
}

/// Gzips bytes (deterministically: no name, mtime 0).
pub fn gzip(bytes: &[u8]) -> io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(bytes)?;
    encoder.finish()
}

/// An image built in memory: uncompressed layer tars and the config JSON.
#[derive(Debug, Clone)]
pub struct TestImage {
    /// Uncompressed layer tars, base first.
    pub layers: Vec<Vec<u8>>,
    /// Image config JSON (its `rootfs.diff_ids` match `layers`).
    pub config: serde_json::Value,
}

/// Content of the file the second layer of [`busybox_image`] whites out.
pub const REMOVED_FILE: &str = "etc/hangar-removed";
/// Directory the second layer makes opaque.
pub const OPAQUE_DIR: &str = "opaque";

/// Whether an ELF file has no interpreter (is statically linked).
fn is_static_elf(bytes: &[u8]) -> bool {
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    };
    if bytes.get(..5) != Some(b"\x7fELF\x02") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..usize::from(phnum)).all(|i| {
        let off = usize::try_from(phoff)
            .unwrap_or(usize::MAX)
            .saturating_add(i.saturating_mul(usize::from(phentsize)));
        u32_at(off) != Some(3) // PT_INTERP
    })
}

/// The busybox test image: layer 1 has a static `/bin/busybox` with applet symlinks
/// (`sh`, `httpd`, …), `/etc/passwd`, `/www/index.html`, [`REMOVED_FILE`], a setuid file, a
/// file owned by 1234:5678, a hard link, and `/opaque/{lower-a,sub/lower-b}`; layer 2 whites
/// out [`REMOVED_FILE`], makes [`OPAQUE_DIR`] opaque (adding `upper-c`) and adds
/// `/etc/layer2`. The config runs `httpd -f -p 8080 -h /www`.
pub fn busybox_image() -> io::Result<TestImage> {
    let busybox = fs::read(BUSYBOX).map_err(|_| missing(BUSYBOX, "busybox-static"))?;
    if !is_static_elf(&busybox) {
        return Err(io::Error::other(format!(
            "{BUSYBOX} is not statically linked: install `busybox-static` (not `busybox`)"
        )));
    }
    let mut base = LayerBuilder::new();
    base.dir("bin/", 0o755)
        .dir("etc/", 0o755)
        .dir("tmp/", 0o1777)
        .dir("root/", 0o700)
        .dir("www/", 0o755)
        .dir("opaque/", 0o755)
        .dir("opaque/sub/", 0o755)
        .file("bin/busybox", 0o755, &busybox);
    for applet in [
        "sh", "httpd", "ls", "cat", "echo", "sleep", "wget", "ps", "env", "id", "mkdir", "rm",
        "touch", "kill", "true", "false", "nc", "ip", "hostname",
    ] {
        base.symlink(&format!("bin/{applet}"), "busybox");
    }
    base.file(
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )
    .file("etc/group", 0o644, b"root:x:0:\nnogroup:x:65534:\n")
    .file(REMOVED_FILE, 0o644, b"lower file, whited out by layer 2\n")
    .file_owned("etc/owned", 0o640, 1234, 5678, b"owned by 1234:5678\n")
    .file("bin/suid", 0o4755, b"#!/bin/sh\necho suid\n")
    .hardlink("bin/busybox-link", "bin/busybox")
    .file("www/index.html", 0o644, b"hello from hangar\n")
    .file("opaque/lower-a", 0o644, b"a\n")
    .file("opaque/sub/lower-b", 0o644, b"b\n");
    let base = base.finish();

    let top = LayerBuilder::new()
        .dir("etc/", 0o755)
        .file("etc/.wh.hangar-removed", 0o644, b"")
        .dir("opaque/", 0o755)
        .file("opaque/.wh..wh..opq", 0o644, b"")
        .file("opaque/upper-c", 0o644, b"c\n")
        .file("etc/layer2", 0o644, b"from layer 2\n")
        .finish();

    let diff_ids: Vec<String> = [&base, &top]
        .iter()
        .map(|l| Digest::of(l).to_string())
        .collect();
    let platform = oci::Platform::host();
    let config = json!({
        "architecture": platform.architecture,
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {
            "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HANGAR_TEST=1"],
            "Cmd": ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"],
            "WorkingDir": "/www",
            "User": "root",
            "Labels": {"org.hangar.test": "busybox", "fly.version": "test"},
            "ExposedPorts": {"8080/tcp": {}},
            "StopSignal": "SIGTERM"
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "hangar test: busybox"}, {"created_by": "hangar test: whiteouts"}]
    });
    Ok(TestImage {
        layers: vec![base, top],
        config,
    })
}

fn write_blob(dir: &Path, bytes: &[u8]) -> io::Result<Digest> {
    let digest = Digest::of(bytes);
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs)?;
    fs::write(blobs.join(digest.hex()), bytes)?;
    Ok(digest)
}

/// Writes `image` as an OCI image layout in `dir` (first layer gzipped, the others plain),
/// its index entry annotated `org.opencontainers.image.ref.name = tag` (as
/// `skopeo copy … oci:DIR:tag` does). Returns the manifest digest.
pub fn write_oci_layout(image: &TestImage, dir: &Path, tag: &str) -> io::Result<Digest> {
    fs::create_dir_all(dir)?;
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let config = serde_json::to_vec(&image.config)?;
    let config_digest = write_blob(dir, &config)?;
    let mut layers = Vec::new();
    for (i, layer) in image.layers.iter().enumerate() {
        let (bytes, media_type) = if i == 0 {
            (gzip(layer)?, oci::OCI_LAYER_GZIP)
        } else {
            (layer.clone(), oci::OCI_LAYER_TAR)
        };
        let digest = write_blob(dir, &bytes)?;
        layers.push(
            json!({"mediaType": media_type, "digest": digest.to_string(), "size": bytes.len()}),
        );
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": oci::OCI_MANIFEST,
        "config": {"mediaType": oci::OCI_CONFIG, "digest": config_digest.to_string(), "size": config.len()},
        "layers": layers,
    }))?;
    let manifest_digest = write_blob(dir, &manifest)?;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": oci::OCI_INDEX,
        "manifests": [{
            "mediaType": oci::OCI_MANIFEST,
            "digest": manifest_digest.to_string(),
            "size": manifest.len(),
            "annotations": {oci::ANNOTATION_REF_NAME: tag}
        }]
    });
    fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
    Ok(manifest_digest)
}

/// Tars a directory tree (files and directories only) into `tar_path`.
pub fn tar_dir(dir: &Path, tar_path: &Path) -> io::Result<()> {
    let mut builder = tar::Builder::new(fs::File::create(tar_path)?);
    builder.mode(tar::HeaderMode::Deterministic);
    builder.append_dir_all(".", dir)?;
    builder.into_inner()?.sync_all()
}

/// Writes `image` as an OCI layout tar archive. Returns the manifest digest.
pub fn write_oci_archive(image: &TestImage, tar_path: &Path, tag: &str) -> io::Result<Digest> {
    let staging = tar_path.with_extension("layout");
    let digest = write_oci_layout(image, &staging, tag)?;
    tar_dir(&staging, tar_path)?;
    fs::remove_dir_all(&staging)?;
    Ok(digest)
}

/// Writes images as one `docker save` archive (legacy layout: `<id>.json` configs,
/// `<n>/layer.tar` uncompressed layers, `manifest.json`, `repositories`). Each image is given
/// with its `RepoTags`.
pub fn write_docker_save(images: &[(&TestImage, &[&str])], tar_path: &Path) -> io::Result<()> {
    let mut builder = tar::Builder::new(fs::File::create(tar_path)?);
    let mut append = |path: &str, bytes: &[u8]| -> io::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, path, bytes)
    };
    let mut manifest = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (image, tags) in images {
        let config = serde_json::to_vec(&image.config)?;
        let id = Digest::of(&config);
        append(&format!("{}.json", id.hex()), &config)?;
        let mut layer_paths = Vec::new();
        for layer in &image.layers {
            let layer_id = Digest::of(layer);
            let path = format!("{}/layer.tar", layer_id.hex());
            append(&format!("{}/VERSION", layer_id.hex()), b"1.0")?;
            append(&path, layer)?;
            layer_paths.push(path);
        }
        for tag in *tags {
            if let Some((repo, t)) = tag.rsplit_once(':') {
                let top = Digest::of(image.layers.last().map_or(&[][..], |l| l.as_slice()));
                repositories
                    .entry(repo.to_owned())
                    .or_default()
                    .insert(t.to_owned(), top.hex().to_owned());
            }
        }
        manifest.push(json!({
            "Config": format!("{}.json", id.hex()),
            "RepoTags": tags,
            "Layers": layer_paths,
        }));
    }
    append("manifest.json", &serde_json::to_vec(&manifest)?)?;
    append("repositories", &serde_json::to_vec(&repositories)?)?;
    builder.into_inner()?.sync_all()
}

/// A free TCP port on 127.0.0.1 (bound and released; a tiny race with other processes).
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A running `docker-registry serve` on 127.0.0.1 with its storage in a temp dir; killed on
/// drop.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    addr: SocketAddr,
    dir: TempDir,
    basic_auth: bool,
}

impl Registry {
    /// Starts an anonymous registry.
    pub fn start() -> io::Result<Self> {
        Self::start_inner(false)
    }

    /// Starts a registry requiring basic auth ([`REGISTRY_USER`] / [`REGISTRY_PASSWORD`]).
    pub fn start_with_basic_auth() -> io::Result<Self> {
        Self::start_inner(true)
    }

    fn start_inner(basic_auth: bool) -> io::Result<Self> {
        if !Path::new(DOCKER_REGISTRY).exists() {
            return Err(missing(DOCKER_REGISTRY, "docker-registry"));
        }
        let mut last_error = None;
        // The free port can be taken between our probe and the registry's bind: retry.
        for _ in 0..5 {
            match Self::try_start(basic_auth) {
                Ok(r) => return Ok(r),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("registry did not start")))
    }

    fn try_start(basic_auth: bool) -> io::Result<Self> {
        let dir = TempDir::new("registry")?;
        let port = free_port()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let auth = if basic_auth {
            let htpasswd = dir.join("htpasswd");
            fs::write(
                &htpasswd,
                format!("{REGISTRY_USER}:{REGISTRY_PASSWORD_BCRYPT}\n"),
            )?;
            format!(
                "auth:\n  htpasswd:\n    realm: hangar-test\n    path: {}\n",
                htpasswd.display()
            )
        } else {
            String::new()
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{auth}",
            dir.join("storage").display()
        );
        let config_path = dir.join("config.yml");
        fs::write(&config_path, config)?;
        let log = fs::File::create(dir.join("registry.log"))?;
        let child = Command::new(DOCKER_REGISTRY)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut registry = Self {
            child,
            addr,
            dir,
            basic_auth,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = registry.child.try_wait()? {
                let log = fs::read_to_string(registry.dir.join("registry.log")).unwrap_or_default();
                return Err(io::Error::other(format!(
                    "docker-registry exited with {status}: {log}"
                )));
            }
            if registry.ping().is_ok() {
                return Ok(registry);
            }
            if Instant::now() > deadline {
                let log = fs::read_to_string(registry.dir.join("registry.log")).unwrap_or_default();
                return Err(io::Error::other(format!(
                    "docker-registry did not answer on {addr} within 15 s: {log}"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `GET /v2/` answers 200 (or 401 when auth is on).
    fn ping(&self) -> io::Result<()> {
        let mut stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        write!(
            stream,
            "GET /v2/ HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        if response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.1 401") {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "unexpected answer: {response:.80}"
            )))
        }
    }

    /// `127.0.0.1:PORT`, the registry part of references to it.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Pushes the image tagged `tag` of the OCI layout `layout` to `REPOSITORY:push_tag`
    /// with `skopeo copy`.
    pub fn push_oci_layout(
        &self,
        layout: &Path,
        tag: &str,
        repository: &str,
        push_tag: &str,
    ) -> io::Result<()> {
        if !Path::new(SKOPEO).exists() {
            return Err(missing(SKOPEO, "skopeo"));
        }
        let mut command = Command::new(SKOPEO);
        command
            .arg("--insecure-policy")
            .arg("copy")
            .arg("--quiet")
            .arg("--dest-tls-verify=false")
            // Push blobs and manifest byte for byte, so the pulled digest is the layout's.
            .arg("--preserve-digests");
        if self.basic_auth {
            command.arg(format!("--dest-creds={REGISTRY_USER}:{REGISTRY_PASSWORD}"));
        }
        let output = command
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{repository}:{push_tag}", self.host()))
            // skopeo looks for policy and auth files under HOME; keep it away from the host's.
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .output()?;
        if output.status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "skopeo copy failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )))
        }
    }

    /// The registry's storage directory (to count what it holds).
    pub fn storage(&self) -> PathBuf {
        self.dir.join("storage")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
