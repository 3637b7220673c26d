//! Deterministic DDIM (η = 0) sampling and inversion over strided timesteps of the **training**
//! schedule (hcld's decision in `../shared/design/hcld-method.md`: the released code samples on a
//! separate 50-step schedule the UNet never saw).
//!
//! Like diffusers' schedulers this never calls a network: it plans the path (which positions, and at
//! which timestep ε̂ must be predicted for each move) and turns one move into coefficients, so the
//! harmonisation loop owns the UNet calls and applies the coefficients to its tensors.
//! [`DdimMove::apply`] is the same arithmetic on plain slices, the reference the tensor code is
//! tested against.

use serde::{Deserialize, Serialize};

use super::schedule::{NoiseSchedule, Position};

/// How far and in how many steps to invert and sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DdimConfig {
    /// Inversion depth as a fraction of the training schedule: the latent is inverted to
    /// t_k = round(strength·(T − 1)). Higher = more change (more target style, less source).
    pub strength: f64,
    /// Moves from the clean latent up to t_k.
    pub inversion_steps: usize,
    /// Moves from t_k back to the clean latent.
    pub sampling_steps: usize,
    /// Whether and where x̂₀ is clipped on every sampling move (inversion never clips: a clipped
    /// move is not invertible). Artefacts written before this field clip as their schedule says.
    #[serde(default)]
    pub clip: X0Clip,
}

/// Clipping of the x̂₀ estimate during sampling.
///
/// Scaled latents have unit variance, so about a third of their values lie outside ±1: the
/// reference's ±1 (`schedule`) clamps the output latent itself on the last move and compresses
/// the decoded contrast. `latents` clips at the range the training latents actually span (their
/// 99.9th percentile of |z|, stored in the model), which only catches estimates no real latent has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum X0Clip {
    /// No clipping.
    Off,
    /// ±`clip_sample_range` when the schedule's `clip_sample` is on (the released code's
    /// behaviour, and what artefacts without this field do).
    #[default]
    Schedule,
    /// ± the training latents' 99.9th percentile of |z| (the model's `latent_range`).
    Latents,
}

impl X0Clip {
    /// The names the command line takes.
    pub const NAMES: [&'static str; 3] = ["off", "schedule", "latents"];
}

impl std::str::FromStr for X0Clip {
    type Err = String;
    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "off" => Ok(X0Clip::Off),
            "schedule" => Ok(X0Clip::Schedule),
            "latents" => Ok(X0Clip::Latents),
            _ => Err(format!(
                "unknown clipping '{name}'; use one of {}",
                X0Clip::NAMES.join(", ")
            )),
        }
    }
}

impl std::fmt::Display for X0Clip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            X0Clip::Off => "off",
            X0Clip::Schedule => "schedule",
            X0Clip::Latents => "latents",
        })
    }
}

impl DdimConfig {
    /// Checks the values any schedule accepts: a strength in (0, 1], at least one step each way.
    pub fn validate(&self) -> Result<(), SamplerError> {
        if !(self.strength > 0.0 && self.strength <= 1.0) {
            return Err(SamplerError::Invalid(format!(
                "strength must be in (0, 1], got {}",
                self.strength
            )));
        }
        if self.inversion_steps == 0 || self.sampling_steps == 0 {
            return Err(SamplerError::Invalid(
                "inversion and sampling need at least one step each".into(),
            ));
        }
        Ok(())
    }
}

impl Default for DdimConfig {
    /// hcld's defaults: strength 0.6, 30 inversion and 10 sampling steps, clipping as the
    /// schedule says (the presets choose their own path, see `HcldConfig::preset`).
    fn default() -> Self {
        DdimConfig {
            strength: 0.6,
            inversion_steps: 30,
            sampling_steps: 10,
            clip: X0Clip::Schedule,
        }
    }
}

/// Why a sampler configuration is unusable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplerError {
    /// A field is out of range.
    #[error("invalid DDIM settings: {0}")]
    Invalid(String),
}

