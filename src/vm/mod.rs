//! The VM runner (being written).
