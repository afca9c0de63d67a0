//! `${NAME}` in a config value: replaced by the environment variable NAME
//! (probe header values, the notify URL). An unset variable is a problem
//! naming it; what it expands to is a secret the caller registers.

/// `text` with each `${NAME}` replaced by the variable's value, read through
/// `lookup`. An unset (or empty) variable, or a `${` without its `}`, is an
/// error saying which.
pub fn expand(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err("`${` without its closing `}`".into());
        };
        let name = &after[..end];
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!(
                "`${{{name}}}` is not a variable name (letters, digits and `_`)"
            ));
        }
        match lookup(name) {
            Some(v) if !v.is_empty() => out.push_str(&v),
            _ => return Err(format!("environment variable {name} is not set or empty")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// [`expand`] from the process environment. Each value read is registered
/// with [`crate::redact`] on its own too (a server may echo the secret part
/// of `Basic ${CREDENTIALS}` without its prefix).
pub fn expand_env(text: &str) -> Result<String, String> {
    expand(text, |name| {
        let value = std::env::var(name).ok();
        if let Some(v) = &value {
            crate::redact::register(v);
        }
        value
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "SECRET").then(|| "s3cr3t".to_owned())
    }

    #[test]
    fn a_variable_is_replaced_wherever_it_stands() {
        assert_eq!(expand("${SECRET}", env).unwrap(), "s3cr3t");
        assert_eq!(expand("Basic ${SECRET}!", env).unwrap(), "Basic s3cr3t!");
        assert_eq!(expand("plain", env).unwrap(), "plain");
    }

    #[test]
    fn an_unset_variable_is_named() {
        let e = expand("x-${MISSING}", env).unwrap_err();
        assert!(e.contains("MISSING"), "{e}");
        assert!(expand("${SECRET", env).is_err());
        assert!(expand("${}", env).is_err());
    }
}
