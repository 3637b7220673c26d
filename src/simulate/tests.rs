//! Unit tests of the simulator (kept apart: the simulator itself is long enough).
use super::*;

#[test]
fn site_parameters_are_in_their_documented_ranges() {
    for k in 0..50 {
        let s = SiteParams::draw(7, k);
        assert!((1.15..=1.6).contains(&s.wm_gm_ratio));
        assert!((0.7..=1.4).contains(&s.gamma));
        assert!((0.05..=0.25).contains(&s.bias_amplitude));
        assert!((0.01..=0.05).contains(&s.noise_fraction));
        assert!(s.blur_voxels.iter().all(|b| (0.0..=1.2).contains(b)));
        // The response is monotone and keeps the WM/GM ratio.
        let tissue = [0.3, 0.6, 0.9];
        let mut last = -1.0;
        for j in 0..200 {
            let y = s.response(j as f64 / 150.0, tissue);
            assert!(y >= last, "site {k} not monotone at {j}");
            last = y;
        }
        let ratio = s.response(0.9, tissue) / s.response(0.6, tissue);
        assert!((ratio - s.wm_gm_ratio).abs() < 1e-9, "{ratio} {s:?}");
    }
    assert_eq!(SiteParams::draw(7, 3), SiteParams::draw(7, 3));
    assert_ne!(SiteParams::draw(7, 3), SiteParams::draw(8, 3));
}

#[test]
fn bias_field_stays_within_its_amplitude() {
    let s = SiteParams::draw(1, 0);
    let dims = [10, 12, 8];
    let mask = vec![true; 960];
    let b = bias_field(&s, dims, &mask);
    let (lo, hi) = b
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), &v| (l.min(v), h.max(v)));
    assert!(hi <= 1.0 + s.bias_amplitude + 1e-9 && lo >= 1.0 / (1.0 + s.bias_amplitude) - 1e-9);
    assert!(hi - lo > s.bias_amplitude * 0.5, "{lo} {hi}");
}

#[test]
fn the_site_effect_scales_the_spread_of_the_sites() {
    let sites: Vec<SiteParams> = (0..6).map(|k| SiteParams::draw(9, k)).collect();
    // 0: every site is the middle site (the pattern of the bias stays, its amplitude is the
    // middle one).
    let none: Vec<SiteParams> = sites.iter().map(|s| s.with_effect(0.0)).collect();
    for s in &none {
        assert_eq!(
            (
                s.wm_gm_ratio,
                s.csf_gm_ratio,
                s.gamma,
                s.noise_fraction,
                s.blur_voxels
            ),
            (1.375, 0.35, 1.05, 0.03, [0.6; 3])
        );
        let tissue = [0.3, 0.6, 0.9];
        assert_eq!(s.response(0.7, tissue), none[0].response(0.7, tissue));
        // The same bias field everywhere.
        let dims = [6, 7, 5];
        let mask = vec![true; 210];
        assert_eq!(
            bias_field(s, dims, &mask),
            bias_field(&none[0], dims, &mask)
        );
    }
    // 1: as drawn (up to the rounding of the scale).
    for s in &sites {
        let same = s.with_effect(1.0);
        assert!((same.wm_gm_ratio - s.wm_gm_ratio).abs() < 1e-12);
        assert!((same.gamma - s.gamma).abs() < 1e-12);
        assert!((same.scale - s.scale).abs() <= 1.0);
    }
    // 2: twice as far from the middle (the gammas are never clipped), still valid (the
    // WM/GM ratios and noise levels are clipped at their bounds).
    let spread = |v: &[SiteParams]| {
        let r: Vec<f64> = v.iter().map(|s| s.gamma).collect();
        r.iter().cloned().fold(f64::MIN, f64::max) - r.iter().cloned().fold(f64::MAX, f64::min)
    };
    let strong: Vec<SiteParams> = sites.iter().map(|s| s.with_effect(2.0)).collect();
    assert!(
        (spread(&strong) - 2.0 * spread(&sites)).abs() < 1e-9,
        "{strong:?}"
    );
    assert!(strong.iter().all(|s| s.wm_gm_ratio > 1.0
        && s.gamma > 0.0
        && s.noise_fraction >= 0.0
        && s.blur_voxels.iter().all(|&b| b >= 0.0)));
}

#[test]
fn the_design_puts_every_source_at_every_site() {
    for seed in [0, 1, 17] {
        for sources in 2..=6 {
            for sites in 2..=6 {
                let n = sources * sites;
                assert!(design_is_balanced(n, sources, sites));
                assert!(!design_is_balanced(n - 1, sources, sites));
                // Every (source, site) cell once in the first S·K subjects, m times in S·K·m.
                for m in [1, 3] {
                    let mut cells = vec![0usize; sources * sites];
                    for i in 0..n * m {
                        let k = balanced_site(seed, sources, sites, i);
                        assert!(k < sites);
                        cells[(i % sources) * sites + k] += 1;
                    }
                    assert!(
                        cells.iter().all(|&c| c == m),
                        "seed {seed}, S {sources}, K {sites}, m {m}: {cells:?}"
                    );
                }
                // A source's deformed twin (subject i + S) is at another site.
                for i in 0..n {
                    assert_ne!(
                        balanced_site(seed, sources, sites, i),
                        balanced_site(seed, sources, sites, i + sources)
                    );
                }
            }
        }
    }
    // The seed decides which source starts at which site; the design stays a function of it.
    let starts = |seed| {
        (0..8)
            .map(|i| balanced_site(seed, 8, 8, i))
            .collect::<Vec<_>>()
    };
    assert_eq!(starts(3), starts(3));
    assert_ne!(starts(3), starts(4));
}

#[test]
fn config_ranges_are_checked() {
    let ok = SimulationConfig::default();
    assert!(ok.validate().is_ok());
    for bad in [
        SimulationConfig {
            sites: 1,
            ..ok.clone()
        },
        SimulationConfig {
            subjects: 3,
            ..ok.clone()
        },
        SimulationConfig {
            deformation_mm: -1.0,
            ..ok.clone()
        },
        SimulationConfig {
            age_range: [50.0, 20.0],
            ..ok.clone()
        },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
}
