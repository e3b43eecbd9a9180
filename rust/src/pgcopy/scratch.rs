//! Scratch buffers for the field writers.

/// Scratch buffers reused across values, so encoding allocates nothing per item.
#[derive(Default)]
pub struct Scratch {
    pub text: Vec<u8>,
    pub digits: Vec<u8>,
    pub bytes: Vec<u8>,
}
