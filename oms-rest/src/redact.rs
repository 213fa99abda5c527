//! How a URL that may carry a credential is shown: through [`url()`], with the password (or a
//! user name that may be a token) and any credential-like query parameter replaced by `***`.
//! The client shows its base URL no other way (in its errors); the application around it may
//! show its own URL settings through it too (oms-gateway does, for every URL flag in
//! `--print-config` and its log lines), so one grammar of what hides a credential serves both.

/// What replaces a credential.
pub const MASK: &str = "***";

/// Query parameters that carry a credential (`redis+unix:///run/redis.sock?pass=...`).
const SECRET_PARAMETERS: &[&str] = &[
    "pass",
    "password",
    "secret",
    "token",
    "key",
    "apikey",
    "api_key",
    "access_token",
    "auth",
];

/// `text` (one URL, or a comma-separated list of them, as `--redis-url` with `--redis-cluster`)
/// with every credential replaced by [`MASK`]: `redis://gw:pw@host` → `redis://gw:***@host`,
/// `https://token@host` → `https://***@host`, `?pass=pw` → `?pass=***`. Text that is not a URL
/// comes back unchanged.
pub fn url(text: &str) -> String {
    // Split only at a comma that starts another URL, so a password holding a comma stays whole.
    let mut out = String::with_capacity(text.len());
    let mut start = 0;
    for (at, _) in text.match_indices(',') {
        if starts_with_scheme(&text[at + 1..]) {
            out.push_str(&one_url(&text[start..at]));
            out.push(',');
            start = at + 1;
        }
    }
    out.push_str(&one_url(&text[start..]));
    out
}

/// Whether `text` begins with `scheme://` (RFC 3986: a letter, then letters, digits, `+-.`).
fn starts_with_scheme(text: &str) -> bool {
    let text = text.trim_start();
    let Some(end) = text.find("://") else {
        return false;
    };
    let scheme = &text[..end];
    scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// Whether [`url()`] hides anything in `text`.
pub fn url_has_credentials(text: &str) -> bool {
    url(text) != text
}

fn one_url(text: &str) -> String {
    let Some(scheme_end) = text.find("://") else {
        return text.to_owned();
    };
    let rest_start = scheme_end + 3;
    let rest = &text[rest_start..];
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..rest_start]);
    // Everything up to the last `@` is user information, even a password holding an unencoded
    // `/`, `?` or `@` (masking a path that holds an `@` too is the safe mistake).
    let tail = match rest.rfind('@') {
        Some(at) => {
            if let Some((user, _password)) = rest[..at].split_once(':') {
                out.push_str(user);
                out.push(':');
            }
            out.push_str(MASK);
            &rest[at..]
        }
        None => rest,
    };
    let (before_fragment, fragment) = tail.split_at(tail.find('#').unwrap_or(tail.len()));
    match before_fragment.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) if is_secret_parameter(name) => format!("{name}={MASK}"),
                    _ => pair.to_owned(),
                })
                .collect();
            out.push_str(&pairs.join("&"));
        }
        None => out.push_str(before_fragment),
    }
    out.push_str(fragment);
    out
}

fn is_secret_parameter(name: &str) -> bool {
    SECRET_PARAMETERS
        .iter()
        .any(|secret| secret.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_user_tokens_and_credential_parameters_are_masked() {
        assert_eq!(
            url("rediss://gw:hunter2@redis.internal:6380/0"),
            "rediss://gw:***@redis.internal:6380/0"
        );
        assert_eq!(url("redis://:hunter2@r:6379"), "redis://:***@r:6379");
        assert_eq!(url("redis://gw:a/b?c@r:6379/0"), "redis://gw:***@r:6379/0");
        assert_eq!(
            url("redis://gw:a,b@r, redis://c@s"),
            "redis://gw:***@r, redis://***@s"
        );
        assert_eq!(url("https://tok3n@otel:4317"), "https://***@otel:4317");
        assert_eq!(
            url("redis://a:x@10.0.0.1:6379,redis://b:y@10.0.0.2:6379"),
            "redis://a:***@10.0.0.1:6379,redis://b:***@10.0.0.2:6379"
        );
        assert_eq!(
            url("redis+unix:///run/redis.sock?db=1&pass=hunter2#frag"),
            "redis+unix:///run/redis.sock?db=1&pass=***#frag"
        );
        // A password holding `@` or `/`: the authority ends at the last `@` before the path.
        assert_eq!(url("redis://gw:p@ss@host:1/0"), "redis://gw:***@host:1/0");
        for plain in [
            "https://sandbox-api.polygon.technology/v0.9",
            "http://127.0.0.1:4317",
            "self",
            "",
        ] {
            assert_eq!(url(plain), plain);
            assert!(!url_has_credentials(plain));
        }
        assert!(url_has_credentials("redis://gw:pw@h"));
    }
}
