//! The diffusion noise schedule (what diffusers calls the scheduler's training configuration):
//! β_t for t = 0..T−1, ᾱ_t = Π(1 − β_s), and the closed-form coefficients built on them: the forward
//! noising `x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε` and the x̂_0 estimate from a predicted ε. Pure scalars:
//! samplers and training loops apply the coefficients to whatever tensors they hold.

use serde::{Deserialize, Serialize};

/// How β grows over the training timesteps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BetaSchedule {
    /// β linear from start to end.
    Linear,
    /// √β linear from √start to √end, then squared (Stable Diffusion's and HCLD's schedule).
    ScaledLinear,
}

/// The schedule's configuration (serialised into the model artefact).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleConfig {
    /// Training timesteps T.
    pub num_train_timesteps: usize,
    /// β at t = 0.
    pub beta_start: f64,
    /// β at t = T − 1.
    pub beta_end: f64,
    /// The β curve.
    pub beta_schedule: BetaSchedule,
    /// Clip x̂_0 to ±`clip_sample_range` in samplers (the reference does).
    pub clip_sample: bool,
    /// The clipping bound.
    pub clip_sample_range: f64,
}

impl Default for ScheduleConfig {
    /// HCLD's reference numbers (`../shared/design/hcld-method.md`): T = 1000, scaled-linear
    /// 0.0015 → 0.0195, x̂_0 clipped to ±1.
    fn default() -> Self {
        ScheduleConfig {
            num_train_timesteps: 1000,
            beta_start: 0.0015,
            beta_end: 0.0195,
            beta_schedule: BetaSchedule::ScaledLinear,
            clip_sample: true,
            clip_sample_range: 1.0,
        }
    }
}

/// Why a schedule configuration is unusable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScheduleError {
    /// A field is out of range.
    #[error("invalid noise schedule: {0}")]
    Invalid(String),
}

impl ScheduleConfig {
    /// Checks the numbers: T ≥ 2, 0 < β_start ≤ β_end < 1, a positive clipping bound.
    pub fn validate(&self) -> Result<(), ScheduleError> {
        let bad = |m: String| Err(ScheduleError::Invalid(m));
        if self.num_train_timesteps < 2 {
            return bad(format!(
                "num_train_timesteps must be at least 2, got {}",
                self.num_train_timesteps
            ));
        }
        let (s, e) = (self.beta_start, self.beta_end);
        if !(s > 0.0 && s <= e && e < 1.0) {
            return bad(format!(
                "need 0 < beta_start ≤ beta_end < 1, got {s} and {e}"
            ));
        }
        if !(self.clip_sample_range > 0.0 && self.clip_sample_range.is_finite()) {
            return bad(format!(
                "clip_sample_range must be positive, got {}",
                self.clip_sample_range
            ));
        }
        Ok(())
    }

    /// Builds the schedule after validating.
    pub fn build(&self) -> Result<NoiseSchedule, ScheduleError> {
        self.validate()?;
        let n = self.num_train_timesteps;
        let betas: Vec<f64> = (0..n)
            .map(|t| {
                let f = t as f64 / (n - 1) as f64;
                match self.beta_schedule {
                    BetaSchedule::Linear => self.beta_start + f * (self.beta_end - self.beta_start),
                    BetaSchedule::ScaledLinear => {
                        let (a, b) = (self.beta_start.sqrt(), self.beta_end.sqrt());
                        (a + f * (b - a)).powi(2)
                    }
                }
            })
            .collect();
        let mut alphas_cumprod = Vec::with_capacity(n);
        let mut product = 1.0;
        for b in &betas {
            product *= 1.0 - b;
            alphas_cumprod.push(product);
        }
        Ok(NoiseSchedule {
            config: self.clone(),
            betas,
            alphas_cumprod,
        })
    }
}

/// A position on the diffusion path: the clean sample, or a training timestep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Position {
    /// x_0 itself (ᾱ = 1).
    Clean,
    /// Training timestep t (0-based).
    Timestep(usize),
}

/// β_t and ᾱ_t for every training timestep.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseSchedule {
    config: ScheduleConfig,
    betas: Vec<f64>,
    alphas_cumprod: Vec<f64>,
}

