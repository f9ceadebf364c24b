//! Key material from files: the trust anchors and CRLs documents are verified against (`trust`),
//! the gateway's own signing identity and the pinned certificates of the gateways it trusts
//! (`identity`), and the CMS signer that clinics, demos and tests sign documents with (`signer`).
//! Signing and verifying go through `ring`, the one crypto provider.

pub mod identity;
pub mod signer;
pub mod trust;
