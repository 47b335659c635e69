//! Pure policy types the layers above share: the traffic policy and its choice of a version
//! (`traffic`), per-version windows a rollout judges (`window`), bounded admission
//! (`admission`). A leaf: it knows no registry, router or transport, so `config`, `registry`,
//! `routing` and `rollout` can all depend on it without depending on each other.

pub mod admission;
pub mod traffic;
pub mod window;
