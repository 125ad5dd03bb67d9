//! Importing images from archives: `docker save` output (`manifest.json` + `repositories` +
//! config and layer files) and OCI image layouts (`oci-layout`, `index.json`, `blobs/`), each
//! either as a tar file (optionally gzipped) or as an unpacked directory. An archive may hold
//! several images; OCI indexes are resolved to the wanted platform. Docker 25+ archives carry
//! both formats; the OCI one is used then, since it keeps the real manifest digests.
//!
//! A tar archive is read once, front to back: every file goes straight into the blob store
//! (hashed on the way) except the few small top-level metadata files, so archives of any size
//! import without a temporary copy.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::image::Image;
use crate::oci::{
    self, ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, ConfigFile, Descriptor, DockerSaveEntry,
    Index, Manifest, ManifestKind, Platform,
};
use crate::reference::Reference;
use crate::store::{ImageStore, MAX_METADATA_BYTES, Pins};
use crate::unpack::{self, Compression};

const METADATA_FILES: [&str; 4] = ["manifest.json", "index.json", "oci-layout", "repositories"];
const MAX_NESTING: usize = 4;

/// Options of an import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Repository for OCI images whose `org.opencontainers.image.ref.name` is only a tag (as
    /// `skopeo copy … oci:DIR:tag` writes): `hangar/test` + `v1` → `docker.io/hangar/test:v1`.
    /// Without it such images are stored by digest only.
    pub repository: Option<String>,
    /// An extra reference for the imported image; the archive must then hold exactly one.
    pub tag: Option<Reference>,
    /// Platform to pick from indexes; the host's (`linux/amd64` here) when None.
    pub platform: Option<Platform>,
}

/// One imported image and the references now pointing at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// The image.
    pub image: Image,
    /// References tagged by this import.
    pub references: Vec<Reference>,
}

enum Item {
    Small(Vec<u8>),
    Blob(Digest),
    Link(String),
}

enum Source {
    Dir(PathBuf),
    Tar(HashMap<String, Item>),
}

/// Normalises an archive-relative path; None when it climbs out.
fn normalise(path: &str) -> Option<String> {
    let mut out: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            p => out.push(p),
        }
    }
    Some(out.join("/"))
}

