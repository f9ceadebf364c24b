//! What a panic said: its payload's message, as `panic!` with a literal or a format leaves it.
//! One reading for the supervisor's failure report, the store's caught panics and the panic
//! hook of the log.

use std::any::Any;

/// The message of a panic's `payload`, or a placeholder when it carries none.
pub(crate) fn message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_and_formatted_panics_give_their_message() {
        let literal = std::panic::catch_unwind(|| panic!("literal")).unwrap_err();
        let formatted = std::panic::catch_unwind(|| panic!("{}", 42)).unwrap_err();
        let other = std::panic::catch_unwind(|| std::panic::panic_any(7_u8)).unwrap_err();
        assert_eq!(message(literal.as_ref()), "literal");
        assert_eq!(message(formatted.as_ref()), "42");
        assert_eq!(message(other.as_ref()), "a panic without a message");
    }
}
