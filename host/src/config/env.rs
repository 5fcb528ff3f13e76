//! `${ENV}` substitution in config text.

/// Replaces `${NAME}` and `${NAME:-default}` with environment values; `$${` is a literal `${`.
/// Every undefined variable is reported. `${secret:NAME}` stays as written: it is a
/// placeholder the host fills in on a plugin's connection (see `plugin::secrets`).
pub fn substitute_env(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix("${") {
            out.push_str("${");
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                errors.push("unterminated ${ in config".to_string());
                out.push('$');
                rest = after;
                continue;
            };
            let expr = &body[..end];
            if expr.starts_with("secret:") {
                out.push_str(&rest[i..i + 3 + end]);
                rest = &body[end + 1..];
                continue;
            }
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            match (lookup(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => errors.push(format!(
                    "environment variable {name} is not set (used as ${{{name}}})"
                )),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}
