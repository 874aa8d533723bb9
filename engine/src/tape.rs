//! Reverse-mode autodiff: a per-thread tape of nodes in execution order.
//!
//! Each differentiable op runs its forward kernel, then calls [`record`] with its
//! inputs, its output and a closure that maps the output's gradient to the inputs'
//! gradients. The closure owns the activations it saved; [`backward`] walks the tape
//! in reverse, calls each closure once and drops it, so saved activations are freed as
//! soon as their gradient has been computed.
//!
//! Explained in the tour: docs/tour/03-tape.md.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::ops::elementwise::add_forward;
use crate::tensor::{Tensor, TensorId};

/// Gradients of the inputs given the output's gradient; `needs[i]` says whether input
/// `i` wants one (return `None` for those that do not).
pub type BackwardFn = Box<dyn FnOnce(&Tensor, &[bool]) -> Result<Vec<Option<Tensor>>>>;

/// A backward that also receives the gradient input 0 has gathered so far (from ops
/// recorded after this one) and returns input 0's total, adding it inside its own
/// kernel instead of in a separate one (see [`record_accumulating`]).
pub type AccumulatingBackwardFn =
    Box<dyn FnOnce(&Tensor, &[bool], Option<Tensor>) -> Result<Vec<Option<Tensor>>>>;

enum Backward {
    Plain(BackwardFn),
    Accumulating(AccumulatingBackwardFn),
}

struct Node {
    op: &'static str,
    inputs: Vec<(TensorId, Vec<usize>, bool)>,
    output: TensorId,
    backward: Backward,
}

thread_local! {
    static TAPE: RefCell<Vec<Node>> = const { RefCell::new(Vec::new()) };
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Run `f` on a tape of its own, recording: what it records, and a `backward` inside
/// it, leave this thread's tape as it was (an op that times its plans' backwards in
/// the middle of a forward).
pub fn on_own_tape<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(Vec<Node>, bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            TAPE.with(|tape| *tape.borrow_mut() = std::mem::take(&mut self.0));
            GRAD_ENABLED.with(|g| g.set(self.1));
        }
    }
    let _restore = Restore(
        TAPE.with(|tape| std::mem::take(&mut *tape.borrow_mut())),
        GRAD_ENABLED.with(|g| g.replace(true)),
    );
    f()
}

/// Whether ops are being recorded on this thread.
pub fn is_recording() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Run `f` without recording anything (target encoder, EMA, evaluation).
pub fn no_grad<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            GRAD_ENABLED.with(|g| g.set(self.0));
        }
    }
    let _restore = Restore(GRAD_ENABLED.with(|g| g.replace(false)));
    f()
}

/// Whether an op on `inputs` is recorded: recording is on and an input tracks
/// gradients.
pub fn records(inputs: &[&Tensor]) -> bool {
    is_recording() && inputs.iter().any(|t| t.tracks_grad())
}

/// Record `output = op(inputs)` when [`records`] says so.
pub fn record(
    op: &'static str,
    inputs: &[&Tensor],
    output: &Tensor,
    backward: impl FnOnce(&Tensor, &[bool]) -> Result<Vec<Option<Tensor>>> + 'static,
) {
    push(op, inputs, output, Backward::Plain(Box::new(backward)));
}

/// [`record`] for an op whose backward adds the gradient input 0 already has into its
/// own result: a residual stream's LayerNorm, whose input also flows on unnormalised,
/// returns dx + that gradient from its kernel, saving an addition per block.
pub fn record_accumulating(
    op: &'static str,
    inputs: &[&Tensor],
    output: &Tensor,
    backward: impl FnOnce(&Tensor, &[bool], Option<Tensor>) -> Result<Vec<Option<Tensor>>> + 'static,
) {
    push(
        op,
        inputs,
        output,
        Backward::Accumulating(Box::new(backward)),
    );
}

fn push(op: &'static str, inputs: &[&Tensor], output: &Tensor, backward: Backward) {
    if !records(inputs) {
        return;
    }
    output.mark_requires_grad();
    let node = Node {
        op,
        inputs: inputs
            .iter()
            .map(|t| (t.id(), t.shape().to_vec(), t.tracks_grad()))
            .collect(),
        output: output.id(),
        backward,
    };
    TAPE.with(|tape| tape.borrow_mut().push(node));
}

/// Number of nodes currently on this thread's tape.
pub fn len() -> usize {
    TAPE.with(|tape| tape.borrow().len())
}

/// Gradients of the leaves (tensors made with `requires_grad`) after [`backward`].
#[derive(Default, Debug)]
pub struct Gradients {
    grads: HashMap<TensorId, Tensor>,
}

impl Gradients {
    pub fn get(&self, t: &Tensor) -> Option<&Tensor> {
        self.grads.get(&t.id())
    }

    pub fn len(&self) -> usize {
        self.grads.len()
    }

    pub fn is_empty(&self) -> bool {
        self.grads.is_empty()
    }
}

/// Backpropagate from a one-element `loss`, consuming this thread's tape.
pub fn backward(loss: &Tensor) -> Result<Gradients> {
    backward_scaled(loss, 1.0)
}

/// The gradients of `scale * loss`: `backward` seeded with `scale` instead of 1, as loss
/// scaling does (the seed is written, not computed).
pub fn backward_scaled(loss: &Tensor, scale: f32) -> Result<Gradients> {
    let nodes = TAPE.with(|tape| std::mem::take(&mut *tape.borrow_mut()));
    if loss.numel() != 1 {
        return Err(Error::Autodiff(format!(
            "backward needs a one-element loss, got shape {:?}",
            loss.shape()
        )));
    }
    if !loss.tracks_grad() {
        return Err(Error::Autodiff(
            "the loss does not depend on any tensor that requires grad".into(),
        ));
    }
    let mut grads: HashMap<TensorId, Tensor> = HashMap::new();
    grads.insert(
        loss.id(),
        Tensor::from_slice(loss.device(), loss.shape(), &[scale])?,
    );
    for node in nodes.into_iter().rev() {
        // Nodes whose output does not reach the loss are dropped unused.
        let Some(grad_out) = grads.remove(&node.output) else {
            continue;
        };
        let needs: Vec<bool> = node.inputs.iter().map(|i| i.2).collect();
        let grad_in = match node.backward {
            Backward::Plain(f) => f(&grad_out, &needs)?,
            Backward::Accumulating(f) => {
                // Input 0's gradient so far goes into the op, which returns the total.
                let pending = needs[0].then(|| grads.remove(&node.inputs[0].0)).flatten();
                f(&grad_out, &needs, pending)?
            }
        };
        for ((id, shape, needed), g) in node.inputs.into_iter().zip(grad_in) {
            let Some(g) = g.filter(|_| needed) else {
                continue;
            };
            if g.shape() != shape.as_slice() {
                return Err(Error::Autodiff(format!(
                    "{}: backward produced a gradient of shape {:?} for an input of shape {:?}",
                    node.op,
                    g.shape(),
                    shape
                )));
            }
            // A tensor used twice receives the sum of its gradients.
            let total = match grads.remove(&id) {
                Some(prev) => add_forward(&prev, &g)?,
                None => g,
            };
            grads.insert(id, total);
        }
    }
    Ok(Gradients { grads })
}
