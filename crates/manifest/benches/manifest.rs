//! parse + validate + convert of the largest real fly.toml in the conformance corpus.
//! `cargo bench -p hangar-manifest --bench manifest`; the figure goes in BENCHMARKS.md.

use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{Criterion, criterion_group, criterion_main};
use hangar_manifest::{ConvertOptions, Format, ValidateOptions, machine_configs, parse};

fn largest_real_config() -> (PathBuf, String) {
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/flytoml/real");
    let mut best: Option<(PathBuf, String)> = None;
    for entry in std::fs::read_dir(&dir).expect("conformance corpus beside the repo") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable");
        if best.as_ref().is_none_or(|(_, b)| text.len() > b.len()) {
            best = Some((path, text));
        }
    }
    best.expect("at least one fly.toml")
}

fn bench(c: &mut Criterion) {
    let (path, text) = largest_real_config();
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("?")
        .to_string();
    let read = |_: &str| Ok(b"x".to_vec());
    c.bench_function(
        &format!("parse+validate+convert {name} ({} bytes)", text.len()),
        |b| {
            b.iter(|| {
                let m = parse(black_box(&text), Format::Toml, "fly.toml").expect("parses");
                let report = m.validate(ValidateOptions::default());
                let configs = machine_configs(
                    &m.config,
                    ConvertOptions {
                        image: Some("img:1"),
                        read_file: Some(&read),
                    },
                );
                black_box((report, configs.ok()))
            })
        },
    );
    c.bench_function(&format!("parse only {name}"), |b| {
        b.iter(|| black_box(parse(black_box(&text), Format::Toml, "fly.toml").ok()))
    });
    // Baseline in the same run: what the toml crate alone takes to read the file.
    c.bench_function(&format!("baseline toml::Table {name}"), |b| {
        b.iter(|| black_box(black_box(&text).parse::<toml::Table>().ok()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
