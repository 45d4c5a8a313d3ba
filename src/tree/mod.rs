//! The image's file tree: the manifest every writer renders, and what fills it (host trees,
//! tar archives stacked as layers, and device tables).

pub mod devtable;
pub mod layers;
pub mod manifest;
pub mod skeleton;