impl Source {
    fn index_tar(store: &ImageStore, reader: impl Read, pins: &mut Pins) -> Result<Self> {
        let mut items = HashMap::new();
        let mut archive = tar::Archive::new(reader);
        let bad = |e: io::Error| Error::InvalidArchive(format!("reading the tar: {e}"));
        for entry in archive.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let Some(path) = normalise(&raw) else {
                return Err(Error::InvalidArchive(format!(
                    "entry {raw:?} escapes the archive"
                )));
            };
            let kind = entry.header().entry_type();
            if kind.is_file() {
                if METADATA_FILES.contains(&path.as_str()) {
                    let mut bytes = Vec::new();
                    (&mut entry)
                        .take(MAX_METADATA_BYTES + 1)
                        .read_to_end(&mut bytes)
                        .map_err(bad)?;
                    if bytes.len() as u64 > MAX_METADATA_BYTES {
                        return Err(Error::TooLarge {
                            what: path,
                            limit: MAX_METADATA_BYTES,
                        });
                    }
                    items.insert(path, Item::Small(bytes));
                } else {
                    // OCI blobs are named by their digest: check it on the way in.
                    let expected = path
                        .strip_prefix("blobs/sha256/")
                        .and_then(|hex| Digest::from_hex(hex).ok());
                    let (digest, _) =
                        store.put_blob_reader(&mut entry, expected.as_ref(), &path)?;
                    pins.add(&digest);
                    items.insert(path, Item::Blob(digest));
                }
            } else if kind.is_symlink() || kind.is_hard_link() {
                let target = entry
                    .link_name_bytes()
                    .map(|t| String::from_utf8_lossy(&t).into_owned())
                    .unwrap_or_default();
                let target = if kind.is_symlink() && !target.starts_with('/') {
                    // Relative to the link's directory.
                    match path.rsplit_once('/') {
                        Some((dir, _)) => format!("{dir}/{target}"),
                        None => target,
                    }
                } else {
                    target
                };
                items.insert(path, Item::Link(target));
            }
        }
        Ok(Self::Tar(items))
    }

    fn lookup<'a>(items: &'a HashMap<String, Item>, path: &str) -> Option<&'a Item> {
        let mut path = normalise(path)?;
        for _ in 0..8 {
            match items.get(&path)? {
                Item::Link(target) => path = normalise(target)?,
                other => return Some(other),
            }
        }
        None
    }

    fn dir_path(dir: &Path, path: &str) -> Result<PathBuf> {
        normalise(path)
            .map(|p| dir.join(p))
            .ok_or_else(|| Error::InvalidArchive(format!("path {path:?} escapes the archive")))
    }

    fn exists(&self, path: &str) -> bool {
        match self {
            Self::Dir(dir) => Self::dir_path(dir, path).is_ok_and(|p| p.is_file()),
            Self::Tar(items) => Self::lookup(items, path).is_some(),
        }
    }

    /// Reads a small file (metadata, manifest, config).
    fn read(&self, store: &ImageStore, path: &str) -> Result<Vec<u8>> {
        let missing = || Error::InvalidArchive(format!("{path} is missing"));
        match self {
            Self::Dir(dir) => {
                let p = Self::dir_path(dir, path)?;
                let file = File::open(&p).map_err(|e| match e.kind() {
                    io::ErrorKind::NotFound => missing(),
                    _ => Error::io("open", &p, e),
                })?;
                let mut bytes = Vec::new();
                file.take(MAX_METADATA_BYTES + 1)
                    .read_to_end(&mut bytes)
                    .ctx("read", &p)?;
                if bytes.len() as u64 > MAX_METADATA_BYTES {
                    return Err(Error::TooLarge {
                        what: path.to_owned(),
                        limit: MAX_METADATA_BYTES,
                    });
                }
                Ok(bytes)
            }
            Self::Tar(items) => match Self::lookup(items, path).ok_or_else(missing)? {
                Item::Small(bytes) => Ok(bytes.clone()),
                Item::Blob(digest) => store.read_blob(digest, MAX_METADATA_BYTES),
                Item::Link(_) => Err(missing()),
            },
        }
    }

    /// Puts a file into the blob store (verifying `expected`) and returns its digest.
    fn blob(
        &self,
        store: &ImageStore,
        path: &str,
        expected: Option<&Digest>,
        pins: &mut Pins,
    ) -> Result<Digest> {
        let missing = || Error::InvalidArchive(format!("{path} is missing"));
        let digest = match self {
            Self::Dir(dir) => {
                if let Some(expected) = expected {
                    pins.add(expected);
                    if store.has_blob(expected) {
                        return Ok(expected.clone());
                    }
                }
                let p = Self::dir_path(dir, path)?;
                let file = File::open(&p).map_err(|e| match e.kind() {
                    io::ErrorKind::NotFound => missing(),
                    _ => Error::io("open", &p, e),
                })?;
                store
                    .put_blob_reader(io::BufReader::new(file), expected, path)?
                    .0
            }
            Self::Tar(items) => match Self::lookup(items, path).ok_or_else(missing)? {
                Item::Blob(digest) => digest.clone(),
                Item::Small(bytes) => store.put_blob_bytes(bytes)?,
                Item::Link(_) => return Err(missing()),
            },
        };
        if let Some(expected) = expected
            && *expected != digest
        {
            return Err(Error::DigestMismatch {
                what: path.to_owned(),
                expected: expected.clone(),
                actual: digest,
            });
        }
        pins.add(&digest);
        Ok(digest)
    }
}

fn json<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::InvalidArchive(format!("{what}: {e}")))
}

fn blob_path(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm(), d.hex())
}

impl ImageStore {
    /// Imports every image of an archive at `path`: a tar file (plain or gzipped) or a
    /// directory, in `docker save` or OCI layout format.
    pub fn import(&self, path: &Path, options: &ImportOptions) -> Result<Vec<Imported>> {
        let meta = std::fs::metadata(path).ctx("open", path)?;
        if meta.is_dir() {
            let mut pins = self.pins();
            self.import_source(&Source::Dir(path.to_path_buf()), options, &mut pins)
        } else {
            let file = File::open(path).ctx("open", path)?;
            self.import_tar_stream(file, options)
        }
    }

    /// Imports every image of a tar stream (plain or gzipped), e.g. an upload.
    pub fn import_reader(
        &self,
        reader: impl Read,
        options: &ImportOptions,
    ) -> Result<Vec<Imported>> {
        self.import_tar_stream(reader, options)
    }

    fn import_tar_stream(
        &self,
        reader: impl Read,
        options: &ImportOptions,
    ) -> Result<Vec<Imported>> {
        let mut pins = self.pins();
        let mut reader = io::BufReader::with_capacity(256 * 1024, reader);
        let mut head = [0u8; 4];
        let n = unpack::read_up_to(&mut reader, &mut head)
            .map_err(|e| Error::InvalidArchive(format!("reading the archive: {e}")))?;
        let head = head[..n].to_vec();
        let stream = io::Cursor::new(head.clone()).chain(reader);
        let source = match Compression::sniff(&head) {
            Compression::Gzip => {
                Source::index_tar(self, flate2::read::MultiGzDecoder::new(stream), &mut pins)?
            }
            Compression::None => Source::index_tar(self, stream, &mut pins)?,
            Compression::Zstd => {
                return Err(Error::Unsupported(
                    "zstd-compressed archives (decompress it first)".to_owned(),
                ));
            }
        };
        self.import_source(&source, options, &mut pins)
    }