/// One deterministic move between two positions of the path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DdimMove {
    /// Where the sample is.
    pub from: Position,
    /// Where the move takes it.
    pub to: Position,
    /// The training timestep at which ε̂(x_from, t) must be predicted for this move.
    pub model_timestep: usize,
    alpha_bar_from: f64,
    alpha_bar_to: f64,
    clip: Option<f64>,
}

impl DdimMove {
    /// `x_to` from `x_from` and the prediction `eps` = ε̂(x_from, model_timestep), elementwise:
    /// x̂_0 = (x − √(1−ᾱ_from)·ε̂)/√ᾱ_from (clipped to ±c when clipping, and ε̂ then re-derived
    /// from the clipped x̂_0, as diffusers does), x_to = √ᾱ_to·x̂_0 + √(1−ᾱ_to)·ε̂.
    pub fn apply(&self, x: &[f32], eps: &[f32], out: &mut [f32]) {
        let (sa, sb) = (
            self.alpha_bar_from.sqrt(),
            (1.0 - self.alpha_bar_from).sqrt(),
        );
        let (ta, tb) = (self.alpha_bar_to.sqrt(), (1.0 - self.alpha_bar_to).sqrt());
        for ((o, &xv), &e) in out.iter_mut().zip(x).zip(eps) {
            let (xv, mut e) = (xv as f64, e as f64);
            let mut x0 = (xv - sb * e) / sa;
            if let Some(c) = self.clip {
                x0 = x0.clamp(-c, c);
                if sb > 0.0 {
                    e = (xv - sa * x0) / sb;
                }
            }
            *o = (ta * x0 + tb * e) as f32;
        }
    }

    /// ᾱ at both ends and the clipping bound, for tensor implementations of [`DdimMove::apply`].
    pub fn coefficients(&self) -> (f64, f64, Option<f64>) {
        (self.alpha_bar_from, self.alpha_bar_to, self.clip)
    }
}

/// Plans DDIM inversion and sampling paths on a schedule.
#[derive(Debug, Clone)]
pub struct DdimSampler {
    schedule: NoiseSchedule,
    config: DdimConfig,
    /// The bound x̂₀ is clipped to on sampling moves, resolved from `config.clip`.
    clip_bound: Option<f64>,
}

impl DdimSampler {
    /// Checks `0 < strength ≤ 1` and at least one step each way.
    /// A sampler that does not know the model's latent range ([`X0Clip::Latents`] then clips
    /// nothing): for checking settings and for tests; harmonisation uses
    /// [`Self::with_latent_range`].
    pub fn new(schedule: NoiseSchedule, config: DdimConfig) -> Result<Self, SamplerError> {
        Self::with_latent_range(schedule, config, Some(f64::INFINITY))
    }

    /// [`Self::new`] for a model whose training latents span ±`latent_range` (the artefact's
    /// `latent_range`; `None` for a model written before it was recorded).
    pub fn with_latent_range(
        schedule: NoiseSchedule,
        config: DdimConfig,
        latent_range: Option<f64>,
    ) -> Result<Self, SamplerError> {
        config.validate()?;
        let clip_bound = match config.clip {
            X0Clip::Off => None,
            X0Clip::Schedule => schedule
                .config()
                .clip_sample
                .then_some(schedule.config().clip_sample_range),
            X0Clip::Latents => match latent_range {
                Some(r) if r.is_finite() && r > 0.0 => Some(r),
                Some(_) => None,
                None => {
                    return Err(SamplerError::Invalid(
                        "clip 'latents' needs the training latents' range, which this model does not record (it was trained by an older hcld); use --clip-x0 off or schedule, or train it again".into(),
                    ));
                }
            },
        };
        Ok(DdimSampler {
            schedule,
            config,
            clip_bound,
        })
    }

