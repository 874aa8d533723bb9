//! Mixed precision as an autocast scope, as the official code runs its forward under
//! `torch.cuda.amp.autocast`: inside [`autocast`]`(Precision::Mixed, ..)` the linear
//! layers and the MLP (`ops::linear`, `ops::linear_gelu`, `ops::mlp`) multiply f16
//! values with f32 accumulation; everything else (LayerNorm's statistics, attention's
//! arithmetic, the residual stream, the loss) stays f32, and so do the master weights,
//! their gradients as stored and the optimizer's state. The weights are cast to f16; an
//! activation enters its product as it is, in f16 where its kernel wrote it so (a
//! LayerNorm that only feeds products, `ops::layernorm_to` with [`operand_type`]; the
//! MLP's hidden layer, and GELU's input kept for its backward), else in f32, which the
//! mixed kernels round to f16 as they read it: the values of a cast, without its
//! dispatch and copy. The qkv projection stores its output in f16 too
//! (`ops::linear_to`) where attention's plan reads it as it is and keeps it for its
//! backward (`ops::attention::qkv_storage`: the fused kernels).
//!
//! The backward's products follow their forward: the products of a mixed one are
//! mixed, so the f32 gradients are rounded to f16 as they are read, as tensor cores
//! need. The gradient of GELU's input in the MLP, which only fc1's products and bias
//! gradient read, is stored in f16 as the hidden layer is (what those products would
//! read); the other gradients, attention's dqkv among them, are stored in f32. The
//! gradients of the mean loss sit near the bottom of f16's range, so a mixed-precision
//! step scales the loss first (train's `LossScaler`, as `GradScaler`).
//! What f16 saves is the memory and bandwidth of the products' operands and of the
//! activations they keep for the backward, and it opens tensor cores
//! (`MatmulKernel::MixedCoop`, a measured candidate: on the H200 its staging still
//! bounds it below the tiled mixed kernel).
//!
//! The scope is per thread, like the tape: the backward, run outside it, follows the
//! choices its forward made. Inside [`with_f16_copies`], a cast to f16 of a tensor
//! whose copy was made beforehand (`PackedTensors::to_f16`: one cast per bucket of
//! parameters) takes that copy instead of a dispatch of its own.
//!
//! Explained in the tour: docs/tour/12-speed-and-precision.md.

use std::cell::{Cell, RefCell};

use crate::tensor::{DType, Tensor};

/// The arithmetic of a forward pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// Everything in f32: what the gradchecks and golden steps prove.
    #[default]
    F32,
    /// Products' operands, the MLP's hidden activations (GELU's input and output) and
    /// attention's q, k and v in f16, f32 accumulation.
    Mixed,
}

impl Precision {
    /// The name used in configurations and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Mixed => "mixed",
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Precision, String> {
        match s {
            "f32" => Ok(Precision::F32),
            "mixed" => Ok(Precision::Mixed),
            _ => Err(format!("precision `{s}`: expected `f32` or `mixed`")),
        }
    }
}

thread_local! {
    static CURRENT: Cell<Precision> = const { Cell::new(Precision::F32) };
    /// (f32 tensor, its f16 copy) pairs of the current `with_f16_copies` scope.
    static F16_COPIES: RefCell<Vec<(Tensor, Tensor)>> = const { RefCell::new(Vec::new()) };
}

/// The precision ops run in on this thread.
pub fn current() -> Precision {
    CURRENT.with(|c| c.get())
}

/// The type of a tensor that only feeds products: f16 under `Precision::Mixed`.
pub fn operand_type() -> DType {
    match current() {
        Precision::F32 => DType::F32,
        Precision::Mixed => DType::F16,
    }
}

/// Run `f` with ops in `precision`, then restore the previous one.
pub fn autocast<T>(precision: Precision, f: impl FnOnce() -> T) -> T {
    struct Restore(Precision);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(CURRENT.with(|c| c.replace(precision)));
    f()
}

/// Run `f` with `copies`, (f32 tensor, the same rounded to f16) pairs, standing in for
/// casts of those tensors (`ops::cast`), then restore the previous ones. The gradient
/// of a copy still flows to its f32 tensor.
pub fn with_f16_copies<T>(copies: Vec<(Tensor, Tensor)>, f: impl FnOnce() -> T) -> T {
    struct Restore(Vec<(Tensor, Tensor)>);
    impl Drop for Restore {
        fn drop(&mut self) {
            F16_COPIES.with(|c| *c.borrow_mut() = std::mem::take(&mut self.0));
        }
    }
    let _restore = Restore(F16_COPIES.with(|c| c.replace(copies)));
    f()
}

/// The f16 copy of `t` made for the current scope, if there is one: a new handle on it
/// each time, so that each use is a tensor of its own on the tape.
pub(crate) fn f16_copy_of(t: &Tensor) -> Option<Tensor> {
    F16_COPIES.with(|c| {
        c.borrow()
            .iter()
            .find(|(full, _)| full.same_elements(t))
            .map(|(_, half)| half.detach())
    })
}
