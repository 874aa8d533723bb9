//! Dynamic loss scaling for mixed precision, as the official code's
//! `torch.cuda.amp.GradScaler()` with its defaults. Mixed products multiply f16 values,
//! gradients included, and the gradients of the mean loss (~1e-5) sit at the bottom of
//! f16's range, where they would lose their precision or vanish: the backward starts
//! from the loss times `scale` instead. An update whose scaled gradients hold an
//! infinity or NaN is skipped and the scale halved; after `growth_interval` updates in
//! a row without one, the scale doubles.
//!
//! Explained in the tour: docs/tour/12-speed-and-precision.md.

/// GradScaler's defaults.
const INIT_SCALE: f32 = 65536.0;
const GROWTH_FACTOR: f32 = 2.0;
const BACKOFF_FACTOR: f32 = 0.5;
const GROWTH_INTERVAL: u32 = 2000;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossScaler {
    /// What the loss is multiplied by before the backward.
    pub scale: f32,
    /// Updates in a row with finite gradients since the scale last changed.
    pub growth_tracker: u32,
    pub growth_interval: u32,
}

impl Default for LossScaler {
    fn default() -> LossScaler {
        LossScaler {
            scale: INIT_SCALE,
            growth_tracker: 0,
            growth_interval: GROWTH_INTERVAL,
        }
    }
}

impl LossScaler {
    /// After a step's gradients were checked: an overflow (the update was skipped)
    /// halves the scale; the `growth_interval`-th finite step in a row doubles it,
    /// unless that would make it infinite.
    pub fn update(&mut self, found_non_finite: bool) {
        if found_non_finite {
            self.scale *= BACKOFF_FACTOR;
            self.growth_tracker = 0;
            return;
        }
        self.growth_tracker += 1;
        if self.growth_tracker >= self.growth_interval {
            let grown = self.scale * GROWTH_FACTOR;
            if grown.is_finite() {
                self.scale = grown;
            }
            self.growth_tracker = 0;
        }
    }
}
