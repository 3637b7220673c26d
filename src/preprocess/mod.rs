//! Pure preprocessing steps, `Volume → Volume`: they never walk directories or choose file names.
//!
//! Today: robust intensity scaling ([`intensity`]). Registration, bias correction and masking
//! join here as they land.

pub mod intensity;
