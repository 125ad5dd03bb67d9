//! Docker's image reference grammar (`github.com/distribution/reference`), shared by the API
//! (which refuses at create/update a `config.image` that could never be pulled) and
//! `hangar-image`'s `Reference::parse` (which pulls).
//!
//! `[registry/]path[:tag][@sha256:<64 hex>]`: the first component is a registry if it has a
//! `.` or `:`, is `localhost` or has uppercase; path components are `[a-z0-9]` runs joined by
//! `.`, `_`, `__` or dashes; a tag is `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.

/// Longest repository name, normalised (`docker.io/library/…` counts).
pub const MAX_NAME_LEN: usize = 255;
/// Longest tag.
pub const MAX_TAG_LEN: usize = 128;

/// Why `image` is not a pullable reference, or `Ok`.
pub fn check(image: &str) -> Result<(), String> {
    if image.is_empty() {
        return Err("empty".into());
    }
    let (name_and_tag, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    if let Some(d) = digest {
        let hex = d
            .strip_prefix("sha256:")
            .ok_or("the digest must be sha256:<64 hex digits>")?;
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err("the digest must be sha256:<64 hex digits>".into());
        }
    }
    let (name, tag) = split_tag(name_and_tag);
    if name.is_empty() {
        return Err("the repository name is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "the repository name is longer than {MAX_NAME_LEN} characters"
        ));
    }
    if let Some(t) = tag
        && !valid_tag(t)
    {
        return Err("the tag must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}".into());
    }
    if name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err("a 64-digit hex string is an image id, not a reference".into());
    }
    let (registry, path) = split_registry(name);
    if let Some(r) = registry
        && !valid_registry(r)
    {
        return Err("the registry must be host[:port]".into());
    }
    if path.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("the repository name must be lowercase".into());
    }
    if !valid_path(path) {
        return Err(
            "path components are [a-z0-9] separated by '.', '_', '__' or '-', joined by '/'".into(),
        );
    }
    // `nginx` is `docker.io/library/nginx`: the normalised name counts too.
    let normalised = match registry {
        Some(r) => r.len() + 1 + path.len(),
        None if path.contains('/') => "docker.io/".len() + path.len(),
        None => "docker.io/library/".len() + path.len(),
    };
    if normalised > MAX_NAME_LEN {
        return Err(format!(
            "the repository name is longer than {MAX_NAME_LEN} characters"
        ));
    }
    Ok(())
}

/// Splits `name[:tag]` (no digest): a tag follows the last ':' after the last '/' (an earlier
/// ':' is a registry's port).
pub fn split_tag(name_and_tag: &str) -> (&str, Option<&str>) {
    let last_slash = name_and_tag.rfind('/');
    match name_and_tag.rfind(':') {
        Some(c) if last_slash.is_none_or(|s| c > s) => {
            (&name_and_tag[..c], Some(&name_and_tag[c + 1..]))
        }
        _ => (name_and_tag, None),
    }
}

/// Splits off the registry the way docker's `splitDockerDomain` does: the first path
/// component is a registry if it contains '.' or ':', is `localhost`, or has uppercase.
pub fn split_registry(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    !bytes.is_empty()
        && bytes.len() <= MAX_TAG_LEN
        && word(bytes[0])
        && bytes[1..]
            .iter()
            .all(|&b| word(b) || b == b'.' || b == b'-')
}

/// `host[:port]` where host is a domain name, an IPv4 address or `[IPv6]`.
pub fn valid_registry(registry: &str) -> bool {
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        if v6.is_empty()
            || !v6
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => ("ipv6", Some(port)),
                None => return false,
            },
        }
    } else {
        match registry.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (registry, None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    !host.is_empty()
        && host.split('.').all(|component| {
            let b = component.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
        })
}

/// `path-component ('/' path-component)*`, each `[a-z0-9]+ (separator [a-z0-9]+)*` where a
/// separator is `.`, `_`, `__` or one or more `-`.
pub fn valid_path(path: &str) -> bool {
    path.split('/').all(valid_path_component)
}

/// One path component (see [`valid_path`]).
pub fn valid_path_component(component: &str) -> bool {
    let b = component.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run; it must be followed by an alphanumeric (guaranteed at the end).
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn docker_references_pass() {
        for ok in [
            "i",
            "img:1",
            "nginx",
            "library/nginx:1.25-alpine",
            "hangar-test/busybox:latest",
            "registry.fly.io/my-app:deployment-01HZ",
            "127.0.0.1:5000/hangar/missing:v1",
            "localhost/a__b/c-d.e",
            "[::1]:5000/x",
            "ghcr.io/o/r@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn everything_else_is_refused() {
        let long = format!("{}:1", "a".repeat(250));
        for bad in [
            "",
            " img",
            "img ",
            "a b",
            "../../x",
            "x/../y",
            "a\u{0}b",
            "a\nb",
            "UPPER",
            "a:",
            "a:-x",
            "a@sha256:zz",
            "a@md5:0123",
            "-x",
            "x-",
            "a//b",
            "a/",
            "/a",
            "a___b",
            "host:port/x",
            "[zz]/x",
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            long.as_str(),
            "é",
        ] {
            assert!(check(bad).is_err(), "{bad:?} accepted");
        }
    }
}
