//! Image references, parsed and normalised exactly like docker does
//! (`github.com/distribution/reference`, `ParseNormalizedNamed` + `TagNameOnly`).
//!
//! `nginx` → `docker.io/library/nginx:latest`; `host:5000/a/b:tag`; `name@sha256:…`.
//! The parser is total: any input gives a [`Reference`] or a [`ReferenceError`], never a panic.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use hangar_domain::image_ref::{
    MAX_NAME_LEN, split_registry, split_tag, valid_path, valid_registry, valid_tag,
};

use crate::digest::{Digest, DigestError};

/// Docker Hub's canonical registry name.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that actually serves Docker Hub's registry API.
pub const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";
const LEGACY_DOCKER_HUB: &str = "index.docker.io";

/// A fully normalised image reference: registry, repository, and a tag and/or a digest.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// Why a string is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReferenceError {
    /// The input is empty.
    #[error("invalid image reference: empty")]
    Empty,
    /// The repository name is longer than 255 characters.
    #[error(
        "invalid image reference: repository name must not be longer than {MAX_NAME_LEN} characters"
    )]
    NameTooLong,
    /// The repository has uppercase letters.
    #[error("invalid image reference {0:?}: repository name must be lowercase")]
    Uppercase(String),
    /// The input is a bare 64-hex string (ambiguous with an image id).
    #[error("invalid image reference {0:?}: cannot specify 64-byte hexadecimal strings")]
    AmbiguousHex(String),
    /// The registry part is malformed.
    #[error("invalid image reference {input:?}: invalid registry {registry:?}")]
    InvalidRegistry {
        /// The whole input (shortened).
        input: String,
        /// The registry part.
        registry: String,
    },
    /// The repository path is malformed.
    #[error(
        "invalid image reference {input:?}: invalid repository name {repository:?} (path components are [a-z0-9] separated by '.', '_', '__' or '-', joined by '/')"
    )]
    InvalidRepository {
        /// The whole input (shortened).
        input: String,
        /// The repository part.
        repository: String,
    },
    /// The tag is malformed.
    #[error(
        "invalid image reference {input:?}: invalid tag {tag:?} (expected [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})"
    )]
    InvalidTag {
        /// The whole input (shortened).
        input: String,
        /// The tag part.
        tag: String,
    },
    /// The digest is malformed or not sha256.
    #[error("invalid image reference {input:?}: {source}")]
    InvalidDigest {
        /// The whole input (shortened).
        input: String,
        /// What is wrong with the digest.
        source: DigestError,
    },
}

fn shorten(s: &str) -> String {
    s.chars().take(300).collect()
}

