//! I-JEPA training on the ijepa engine and model.

pub mod adamw;
pub mod augment;
pub mod checkpoint;
pub mod config;
pub mod config_file;
pub mod data;
pub mod eval;
pub mod import;
pub mod loader;
pub mod loss_scale;
pub mod multiblock;
pub mod parallel;
pub mod pretrain;
pub mod probe;
pub mod reference;
pub mod rundir;
pub mod schedule;
pub mod step;
pub mod synthetic;
