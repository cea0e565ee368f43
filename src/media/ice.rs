//! ICE servers from the browser's `RTCIceServer` shape to the URLs webrtcbin takes.

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

use crate::config::IceServer;

/// Everything but RFC 3986 `unreserved` is escaped in user names and passwords: webrtcbin
/// splits its TURN URL at `:` and `@` before unescaping.
const USERINFO: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'!')
    .add(b'"')
    .add(b'#')
    .add(b'$')
    .add(b'%')
    .add(b'&')
    .add(b'\'')
    .add(b'(')
    .add(b')')
    .add(b'*')
    .add(b'+')
    .add(b',')
    .add(b'/')
    .add(b':')
    .add(b';')
    .add(b'<')
    .add(b'=')
    .add(b'>')
    .add(b'?')
    .add(b'@')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

#[derive(Debug, Default, PartialEq, Eq)]
pub struct WebrtcbinIceUrls {
    /// webrtcbin takes one STUN server: the first one configured.
    pub stun: Option<String>,
    /// `turn(s)://user:pass@host:port?transport=…`; contains secrets, never log it.
    pub turn: Vec<String>,
}

/// `stun:host:port` → `stun://host:port`; `turn:host:port?transport=udp` with credentials →
/// `turn://user:pass@host:port?transport=udp`; `turns:` → `turns://`.
pub fn webrtcbin_urls(servers: &[IceServer]) -> WebrtcbinIceUrls {
    let mut out = WebrtcbinIceUrls::default();
    for server in servers {
        for url in &server.urls {
            let scheme = url.scheme();
            // `stun:host:port?x` is a cannot-be-a-base URL: host, port and query sit in path/query.
            let rest = url.as_str()[scheme.len() + 1..].trim_start_matches("//");
            match scheme {
                "stun" | "stuns" if out.stun.is_none() => {
                    out.stun = Some(format!("stun://{}", strip_query(rest)));
                }
                "turn" | "turns" => {
                    let user = server.username.as_deref().unwrap_or_default();
                    let pass = server
                        .credential
                        .as_ref()
                        .map(|c| c.expose())
                        .unwrap_or_default();
                    out.turn.push(format!(
                        "{scheme}://{}:{}@{rest}",
                        utf8_percent_encode(user, USERINFO),
                        utf8_percent_encode(pass, USERINFO)
                    ));
                }
                _ => {}
            }
        }
    }
    out
}

fn strip_query(s: &str) -> &str {
    s.split('?').next().unwrap_or(s)
}

/// A TURN URL with its credentials replaced, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use url::Url;

    #[test]
    fn browser_shape_to_webrtcbin() {
        let servers = vec![
            IceServer {
                urls: vec![Url::parse("stun:turn.stage.airsync.net:3478").unwrap()],
                username: None,
                credential: None,
            },
            IceServer {
                urls: vec![
                    Url::parse("turn:turn.stage.airsync.net:3478?transport=udp").unwrap(),
                    Url::parse("turns:turn.stage.airsync.net:5349?transport=tcp").unwrap(),
                ],
                username: Some("1700000000:box@site".into()),
                credential: Some(Secret::new("a/b+c=d:e")),
            },
        ];
        let urls = webrtcbin_urls(&servers);
        assert_eq!(
            urls.stun.as_deref(),
            Some("stun://turn.stage.airsync.net:3478")
        );
        assert_eq!(
            urls.turn,
            [
                "turn://1700000000%3Abox%40site:a%2Fb%2Bc%3Dd%3Ae@turn.stage.airsync.net:3478?transport=udp",
                "turns://1700000000%3Abox%40site:a%2Fb%2Bc%3Dd%3Ae@turn.stage.airsync.net:5349?transport=tcp",
            ]
        );
        assert_eq!(
            redact(&urls.turn[0]),
            "turn://***@turn.stage.airsync.net:3478?transport=udp"
        );
    }
}
