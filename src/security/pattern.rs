//! A name in the authorization policy: exact, or a prefix ending in `*` (`*` anywhere else is
//! refused, so a typo cannot widen a rule). A leaf shared by the policy's `[[allow]]` rules and
//! its quotas' `callers`.

/// One name or a trailing-`*` prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Pattern {
    Exact(String),
    Prefix(String),
}

// === impl Pattern ===

impl Pattern {
    pub(super) fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (body, prefix) = match text.strip_suffix('*') {
            Some(body) => (body, true),
            None => (text, false),
        };
        if body.contains('*') {
            return Err(format!(
                "`{text}`: `*` is allowed only at the end (a prefix)"
            ));
        }
        if body.is_empty() && !prefix {
            return Err("an empty name matches nothing".into());
        }
        Ok(if prefix {
            Self::Prefix(body.to_owned())
        } else {
            Self::Exact(body.to_owned())
        })
    }

    pub(super) fn matches(&self, name: &str) -> bool {
        match self {
            Self::Exact(exact) => name == exact,
            Self::Prefix(prefix) => name.starts_with(prefix.as_str()),
        }
    }
}
