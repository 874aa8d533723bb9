//! Every WGSL file parses and validates with naga (no GPU needed), and every file under
//! shaders/ is one the engine compiles in.

use std::collections::BTreeSet;

#[test]
fn every_shader_parses_and_validates() {
    for (name, source) in engine::shaders::ALL {
        let module = naga::front::wgsl::parse_str(source)
            .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
    }
}

#[test]
fn every_shader_file_is_registered() {
    let on_disk: BTreeSet<String> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".wgsl"))
            .collect();
    let registered: BTreeSet<String> = engine::shaders::ALL
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    assert_eq!(on_disk, registered);
}