impl Reference {
    /// Parses and normalises a reference the way `docker pull` does.
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        if input.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let (name_and_tag, digest) = match input.split_once('@') {
            Some((name, digest)) => {
                let digest =
                    digest
                        .parse::<Digest>()
                        .map_err(|source| ReferenceError::InvalidDigest {
                            input: shorten(input),
                            source,
                        })?;
                (name, Some(digest))
            }
            None => (input, None),
        };
        let (name, tag) = split_tag(name_and_tag);
        if name.is_empty() {
            return Err(ReferenceError::InvalidRepository {
                input: shorten(input),
                repository: String::new(),
            });
        }
        if name.len() > MAX_NAME_LEN {
            return Err(ReferenceError::NameTooLong);
        }
        if let Some(tag) = tag
            && !valid_tag(tag)
        {
            return Err(ReferenceError::InvalidTag {
                input: shorten(input),
                tag: shorten(tag),
            });
        }
        if name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(ReferenceError::AmbiguousHex(name.to_owned()));
        }
        let (registry, path) = split_registry(name);
        let registry = match registry {
            Some(registry) => {
                if !valid_registry(registry) {
                    return Err(ReferenceError::InvalidRegistry {
                        input: shorten(input),
                        registry: shorten(registry),
                    });
                }
                if registry == LEGACY_DOCKER_HUB {
                    DOCKER_HUB.to_owned()
                } else {
                    registry.to_owned()
                }
            }
            None => DOCKER_HUB.to_owned(),
        };
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase(shorten(path)));
        }
        if !valid_path(path) {
            return Err(ReferenceError::InvalidRepository {
                input: shorten(input),
                repository: shorten(path),
            });
        }
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_owned()
        };
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(ReferenceError::NameTooLong);
        }
        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.to_owned()),
            (None, None) => Some("latest".to_owned()),
            (None, Some(_)) => None,
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The same repository with another tag (and no digest).
    pub fn with_tag(&self, tag: &str) -> Result<Self, ReferenceError> {
        Self::parse(&format!("{}/{}:{tag}", self.registry, self.repository))
    }

    /// The same repository pinned to `digest` (the tag is kept for display).
    pub fn with_digest(&self, digest: Digest) -> Self {
        Self {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// Registry host (and port), e.g. `docker.io` or `127.0.0.1:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// Repository path, e.g. `library/nginx`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// Tag, if any (`latest` when neither tag nor digest was given).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// Digest, if the reference pins one.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// What to ask the registry's manifest endpoint for: the digest if pinned, else the tag.
    pub fn manifest_selector(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => digest.to_string(),
            (None, Some(tag)) => tag.clone(),
            (None, None) => "latest".to_owned(),
        }
    }

    /// The host to talk to for this registry (`docker.io` → `registry-1.docker.io`).
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API_HOST
        } else {
            &self.registry
        }
    }

    /// The short form docker prints: `nginx:latest`, `user/app:v1`, `host:5000/a/b:t`.
    pub fn familiar(&self) -> String {
        let name = if self.registry == DOCKER_HUB {
            self.repository
                .strip_prefix("library/")
                .filter(|rest| !rest.contains('/'))
                .unwrap_or(&self.repository)
                .to_owned()
        } else {
            self.name()
        };
        let mut out = name;
        if let Some(tag) = &self.tag {
            out.push(':');
            out.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            out.push('@');
            out.push_str(&digest.to_string());
        }
        out
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reference({self})")
    }
}

impl Serialize for Reference {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Reference {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    fn norm(s: &str) -> String {
        match Reference::parse(s) {
            Ok(r) => r.to_string(),
            Err(e) => format!("ERR {e}"),
        }
    }

    /// The normalisation table of docker's `TestParseNormalizedNamed` / `TestParseDockerRef`.
    #[test]
    fn docker_normalisation_table() {
        let cases: &[(&str, &str)] = &[
            ("nginx", "docker.io/library/nginx:latest"),
            ("nginx:1.25", "docker.io/library/nginx:1.25"),
            ("library/nginx", "docker.io/library/nginx:latest"),
            ("docker.io/nginx", "docker.io/library/nginx:latest"),
            ("docker.io/library/nginx", "docker.io/library/nginx:latest"),
            ("index.docker.io/nginx", "docker.io/library/nginx:latest"),
            ("index.docker.io/user/app:v1", "docker.io/user/app:v1"),
            ("user/app", "docker.io/user/app:latest"),
            ("user/app/sub", "docker.io/user/app/sub:latest"),
            ("localhost/app", "localhost/app:latest"),
            ("localhost:5000/app", "localhost:5000/app:latest"),
            ("localhost:5000", "docker.io/library/localhost:5000"),
            (
                "127.0.0.1:5000/hangar/test:t1",
                "127.0.0.1:5000/hangar/test:t1",
            ),
            ("host:5000/a/b:tag", "host:5000/a/b:tag"),
            (
                "registry.fly.io/app:deployment-01",
                "registry.fly.io/app:deployment-01",
            ),
            ("ghcr.io/owner/repo", "ghcr.io/owner/repo:latest"),
            ("[::1]:5000/app", "[::1]:5000/app:latest"),
            ("[2001:db8::1]/app:v", "[2001:db8::1]/app:v"),
            ("Foo.io/app", "Foo.io/app:latest"),
            ("FOO/app", "FOO/app:latest"),
            (
                "a_b/c__d/e-f/g.h/i---j",
                "docker.io/a_b/c__d/e-f/g.h/i---j:latest",
            ),
            (
                "busybox:TAG_with.dots-1",
                "docker.io/library/busybox:TAG_with.dots-1",
            ),
            (
                &format!("nginx@{D}"),
                &format!("docker.io/library/nginx@{D}"),
            ),
            (
                &format!("nginx:1@{D}"),
                &format!("docker.io/library/nginx:1@{D}"),
            ),
            (&format!("h:5000/x@{D}"), &format!("h:5000/x@{D}")),
        ];
        for (input, want) in cases {
            assert_eq!(norm(input), *want, "input {input:?}");
        }
    }

