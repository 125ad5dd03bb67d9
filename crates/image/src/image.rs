//! What the store knows about one image: its manifest digest, layers, and the typed runtime
//! configuration the agent needs to start a machine from it.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::oci::{ConfigFile, Platform};
use crate::reference::Reference;

/// A stored image. Identified by its manifest digest; references (tags) point at it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// Digest of the image manifest (for `docker save` imports: of the OCI manifest Hangar
    /// synthesises from the archive, which is stable across re-imports).
    pub digest: Digest,
    /// Media type of that manifest.
    pub manifest_media_type: String,
    /// Digest of the image config blob.
    pub config_digest: Digest,
    /// Platform from the image config.
    pub platform: Platform,
    /// Creation time from the image config (RFC 3339), if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Layers, base first.
    pub layers: Vec<Layer>,
    /// The runtime configuration.
    pub config: ImageConfig,
}

/// One layer of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// Digest of the blob as distributed (compressed).
    pub digest: Digest,
    /// Digest of the uncompressed tar: the layer's identity in `layers/`.
    pub diff_id: Digest,
    /// Size of the blob in bytes.
    pub size: u64,
    /// Media type of the blob.
    pub media_type: String,
}

/// The parts of an image config that decide how a machine's process starts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// `Entrypoint`.
    #[serde(default)]
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    #[serde(default)]
    pub cmd: Vec<String>,
    /// `Env`, as `KEY=value` entries in image order.
    #[serde(default)]
    pub env: Vec<String>,
    /// `WorkingDir` (None when unset or empty).
    #[serde(default)]
    pub working_dir: Option<String>,
    /// `User` (None when unset or empty): a name, uid, `uid:gid` or `user:group`.
    #[serde(default)]
    pub user: Option<String>,
    /// `Labels`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `ExposedPorts`, sorted.
    #[serde(default)]
    pub exposed_ports: Vec<ExposedPort>,
    /// `StopSignal` (e.g. `SIGTERM`).
    #[serde(default)]
    pub stop_signal: Option<String>,
    /// `Volumes` mount points.
    #[serde(default)]
    pub volumes: Vec<String>,
}

impl ImageConfig {
    /// The typed view of an image config file.
    pub fn from_config_file(file: &ConfigFile) -> Self {
        let Some(rc) = &file.config else {
            return Self::default();
        };
        let non_empty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        let mut exposed_ports: Vec<ExposedPort> = rc
            .exposed_ports
            .keys()
            .filter_map(|k| ExposedPort::parse(k))
            .collect();
        exposed_ports.sort();
        exposed_ports.dedup();
        Self {
            entrypoint: rc.entrypoint.clone(),
            cmd: rc.cmd.clone(),
            env: rc.env.clone(),
            working_dir: non_empty(&rc.working_dir),
            user: non_empty(&rc.user),
            labels: rc.labels.clone(),
            exposed_ports,
            stop_signal: non_empty(&rc.stop_signal),
            volumes: rc.volumes.keys().cloned().collect(),
        }
    }

    /// `Env` split into pairs (an entry without `=` is a name with an empty value).
    pub fn env_pairs(&self) -> Vec<(String, String)> {
        self.env
            .iter()
            .map(|e| match e.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (e.clone(), String::new()),
            })
            .collect()
    }

    /// The command a machine runs without overrides: entrypoint followed by cmd.
    pub fn command(&self) -> Vec<String> {
        self.entrypoint.iter().chain(&self.cmd).cloned().collect()
    }
}

/// A port from `ExposedPorts`: `8080/tcp`, `53/udp`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ExposedPort {
    /// Port number.
    pub port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
}

impl ExposedPort {
    /// Parses `PORT[/PROTO]` (protocol defaults to tcp); None for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        let (port, protocol) = s.split_once('/').unwrap_or((s, "tcp"));
        let protocol = protocol.to_ascii_lowercase();
        if !matches!(protocol.as_str(), "tcp" | "udp" | "sctp") {
            return None;
        }
        Some(Self {
            port: port.parse().ok()?,
            protocol,
        })
    }
}

impl fmt::Display for ExposedPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, self.protocol)
    }
}

impl Image {
    /// The Machines API `image_ref` of this image as named by `reference`: registry,
    /// repository, tag, the manifest digest, and the image labels.
    pub fn image_ref(&self, reference: &Reference) -> hangar_api_types::ImageRef {
        hangar_api_types::ImageRef {
            registry: reference.registry().to_owned(),
            repository: reference.repository().to_owned(),
            tag: reference.tag().unwrap_or_default().to_owned(),
            digest: self.digest.to_string(),
            labels: self.config.labels.clone(),
        }
    }

    /// Diff ids of the layers, top first, without repeats (the overlay lowerdir order).
    pub fn lower_layers(&self) -> Vec<&Digest> {
        let mut seen = std::collections::HashSet::new();
        self.layers
            .iter()
            .rev()
            .map(|l| &l.diff_id)
            .filter(|d| seen.insert(*d))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::RuntimeConfig;

    #[test]
    fn lower_layers_are_top_first_without_repeats() {
        let layer = |n: &[u8]| Layer {
            digest: Digest::of(n),
            diff_id: Digest::of(n),
            size: 1,
            media_type: String::new(),
        };
        let image = Image {
            digest: Digest::of(b"m"),
            manifest_media_type: String::new(),
            config_digest: Digest::of(b"c"),
            platform: Platform::host(),
            created: None,
            layers: vec![layer(b"a"), layer(b"b"), layer(b"a"), layer(b"c")],
            config: ImageConfig::default(),
        };
        let want = [Digest::of(b"c"), Digest::of(b"a"), Digest::of(b"b")];
        assert_eq!(image.lower_layers(), want.iter().collect::<Vec<_>>());
    }

    #[test]
    fn typed_config() {
        let file = ConfigFile {
            config: Some(RuntimeConfig {
                entrypoint: vec!["/init".into()],
                cmd: vec!["serve".into()],
                env: vec!["A=1".into(), "B".into(), "C=x=y".into()],
                working_dir: Some(String::new()),
                user: Some("1000:1000".into()),
                exposed_ports: [
                    ("8080/tcp".to_owned(), serde_json::json!({})),
                    ("53/UDP".to_owned(), serde_json::json!({})),
                    ("bogus".to_owned(), serde_json::json!({})),
                ]
                .into_iter()
                .collect(),
                ..RuntimeConfig::default()
            }),
            ..ConfigFile::default()
        };
        let c = ImageConfig::from_config_file(&file);
        assert_eq!(c.command(), vec!["/init", "serve"]);
        assert_eq!(c.working_dir, None);
        assert_eq!(c.user.as_deref(), Some("1000:1000"));
        assert_eq!(
            c.env_pairs(),
            vec![
                ("A".to_owned(), "1".to_owned()),
                ("B".to_owned(), String::new()),
                ("C".to_owned(), "x=y".to_owned())
            ]
        );
        let ports: Vec<String> = c.exposed_ports.iter().map(ToString::to_string).collect();
        assert_eq!(ports, vec!["53/udp", "8080/tcp"]);
    }
}
