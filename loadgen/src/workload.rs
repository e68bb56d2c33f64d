//! What to send: the target URL, request templates with a `{key}`
//! placeholder, weighted mixes of them, the key distribution, and presets
//! for Cairn's built-in classes.

use std::net::{SocketAddr, ToSocketAddrs};

use crate::error::ConfigError;
use crate::rng::SplitMix64;
use crate::zipf::Zipf;

/// The URL scheme: plain HTTP, or WebSocket (`ws://`) for WebSocket mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `http://`
    Http,
    /// `ws://`
    Ws,
}

/// A parsed `scheme://host[:port]/path` URL (no TLS, no user info).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// The scheme.
    pub scheme: Scheme,
    /// The host as written, used for the `Host` header.
    pub host: String,
    /// The port (80 when not given).
    pub port: u16,
    /// The path and query, starting with `/`; may hold `{key}` or `{room}`.
    pub path: String,
}

impl Url {
    /// Parses `url`.
    pub fn parse(url: &str) -> Result<Url, ConfigError> {
        let bad = || ConfigError::BadUrl(url.to_string());
        let (scheme, rest) = if let Some(r) = url.strip_prefix("http://") {
            (Scheme::Http, r)
        } else if let Some(r) = url.strip_prefix("ws://") {
            (Scheme::Ws, r)
        } else {
            return Err(bad());
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                (h, p.parse::<u16>().map_err(|_| bad())?)
            }
            _ => (authority, 80),
        };
        if host.is_empty() || path.bytes().any(|b| !(0x21..=0x7e).contains(&b)) {
            return Err(bad());
        }
        Ok(Url {
            scheme,
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }

    /// The `Host` header value.
    pub fn authority(&self) -> String {
        if self.port == 80 {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The first address the host resolves to.
    pub fn resolve(&self) -> Result<SocketAddr, ConfigError> {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        (host, self.port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| ConfigError::Unresolvable(self.host.clone()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(Vec<u8>),
    Key,
}

/// A string with `{key}` placeholders, pre-split so that rendering is a
/// few copies and one integer format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Splits `text` at every `{key}`.
    pub fn new(text: &str) -> Template {
        let mut parts = Vec::new();
        for (i, piece) in text.split("{key}").enumerate() {
            if i > 0 {
                parts.push(Part::Key);
            }
            if !piece.is_empty() {
                parts.push(Part::Literal(piece.as_bytes().to_vec()));
            }
        }
        Template { parts }
    }

    /// Appends the text with every `{key}` replaced by `key` in decimal.
    pub fn render(&self, key: u64, out: &mut Vec<u8>) {
        for part in &self.parts {
            match part {
                Part::Literal(bytes) => out.extend_from_slice(bytes),
                Part::Key => {
                    let mut digits = [0u8; 20];
                    let mut i = digits.len();
                    let mut k = key;
                    loop {
                        i -= 1;
                        digits[i] = b'0' + (k % 10) as u8;
                        k /= 10;
                        if k == 0 {
                            break;
                        }
                    }
                    out.extend_from_slice(&digits[i..]);
                }
            }
        }
    }

    /// Whether the template renders to nothing.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }
}

/// One kind of request in a mix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSpec {
    /// Relative weight in the mix.
    pub weight: u32,
    /// The method, such as `GET`.
    pub method: String,
    /// The request target, with `{key}` placeholders.
    pub path: Template,
    /// The body, with `{key}` placeholders; empty for none.
    pub body: Template,
}

impl RequestSpec {
    /// Parses `WEIGHT METHOD PATH [BODY]`; `prefix` (the URL's path without
    /// its trailing `/`) is put in front of `PATH`.
    pub fn parse(line: &str, prefix: &str) -> Result<RequestSpec, ConfigError> {
        let bad = || ConfigError::BadRequestSpec(line.to_string());
        let mut it = line.trim().splitn(4, ' ');
        let weight = it
            .next()
            .and_then(|w| w.parse::<u32>().ok())
            .filter(|w| *w > 0)
            .ok_or_else(bad)?;
        let method = it.next().filter(|m| !m.is_empty()).ok_or_else(bad)?;
        let path = it.next().filter(|p| p.starts_with('/')).ok_or_else(bad)?;
        let body = it.next().unwrap_or("");
        Ok(RequestSpec {
            weight,
            method: method.to_string(),
            path: Template::new(&format!("{prefix}{path}")),
            body: Template::new(body),
        })
    }
}

/// Preset mixes for Cairn's built-in classes, as `--request` lines. Each
/// works against any server that answers the same routes (the routes are
/// those of `docs/HTTP-API.md`: `/{class}/{name}/...`).
pub fn preset(name: &str) -> Option<&'static [&'static str]> {
    Some(match name {
        // Hot counters: mostly increments, some reads.
        "counter" => &[
            "90 POST /counter/c{key}/increment",
            "10 GET /counter/c{key}",
        ],
        // A key-value store read 9 times for every write.
        "kv" => &[
            "90 GET /kv/store/k{key}",
            "10 PUT /kv/store/k{key} value-{key}",
        ],
        // One rate-limit check per request, per client key.
        "ratelimit" => &["100 POST /ratelimit/client{key}/check"],
        // An append-mostly event stream with occasional reads of the tail.
        "events" => &[
            "80 POST /events/stream{key}/events {\"type\":\"tick\",\"data\":{key}}",
            "20 GET /events/stream{key}/events?order=desc&limit=10",
        ],
        _ => return None,
    })
}

/// How keys are drawn from `0..keys`.
#[derive(Debug, Clone)]
pub enum KeyDist {
    /// Every key equally likely.
    Uniform,
    /// Key `k` has probability proportional to `1 / (k + 1)^theta`.
    Zipf(Zipf),
}

/// A weighted mix of requests over a key space.
#[derive(Debug, Clone)]
pub struct Workload {
    specs: Vec<RequestSpec>,
    /// Running sums of the weights, for a weighted pick by binary search.
    cumulative: Vec<u64>,
    keys: u64,
    dist: KeyDist,
}

impl Workload {
    /// A workload; `specs` must not be empty and `keys` must be at least 1.
    pub fn new(
        specs: Vec<RequestSpec>,
        keys: u64,
        zipf_theta: Option<f64>,
    ) -> Result<Workload, ConfigError> {
        if specs.is_empty() {
            return Err(ConfigError::Conflict("the request mix is empty"));
        }
        if keys == 0 {
            return Err(ConfigError::Conflict("--keys must be at least 1"));
        }
        let dist = match zipf_theta {
            None => KeyDist::Uniform,
            Some(theta) => KeyDist::Zipf(Zipf::new(keys, theta).ok_or(ConfigError::BadValue {
                option: "--zipf".into(),
                value: theta.to_string(),
                expected: "a theta >= 0",
            })?),
        };
        let cumulative = specs
            .iter()
            .scan(0u64, |sum, s| {
                *sum += u64::from(s.weight);
                Some(*sum)
            })
            .collect();
        Ok(Workload {
            specs,
            cumulative,
            keys,
            dist,
        })
    }

    /// The requests of the mix.
    pub fn specs(&self) -> &[RequestSpec] {
        &self.specs
    }

    /// Draws a key.
    pub fn key(&self, rng: &mut SplitMix64) -> u64 {
        match &self.dist {
            KeyDist::Uniform => rng.below(self.keys),
            KeyDist::Zipf(z) => z.sample(rng) - 1,
        }
    }

    /// Draws a request of the mix by weight.
    pub fn pick(&self, rng: &mut SplitMix64) -> &RequestSpec {
        let total = *self.cumulative.last().expect("the mix is never empty");
        let x = rng.below(total);
        let i = self.cumulative.partition_point(|&c| c <= x);
        &self.specs[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_url(input: &str, expected: Option<(Scheme, &str, u16, &str)>) {
        let got = Url::parse(input)
            .ok()
            .map(|u| (u.scheme, u.host, u.port, u.path));
        let expected = expected.map(|(s, h, p, path)| (s, h.to_string(), p, path.to_string()));
        assert_eq!(got, expected, "{input}");
    }

    #[test]
    fn urls_parse_into_host_port_and_path() {
        check_url(
            "http://127.0.0.1:8080/kv/{key}",
            Some((Scheme::Http, "127.0.0.1", 8080, "/kv/{key}")),
        );
        check_url(
            "http://localhost",
            Some((Scheme::Http, "localhost", 80, "/")),
        );
        check_url(
            "ws://127.0.0.1:9/room/{room}",
            Some((Scheme::Ws, "127.0.0.1", 9, "/room/{room}")),
        );
        check_url("http://[::1]:81/", Some((Scheme::Http, "[::1]", 81, "/")));
        check_url("https://127.0.0.1/", None);
        check_url("http://:80/", None);
        check_url("http://h:99999/", None);
        check_url("http://h/a b", None);
    }

    fn check_template(text: &str, key: u64, expected: &str) {
        let mut out = Vec::new();
        Template::new(text).render(key, &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), expected, "{text}");
    }

    #[test]
    fn templates_replace_every_key_placeholder() {
        check_template("/kv/{key}", 42, "/kv/42");
        check_template("{key}-{key}", 0, "0-0");
        check_template("/plain", 7, "/plain");
        check_template("", 7, "");
        check_template("/{key}", u64::MAX, "/18446744073709551615");
        check_template("{ke}", 1, "{ke}");
    }

    #[test]
    fn request_lines_parse_with_weight_method_path_and_body() {
        let spec = RequestSpec::parse("10 POST /kv/{key} value {key}", "/base").unwrap();
        assert_eq!((spec.weight, spec.method.as_str()), (10, "POST"));
        let (mut path, mut body) = (Vec::new(), Vec::new());
        spec.path.render(3, &mut path);
        spec.body.render(3, &mut body);
        assert_eq!(
            (&path[..], &body[..]),
            (&b"/base/kv/3"[..], &b"value 3"[..])
        );
        for bad in ["", "GET /", "0 GET /", "x GET /", "1 GET kv", "1"] {
            assert!(RequestSpec::parse(bad, "").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_preset_parses() {
        for name in ["counter", "kv", "ratelimit", "events"] {
            for line in preset(name).unwrap() {
                RequestSpec::parse(line, "").unwrap();
            }
        }
        assert!(preset("nope").is_none());
    }

    #[test]
    fn a_weighted_mix_picks_requests_in_proportion() {
        let seed = 11;
        println!("seed {seed}");
        let specs = vec![
            RequestSpec::parse("90 GET /a", "").unwrap(),
            RequestSpec::parse("10 POST /b", "").unwrap(),
        ];
        let w = Workload::new(specs, 10, None).unwrap();
        let mut rng = SplitMix64::new(seed);
        let gets = (0..100_000)
            .filter(|_| w.pick(&mut rng).method == "GET")
            .count();
        assert!((89_000..91_000).contains(&gets), "{gets}");
    }

    #[test]
    fn keys_stay_inside_the_key_space() {
        let specs = vec![RequestSpec::parse("1 GET /", "").unwrap()];
        for theta in [None, Some(0.99)] {
            let w = Workload::new(specs.clone(), 5, theta).unwrap();
            let mut rng = SplitMix64::new(3);
            assert!((0..10_000).all(|_| w.key(&mut rng) < 5));
        }
        assert!(Workload::new(specs.clone(), 0, None).is_err());
        assert!(Workload::new(Vec::new(), 5, None).is_err());
    }
}
