//! Harmonisation models. Today: the diffusion pieces that do not depend on a tensor library, kept
//! apart as diffusers keeps them: the noise [`schedule`] (β, ᾱ and closed-form coefficients) and
//! the DDIM [`sampler`] (inversion and sampling paths over the training schedule, one move at a
//! time as coefficients). The networks (burn) join here with the HCLD-model issue.

pub mod attention;
pub mod sampler;
pub mod schedule;
