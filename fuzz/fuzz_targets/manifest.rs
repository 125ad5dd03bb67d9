//! Any bytes, read as a fly.toml, fly.json or fly.yaml: parsing, validation (strict),
//! conversion and rendering must return, never panic or hang.
#![no_main]

use hangar_manifest::{ConvertOptions, Format, ValidateOptions, machine_configs, parse, render};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for format in [Format::Toml, Format::Json, Format::Yaml] {
        let Ok(m) = parse(text, format, "fuzz") else {
            continue;
        };
        let _ = m.validate(ValidateOptions { strict: true });
        let read = |_: &str| Ok(Vec::new());
        let _ = machine_configs(
            &m.config,
            ConvertOptions {
                image: Some("img"),
                read_file: Some(&read),
            },
        );
        for out in [Format::Toml, Format::Json, Format::Yaml] {
            if let Ok(text) = render::render(&m.config, out) {
                let _ = parse(&text, out, "fuzz-rendered");
            }
        }
    }
});
