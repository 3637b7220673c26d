//! Integration tests: the library on real fixtures, and the built `hcld` binary on real datasets.
//! One test binary with a module per feature (ripgrep's layout).

mod it;
