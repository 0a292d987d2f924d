//! The layout picture.
