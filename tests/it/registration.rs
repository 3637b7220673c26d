//! Registration accuracy on the real T1w fixtures: each scan, moved by a known random affine
//! (±15° rotations, ±20 mm shifts, ±10 % scales), registers to the template consistently with the
//! original scan's own fit, to under 1 mm mean error over the brain.

use hcld::preprocess::itk::WorldAffine;
use hcld::preprocess::register::mean_point_distance;
use hcld::preprocess::resample::{Grid, Interpolation, resample_mapped};
use hcld::preprocess::template::TemplateImage;
use hcld::preprocess::template_registration::{InputKind, register_to_template};
use hcld::volume::{Volume, read_nifti, to_closest_canonical};
use nalgebra::{Matrix3, Matrix4, Rotation3, Vector3, Vector4};

/// SplitMix64: a few lines of deterministic randomness for test parameters.
struct SplitMix(u64);
impl SplitMix {
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        lo + (hi - lo) * (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A random world map within the acceptance ranges, about the image centre.
fn random_affine(rng: &mut SplitMix, centre: Vector3<f64>) -> Matrix4<f64> {
    let deg = std::f64::consts::PI / 180.0;
    let r = Rotation3::from_euler_angles(
        rng.uniform(-15.0, 15.0) * deg,
        rng.uniform(-15.0, 15.0) * deg,
        rng.uniform(-15.0, 15.0) * deg,
    );
    let s = Matrix3::from_diagonal(&Vector3::new(
        rng.uniform(0.9, 1.1),
        rng.uniform(0.9, 1.1),
        rng.uniform(0.9, 1.1),
    ));
    let a = r.matrix() * s;
    let t = Vector3::new(
        rng.uniform(-20.0, 20.0),
        rng.uniform(-20.0, 20.0),
        rng.uniform(-20.0, 20.0),
    );
    let mut m = Matrix4::identity();
    m.fixed_view_mut::<3, 3>(0, 0).copy_from(&a);
    let off = centre + t - a * centre;
    m.fixed_view_mut::<3, 1>(0, 3).copy_from(&off);
    m
}

/// `volume` as seen after moving the head by `motion` (a world point map): the new image's value
/// at `y` is the old one's at `motion⁻¹·y`, on a grid padded by 40 mm so nothing is cut off.
fn moved(volume: &Volume, motion: &Matrix4<f64>) -> Volume {
    let vs = volume.voxel_sizes();
    let pad = [0, 1, 2].map(|ax| (40.0 / vs[ax]).ceil() as usize);
    let dims = [0, 1, 2].map(|ax| volume.dims()[ax] + 2 * pad[ax]);
    let mut affine = *volume.affine();
    let shift =
        volume.affine() * Vector4::new(-(pad[0] as f64), -(pad[1] as f64), -(pad[2] as f64), 1.0);
    affine.fixed_view_mut::<3, 1>(0, 3).copy_from(&shift.xyz());
    let inv = motion.try_inverse().unwrap();
    resample_mapped(
        volume,
        &Grid { dims, affine },
        &inv,
        Interpolation::CubicBSpline,
        0.0,
    )
    .unwrap()
}

/// Template brain-mask voxel centres on a 4 mm lattice (world mm).
fn brain_points() -> Vec<[f64; 3]> {
    let mask = TemplateImage::BrainMask.load().unwrap();
    let [nx, ny, nz] = mask.dims();
    let mut pts = Vec::new();
    for k in (0..nz).step_by(4) {
        for j in (0..ny).step_by(4) {
            for i in (0..nx).step_by(4) {
                if mask.get(i, j, k) > 0.5 {
                    pts.push(mask.voxel_to_world(i as f64, j as f64, k as f64));
                }
            }
        }
    }
    pts
}

#[test]
fn recovers_known_random_affines_on_real_scans() {
    let fixtures = [
        "philips-intera3T_ixi-hh_IXI012-HH-1211_t1w2mm.nii.gz",
        "philips-intera3T_ixi-hh_IXI132-HH-1415_t1w2mm.nii.gz",
        "siemens-prismafit3T_iu-xa30_mprage2mm_noprescannorm.nii.gz",
        "siemens-prismafit3T_iu-xa30_mprage2mm_prescannorm.nii.gz",
    ];
    let points = brain_points();
    let mut rng = SplitMix(20261122);
    let mut report = Vec::new();
    for name in fixtures {
        let path = super::util::data().join("t1w").join(name);
        let volume = to_closest_canonical(&read_nifti(&path).unwrap().0);
        let base = register_to_template(&volume, InputKind::FullHead, None).unwrap();
        // The brain centre in this scan: where the template origin region lands.
        let c = base.template_to_t1w.apply([0.0, -17.0, 5.0]);
        for _ in 0..2 {
            let motion = random_affine(&mut rng, Vector3::new(c[0], c[1], c[2]));
            let moving = moved(&volume, &motion);
            let fit = register_to_template(&moving, InputKind::FullHead, None).unwrap();
            // The moved scan's fit must equal the motion applied after the original fit.
            let expected = WorldAffine(motion * base.template_to_t1w.0);
            let error = mean_point_distance(&fit.template_to_t1w, &expected, &points);
            report.push(format!("{name}: {error:.3} mm"));
            assert!(
                error < 1.0,
                "{name}: mean error {error:.2} mm over the brain\n{report:#?}"
            );
        }
    }
    eprintln!("{report:#?}");
}
