//! The frame every page shares: escaping, the layout with its inline style (one phone-first column, no
//! external file, so the page works offline on the LAN), and the headers that keep other sites from
//! framing or scripting it.

use std::fmt::Write;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// What browsers may load and run: only this server, the page's own inline style and script.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; \
                   connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; \
                   base-uri 'none'";

const STYLE: &str = r#"
*{box-sizing:border-box}
body{margin:0;font:15px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1b1f24;background:#f5f6f8}
header{display:flex;flex-wrap:wrap;align-items:center;gap:.2rem .9rem;padding:.6rem .9rem;background:#23415a;color:#fff}
header a{color:#fff;text-decoration:none;padding:.2rem 0}
header a.here{border-bottom:2px solid #fff}
header strong{margin-right:auto}
header form{margin:0}
header button{background:none;border:1px solid #fff8;color:#fff;border-radius:4px;padding:.1rem .5rem}
main{padding:.7rem;max-width:60rem;margin:0 auto}
h1{font-size:1.25rem;margin:.4rem 0 .7rem}
h2{font-size:1.05rem;margin:1.2rem 0 .5rem}
table{border-collapse:collapse;width:100%;background:#fff}
td,th{padding:.35rem .45rem;border-bottom:1px solid #e3e6ea;text-align:left;vertical-align:top}
th{font-weight:600;background:#eef1f4}
tr.group th{background:#dde4ea}
td.value{font-family:ui-monospace,monospace;overflow-wrap:anywhere}
a.topic-link{overflow-wrap:anywhere}
td.age,td.when{white-space:nowrap;color:#5a6570}
td.num{text-align:right;font-variant-numeric:tabular-nums}
a{color:#1d5f99}
input,button,select{font:inherit}
#filter{width:100%;padding:.5rem;margin:0 0 .6rem;border:1px solid #b8c0c8;border-radius:6px}
.relays{display:grid;grid-template-columns:repeat(auto-fill,minmax(15rem,1fr));gap:.6rem}
.relay,section.rule,.card{background:#fff;border:1px solid #dde2e7;border-radius:8px;padding:.6rem .7rem}
.relay .name{font-weight:600}
.state{display:inline-block;min-width:2.6rem;text-align:center;border-radius:4px;padding:0 .3rem;font-weight:600}
.state.on{background:#ffd95c}.state.off{background:#dfe3e7}
.relay form{display:flex;gap:.4rem;margin-top:.4rem}
.relay button{flex:1;padding:.45rem 0;border:1px solid #9aa6b2;border-radius:6px;background:#f7f9fb}
.muted{color:#5a6570;font-size:.9em}
section.rule{margin:0 0 .7rem}
section.rule h2{margin:.1rem 0 .4rem}
section.broken{border-color:#d64545}
.error{color:#a61b1b}
pre{background:#f3f4f6;padding:.5rem;overflow-x:auto;font-size:.85em}
pre.error{white-space:pre-wrap;overflow-wrap:anywhere}
svg.chart{width:100%;height:auto;background:#fff}
.spark{vertical-align:middle}
.periods a{margin-right:.6rem}
form.login{max-width:20rem;margin:3rem auto;display:flex;flex-direction:column;gap:.6rem}
form.login input,form.login button{padding:.6rem}
"#;

/// `text` safe inside HTML text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` as one query-string value.
pub fn query_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(byte as char)
            }
            other => {
                let _ = write!(out, "%{other:02X}");
            }
        }
    }
    out
}

/// The pages of the navigation bar: path and label.
const NAV: [(&str, &str); 4] = [
    ("/", "House"),
    ("/rules", "Rules"),
    ("/health", "Health"),
    ("/metrics", "Metrics"),
];

/// A whole page: `body` inside the shared frame. `csrf` is the session's token, for the logout
/// button (`None`: no login, no button).
pub fn page(title: &str, here: &str, logout_csrf: Option<&str>, body: &str) -> Response {
    let mut nav = String::new();
    for (path, label) in NAV {
        let class = if path == here { " class=\"here\"" } else { "" };
        let _ = write!(nav, "<a href=\"{path}\"{class}>{label}</a>");
    }
    if let Some(csrf) = logout_csrf {
        let _ = write!(
            nav,
            "<form method=\"post\" action=\"/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">Log out</button></form>",
            escape(csrf)
        );
    }
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{title} · homewright</title><style>{STYLE}</style></head>\
         <body><header><strong>homewright</strong>{nav}</header><main>{body}</main></body></html>\n",
        title = escape(title),
    );
    respond(StatusCode::OK, html)
}

/// An HTML answer with the headers every page carries.
pub fn respond(status: StatusCode, html: String) -> Response {
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure(headers);
    response
}

/// Headers for every answer of the web server: no framing (a relay button must not be clickable
/// through another site's page), no caching of the house's values, no referrer.
pub fn secure(headers: &mut axum::http::HeaderMap) {
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// "5 s", "3 min", "2 h", "4 d": how long ago `ts` was.
pub fn age(now: i64, ts: i64) -> String {
    let seconds = (now - ts).max(0) / 1000;
    match seconds {
        s if s < 60 => format!("{s} s"),
        s if s < 3_600 => format!("{} min", s / 60),
        s if s < 86_400 => format!("{} h", s / 3_600),
        s => format!("{} d", s / 86_400),
    }
}

/// A payload as text for a cell: invalid UTF-8 as a byte count, long text cut.
pub fn payload_text(payload: &crate::store::SqlValue) -> String {
    use crate::store::SqlValue;
    const MAX: usize = 200;
    match payload {
        SqlValue::Text(text) if text.chars().count() > MAX => {
            let cut: String = text.chars().take(MAX).collect();
            format!("{cut}…")
        }
        SqlValue::Text(text) => text.clone(),
        SqlValue::Blob(bytes) => format!("({} bytes, not text)", bytes.len()),
        SqlValue::Integer(n) => n.to_string(),
        SqlValue::Real(r) => r.to_string(),
        SqlValue::Null => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_is_escaped_and_query_values_encoded() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(query_value("a/b c&d=é"), "a/b%20c%26d%3D%C3%A9");
    }

    #[test]
    fn ages_read_in_the_largest_whole_unit() {
        assert_eq!(age(10_000, 5_000), "5 s");
        assert_eq!(age(200_000, 0), "3 min");
        assert_eq!(age(7_300_000, 0), "2 h");
        assert_eq!(age(0, 1_000), "0 s");
    }
}
