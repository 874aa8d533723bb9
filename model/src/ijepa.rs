//! The three I-JEPA networks and one step's forward pass and loss.
//!
//! Explained in the tour: docs/tour/09-predictor-loss-update.md.

use std::sync::Arc;

use anyhow::Result;
use engine::{no_grad, ops, Device, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::config::IjepaConfig;
use crate::layers::{Init, NamedParams};
use crate::masks::Masks;
use crate::vit::{Predictor, VisionTransformer};

/// The target features are LayerNormed without parameters by `F.layer_norm`, whose
/// default eps is 1e-5 (the model's own LayerNorms use 1e-6).
pub const TARGET_LAYER_NORM_EPS: f32 = 1e-5;

/// Smooth-L1 threshold of the I-JEPA loss.
pub const LOSS_BETA: f32 = 1.0;

pub struct IJepa {
    pub config: IjepaConfig,
    pub encoder: VisionTransformer,
    pub predictor: Predictor,
    /// The EMA of the encoder; never tracked by the tape.
    pub target_encoder: VisionTransformer,
}

/// What one forward pass produced.
pub struct StepOutputs {
    /// [1].
    pub loss: Tensor,
    /// Encoder output on the context patches [nenc*B, Kc, D].
    pub context: Tensor,
    /// LayerNormed target-encoder features at the targets [npred*nenc*B, Kt, D].
    pub target: Tensor,
    /// Predictor output, same shape as `target`.
    pub prediction: Tensor,
}

impl IJepa {
    /// Freshly initialised as the official code does (trunc-normal 0.02, zero biases,
    /// unit LayerNorms, depth-rescaled output projections); the target encoder starts
    /// as a copy of the encoder.
    pub fn new(device: &Arc<Device>, config: &IjepaConfig, seed: u64) -> Result<IJepa> {
        config.validate()?;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut init = Init {
            device,
            rng: &mut rng,
            trainable: true,
        };
        let encoder = VisionTransformer::new(&config.encoder, &mut init)?;
        let predictor = Predictor::new(&config.encoder, &config.predictor, &mut init)?;
        init.trainable = false;
        let target_encoder = VisionTransformer::new(&config.encoder, &mut init)?;
        let model = IJepa {
            config: config.clone(),
            encoder,
            predictor,
            target_encoder,
        };
        for ((_, dst), (_, src)) in model.target_params().iter().zip(model.encoder_params()) {
            dst.copy_from(&src)?;
        }
        Ok(model)
    }

    /// images [B, C, H, W] -> the context encoder's features and the predictions.
    pub fn forward_context(&self, images: &Tensor, masks: &Masks) -> Result<(Tensor, Tensor)> {
        let context = self.encoder.forward(images, Some(&masks.context))?;
        let prediction = self.predictor.forward(&context, masks)?;
        Ok((context, prediction))
    }

    /// The regression targets: target encoder on the whole image, parameter-free
    /// LayerNorm, gathered at the target masks in prediction order. No gradient.
    pub fn forward_target(&self, images: &Tensor, masks: &Masks) -> Result<Tensor> {
        no_grad(|| {
            let h = self.target_encoder.forward(images, None)?;
            let h = ops::layernorm(&h, None, TARGET_LAYER_NORM_EPS)?;
            Ok(ops::gather_rows(&h, &masks.target_rows)?)
        })
    }

    /// The I-JEPA loss of one batch: smooth-L1 between predictions and targets.
    pub fn forward(&self, images: &Tensor, masks: &Masks) -> Result<StepOutputs> {
        let target = self.forward_target(images, masks)?;
        self.forward_with_target(images, masks, target)
    }

    /// `forward` given the targets `forward_target` computed.
    pub fn forward_with_target(
        &self,
        images: &Tensor,
        masks: &Masks,
        target: Tensor,
    ) -> Result<StepOutputs> {
        let (context, prediction) = self.forward_context(images, masks)?;
        let loss = ops::smooth_l1_loss(&prediction, &target, LOSS_BETA)?;
        Ok(StepOutputs {
            loss,
            context,
            target,
            prediction,
        })
    }

    /// Encoder parameters without the `encoder.` prefix (pos_embed included).
    pub fn encoder_params(&self) -> NamedParams {
        let mut out = Vec::new();
        self.encoder.params("", &mut out);
        out
    }

    pub fn target_params(&self) -> NamedParams {
        let mut out = Vec::new();
        self.target_encoder.params("", &mut out);
        out
    }

    /// Every tensor of the three networks, prefixed `encoder.`, `predictor.`,
    /// `target_encoder.` as in a checkpoint.
    pub fn named_params(&self) -> NamedParams {
        let mut out = Vec::new();
        self.encoder.params("encoder.", &mut out);
        self.predictor.params("predictor.", &mut out);
        self.target_encoder.params("target_encoder.", &mut out);
        out
    }

    /// What the optimiser updates: encoder and predictor parameters, without the
    /// fixed position tables.
    pub fn trainable_params(&self) -> NamedParams {
        let mut out = Vec::new();
        self.encoder.params("encoder.", &mut out);
        self.predictor.params("predictor.", &mut out);
        out.retain(|(name, _)| !name.ends_with("pos_embed"));
        out
    }
}