    #[test]
    fn rejects_garbage() {
        let bad = [
            "",
            ":",
            "@",
            "nginx:",
            ":tag",
            "Nginx",
            "user/App",
            "a//b",
            "a/",
            "/a",
            "-a",
            "a-",
            "a..b",
            "a___b",
            "a.-b",
            "nginx:-tag",
            "nginx:.tag",
            "nginx:t@g",
            "nginx@sha256:abc",
            "nginx@md5:0123456789abcdef0123456789abcdef",
            "nginx@",
            "host:port/a",
            "host:/a",
            "[::1/a",
            "[]/a",
            "ho_st.io/a",
            ".io/a",
            "a b",
            "a\nb",
            "🦀",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ];
        for input in bad {
            assert!(
                Reference::parse(input).is_err(),
                "{input:?} should be rejected, got {:?}",
                Reference::parse(input)
            );
        }
        let long_tag = format!("nginx:{}", "a".repeat(129));
        assert!(Reference::parse(&long_tag).is_err());
        let ok_tag = format!("nginx:{}", "a".repeat(128));
        assert!(Reference::parse(&ok_tag).is_ok());
        let long_name = "a".repeat(256);
        assert_eq!(
            Reference::parse(&long_name),
            Err(ReferenceError::NameTooLong)
        );
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let e = Reference::parse("Nginx")
            .map(|_| ())
            .expect_err("test")
            .to_string();
        assert!(e.contains("lowercase"), "{e}");
        let e = Reference::parse("nginx@sha256:abc")
            .map(|_| ())
            .expect_err("test")
            .to_string();
        assert!(e.contains("64 lowercase hex"), "{e}");
    }

    #[test]
    fn parts_and_familiar() {
        let r = Reference::parse("nginx").expect("test");
        assert_eq!(r.registry(), "docker.io");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.repository(), "library/nginx");
        assert_eq!(r.tag(), Some("latest"));
        assert_eq!(r.digest(), None);
        assert_eq!(r.familiar(), "nginx:latest");
        assert_eq!(r.manifest_selector(), "latest");

        let r = Reference::parse(&format!("127.0.0.1:5000/a/b@{D}")).expect("test");
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.api_host(), "127.0.0.1:5000");
        assert_eq!(r.tag(), None);
        assert_eq!(r.manifest_selector(), D);
        assert_eq!(r.familiar(), format!("127.0.0.1:5000/a/b@{D}"));
        assert_eq!(
            Reference::parse("user/app:v").expect("test").familiar(),
            "user/app:v"
        );
    }

    #[test]
    fn display_round_trips() {
        for input in [
            "nginx",
            "host:5000/a/b:tag",
            "[::1]:5000/app",
            "user/app:v1",
        ] {
            let r = Reference::parse(input).expect("test");
            assert_eq!(Reference::parse(&r.to_string()).expect("test"), r);
            assert_eq!(Reference::parse(&r.familiar()).expect("test"), r);
        }
    }
}
