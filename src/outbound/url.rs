//! URLs as notification channels and `http()` calls write them, split into their parts by hand.
//!
//! A general URL crate would also bring IDNA tables for host names no channel uses, and its errors
//! quote the URL, which holds tokens. Here every error names the part that is wrong and never the
//! URL itself, so a configuration or rule problem can be shown and logged as it is.

/// A URL taken apart: `scheme://[user[:password]@]host[:port][/path][?query]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Parts {
    /// Lower case.
    pub scheme: String,
    /// Percent-decoded.
    pub user: Option<String>,
    /// Percent-decoded.
    pub password: Option<String>,
    /// Without brackets for an IPv6 address; may be empty (`pushover://user@` with the token given apart).
    pub host: String,
    pub port: Option<u16>,
    /// Starts with `/`, or is empty.
    pub path: String,
    /// Without the `?`.
    pub query: Option<String>,
}

impl std::fmt::Debug for Parts {
    /// Leaves out the user information and the query, where tokens live.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.redacted())
    }
}

impl Parts {
    /// Splits `url`. The error says which part is wrong, never what the URL holds.
    pub fn split(url: &str) -> Result<Parts, String> {
        let url = url.trim();
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err("a URL starts with a scheme and `://`, e.g. https://".into());
        };
        if scheme.is_empty()
            || !scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            return Err("the URL's scheme is not valid".into());
        }
        let rest = rest.split('#').next().unwrap_or_default();
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let (path, query) = match tail.split_once('?') {
            Some((path, query)) => (path, Some(query.to_string())),
            None => (tail, None),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(info) => match info.split_once(':') {
                Some((user, password)) => (Some(decode(user)?), Some(decode(password)?)),
                None => (Some(decode(info)?), None),
            },
        };
        let (host, port) = host_and_port(hostport)?;
        Ok(Parts {
            scheme: scheme.to_ascii_lowercase(),
            user: user.filter(|u| !u.is_empty()),
            password: password.filter(|p| !p.is_empty()),
            host,
            port,
            path: path.to_string(),
            query,
        })
    }

    /// `host` or `host:port`, with brackets around an IPv6 address.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.port {
            Some(port) => format!("{host}:{port}"),
            None => host,
        }
    }

    /// The URL without user information and with the query's values hidden: safe for logs, errors and
    /// the `actions` table.
    pub fn redacted(&self) -> String {
        let query = match &self.query {
            None => String::new(),
            Some(query) => {
                let names: Vec<String> = query
                    .split('&')
                    .filter(|pair| !pair.is_empty())
                    .map(|pair| match pair.split_once('=') {
                        Some((name, _)) => format!("{name}=***"),
                        None => pair.to_string(),
                    })
                    .collect();
                format!("?{}", names.join("&"))
            }
        };
        format!("{}://{}{}{query}", self.scheme, self.authority(), self.path)
    }

    /// The path and query as sent in the request line.
    pub fn path_and_query(&self) -> String {
        let path = if self.path.is_empty() { "/" } else { &self.path };
        match &self.query {
            Some(query) => format!("{path}?{query}"),
            None => path.to_string(),
        }
    }
}

fn host_and_port(hostport: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
        let Some((host, after)) = bracketed.split_once(']') else {
            return Err("the URL's IPv6 host is missing its closing `]`".into());
        };
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return Err("unexpected text after the URL's IPv6 host".into()),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    if host.chars().any(|c| c.is_whitespace() || "/\\?#@".contains(c)) {
        return Err("the URL's host is not valid".into());
    }
    let port = match port {
        None | Some("") => None,
        Some(port) => Some(
            port.parse::<u16>()
                .map_err(|_| "the URL's port is not a number from 0 to 65535".to_string())?,
        ),
    };
    // Case is kept: a pushover token sits where the host is. Hosts are compared ignoring case.
    Ok((host.to_string(), port))
}

/// Percent-decoding, for user names and passwords with reserved characters in them.
fn decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("the URL's user information has a `%` not followed by two hex digits")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the URL's user information is not UTF-8 once decoded".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_splits_into_its_parts() {
        let parts = Parts::split("ntfys://alice:p%40ss@ntfy.example.com:8443/house?x=1").unwrap();
        assert_eq!(parts.scheme, "ntfys");
        assert_eq!(parts.user.as_deref(), Some("alice"));
        assert_eq!(parts.password.as_deref(), Some("p@ss"));
        assert_eq!(parts.host, "ntfy.example.com");
        assert_eq!(parts.port, Some(8443));
        assert_eq!(parts.path, "/house");
        assert_eq!(parts.path_and_query(), "/house?x=1");
        let v6 = Parts::split("http://[::1]:8080").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", Some(8080)));
        assert_eq!(v6.authority(), "[::1]:8080");
        assert_eq!(v6.path_and_query(), "/");
    }

    #[test]
    fn a_telegram_token_with_a_colon_splits_into_user_and_password() {
        let parts = Parts::split("telegram://123456:ABC-def_ghi@-100200300").unwrap();
        assert_eq!(parts.user.as_deref(), Some("123456"));
        assert_eq!(parts.password.as_deref(), Some("ABC-def_ghi"));
        assert_eq!(parts.host, "-100200300");
    }

    #[test]
    fn the_redacted_form_and_errors_hold_no_secret() {
        let parts = Parts::split("https://bob:hunter2@hooks.example/x?token=hunter3&plain").unwrap();
        let shown = format!("{} {parts:?}", parts.redacted());
        assert!(!shown.contains("hunter"), "{shown}");
        assert!(
            shown.contains("https://hooks.example/x?token=***&plain"),
            "{shown}"
        );
        for bad in [
            "https://bob:hunter2@host:99999/",
            "hunter2",
            "https://bob:hunter2%zz@host/",
        ] {
            let error = Parts::split(bad).unwrap_err();
            assert!(!error.contains("hunter"), "{error}");
        }
    }
}
