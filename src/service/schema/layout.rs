//! The store's layout stamp in `Meta`: which layout of the store wrote it (`service::layout`
//! says what each number means), and the fingerprint of the pseudonym key its keys were made
//! under. Every later version must read them as they are laid out here.

use crate::{service::stored::corrupt, store};

/// `Meta`: the number of the layout that wrote the store → that number (4 bytes, big-endian).
/// Absent from a store written before versioning.
pub(in crate::service) const LAYOUT_KEY: &[u8] = b"layout";

/// `Meta`: the fingerprint of the pseudonym key the store's patient keys were made under
/// (`Pseudonyms::fingerprint`, 32 bytes), written before the first of them. A gateway with
/// another key would find none of them, so it is refused.
pub(in crate::service) const PSEUDONYM_KEY_FINGERPRINT_KEY: &[u8] = b"pseudonym-key-fingerprint";

/// The stored value of the stamp for `layout`.
pub(in crate::service) fn layout_stamp(layout: u32) -> [u8; 4] {
    layout.to_be_bytes()
}

/// The layout number a stamp holds.
pub(in crate::service) fn layout_of_stamp(stamp: &[u8]) -> Result<u32, store::Error> {
    let bytes = <[u8; 4]>::try_from(stamp).map_err(|_| corrupt("the store's layout stamp"))?;
    Ok(u32::from_be_bytes(bytes))
}
