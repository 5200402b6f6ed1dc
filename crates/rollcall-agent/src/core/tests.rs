//! Unit tests of the core: filled in below.
