//! Sans-IO protocol cores.

pub mod frame;
pub mod hyparview;
pub mod plumtree;
pub mod topic;

pub use frame::{Frame, decode_frame, encode_frame};

/// What the cores need of a peer identity: cheap to clone, ordered (iteration order that reaches
/// output must be deterministic), printable.
pub trait PeerId: Clone + Ord + std::fmt::Debug {}
impl<T: Clone + Ord + std::fmt::Debug> PeerId for T {}
