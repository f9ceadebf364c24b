//! Counted places per key, at most `max` per key: pending handshakes per source address, open
//! event feeds per institution. A place is given back when its guard is dropped, however the
//! work holding it ends, and a key leaves the table with its last place, so the table never
//! holds more keys than there are places taken. Pure bookkeeping: no IO, no clock.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::{Arc, Mutex, PoisonError},
};

#[derive(Debug)]
pub struct KeyedSlots<K: Eq + Hash> {
    max: usize,
    taken: Mutex<HashMap<K, usize>>,
}

impl<K: Eq + Hash + Clone> KeyedSlots<K> {
    /// At most `max` places per key (at least 1).
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(KeyedSlots {
            max: max.max(1),
            taken: Mutex::new(HashMap::new()),
        })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// A place for `key`, or `None` while it holds `max`.
    pub fn take(self: &Arc<Self>, key: &K) -> Option<Slot<K>> {
        let mut taken = self.taken.lock().unwrap_or_else(PoisonError::into_inner);
        let held = taken.entry(key.clone()).or_insert(0);
        if *held >= self.max {
            return None;
        }
        *held += 1;
        Some(Slot {
            slots: Arc::clone(self),
            key: key.clone(),
        })
    }

    /// Keys holding a place now.
    pub fn keys(&self) -> usize {
        self.taken
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// A place; given back when dropped.
#[derive(Debug)]
pub struct Slot<K: Eq + Hash> {
    slots: Arc<KeyedSlots<K>>,
    key: K,
}

impl<K: Eq + Hash> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut taken = self
            .slots
            .taken
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = taken.get_mut(&self.key) {
            *held -= 1;
            if *held == 0 {
                taken.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_holds_at_most_max_places_and_leaves_with_its_last() {
        let slots = KeyedSlots::new(2);
        let a = slots.take(&"a").unwrap();
        let a2 = slots.take(&"a").unwrap();
        assert!(slots.take(&"a").is_none());
        let b = slots.take(&"b").unwrap();
        assert_eq!(slots.keys(), 2);
        drop(a);
        let _a3 = slots.take(&"a").unwrap();
        drop((a2, b));
        assert_eq!(slots.keys(), 1);
    }
}
