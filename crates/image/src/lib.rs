//! `hangar-image`: OCI images on one host.
//!
//! # What it owns
//!
//! - **The store** ([`ImageStore`], `DATA/images`): blobs by digest, each layer unpacked
//!   once under `layers/<diff id>` and shared by every machine of every image that has it,
//!   and an index of images (manifest digest → config + layers) and references. Writes are
//!   atomic (temp + rename), verified by digest first; see [`store`] for the layout and the
//!   crash and concurrency story.
//! - **Import** ([`ImageStore::import`]): `docker save` tarballs and OCI image layouts, as tar
//!   (plain or gzipped) or directory, several images per archive.
//! - **Pull** ([`Puller`]): Docker/OCI distribution API v2 with anonymous, bearer-token and
//!   basic auth, https or plain http (`insecure`), manifest lists resolved to the host
//!   platform, every blob verified, layer downloads bounded by a semaphore shared by all
//!   pulls, and [`PullEvent`]s reporting progress.
//! - **References** ([`Reference`]): docker's parser and normalisation; total, never panics.
//! - **Safe unpacking** ([`unpack`]): nothing in a layer can write outside its directory;
//!   whiteouts become overlayfs whiteouts.
//! - **Machine rootfs** ([`ImageStore::mount_rootfs`], [`unmount_rootfs`],
//!   [`remove_rootfs`]): overlayfs with the shared layers as lowerdirs and a per-machine
//!   upper dir; idempotent across daemon crashes.
//! - **Metadata** ([`Image`], [`ImageConfig`], [`Image::image_ref`]): what the runtime needs to
//!   start a process and what the Machines API reports as `image_ref`.
//! - **Accounting and GC** ([`disk_usage`], [`ImageStore::usage`], [`ImageStore::gc`]).
//!
//! # What it must not do
//!
//! - Know about machines beyond "a directory to mount a rootfs in": no lifecycle, no
//!   namespaces, no cgroups (that is `hangar-runtime`), no API or SQL (`hangar-api`,
//!   `hangar-store`). It reports progress through a callback and never logs by itself.
//! - Follow any path from an image on the host, or run anything from an image.
//! - Push images or act as a registry.
//!
//! # Requirements
//!
//! Linux ≥ 5.6 (`openat2` for unpacking), root (ownership, whiteout devices, `trusted.*`
//! xattrs, mounts), overlayfs, and a store on a filesystem with xattrs and `d_type` (ext4,
//! xfs). Linux ≥ 6.8 lifts the page-size limit on lowerdir lists (see [`rootfs`]).
//!
//! # Dependencies, and why
//!
//! `tar` (without its xattr feature: we apply the few xattrs we allow ourselves), `flate2`
//! (pure-Rust gzip), `sha2`, `serde`/`serde_json`, `thiserror`, `rustix` (safe wrappers for
//! `openat2`, `mknodat`, xattrs, `mount`/`fsopen`; the workspace forbids `unsafe`), `tokio`
//! (the pull path is async), and `reqwest` 0.12 without default features, with rustls on
//! *ring* and both the bundled webpki roots and the system's roots (so a private registry with
//! an operator's CA works, and so does Docker Hub on a host without `ca-certificates`).
//! reqwest rather than hyper-util directly: registries redirect blob downloads to object
//! storage, and reqwest's redirect handling strips `Authorization` across hosts, which we
//! would otherwise write ourselves. No HTTP/2, no zstd (zstd layers are refused clearly).

pub mod digest;
pub mod error;
pub mod image;
pub mod import;
pub mod oci;
pub mod pull;
pub mod reference;
pub mod rootfs;
pub mod store;
pub mod unpack;
pub mod usage;

#[cfg(feature = "testing")]
pub mod testing;

pub use digest::Digest;
pub use error::{Error, Result};
pub use image::{ExposedPort, Image, ImageConfig, Layer};
pub use import::{ImportOptions, Imported};
pub use oci::Platform;
pub use pull::{Credentials, PullEvent, PullOptions, Puller, PullerConfig};
pub use reference::{Reference, ReferenceError};
pub use rootfs::{
    MountMethod, MountStrategy, RootfsMount, is_mounted, remove_rootfs, rootfs_usage,
    unmount_rootfs,
};
pub use store::{GcReport, ImageStore, LayerOutcome, StoreUsage, StoredImage};
pub use unpack::UnpackStats;
pub use usage::{DiskUsage, disk_usage};
