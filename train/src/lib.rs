//! I-JEPA training on the ijepa engine and model.

pub mod augment;
pub mod data;
pub mod eval;
pub mod loader;
pub mod masks;
pub mod optim;
pub mod pretrain;
pub mod probe;
pub mod schedule;