impl NoiseSchedule {
    /// The configuration it was built from.
    pub fn config(&self) -> &ScheduleConfig {
        &self.config
    }

    /// T.
    pub fn len(&self) -> usize {
        self.betas.len()
    }

    /// Always false (a built schedule has T ≥ 2); here for API symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        self.betas.is_empty()
    }

    /// β_t.
    pub fn beta(&self, t: usize) -> f64 {
        self.betas[t]
    }

    /// ᾱ at a position (1 for the clean sample).
    pub fn alpha_bar(&self, p: Position) -> f64 {
        match p {
            Position::Clean => 1.0,
            Position::Timestep(t) => self.alphas_cumprod[t],
        }
    }

    /// `(a, b)` with `x_t = a·x_0 + b·ε` (DDPM forward process, `q_sample`).
    pub fn q_sample_coefficients(&self, t: usize) -> (f64, f64) {
        let ab = self.alphas_cumprod[t];
        (ab.sqrt(), (1.0 - ab).sqrt())
    }

    /// `(a, b)` with `x̂_0 = a·x_t + b·ε̂` (inverting the forward process with a predicted ε).
    pub fn x0_from_eps_coefficients(&self, p: Position) -> (f64, f64) {
        let ab = self.alpha_bar(p);
        (1.0 / ab.sqrt(), -(1.0 - ab).sqrt() / ab.sqrt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_linear_matches_the_closed_form() {
        let s = ScheduleConfig::default().build().unwrap();
        assert_eq!(s.len(), 1000);
        assert!((s.beta(0) - 0.0015).abs() < 1e-15);
        assert!((s.beta(999) - 0.0195).abs() < 1e-15);
        // β_t = (√0.0015 + t/999·(√0.0195 − √0.0015))², ᾱ_t = Π(1 − β_s).
        let mut product = 1.0;
        for t in 0..1000 {
            let root = 0.0015f64.sqrt() + t as f64 / 999.0 * (0.0195f64.sqrt() - 0.0015f64.sqrt());
            assert!((s.beta(t) - root * root).abs() < 1e-15, "t = {t}");
            product *= 1.0 - root * root;
            assert!((s.alpha_bar(Position::Timestep(t)) - product).abs() < 1e-12);
        }
        // The noise level at the end: ᾱ_999 ≈ 1.4e-4, small but not zero.
        let last = s.alpha_bar(Position::Timestep(999));
        assert!(last > 1e-4 && last < 2e-4, "{last}");
        assert_eq!(s.alpha_bar(Position::Clean), 1.0);
    }

    #[test]
    fn linear_schedule_and_coefficients() {
        let s = ScheduleConfig {
            beta_schedule: BetaSchedule::Linear,
            num_train_timesteps: 11,
            beta_start: 0.01,
            beta_end: 0.02,
            ..ScheduleConfig::default()
        }
        .build()
        .unwrap();
        assert!((s.beta(5) - 0.015).abs() < 1e-15);
        // x̂_0 from ε inverts q_sample exactly.
        let (x0, eps) = (0.7, -1.3);
        for t in 0..11 {
            let (a, b) = s.q_sample_coefficients(t);
            let xt = a * x0 + b * eps;
            let (c, d) = s.x0_from_eps_coefficients(Position::Timestep(t));
            assert!((c * xt + d * eps - x0).abs() < 1e-12);
        }
    }

    #[test]
    fn configs_validate_and_round_trip_through_json() {
        let c = ScheduleConfig::default();
        let json = serde_json::to_string(&c).unwrap();
        assert!(
            json.contains("\"beta_schedule\":\"scaled_linear\""),
            "{json}"
        );
        let back: ScheduleConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
        for bad in [
            ScheduleConfig {
                num_train_timesteps: 1,
                ..c.clone()
            },
            ScheduleConfig {
                beta_start: 0.0,
                ..c.clone()
            },
            ScheduleConfig {
                beta_end: 0.001,
                ..c.clone()
            },
            ScheduleConfig {
                beta_end: 1.0,
                ..c.clone()
            },
            ScheduleConfig {
                clip_sample_range: -1.0,
                ..c.clone()
            },
        ] {
            assert!(bad.build().is_err(), "{bad:?}");
        }
    }
}
