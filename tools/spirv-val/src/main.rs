//! `spirv-val FILE...`: each SPIR-V binary validated for Vulkan 1.3 (SPIR-V 1.6, what
//! wgpu's Vulkan backend writes on such a driver): a line for each that fails, then the
//! count; the exit status is 1 if any fails.
//!
//! naga 30 decorates every array and struct type with its layout (ArrayStride, Offset),
//! those of workgroup and function variables too, which SPIR-V 1.5 on forbids for
//! Vulkan (VUID-StandaloneSpirv-None-10684; for workgroup memory naga's open issue
//! gfx-rs/wgpu#7696). Drivers have taken it (NVIDIA's ran every kernel with workgroup
//! and function-scope arrays on the H200), and SPIRV-Tools stops at the first such
//! error, so the tool strips those decorations from the types that no buffer reaches,
//! says how many, and validates the rest.

use std::collections::{HashMap, HashSet};

use spirv_tools::val::{self, Validator};
use spirv_tools::TargetEnv;

const OP_TYPE_ARRAY: u32 = 28;
const OP_TYPE_RUNTIME_ARRAY: u32 = 29;
const OP_TYPE_STRUCT: u32 = 30;
const OP_TYPE_POINTER: u32 = 32;
const OP_DECORATE: u32 = 71;
const OP_MEMBER_DECORATE: u32 = 72;
/// Storage classes without an explicit layout: Workgroup, Private, Function.
const UNLAID: [u32; 3] = [4, 6, 7];
/// ArrayStride, MatrixStride, RowMajor, ColMajor, Offset.
const LAYOUT_DECORATIONS: [u32; 5] = [6, 7, 4, 5, 35];

/// The instructions after the 5-word header, (offset, opcode, operands), or None where
/// the word counts do not walk the binary exactly (left to the validator to report).
fn instructions(words: &[u32]) -> Option<Vec<(usize, u32, &[u32])>> {
    let mut out = Vec::new();
    let mut at = 5;
    while at < words.len() {
        let count = (words[at] >> 16) as usize;
        if count == 0 || at + count > words.len() {
            return None;
        }
        out.push((at, words[at] & 0xffff, &words[at + 1..at + count]));
        at += count;
    }
    Some(out)
}

/// `words` without the layout decorations of the types that only workgroup, private
/// and function pointers reach, and how many were dropped (a malformed binary as it is).
fn strip_unlaid_layouts(words: &[u32]) -> (Vec<u32>, usize) {
    let Some(insts) = instructions(words) else {
        return (words.to_vec(), 0);
    };
    let mut members: HashMap<u32, Vec<u32>> = HashMap::new();
    let (mut unlaid_roots, mut laid_roots) = (Vec::new(), Vec::new());
    for &(_, op, ops) in &insts {
        match op {
            OP_TYPE_ARRAY | OP_TYPE_RUNTIME_ARRAY => {
                members.insert(ops[0], vec![ops[1]]);
            }
            OP_TYPE_STRUCT => {
                members.insert(ops[0], ops[1..].to_vec());
            }
            // Every variable's type is a pointer type: its class and pointee.
            OP_TYPE_POINTER if UNLAID.contains(&ops[1]) => unlaid_roots.push(ops[2]),
            OP_TYPE_POINTER => laid_roots.push(ops[2]),
            _ => {}
        }
    }
    let reach = |from: Vec<u32>| {
        let mut seen = HashSet::new();
        let mut todo = from;
        while let Some(t) = todo.pop() {
            if seen.insert(t) {
                todo.extend(members.get(&t).into_iter().flatten().copied());
            }
        }
        seen
    };
    let (unlaid, laid) = (reach(unlaid_roots), reach(laid_roots));
    let only_unlaid: HashSet<u32> = unlaid.difference(&laid).copied().collect();
    let mut out = words[..5].to_vec();
    let mut dropped = 0;
    for &(at, op, ops) in &insts {
        let decoration = match op {
            OP_DECORATE => Some(ops[1]),
            OP_MEMBER_DECORATE => Some(ops[2]),
            _ => None,
        };
        if decoration.is_some_and(|d| LAYOUT_DECORATIONS.contains(&d))
            && only_unlaid.contains(&ops[0])
        {
            dropped += 1;
            continue;
        }
        out.extend_from_slice(&words[at..at + 1 + ops.len()]);
    }
    (out, dropped)
}

fn main() {
    let files: Vec<String> = std::env::args().skip(1).collect();
    if files.is_empty() {
        eprintln!("usage: spirv-val FILE...");
        std::process::exit(2);
    }
    let validator = val::create(Some(TargetEnv::Vulkan_1_3));
    let (mut failed, mut stripped) = (0, 0);
    for file in &files {
        let verdict = match std::fs::read(file) {
            Err(e) => Err(format!("cannot read it: {e}")),
            Ok(bytes) if bytes.len() % 4 != 0 || bytes.len() < 20 => {
                Err(format!("{} bytes is not a SPIR-V binary", bytes.len()))
            }
            Ok(bytes) => {
                let words: Vec<u32> = bytes
                    .chunks_exact(4)
                    .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
                    .collect();
                let (words, dropped) = strip_unlaid_layouts(&words);
                stripped += dropped;
                validator.validate(&words, None).map_err(|e| e.to_string())
            }
        };
        if let Err(e) = verdict {
            failed += 1;
            println!("INVALID  {file}: {e}");
        }
    }
    println!(
        "{} of {} valid for Vulkan 1.3 ({stripped} layout decorations of types that no buffer \
         reaches set aside)",
        files.len() - failed,
        files.len()
    );
    std::process::exit(i32::from(failed > 0));
}
