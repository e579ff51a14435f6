//! The fuzz targets live in `tests/it/targets.rs`; see `README.md`.