    /// The bound x̂₀ is clipped to on sampling moves (`None`: not clipped).
    pub fn clip_bound(&self) -> Option<f64> {
        self.clip_bound
    }

    /// The deepest timestep, t_k = round(strength·(T − 1)).
    pub fn target_timestep(&self) -> usize {
        let last = self.schedule.len() - 1;
        ((self.config.strength * last as f64).round() as usize).min(last)
    }

    /// The configuration as it runs: step counts above t_k cannot be taken (there are only t_k
    /// timesteps below t_k), so the counts are those of [`Self::inversion`] and
    /// [`Self::sampling`]; the strength is unchanged.
    pub fn effective(&self) -> DdimConfig {
        DdimConfig {
            strength: self.config.strength,
            inversion_steps: self.inversion().len(),
            sampling_steps: self.sampling().len(),
            clip: self.config.clip,
        }
    }

    /// Strictly increasing timesteps t_k·i/n, i = 1..n (rounded; duplicates dropped when t_k < n).
    fn strided(&self, n: usize) -> Vec<usize> {
        let tk = self.target_timestep();
        let mut out: Vec<usize> = (1..=n)
            .map(|i| ((i as f64 * tk as f64 / n as f64).round()) as usize)
            .collect();
        out.dedup();
        out
    }

    fn moves(&self, positions: &[Position], clip: bool) -> Vec<DdimMove> {
        let clip = if clip { self.clip_bound } else { None };
        positions
            .windows(2)
            .map(|w| DdimMove {
                from: w[0],
                to: w[1],
                model_timestep: match w[0] {
                    Position::Clean => 0,
                    Position::Timestep(t) => t,
                },
                alpha_bar_from: self.schedule.alpha_bar(w[0]),
                alpha_bar_to: self.schedule.alpha_bar(w[1]),
                clip,
            })
            .collect()
    }

    /// Inversion: from the clean latent up to t_k (no clipping: it would not be invertible).
    pub fn inversion(&self) -> Vec<DdimMove> {
        let mut positions = vec![Position::Clean];
        positions.extend(
            self.strided(self.config.inversion_steps)
                .into_iter()
                .filter(|&t| t > 0)
                .map(Position::Timestep),
        );
        self.moves(&positions, false)
    }

