//! The autoencoder hcld ships pretrained (`models/pretrained/`, trained by
//! `scripts/pretrain_autoencoder.sh` on scans whose licences allow it, see the README's model
//! card): the "generalizable", pre-trained 3D autoencoder of the paper, so that the group level
//! trains only the latent diffusion model. Embedded in the binary, checked against the SHA-256 its
//! card records, and used only for a configuration whose autoencoder and grid it was trained for.

use std::path::Path;

use serde::Deserialize;

use super::artefact::{ArtefactError, load_autoencoder};
use super::autoencoder::{AutoencoderConfig, AutoencoderKl};
use super::config::{GridConfig, HcldConfig};
use super::device::ComputeDevice;
use super::storage::sha256_hex;

/// The weights, as `hcld-pretrain` wrote them.
const WEIGHTS: &[u8] = include_bytes!("../../models/pretrained/autoencoder.bpk");
/// Their model card (`hcld-pretrain`'s `autoencoder.json`).
const CARD: &str = include_str!("../../models/pretrained/autoencoder.json");

/// What hcld needs of the card.
#[derive(Debug, Clone, Deserialize)]
struct Card {
    #[serde(rename = "Autoencoder")]
    autoencoder: AutoencoderConfig,
    #[serde(rename = "Grid")]
    grid: GridConfig,
    #[serde(rename = "WeightsSHA256")]
    weights_sha256: String,
}

/// The embedded pretrained autoencoder.
#[derive(Debug, Clone)]
pub struct PretrainedAutoencoder {
    card: Card,
    /// SHA-256 of the weights (checked).
    pub sha256: String,
}

impl PretrainedAutoencoder {
    /// The embedded one. A card that does not parse or weights whose digest differs from the
    /// card's are a build defect: `None`, with a warning, and the group level trains stage 1.
    pub fn embedded() -> Option<PretrainedAutoencoder> {
        let card: Card = match serde_json::from_str(CARD) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("the embedded pretrained autoencoder's card does not parse: {e}");
                return None;
            }
        };
        let sha256 = sha256_hex(WEIGHTS);
        if sha256 != card.weights_sha256 {
            tracing::warn!(
                "the embedded pretrained autoencoder's weights do not match their card's SHA-256"
            );
            return None;
        }
        Some(PretrainedAutoencoder { card, sha256 })
    }

    /// Whether it was trained for `config`: the same autoencoder (every architecture number)
    /// on the same voxel size and template space (the grid's shape may differ: the network is
    /// convolutional, but a voxel of another size is another image).
    pub fn fits(&self, config: &HcldConfig) -> bool {
        let (a, b) = (&self.card.autoencoder, &config.autoencoder);
        serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
            && self.card.grid.voxel_size_mm == config.grid.voxel_size_mm
            && self.card.grid.space == config.grid.space
    }

    /// The network with its weights on `device`.
    pub fn load(&self, device: &ComputeDevice) -> Result<AutoencoderKl, ArtefactError> {
        load_autoencoder(
            &self.card.autoencoder,
            WEIGHTS.to_vec(),
            Path::new("models/pretrained/autoencoder.bpk (embedded)"),
            device,
        )
    }

    /// The card as shipped (for training summaries and reports).
    pub fn card() -> &'static str {
        CARD
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_autoencoder_loads_checks_and_fits_the_cpu_preset_only() {
        let pretrained = PretrainedAutoencoder::embedded().expect("the card and weights agree");
        let cpu = HcldConfig::preset("cpu").unwrap();
        assert!(pretrained.fits(&cpu));
        assert!(!pretrained.fits(&HcldConfig::preset("tiny").unwrap()));
        assert!(!pretrained.fits(&HcldConfig::preset("reference").unwrap()));
        let mut other_voxel = cpu.clone();
        other_voxel.grid.voxel_size_mm = 1.0;
        assert!(!pretrained.fits(&other_voxel));
        pretrained
            .load(&ComputeDevice::cpu())
            .expect("weights fit the configuration");
    }
}
