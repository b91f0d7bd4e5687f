//! Resource names are DNS-1123 labels, like Kubernetes object names, so they can appear in
//! URLs, kubeconfig contexts and ServiceAccount names without escaping.

pub const MAX_NAME_LEN: usize = 63;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_NAME_LEN} characters (got {0})")]
    TooLong(usize),
    #[error(
        "must consist of lower-case letters, digits and '-', and start and end with a letter or digit"
    )]
    Invalid,
}

/// Checks a DNS-1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong(name.len()));
    }
    let bytes = name.as_bytes();
    let ok_inner = bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !ok_inner || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return Err(NameError::Invalid);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns1123_labels() {
        for ok in ["a", "admin", "team-a", "x1", &"a".repeat(63)] {
            assert_eq!(validate_name(ok), Ok(()), "{ok}");
        }
        assert_eq!(validate_name(""), Err(NameError::Empty));
        assert_eq!(validate_name(&"a".repeat(64)), Err(NameError::TooLong(64)));
        for bad in ["-a", "a-", "A", "a_b", "a.b", "ä", "a b"] {
            assert_eq!(validate_name(bad), Err(NameError::Invalid), "{bad}");
        }
    }
}
