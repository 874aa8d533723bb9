//! Every WGSL file parses and validates with naga (no GPU needed), every file under
//! shaders/ is one the engine compiles in (alone or prepended to another), and every file's `Params` struct has the
//! layout of the Rust struct its launchers upload: same size, and field by field the
//! same name, byte offset and type. The cooperative-matrix kernels, which no CPU driver
//! runs, are also written to SPIR-V, in every form their launchers compile; with
//! `IJEPA_SPIRV_OUT=DIR` each is saved there too, for Khronos's validator
//! (scripts/validate-spirv.sh).

use std::collections::BTreeSet;

use engine::device::{pipeline_spirv, save_spirv, SPIRV_OUT_ENV};
use engine::ops::attention::FusedAttention;
use engine::ops::matmul::{
    pipeline_constants, Epilogue, MatmulKernel, MatmulShape, MatmulTypes, Transpose,
};
use engine::shaders::{Shader, ALL, ATTENTION_COOP, MATMUL_COOP};
use engine::DType;

fn parse(shader: &Shader) -> naga::Module {
    naga::front::wgsl::parse_str(shader.source)
        .unwrap_or_else(|e| panic!("{}: {}", shader.file, e.emit_to_string(shader.source)))
}

#[test]
fn every_shader_parses_and_validates() {
    for shader in ALL {
        let module = parse(shader);
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{}: {}", shader.file, e.emit_to_string(shader.source)));
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
    let registered: BTreeSet<String> = ALL
        .iter()
        .flat_map(|s| s.parts.iter().chain([&s.file]))
        .map(|f| f.to_string())
        .collect();
    assert_eq!(on_disk, registered);
}

/// How the Rust side spells a WGSL type of a parameter block: `u32`, `f32`, `i32`, and
/// vectors and fixed-size arrays as `[T; n]`.
fn rust_spelling(module: &naga::Module, ty: naga::Handle<naga::Type>) -> String {
    let scalar = |s: naga::Scalar| match (s.kind, s.width) {
        (naga::ScalarKind::Uint, 4) => "u32".to_string(),
        (naga::ScalarKind::Sint, 4) => "i32".to_string(),
        (naga::ScalarKind::Float, 4) => "f32".to_string(),
        other => format!("{other:?}"),
    };
    match &module.types[ty].inner {
        naga::TypeInner::Scalar(s) => scalar(*s),
        naga::TypeInner::Vector { size, scalar: s } => format!("[{}; {}]", scalar(*s), *size as u8),
        naga::TypeInner::Array {
            base,
            size: naga::ArraySize::Constant(n),
            ..
        } => format!("[{}; {n}]", rust_spelling(module, *base)),
        other => format!("{other:?}"),
    }
}

#[test]
fn every_params_struct_has_the_layout_of_its_rust_struct() {
    let mut checked = 0;
    for shader in ALL {
        let module = parse(shader);
        let uniforms: Vec<&naga::GlobalVariable> = module
            .global_variables
            .iter()
            .map(|(_, v)| v)
            .filter(|v| v.space == naga::AddressSpace::Uniform)
            .collect();
        let layout = match (shader.params, uniforms.as_slice()) {
            (None, []) => continue,
            (Some(layout), [uniform]) => {
                assert_eq!(
                    uniform.binding,
                    Some(naga::ResourceBinding {
                        group: 0,
                        binding: 0
                    }),
                    "{}: the parameter block is bound at group 0, binding 0",
                    shader.file
                );
                (layout, uniform.ty)
            }
            (params, uniforms) => panic!(
                "{}: {} uniform(s) in the WGSL, Rust layout {params:?}",
                shader.file,
                uniforms.len()
            ),
        };
        let ((rust, ty), file) = (layout, shader.file);
        let naga::TypeInner::Struct { members, span } = &module.types[ty].inner else {
            panic!("{file}: the parameter block is not a struct");
        };
        let wgsl: Vec<(String, usize, String)> = members
            .iter()
            .map(|m| {
                (
                    m.name.clone().unwrap_or_default(),
                    m.offset as usize,
                    rust_spelling(&module, m.ty),
                )
            })
            .collect();
        let fields: Vec<(String, usize, String)> = rust
            .fields
            .iter()
            .filter(|(name, _, _)| !name.starts_with("_pad"))
            .map(|&(name, offset, ty)| (name.to_string(), offset, ty.replace(' ', "")))
            .collect();
        let wgsl: Vec<(String, usize, String)> = wgsl
            .into_iter()
            .map(|(n, o, t)| (n, o, t.replace(' ', "")))
            .collect();
        assert_eq!(
            fields, wgsl,
            "{file}: Rust {} (name, offset, type) against the WGSL Params",
            rust.name
        );
        assert_eq!(
            rust.size, *span as usize,
            "{file}: Rust {} is {} bytes, the WGSL Params {span}",
            rust.name, rust.size
        );
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} parameter blocks checked");
}

/// matmul_coop.wgsl runs only on GPUs that expose 16x16x16 f16 cooperative matrices
/// (lavapipe does not), so here naga writes it to SPIR-V as wgpu's Vulkan backend
/// does, for every form the launcher compiles: transposes, each operand and the output
/// in f32 or f16, each epilogue, with the launcher's own override values and a 32-lane
/// subgroup, and the plain form also as each part `ijepa bench matmul --coop-anatomy`
/// times alone. The backend rejects what Vulkan's cooperative matrices cannot express;
/// that the values are right is tests/mixed.rs's candidate test, on GPUs that run the
/// kernel (and everywhere on its emulation).
#[test]
fn the_cooperative_matrix_matmul_writes_spirv_in_every_form() {
    let mut written = 0;
    let forms = [(false, false), (false, true), (true, false), (true, true)]
        .into_iter()
        .flat_map(|t| [DType::F16, DType::F32].map(|a| (t, a)))
        .flat_map(|ta| [DType::F16, DType::F32].map(|b| (ta, b)));
    for (((trans_a, trans_b), a), b) in forms {
        for c in [DType::F32, DType::F16] {
            for (bias, epilogue) in [
                (false, Epilogue::None),
                (true, Epilogue::GeluSavingInput),
                (false, Epilogue::GeluGradient),
            ] {
                let shape = MatmulShape {
                    batch: 2,
                    m: 40,
                    k: 36,
                    n: 34,
                    t: Transpose {
                        a: trans_a,
                        b: trans_b,
                    },
                    b_shared: false,
                    bias,
                    epilogue,
                    types: MatmulTypes {
                        a,
                        b,
                        c,
                        pre: if epilogue == Epilogue::None {
                            DType::F32
                        } else {
                            c
                        },
                    },
                };
                assert!(MatmulKernel::MixedCoop.takes(&shape));
                // The plain form also as each part `bench matmul --coop-anatomy` times.
                let plain = !trans_a && !trans_b && !bias && c == DType::F32;
                let anatomies = if plain && a == DType::F16 && b == DType::F16 {
                    vec![0.0, 1.0, 2.0, 3.0]
                } else {
                    vec![0.0]
                };
                for anatomy in anatomies {
                    let mut constants =
                        pipeline_constants(MatmulKernel::MixedCoop, &shape, Some(32));
                    constants.push(("ANATOMY", anatomy));
                    let what = format!("{shape:?}, anatomy {anatomy}");
                    let file = format!(
                        "matmul_coop-t{}{}-{a:?}x{b:?}-{c:?}-{epilogue:?}{}-anatomy{anatomy}",
                        u8::from(trans_a),
                        u8::from(trans_b),
                        if bias { "-bias" } else { "" },
                    );
                    write_spirv(&MATMUL_COOP, "matmul_coop", &constants, (&what, &file));
                    written += 1;
                }
            }
        }
    }
    assert_eq!(written, 96 + 2 * 3);
}

/// attention_coop.wgsl likewise runs only where cooperative matrices are opened: naga
/// writes its three kernels to SPIR-V at every head dim the family takes, with the
/// launcher's override values and a 32-lane subgroup. tests/attention.rs holds their
/// values to the composed path, on GPUs that run them and everywhere on the emulation.
#[test]
fn the_cooperative_matrix_attention_writes_spirv_at_every_head_dim() {
    let mut written = 0;
    for hd in (16..=128).step_by(16) {
        let constants = FusedAttention::Coop.pipeline_constants(hd, DType::F16, Some(32));
        for entry in [
            "attention_forward",
            "attention_backward_dq",
            "attention_backward_dkv",
        ] {
            write_spirv(
                &ATTENTION_COOP,
                entry,
                &constants,
                (&format!("head dim {hd}"), &format!("{entry}-hd{hd}")),
            );
            written += 1;
        }
    }
    assert_eq!(written, 8 * 3);
}

/// One entry point written to SPIR-V as wgpu's Vulkan backend writes it on a Vulkan 1.3
/// driver (`engine::device::pipeline_spirv`: naga, the override values processed as
/// the pipeline gets them, SPIR-V 1.6); saved as `IJEPA_SPIRV_OUT/{file}.spv` where
/// that is set.
fn write_spirv(
    shader: &Shader,
    entry: &str,
    constants: &[(&str, f64)],
    (what, file): (&str, &str),
) {
    let words = pipeline_spirv(shader, entry, constants)
        .unwrap_or_else(|e| panic!("{}, {what}, {entry}: {e}", shader.file));
    assert!(
        words.len() > 5,
        "{what}, {entry}: {} words of SPIR-V",
        words.len()
    );
    if let Some(dir) = std::env::var_os(SPIRV_OUT_ENV) {
        save_spirv(std::path::Path::new(&dir), file, &words).unwrap();
    }
}
