//! The NIfTI-1/2 reader (header, gzip detection, voxel decoding, affine) on arbitrary bytes: it
//! must return an error, never panic, hang or allocate what the bytes do not hold.
#![no_main]

use std::path::Path;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok((volume, _summary)) = hcld::volume::read_nifti_bytes(Path::new("fuzz.nii"), data) {
        // A decoded volume is consistent with itself.
        assert_eq!(volume.data().len(), volume.dims().iter().product::<usize>());
    }
});
