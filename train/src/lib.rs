//! I-JEPA training on the ijepa engine and model.

pub mod masks;
pub mod optim;
