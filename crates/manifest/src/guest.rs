//! VM size presets and `[[vm]]` → machine guest (PLATFORM.md §1.13).

use hangar_api_types::MachineGuest;

use crate::model::Compute;
use crate::units::{self, SizeError};

/// Why a `[[vm]]` can not become a guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestError {
    /// `size` is not a preset.
    UnknownSize {
        /// What was asked for.
        size: String,
        /// The presets of that family.
        valid: Vec<String>,
    },
    /// `memory` could not be read.
    Memory(SizeError),
    /// Memory resolved to zero.
    ZeroMemory,
    /// `cpu_kind` is neither `shared` nor `performance`.
    CpuKind(String),
    /// `cpus` below 1.
    Cpus(i64),
}

pub use hangar_domain::guest::{preset, preset_names};

/// The default guest of a new machine: `shared-cpu-1x` (1 shared CPU, 256 MB).
pub fn default_guest() -> MachineGuest {
    preset("shared-cpu-1x").unwrap_or_default()
}

/// Applies a `[[vm]]`: preset first, then explicit keys (`memory_mb` over `memory`).
pub fn guest_for(vm: &Compute) -> Result<MachineGuest, GuestError> {
    let mut g = match vm.size.as_deref() {
        Some(size) => preset(size).ok_or_else(|| GuestError::UnknownSize {
            size: size.to_string(),
            valid: family(size),
        })?,
        // As the reference: a `[[vm]]` naming only a GPU kind starts from `performance-8x`.
        None if vm.gpu_kind.as_deref().is_some_and(|k| !k.is_empty()) => {
            preset("performance-8x").unwrap_or_default()
        }
        None => default_guest(),
    };
    if let Some(kind) = &vm.cpu_kind {
        if kind != "shared" && kind != "performance" {
            return Err(GuestError::CpuKind(kind.clone()));
        }
        g.cpu_kind = Some(kind.clone());
    }
    if let Some(cpus) = vm.cpus {
        if cpus < 1 {
            return Err(GuestError::Cpus(cpus));
        }
        g.cpus = Some(cpus);
    }
    // As the reference: `memory` first, then an explicit `memory_mb` wins.
    if let Some(mem) = &vm.memory {
        let mb = units::memory_mb(mem).map_err(GuestError::Memory)?;
        if mb <= 0 {
            return Err(GuestError::ZeroMemory);
        }
        g.memory_mb = Some(mb);
    }
    if let Some(mb) = vm.memory_mb {
        if mb <= 0 {
            return Err(GuestError::ZeroMemory);
        }
        g.memory_mb = Some(mb);
    }
    if vm.gpus.is_some() {
        g.gpus = vm.gpus;
    }
    if vm.gpu_kind.is_some() {
        g.gpu_kind = vm.gpu_kind.clone();
    }
    if !vm.kernel_args.is_empty() {
        g.kernel_args = vm.kernel_args.clone();
    }
    if vm.host_dedication_id.is_some() {
        g.host_dedication_id = vm.host_dedication_id.clone();
    }
    if vm.persist_rootfs.is_some() {
        g.persist_rootfs = vm.persist_rootfs.clone();
    }
    Ok(g)
}

fn family(size: &str) -> Vec<String> {
    let all = preset_names();
    let prefix = if size.starts_with("shared") {
        "shared"
    } else if size.starts_with("perf") {
        "performance"
    } else if size.starts_with('a') || size.starts_with('l') {
        ""
    } else {
        return all;
    };
    let fam: Vec<String> = all
        .iter()
        .filter(|n| {
            if prefix.is_empty() {
                !n.contains("cpu") && !n.starts_with("performance")
            } else {
                n.starts_with(prefix)
            }
        })
        .cloned()
        .collect();
    if fam.is_empty() { all } else { fam }
}

/// A warning when memory per CPU is outside what the reference allows for the CPU kind
/// (shared 256–2048 MB, performance 2048–8192 MB). Hangar runs it anyway.
pub fn bounds_warning(g: &MachineGuest) -> Option<String> {
    let cpus = g.cpus.unwrap_or(1).max(1);
    let mb = g.memory_mb?;
    let (lo, hi) = match g.cpu_kind.as_deref() {
        Some("performance") => (2048, 8192),
        _ => (256, 2048),
    };
    let kind = g.cpu_kind.as_deref().unwrap_or("shared");
    (mb < lo * cpus || mb > hi * cpus).then(|| {
        format!(
            "{mb} MB for {cpus} {kind} CPU(s) is outside {}–{} MB; the reference platform would refuse it, Hangar runs it as asked",
            lo * cpus,
            hi * cpus
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_follow_the_reference_table() {
        let g = preset("shared-cpu-2x").expect("preset");
        assert_eq!((g.cpus, g.memory_mb), (Some(2), Some(512)));
        let g = preset("performance-4x").expect("preset");
        assert_eq!((g.cpus, g.memory_mb), (Some(4), Some(8192)));
        let g = preset("l40s").expect("preset");
        assert_eq!(
            (g.gpus, g.memory_mb, g.cpus),
            (Some(1), Some(32768), Some(8))
        );
        assert!(preset("shared-cpu-3x").is_none());
        assert_eq!(preset_names().len(), 18);
    }

    #[test]
    fn explicit_keys_beat_the_preset_and_memory_mb_beats_memory() {
        let vm = Compute {
            size: Some("shared-cpu-1x".into()),
            memory: Some("1gb".into()),
            memory_mb: Some(512),
            cpus: Some(2),
            ..Compute::default()
        };
        let g = guest_for(&vm).expect("guest");
        assert_eq!((g.cpus, g.memory_mb), (Some(2), Some(512)));
    }

    #[test]
    fn a_gpu_kind_without_a_size_starts_from_performance_8x() {
        let vm = Compute {
            gpu_kind: Some("l40s".into()),
            ..Compute::default()
        };
        let g = guest_for(&vm).expect("guest");
        assert_eq!(g.cpu_kind.as_deref(), Some("performance"));
        assert_eq!((g.cpus, g.memory_mb), (Some(8), Some(16384)));
        assert_eq!(g.gpu_kind.as_deref(), Some("l40s"));
    }

    #[test]
    fn unknown_size_lists_its_family() {
        let vm = Compute {
            size: Some("shared-cpu-3x".into()),
            ..Compute::default()
        };
        match guest_for(&vm) {
            Err(GuestError::UnknownSize { valid, .. }) => {
                assert!(valid.iter().all(|v| v.starts_with("shared")), "{valid:?}");
            }
            other => panic!("expected unknown size, got {other:?}"),
        }
    }
}
