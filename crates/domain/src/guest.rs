//! VM size presets (PLATFORM.md §1.13): the one table every part of Hangar uses.

use hangar_api_types::MachineGuest;

const SHARED: [i64; 5] = [1, 2, 4, 6, 8];
const PERFORMANCE: [i64; 9] = [1, 2, 4, 6, 8, 10, 12, 14, 16];
const GPUS: [(&str, &str); 4] = [
    ("a100-40gb", "a100-pcie-40gb"),
    ("a100-80gb", "a100-sxm4-80gb"),
    ("l40s", "l40s"),
    ("a10", "a10"),
];

/// Every preset name, shared first.
pub fn preset_names() -> Vec<String> {
    let mut v: Vec<String> = SHARED.iter().map(|n| format!("shared-cpu-{n}x")).collect();
    v.extend(PERFORMANCE.iter().map(|n| format!("performance-{n}x")));
    v.extend(GPUS.iter().map(|(n, _)| (*n).to_string()));
    v
}

/// The guest of a preset, if `name` is one.
pub fn preset(name: &str) -> Option<MachineGuest> {
    let guest = |kind: &str, cpus: i64, mb: i64| MachineGuest {
        cpu_kind: Some(kind.to_string()),
        cpus: Some(cpus),
        memory_mb: Some(mb),
        ..MachineGuest::default()
    };
    if let Some(n) = name
        .strip_prefix("shared-cpu-")
        .and_then(|r| r.strip_suffix('x'))
    {
        let n: i64 = n.parse().ok()?;
        return SHARED.contains(&n).then(|| guest("shared", n, n * 256));
    }
    if let Some(n) = name
        .strip_prefix("performance-")
        .and_then(|r| r.strip_suffix('x'))
    {
        let n: i64 = n.parse().ok()?;
        return PERFORMANCE
            .contains(&n)
            .then(|| guest("performance", n, n * 2048));
    }
    GPUS.iter()
        .find(|(n, _)| *n == name)
        .map(|(_, kind)| MachineGuest {
            gpus: Some(1),
            gpu_kind: Some((*kind).to_string()),
            ..guest("performance", 8, 32768)
        })
}