    fn import_source(
        &self,
        source: &Source,
        options: &ImportOptions,
        pins: &mut Pins,
    ) -> Result<Vec<Imported>> {
        let platform = options.platform.clone().unwrap_or_else(Platform::host);
        let mut imported: Vec<Imported> = Vec::new();
        if source.exists("index.json") {
            let index: Index = json(&source.read(self, "index.json")?, "index.json")?;
            for desc in &index.manifests {
                let image = self.import_oci(source, desc, &platform, pins, 0)?;
                let references = oci_references(desc, options)?;
                merge(&mut imported, image, references);
            }
        } else if source.exists("manifest.json") {
            let entries: Vec<DockerSaveEntry> =
                json(&source.read(self, "manifest.json")?, "manifest.json")?;
            for entry in &entries {
                let image = self.import_docker_entry(source, entry, pins)?;
                let references = entry
                    .repo_tags
                    .iter()
                    .map(|t| {
                        Reference::parse(t).map_err(|e| {
                            Error::InvalidArchive(format!("manifest.json RepoTags: {e}"))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                merge(&mut imported, image, references);
            }
        } else {
            return Err(Error::InvalidArchive(
                "neither an OCI image layout (index.json) nor a docker save archive \
                 (manifest.json)"
                    .to_owned(),
            ));
        }
        if imported.is_empty() {
            return Err(Error::InvalidArchive(
                "the archive holds no image".to_owned(),
            ));
        }
        if let Some(tag) = &options.tag {
            if imported.len() != 1 {
                return Err(Error::InvalidArchive(format!(
                    "the archive holds {} images; a tag can name only one",
                    imported.len()
                )));
            }
            if !imported[0].references.contains(tag) {
                imported[0].references.push(tag.clone());
            }
        }
        for item in &imported {
            for reference in &item.references {
                self.tag(reference, &item.image.digest)?;
            }
        }
        Ok(imported)
    }

    fn import_oci(
        &self,
        source: &Source,
        desc: &Descriptor,
        platform: &Platform,
        pins: &mut Pins,
        depth: usize,
    ) -> Result<Image> {
        if depth > MAX_NESTING {
            return Err(Error::InvalidArchive(
                "indexes nested too deeply".to_owned(),
            ));
        }
        let digest = source.blob(self, &blob_path(&desc.digest), Some(&desc.digest), pins)?;
        let bytes = self.read_blob(&digest, MAX_METADATA_BYTES)?;
        if bytes.len() as u64 != desc.size {
            return Err(Error::SizeMismatch {
                what: format!("manifest {digest}"),
                expected: desc.size,
                actual: bytes.len() as u64,
            });
        }
        let media_type = Some(desc.media_type.as_str()).filter(|t| !t.is_empty());
        match oci::classify(media_type, &bytes) {
            ManifestKind::Index => {
                let index: Index = json(&bytes, &format!("index {digest}"))?;
                let chosen = choose_platform(&index, platform, &digest.to_string())?;
                self.import_oci(source, &chosen, platform, pins, depth + 1)
            }
            ManifestKind::Image => {
                let manifest: Manifest = json(&bytes, &format!("manifest {digest}"))?;
                let config_digest = source.blob(
                    self,
                    &blob_path(&manifest.config.digest),
                    Some(&manifest.config.digest),
                    pins,
                )?;
                let config = self.read_blob(&config_digest, MAX_METADATA_BYTES)?;
                let media_type = media_type
                    .or(manifest.media_type.as_deref())
                    .unwrap_or(oci::OCI_MANIFEST);
                let image = Self::image_from_parts(digest, media_type, &manifest, &config)?;
                for layer in &image.layers {
                    source.blob(self, &blob_path(&layer.digest), Some(&layer.digest), pins)?;
                    pins.add(&layer.diff_id);
                    self.ensure_layer(&layer.digest, &layer.diff_id)?;
                }
                self.save_image(&image)?;
                Ok(image)
            }
            ManifestKind::Schema1 => Err(Error::Unsupported(
                "docker schema 1 manifests (re-push the image with a current docker)".to_owned(),
            )),
            ManifestKind::Unknown => Err(Error::InvalidArchive(format!(
                "{digest} is neither an image manifest nor an index"
            ))),
        }
    }

    fn import_docker_entry(
        &self,
        source: &Source,
        entry: &DockerSaveEntry,
        pins: &mut Pins,
    ) -> Result<Image> {
        let config_digest = source.blob(self, &entry.config, None, pins)?;
        let config_bytes = self.read_blob(&config_digest, MAX_METADATA_BYTES)?;
        let config: ConfigFile = json(&config_bytes, &entry.config)?;
        let mut layers = Vec::with_capacity(entry.layers.len());
        for path in &entry.layers {
            let digest = source.blob(self, path, None, pins)?;
            let blob = self.blob_path(&digest);
            let mut head = [0u8; 4];
            let mut file = File::open(&blob).ctx("open", &blob)?;
            let n = unpack::read_up_to(&mut file, &mut head).ctx("read", &blob)?;
            let media_type = match Compression::sniff(&head[..n]) {
                Compression::None => oci::OCI_LAYER_TAR,
                Compression::Gzip => oci::OCI_LAYER_GZIP,
                Compression::Zstd => oci::OCI_LAYER_ZSTD,
            };
            let size = std::fs::metadata(&blob).ctx("stat", &blob)?.len();
            layers.push(Descriptor {
                media_type: media_type.to_owned(),
                digest,
                size,
                platform: None,
                annotations: Default::default(),
            });
        }
        // The manifest docker would push for this image; its digest names the image.
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(oci::OCI_MANIFEST.to_owned()),
            config: Descriptor {
                media_type: oci::OCI_CONFIG.to_owned(),
                digest: config_digest,
                size: config_bytes.len() as u64,
                platform: None,
                annotations: Default::default(),
            },
            layers,
            annotations: Default::default(),
        };
        let manifest_bytes = serde_json::to_vec(&manifest)
            .map_err(|e| Error::Internal(format!("serialise manifest: {e}")))?;
        let digest = self.put_blob_bytes(&manifest_bytes)?;
        pins.add(&digest);
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(Error::InvalidArchive(format!(
                "{}: {} layers but the config lists {} diff ids",
                entry.config,
                manifest.layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        let image = Self::image_from_parts(digest, oci::OCI_MANIFEST, &manifest, &config_bytes)?;
        for layer in &image.layers {
            pins.add(&layer.diff_id);
            self.ensure_layer(&layer.digest, &layer.diff_id)?;
        }
        self.save_image(&image)?;
        Ok(image)
    }
}

/// Picks the manifest for `platform` from an index.
pub(crate) fn choose_platform(
    index: &Index,
    platform: &Platform,
    what: &str,
) -> Result<Descriptor> {
    let candidates: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| !d.media_type.contains("attestation"))
        .collect();
    if let Some(d) = candidates
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| platform.matches(p)))
    {
        return Ok((*d).clone());
    }
    let available: Vec<String> = candidates
        .iter()
        .filter_map(|d| d.platform.as_ref())
        .filter(|p| p.os != "unknown")
        .map(|p| match &p.variant {
            Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
            None => format!("{}/{}", p.os, p.architecture),
        })
        .collect();
    // An index without platform information and a single manifest: take it.
    if available.is_empty() && candidates.len() == 1 {
        return Ok(candidates[0].clone());
    }
    Err(Error::NoMatchingPlatform {
        reference: what.to_owned(),
        wanted: format!("{}/{}", platform.os, platform.architecture),
        available: if available.is_empty() {
            "none".to_owned()
        } else {
            available.join(", ")
        },
    })
}

fn oci_references(desc: &Descriptor, options: &ImportOptions) -> Result<Vec<Reference>> {
    if let Some(name) = desc.annotations.get(ANNOTATION_IMAGE_NAME)
        && let Ok(reference) = Reference::parse(name)
    {
        return Ok(vec![reference]);
    }
    let Some(ref_name) = desc.annotations.get(ANNOTATION_REF_NAME) else {
        return Ok(Vec::new());
    };
    if let Some(repository) = &options.repository
        && !ref_name.contains(['/', ':', '@'])
    {
        return Ok(vec![Reference::parse(&format!("{repository}:{ref_name}"))?]);
    }
    if ref_name.contains(['/', ':', '@']) {
        return Ok(vec![Reference::parse(ref_name)?]);
    }
    Ok(Vec::new())
}

fn merge(imported: &mut Vec<Imported>, image: Image, references: Vec<Reference>) {
    if let Some(existing) = imported.iter_mut().find(|i| i.image.digest == image.digest) {
        for r in references {
            if !existing.references.contains(&r) {
                existing.references.push(r);
            }
        }
    } else {
        imported.push(Imported { image, references });
    }
}
