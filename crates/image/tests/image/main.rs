//! Integration tests of `hangar-image`: imports, overlay rootfs, hostile layers, GC, real
//! registry pulls (Debian's `docker-registry`), token auth against a scripted registry, and
//! reference parsing properties. Run as root (mounts, ownership, whiteout devices).

mod auth;
mod hostile;
mod import;
mod reference;
mod registry;
mod rootfs;
mod support;
