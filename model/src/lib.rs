//! The I-JEPA model on the ijepa engine: ViT encoder, predictor, target path, init as
//! the official code, parameters named as its `state_dict()`, safetensors weights files,
//! and `torch.save` files read without Python.

pub mod config;
pub mod ijepa;
pub mod layers;
pub mod masks;
pub mod pos_embed;
pub mod torch_file;
pub mod vit;
pub mod weights;

pub use config::{IjepaConfig, PredictorConfig, VitConfig};
pub use ijepa::{IJepa, StepOutputs};
pub use masks::Masks;
