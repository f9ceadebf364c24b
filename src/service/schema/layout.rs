//! The store's layout stamp in `Meta`: which layout of the store wrote it (`service::layout`
//! says what each number means). Every later version must read it as it is laid out here.

use crate::{service::stored::corrupt, store};

/// `Meta`: the number of the layout that wrote the store → that number (4 bytes, big-endian).
/// Absent from a store written before versioning.
pub(in crate::service) const LAYOUT_KEY: &[u8] = b"layout";

/// The stored value of the stamp for `layout`.
pub(in crate::service) fn layout_stamp(layout: u32) -> [u8; 4] {
    layout.to_be_bytes()
}

/// The layout number a stamp holds.
pub(in crate::service) fn layout_of_stamp(stamp: &[u8]) -> Result<u32, store::Error> {
    let bytes = <[u8; 4]>::try_from(stamp).map_err(|_| corrupt("the store's layout stamp"))?;
    Ok(u32::from_be_bytes(bytes))
}
