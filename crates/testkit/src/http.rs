//! A minimal HTTP/1.1 client over a real TCP socket (one request per connection), for tests.

use std::net::SocketAddr;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A client bound to one server and a set of headers.
#[derive(Debug, Clone)]
pub struct Client {
    addr: SocketAddr,
    headers: Vec<(String, String)>,
}

/// A response.
#[derive(Debug)]
pub struct Resp {
    /// Status code (0 if none was read).
    pub status: u16,
    /// Content-Type header.
    pub content_type: Option<String>,
    /// The body.
    pub text: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
}

impl Client {
    pub fn new(addr: SocketAddr, token: Option<&str>) -> Self {
        let mut headers = Vec::new();
        if let Some(t) = token {
            headers.push(("authorization".to_string(), format!("Bearer {t}")));
        }
        Self { addr, headers }
    }

    pub fn with_header(mut self, k: &str, v: &str) -> Self {
        self.headers.retain(|(h, _)| !h.eq_ignore_ascii_case(k));
        self.headers.push((k.into(), v.into()));
        self
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.request("GET", path, None).await
    }
    pub async fn delete(&self, path: &str) -> Resp {
        self.request("DELETE", path, None).await
    }
    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.request("POST", path, Some(body.to_string().as_bytes()))
            .await
    }
    pub async fn put(&self, path: &str, body: &Value) -> Resp {
        self.request("PUT", path, Some(body.to_string().as_bytes()))
            .await
    }
    pub async fn post_raw(&self, path: &str, body: &[u8]) -> Resp {
        self.request("POST", path, Some(body)).await
    }

    async fn request(&self, method: &str, path: &str, body: Option<&[u8]>) -> Resp {
        let mut s = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect");
        let mut head = format!("{method} {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n");
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        let body = body.unwrap_or(b"");
        if method != "GET" {
            head.push_str(&format!(
                "content-type: application/json\r\ncontent-length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).await.expect("write");
        // The server may answer (e.g. 413) before reading a large body; ignore write errors.
        let _ = s.write_all(body).await;
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let content_type = head.lines().find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                .map(|(_, v)| v.trim().to_string())
        });
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_string()
        };
        Resp {
            status,
            content_type,
            text: body,
        }
    }
}

pub(crate) fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}
