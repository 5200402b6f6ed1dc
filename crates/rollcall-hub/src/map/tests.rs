//! The map's lifecycle with the time passed in.