    /// Sampling: from t_k back down to the clean latent, clipping x̂_0 when the schedule says so.
    pub fn sampling(&self) -> Vec<DdimMove> {
        let mut positions: Vec<Position> = self
            .strided(self.config.sampling_steps)
            .into_iter()
            .rev()
            .filter(|&t| t > 0)
            .map(Position::Timestep)
            .collect();
        positions.push(Position::Clean);
        self.moves(&positions, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::schedule::ScheduleConfig;

    fn sampler(strength: f64, inv: usize, samp: usize, clip: bool) -> DdimSampler {
        let schedule = ScheduleConfig {
            clip_sample: clip,
            ..ScheduleConfig::default()
        }
        .build()
        .unwrap();
        DdimSampler::new(
            schedule,
            DdimConfig {
                strength,
                inversion_steps: inv,
                sampling_steps: samp,
                clip: X0Clip::Schedule,
            },
        )
        .unwrap()
    }

    /// Runs a path with an ε-predictor on plain vectors.
    fn run(
        moves: &[DdimMove],
        mut x: Vec<f32>,
        eps: impl Fn(&[f32], usize) -> Vec<f32>,
    ) -> Vec<f32> {
        for m in moves {
            let e = eps(&x, m.model_timestep);
            let mut out = vec![0.0; x.len()];
            m.apply(&x, &e, &mut out);
            x = out;
        }
        x
    }

    #[test]
    fn paths_follow_the_training_schedule() {
        let s = sampler(0.6, 30, 10, true);
        assert_eq!(s.target_timestep(), 599);
        let inv = s.inversion();
        assert_eq!(inv.len(), 30);
        assert_eq!(inv[0].from, Position::Clean);
        assert_eq!(inv[0].model_timestep, 0);
        assert_eq!(inv.last().unwrap().to, Position::Timestep(599));
        assert!(
            inv.windows(2)
                .all(|w| w[0].to == w[1].from && w[0].to < w[1].to)
        );
        let samp = s.sampling();
        assert_eq!(samp.len(), 10);
        assert_eq!(samp[0].from, Position::Timestep(599));
        assert_eq!(samp[0].model_timestep, 599);
        assert_eq!(samp.last().unwrap().to, Position::Clean);
        assert!(
            samp.windows(2)
                .all(|w| w[0].to == w[1].from && w[0].to > w[1].to)
        );
        // More steps than timesteps: duplicates are dropped, the path stays strictly monotone.
        let short = sampler(0.005, 30, 30, true);
        assert_eq!(short.target_timestep(), 5);
        assert_eq!(short.inversion().len(), 5);
        assert_eq!(short.sampling().len(), 5);
    }

    #[test]
    fn sampling_with_the_exact_predictor_recovers_the_data_point() {
        // Data = one point: the optimal ε̂(x, t) = (x − √ᾱ_t·x*)/√(1−ᾱ_t) makes DDIM exact.
        let s = sampler(0.8, 20, 7, false);
        let schedule = ScheduleConfig::default().build().unwrap();
        let target = vec![0.3f32, -0.5, 0.9, 0.0];
        let tk = s.target_timestep();
        let (a, b) = schedule.q_sample_coefficients(tk);
        let noise = [1.2f32, -0.4, 0.3, -2.0];
        let xt: Vec<f32> = target
            .iter()
            .zip(noise)
            .map(|(x0, n)| (a * *x0 as f64 + b * n as f64) as f32)
            .collect();
        let oracle = |x: &[f32], t: usize| -> Vec<f32> {
            let (a, b) = schedule.q_sample_coefficients(t);
            x.iter()
                .zip(&target)
                .map(|(xv, x0)| ((*xv as f64 - a * *x0 as f64) / b) as f32)
                .collect()
        };
        let out = run(&s.sampling(), xt, oracle);
        for (o, t) in out.iter().zip(&target) {
            assert!((o - t).abs() < 1e-4, "{out:?}");
        }
    }

    /// Relative L2 error of inverting `latent` and sampling it back with `steps` moves each way.
    fn round_trip(
        latent: &[f32],
        steps: usize,
        eps: impl Fn(&[f32], usize) -> Vec<f32> + Copy,
    ) -> f32 {
        let s = sampler(0.6, steps, steps, false);
        let inverted = run(&s.inversion(), latent.to_vec(), eps);
        let back = run(&s.sampling(), inverted, eps);
        let num: f32 = back.iter().zip(latent).map(|(a, b)| (a - b).powi(2)).sum();
        let den: f32 = latent.iter().map(|b| b * b).sum();
        (num / den).sqrt()
    }

    #[test]
    fn inversion_then_sampling_reconstructs() {
        let latent: Vec<f32> = (0..64).map(|i| ((i as f32) * 0.37).sin() * 0.8).collect();
        // A prediction that depends on neither x nor t: the round trip is exact.
        let constant = |x: &[f32], _t: usize| -> Vec<f32> {
            (0..x.len()).map(|i| ((i as f32) * 0.7).sin()).collect()
        };
        let exact = round_trip(&latent, 30, constant);
        assert!(exact < 1e-5, "{exact}");
        // A smooth prediction varying with x and t, like an untrained network's: DDIM inversion is
        // then only approximate (ε̂ is taken at the start of each move), and the error must shrink
        // as the moves get finer.
        let smooth = |x: &[f32], t: usize| -> Vec<f32> {
            x.iter()
                .enumerate()
                .map(|(i, v)| 0.05 * v + 0.05 * ((i as f32) * 0.7 + t as f32 / 300.0).sin())
                .collect()
        };
        let (coarse, fine) = (
            round_trip(&latent, 30, smooth),
            round_trip(&latent, 60, smooth),
        );
        assert!(coarse < 3e-2, "relative error {coarse} at 30 steps");
        assert!(fine < 0.6 * coarse, "30 steps: {coarse}, 60 steps: {fine}");
    }

    #[test]
    fn clipping_bounds_the_estimate_and_settings_are_checked() {
        let s = sampler(0.6, 30, 10, true);
        let m = s.sampling()[0];
        assert_eq!(m.coefficients().2, Some(1.0));
        // A wild sample: x̂_0 clipped to ±1 keeps the next sample bounded.
        let x = vec![50.0f32; 3];
        let mut out = vec![0.0; 3];
        m.apply(&x, &[0.0; 3], &mut out);
        let (_, to, _) = m.coefficients();
        let bound = (to.sqrt() + (1.0 - to).sqrt() * 60.0) as f32;
        assert!(out.iter().all(|v| v.abs() <= bound), "{out:?}");
        assert!(s.inversion().iter().all(|m| m.coefficients().2.is_none()));
        let schedule = ScheduleConfig::default().build().unwrap();
        for bad in [
            DdimConfig {
                strength: 0.0,
                ..DdimConfig::default()
            },
            DdimConfig {
                strength: 1.5,
                ..DdimConfig::default()
            },
            DdimConfig {
                sampling_steps: 0,
                ..DdimConfig::default()
            },
        ] {
            assert!(DdimSampler::new(schedule.clone(), bad).is_err());
        }
    }

    #[test]
    fn step_counts_above_the_target_timestep_are_reported_as_run() {
        // Strength 0.02 on 1000 steps: t_k = round(0.02 · 999) = 20, so 30 or 100 000 steps
        // each way are 20 moves.
        for asked in [30, 100_000] {
            let s = sampler(0.02, asked, asked, false);
            assert_eq!(s.target_timestep(), 20);
            let e = s.effective();
            assert_eq!((e.inversion_steps, e.sampling_steps), (20, 20), "{asked}");
            assert_eq!(e.strength, 0.02);
        }
        // Counts that fit are kept.
        let e = sampler(0.6, 30, 10, false).effective();
        assert_eq!((e.inversion_steps, e.sampling_steps), (30, 10));
    }

    #[test]
    fn the_clip_setting_decides_the_bound_of_every_sampling_move() {
        let schedule = ScheduleConfig::default().build().unwrap();
        let with = |clip, range| {
            let c = DdimConfig {
                clip,
                ..DdimConfig::default()
            };
            DdimSampler::with_latent_range(schedule.clone(), c, range)
        };
        let bounds = |s: DdimSampler| -> Vec<Option<f64>> {
            s.sampling().iter().map(|m| m.coefficients().2).collect()
        };
        assert!(
            bounds(with(X0Clip::Off, Some(3.0)).unwrap())
                .iter()
                .all(Option::is_none)
        );
        assert!(
            bounds(with(X0Clip::Schedule, None).unwrap())
                .iter()
                .all(|b| *b == Some(1.0))
        );
        let latents = with(X0Clip::Latents, Some(3.5)).unwrap();
        assert_eq!(latents.clip_bound(), Some(3.5));
        assert!(bounds(latents).iter().all(|b| *b == Some(3.5)));
        // A model without a recorded range cannot clip at it: said, not silently unclipped.
        let e = with(X0Clip::Latents, None).unwrap_err().to_string();
        assert!(e.contains("--clip-x0"), "{e}");
        // Old artefacts (no field) clip as their schedule says.
        let old: DdimConfig =
            serde_json::from_str(r#"{"strength":0.6,"inversion_steps":30,"sampling_steps":10}"#)
                .unwrap();
        assert_eq!(old.clip, X0Clip::Schedule);
        for name in X0Clip::NAMES {
            assert_eq!(name.parse::<X0Clip>().unwrap().to_string(), name);
        }
    }
}
