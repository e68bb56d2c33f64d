//! Server configuration: every knob, its environment variable, its default,
//! and the hand-written command-line parser for the `cairn` binary.
//!
//! Precedence is command line, then environment (`CAIRN_*`), then the
//! documented default. Limits are named with units last (`body_bytes_max`).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything a running engine is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Address every shard listens on (SO_REUSEPORT). Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Data directory. Default `./cairn-data`.
    pub data_dir: PathBuf,
    /// Number of shards (threads). Default: the number of available cores.
    pub shards: u32,
    /// Pin shard `i` to core `i % cores`. Default off (threads float), which is
    /// what tests use to run more shards than cores.
    pub pin: bool,
    /// Events queued per object before new ones are refused with 503. Default 128.
    pub object_queue_depth_max: usize,
    /// Messages in flight on each shard-to-shard mailbox before senders wait. Default 1024.
    pub mailbox_depth_max: usize,
    /// An object with no event for this long is evicted from memory. Default 60000.
    pub idle_ms_evict: u64,
    /// Longest an object's `init` may take; past it, or on its failure, the
    /// object is reset and the event that woke it answered 503 `init_failed`.
    /// Default 30000.
    pub init_timeout_ms: u64,
    /// Per-shard memory budget. A quarter is held back for what the runtime
    /// does not itemise; the rest covers the storage index (every key of every
    /// object, in memory by design; `cairn_storage_index_bytes`) plus the
    /// objects in memory, each charged its runtime footprint (queue, task,
    /// bookkeeping; about 2.1 KiB) plus the state it reports. Above it the
    /// least recently used idle objects are evicted. See docs/OPERATIONS.md, "Sizing the
    /// memory budget". Default 268435456 (256 MiB).
    pub object_memory_bytes_max: u64,
    /// Largest request body accepted. Default 1048576 (1 MiB).
    pub body_bytes_max: usize,
    /// Largest request head (request line and headers). Default 16384.
    pub header_bytes_max: usize,
    /// Largest storage key a user may write. Default 2048.
    pub key_bytes_max: usize,
    /// Largest storage value a user may write. Default 131072 (128 KiB).
    pub value_bytes_max: usize,
    /// Size of each storage segment file. Default 67108864 (64 MiB).
    pub segment_bytes: u64,
    /// Memory each shard's io_uring may lock for registered buffers. Default 1048576.
    /// Kept small so the engine starts under the common 8 MiB `ulimit -l`.
    pub io_memory_bytes: usize,
    /// Bearer token the admin routes (`/_cairn/objects/...`) require. Default
    /// none: then they are served only to loopback peers.
    pub admin_token: Option<String>,
    /// Open client connections per shard; a connection past the limit is
    /// answered 503 `overloaded` with `Retry-After` and closed. Default 10000.
    pub connections_max: usize,
    /// Time a client has to send a whole request head, from its first byte;
    /// past it the connection gets 408 and is closed. Default 10000.
    pub header_timeout_ms: u64,
    /// Time a client has to send a whole request body, from the end of the
    /// head; past it the connection gets 408 and is closed. Default 10000
    /// (the 1 MiB default body at 100 KiB/s; a stalled body is a slowloris).
    pub body_timeout_ms: u64,
    /// An idle keep-alive connection (no byte of a next request) is closed
    /// after this long. Default 60000.
    pub keepalive_timeout_ms: u64,
    /// Time a client has to accept each response write before the
    /// connection is dropped (a peer that never reads). Default 30000.
    pub write_timeout_ms: u64,
    /// Microseconds a shard with nothing to do keeps polling before it parks
    /// its thread. Spinning trades an idle core's CPU for wake-up latency; use
    /// it only with `pin` on dedicated cores. Default 0 (park at once).
    pub park_spin_us: u64,
    /// Largest incoming WebSocket message; larger ones close the socket with 1009.
    /// Default 1048576 (1 MiB).
    pub ws_message_bytes_max: usize,
    /// Bytes queued for one WebSocket before it is closed as a slow consumer
    /// (1008). Default 1048576 (1 MiB).
    pub ws_send_buffer_bytes_max: usize,
    /// A server ping goes out after this long without input from a socket;
    /// 0 disables. Default 30000.
    pub ws_ping_interval_ms: u64,
    /// A socket with no input for this long is closed (1001); 0 disables.
    /// Default 120000.
    pub ws_idle_timeout_ms: u64,
    /// Largest per-socket attachment. Default 2048.
    pub ws_attachment_bytes_max: usize,
    /// Open WebSockets one object may have; more upgrades are refused with 503.
    /// Default 32768.
    pub ws_sockets_per_object_max: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./cairn-data"),
            shards: std::thread::available_parallelism()
                .map(|n| u32::try_from(n.get()).unwrap_or(1))
                .unwrap_or(1),
            pin: false,
            object_queue_depth_max: 128,
            mailbox_depth_max: 1024,
            idle_ms_evict: 60_000,
            init_timeout_ms: 30_000,
            object_memory_bytes_max: 256 << 20,
            body_bytes_max: 1 << 20,
            header_bytes_max: 16 << 10,
            key_bytes_max: 2048,
            value_bytes_max: 128 << 10,
            segment_bytes: 64 << 20,
            io_memory_bytes: 1 << 20,
            admin_token: None,
            connections_max: 10_000,
            header_timeout_ms: 10_000,
            body_timeout_ms: 10_000,
            keepalive_timeout_ms: 60_000,
            write_timeout_ms: 30_000,
            park_spin_us: 0,
            ws_message_bytes_max: 1 << 20,
            ws_send_buffer_bytes_max: 1 << 20,
            ws_ping_interval_ms: 30_000,
            ws_idle_timeout_ms: 120_000,
            ws_attachment_bytes_max: 2048,
            ws_sockets_per_object_max: 32768,
        }
    }
}

/// One command-line option: its flag, environment variable, and help text.
struct OptSpec {
    flag: &'static str,
    env: &'static str,
    help: &'static str,
}

const OPTIONS: &[OptSpec] = &[
    OptSpec {
        flag: "listen",
        env: "CAIRN_LISTEN",
        help: "address to listen on [default: 127.0.0.1:8080]",
    },
    OptSpec {
        flag: "data-dir",
        env: "CAIRN_DATA_DIR",
        help: "data directory [default: ./cairn-data]",
    },
    OptSpec {
        flag: "shards",
        env: "CAIRN_SHARDS",
        help: "shard threads; fixed per data dir [default: cores]",
    },
    OptSpec {
        flag: "pin",
        env: "CAIRN_PIN",
        help: "pin each shard to a core (flag; env: 1/0) [default: off]",
    },
    OptSpec {
        flag: "object-queue-depth-max",
        env: "CAIRN_OBJECT_QUEUE_DEPTH_MAX",
        help: "events queued per object before 503 [default: 128]",
    },
    OptSpec {
        flag: "mailbox-depth-max",
        env: "CAIRN_MAILBOX_DEPTH_MAX",
        help: "messages per shard-to-shard mailbox [default: 1024]",
    },
    OptSpec {
        flag: "idle-ms-evict",
        env: "CAIRN_IDLE_MS_EVICT",
        help: "evict idle objects after ms [default: 60000]",
    },
    OptSpec {
        flag: "init-timeout-ms",
        env: "CAIRN_INIT_TIMEOUT_MS",
        help: "longest an object's init may take before it is reset and its event \
               answered 503 init_failed [default: 30000]",
    },
    OptSpec {
        flag: "object-memory-bytes-max",
        env: "CAIRN_OBJECT_MEMORY_BYTES_MAX",
        help: "per-shard memory budget: 3/4 for the storage index plus active objects \
               (footprint + state), 1/4 held back; LRU eviction of idle objects above \
               [default: 268435456]",
    },
    OptSpec {
        flag: "body-bytes-max",
        env: "CAIRN_BODY_BYTES_MAX",
        help: "largest request body [default: 1048576]",
    },
    OptSpec {
        flag: "header-bytes-max",
        env: "CAIRN_HEADER_BYTES_MAX",
        help: "largest request head [default: 16384]",
    },
    OptSpec {
        flag: "key-bytes-max",
        env: "CAIRN_KEY_BYTES_MAX",
        help: "largest storage key [default: 2048]",
    },
    OptSpec {
        flag: "value-bytes-max",
        env: "CAIRN_VALUE_BYTES_MAX",
        help: "largest storage value [default: 131072]",
    },
    OptSpec {
        flag: "segment-bytes",
        env: "CAIRN_SEGMENT_BYTES",
        help: "storage segment file size [default: 67108864]",
    },
    OptSpec {
        flag: "io-memory-bytes",
        env: "CAIRN_IO_MEMORY_BYTES",
        help: "io_uring locked memory per shard [default: 1048576]",
    },
    OptSpec {
        flag: "admin-token",
        env: "CAIRN_ADMIN_TOKEN",
        help: "bearer token for /_cairn/objects [default: none, loopback only]",
    },
    OptSpec {
        flag: "connections-max",
        env: "CAIRN_CONNECTIONS_MAX",
        help: "open connections per shard; more get 503 and close [default: 10000]",
    },
    OptSpec {
        flag: "header-timeout-ms",
        env: "CAIRN_HEADER_TIMEOUT_MS",
        help: "ms to receive a request head from its first byte, else 408 [default: 10000]",
    },
    OptSpec {
        flag: "body-timeout-ms",
        env: "CAIRN_BODY_TIMEOUT_MS",
        help: "ms to receive a request body after its head, else 408 [default: 10000]",
    },
    OptSpec {
        flag: "keepalive-timeout-ms",
        env: "CAIRN_KEEPALIVE_TIMEOUT_MS",
        help: "close a keep-alive connection idle this many ms [default: 60000]",
    },
    OptSpec {
        flag: "write-timeout-ms",
        env: "CAIRN_WRITE_TIMEOUT_MS",
        help: "drop a connection that accepts no response bytes for ms [default: 30000]",
    },
    OptSpec {
        flag: "park-spin-us",
        env: "CAIRN_PARK_SPIN_US",
        help: "an idle shard polls this long before sleeping; for pinned, dedicated cores [default: 0]",
    },
    OptSpec {
        flag: "ws-message-bytes-max",
        env: "CAIRN_WS_MESSAGE_BYTES_MAX",
        help: "largest WebSocket message; 1009 above [default: 1048576]",
    },
    OptSpec {
        flag: "ws-send-buffer-bytes-max",
        env: "CAIRN_WS_SEND_BUFFER_BYTES_MAX",
        help: "bytes queued per socket before a 1008 close [default: 1048576]",
    },
    OptSpec {
        flag: "ws-ping-interval-ms",
        env: "CAIRN_WS_PING_INTERVAL_MS",
        help: "server ping after ms without input; 0 off [default: 30000]",
    },
    OptSpec {
        flag: "ws-idle-timeout-ms",
        env: "CAIRN_WS_IDLE_TIMEOUT_MS",
        help: "close a socket after ms without input; 0 off [default: 120000]",
    },
    OptSpec {
        flag: "ws-attachment-bytes-max",
        env: "CAIRN_WS_ATTACHMENT_BYTES_MAX",
        help: "largest per-socket attachment [default: 2048]",
    },
    OptSpec {
        flag: "ws-sockets-per-object-max",
        env: "CAIRN_WS_SOCKETS_PER_OBJECT_MAX",
        help: "open WebSockets per object; 503 above [default: 32768]",
    },
];

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run the server with this configuration.
    Run(Box<Config>),
    /// Print this help text and exit successfully.
    Help(String),
    /// Print the version and exit successfully.
    Version,
}

/// The `--help` text, generated from the option table so it cannot drift.
pub fn help_text() -> String {
    let mut s = String::from(
        "cairn: a Durable Objects server\n\nUSAGE: cairn [OPTIONS]\n\n\
         Each option may also be set by its environment variable; the command line wins.\n\nOPTIONS:\n",
    );
    for o in OPTIONS {
        let head = if o.flag == "pin" {
            format!("--{}", o.flag)
        } else {
            format!("--{} <VALUE>", o.flag)
        };
        s.push_str(&format!(
            "  {head:<38} {}\n  {:<38} env: {}\n",
            o.help, "", o.env
        ));
    }
    s.push_str("  --help                                 print this text\n");
    s.push_str("  --version                              print the version\n");
    s
}

/// Parses `args` (without the program name), reading variables through `env`.
pub fn parse<I, E>(args: I, env: E) -> Result<Command, ConfigError>
where
    I: IntoIterator<Item = String>,
    E: Fn(&str) -> Option<String>,
{
    let mut cfg = Config::default();
    for o in OPTIONS {
        if let Some(v) = env(o.env) {
            let v = if o.flag == "pin" {
                parse_bool(o.env, &v)?.to_string()
            } else {
                v
            };
            set(&mut cfg, o.flag, &v, o.env)?;
        }
    }
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let Some(body) = arg.strip_prefix("--") else {
            return Err(ConfigError::UnexpectedArgument { arg });
        };
        let (flag, inline) = match body.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (body.to_string(), None),
        };
        match flag.as_str() {
            "help" => return Ok(Command::Help(help_text())),
            "version" => return Ok(Command::Version),
            "pin" => {
                let v = match inline {
                    Some(v) => parse_bool("--pin", &v)?,
                    None => true,
                };
                cfg.pin = v;
                continue;
            }
            _ => {}
        }
        if !OPTIONS.iter().any(|o| o.flag == flag) {
            return Err(ConfigError::UnknownOption { flag });
        }
        let value = match inline {
            Some(v) => v,
            None => args
                .next()
                .ok_or_else(|| ConfigError::MissingValue { flag: flag.clone() })?,
        };
        set(&mut cfg, &flag, &value, &format!("--{flag}"))?;
    }
    validate(&cfg)?;
    Ok(Command::Run(Box::new(cfg)))
}

fn parse_bool(source: &str, v: &str) -> Result<bool, ConfigError> {
    match v {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(ConfigError::BadValue {
            source: source.to_string(),
            value: v.to_string(),
            expected: "1 or 0",
        }),
    }
}

fn set(cfg: &mut Config, flag: &str, v: &str, source: &str) -> Result<(), ConfigError> {
    fn num<T: std::str::FromStr>(source: &str, v: &str) -> Result<T, ConfigError> {
        v.parse().map_err(|_| ConfigError::BadValue {
            source: source.to_string(),
            value: v.to_string(),
            expected: "a non-negative integer",
        })
    }
    match flag {
        "listen" => {
            cfg.listen = v.parse().map_err(|_| ConfigError::BadValue {
                source: source.to_string(),
                value: v.to_string(),
                expected: "an address such as 127.0.0.1:8080",
            })?
        }
        "data-dir" => cfg.data_dir = PathBuf::from(v),
        "shards" => cfg.shards = num(source, v)?,
        "pin" => cfg.pin = parse_bool(source, v)?,
        "object-queue-depth-max" => cfg.object_queue_depth_max = num(source, v)?,
        "mailbox-depth-max" => cfg.mailbox_depth_max = num(source, v)?,
        "idle-ms-evict" => cfg.idle_ms_evict = num(source, v)?,
        "init-timeout-ms" => cfg.init_timeout_ms = num(source, v)?,
        "object-memory-bytes-max" => cfg.object_memory_bytes_max = num(source, v)?,
        "body-bytes-max" => cfg.body_bytes_max = num(source, v)?,
        "header-bytes-max" => cfg.header_bytes_max = num(source, v)?,
        "key-bytes-max" => cfg.key_bytes_max = num(source, v)?,
        "value-bytes-max" => cfg.value_bytes_max = num(source, v)?,
        "segment-bytes" => cfg.segment_bytes = num(source, v)?,
        "io-memory-bytes" => cfg.io_memory_bytes = num(source, v)?,
        "admin-token" => cfg.admin_token = (!v.is_empty()).then(|| v.to_string()),
        "connections-max" => cfg.connections_max = num(source, v)?,
        "header-timeout-ms" => cfg.header_timeout_ms = num(source, v)?,
        "body-timeout-ms" => cfg.body_timeout_ms = num(source, v)?,
        "keepalive-timeout-ms" => cfg.keepalive_timeout_ms = num(source, v)?,
        "write-timeout-ms" => cfg.write_timeout_ms = num(source, v)?,
        "park-spin-us" => cfg.park_spin_us = num(source, v)?,
        "ws-message-bytes-max" => cfg.ws_message_bytes_max = num(source, v)?,
        "ws-send-buffer-bytes-max" => cfg.ws_send_buffer_bytes_max = num(source, v)?,
        "ws-ping-interval-ms" => cfg.ws_ping_interval_ms = num(source, v)?,
        "ws-idle-timeout-ms" => cfg.ws_idle_timeout_ms = num(source, v)?,
        "ws-attachment-bytes-max" => cfg.ws_attachment_bytes_max = num(source, v)?,
        "ws-sockets-per-object-max" => cfg.ws_sockets_per_object_max = num(source, v)?,
        _ => unreachable!("flag {flag} is in OPTIONS but has no setter"),
    }
    Ok(())
}

/// Largest shard count accepted; far above any core count, low enough that a
/// typo (`--shards 40000`) is caught rather than spawning threads.
pub const SHARDS_MAX: u32 = 1024;

fn validate(cfg: &Config) -> Result<(), ConfigError> {
    if cfg.shards == 0 || cfg.shards > SHARDS_MAX {
        return Err(ConfigError::OutOfRange {
            field: "shards",
            value: u64::from(cfg.shards),
            min: 1,
            max: 1024,
        });
    }
    if cfg.object_queue_depth_max == 0 {
        return Err(ConfigError::OutOfRange {
            field: "object_queue_depth_max",
            value: 0,
            min: 1,
            max: u64::MAX,
        });
    }
    // A zero timeout would close every connection at once; zero connections
    // would refuse every client. Neither is a useful server.
    let positive: [(&'static str, u64); 6] = [
        ("connections_max", cfg.connections_max as u64),
        ("header_timeout_ms", cfg.header_timeout_ms),
        ("body_timeout_ms", cfg.body_timeout_ms),
        ("keepalive_timeout_ms", cfg.keepalive_timeout_ms),
        ("write_timeout_ms", cfg.write_timeout_ms),
        // Zero would fail every init that waits on anything, storage included.
        ("init_timeout_ms", cfg.init_timeout_ms),
    ];
    for (field, value) in positive {
        if value == 0 {
            return Err(ConfigError::OutOfRange {
                field,
                value,
                min: 1,
                max: u64::MAX,
            });
        }
    }
    if cfg.mailbox_depth_max == 0 {
        return Err(ConfigError::OutOfRange {
            field: "mailbox_depth_max",
            value: 0,
            min: 1,
            max: u64::MAX,
        });
    }
    Ok(())
}

/// A configuration the server refuses to start with.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// `--something` that is not an option.
    UnknownOption {
        /// The flag without its dashes.
        flag: String,
    },
    /// An argument that is not an option at all.
    UnexpectedArgument {
        /// The argument as given.
        arg: String,
    },
    /// An option at the end of the line with no value after it.
    MissingValue {
        /// The flag without its dashes.
        flag: String,
    },
    /// A value that does not parse.
    BadValue {
        /// `--flag` or the environment variable it came from.
        source: String,
        /// The value as given.
        value: String,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// A value outside its allowed range.
    OutOfRange {
        /// The config field.
        field: &'static str,
        /// The value given.
        value: u64,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::UnknownOption { flag } => write!(f, "unknown option --{flag}; see --help"),
            ConfigError::UnexpectedArgument { arg } => {
                write!(
                    f,
                    "unexpected argument {arg:?}; options start with -- (see --help)"
                )
            }
            ConfigError::MissingValue { flag } => write!(f, "--{flag} needs a value"),
            ConfigError::BadValue {
                source,
                value,
                expected,
            } => {
                write!(f, "{source}: {value:?} is not valid; expected {expected}")
            }
            ConfigError::OutOfRange {
                field,
                value,
                min,
                max,
            } => {
                write!(
                    f,
                    "{field} = {value} is out of range; allowed {min}..={max}"
                )
            }
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let got = parse(args.iter().map(|s| s.to_string()), |k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })?;
        match got {
            Command::Run(c) => Ok(*c),
            other => panic!("expected Run, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = run(&[], &[]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.data_dir, PathBuf::from("./cairn-data"));
        assert!(c.shards >= 1);
        assert!(!c.pin);
        assert_eq!((c.object_queue_depth_max, c.idle_ms_evict), (128, 60_000));
        assert_eq!((c.key_bytes_max, c.value_bytes_max), (2048, 131_072));
        assert_eq!(c.connections_max, 10_000);
        assert_eq!(
            (
                c.header_timeout_ms,
                c.body_timeout_ms,
                c.keepalive_timeout_ms
            ),
            (10_000, 10_000, 60_000)
        );
        assert_eq!(c.write_timeout_ms, 30_000);
    }

    #[test]
    fn connection_limits_must_be_positive() {
        check_err(
            &["--header-timeout-ms", "0"],
            "header_timeout_ms = 0 is out of range; allowed 1..=18446744073709551615",
        );
        check_err(
            &["--connections-max=0"],
            "connections_max = 0 is out of range; allowed 1..=18446744073709551615",
        );
        check_err(
            &["--init-timeout-ms", "0"],
            "init_timeout_ms = 0 is out of range; allowed 1..=18446744073709551615",
        );
        let c = run(&[], &[("CAIRN_KEEPALIVE_TIMEOUT_MS", "250")]).unwrap();
        assert_eq!(c.keepalive_timeout_ms, 250);
        let c = run(&[], &[("CAIRN_INIT_TIMEOUT_MS", "1500")]).unwrap();
        assert_eq!(c.init_timeout_ms, 1500);
    }

    #[test]
    fn the_admin_token_comes_from_flag_or_environment_and_empty_means_none() {
        assert_eq!(run(&[], &[]).unwrap().admin_token, None);
        let c = run(&["--admin-token", "t1"], &[("CAIRN_ADMIN_TOKEN", "t2")]).unwrap();
        assert_eq!(c.admin_token.as_deref(), Some("t1"));
        let c = run(&[], &[("CAIRN_ADMIN_TOKEN", "t2")]).unwrap();
        assert_eq!(c.admin_token.as_deref(), Some("t2"));
        assert_eq!(run(&["--admin-token="], &[]).unwrap().admin_token, None);
    }

    #[test]
    fn command_line_beats_environment_which_beats_default() {
        let env = [("CAIRN_SHARDS", "3"), ("CAIRN_LISTEN", "127.0.0.1:9000")];
        let c = run(&["--shards", "5"], &env).unwrap();
        assert_eq!((c.shards, c.listen.port()), (5, 9000));
        let c = run(&["--shards=7", "--pin"], &[("CAIRN_PIN", "0")]).unwrap();
        assert_eq!((c.shards, c.pin), (7, true));
        assert!(run(&[], &[("CAIRN_PIN", "1")]).unwrap().pin);
        assert!(!run(&["--pin=0"], &[("CAIRN_PIN", "1")]).unwrap().pin);
    }

    #[test]
    fn every_option_has_a_setter_and_an_environment_variable() {
        for o in OPTIONS {
            let v = match o.flag {
                "listen" => "127.0.0.1:1",
                "data-dir" => "/tmp/x",
                _ => "1",
            };
            let flag = format!("--{}={v}", o.flag);
            run(&[flag.as_str()], &[]).unwrap();
            run(&[], &[(o.env, v)]).unwrap();
            assert!(help_text().contains(o.env), "help mentions {}", o.env);
        }
    }

    fn check_err(args: &[&str], expected: &str) {
        let e = run(args, &[]).unwrap_err();
        assert_eq!(e.to_string(), expected, "{args:?}");
    }

    #[test]
    fn websocket_limits_come_from_flags_and_environment() {
        let d = run(&[], &[]).unwrap();
        assert_eq!(
            (
                d.ws_message_bytes_max,
                d.ws_send_buffer_bytes_max,
                d.ws_attachment_bytes_max
            ),
            (1 << 20, 1 << 20, 2048)
        );
        assert_eq!(
            (d.ws_ping_interval_ms, d.ws_idle_timeout_ms),
            (30_000, 120_000)
        );
        let env = [
            ("CAIRN_WS_IDLE_TIMEOUT_MS", "0"),
            ("CAIRN_WS_MESSAGE_BYTES_MAX", "7"),
        ];
        let c = run(
            &[
                "--ws-message-bytes-max",
                "16777216",
                "--ws-ping-interval-ms=5",
            ],
            &env,
        )
        .unwrap();
        assert_eq!(c.ws_message_bytes_max, 16 << 20);
        assert_eq!((c.ws_ping_interval_ms, c.ws_idle_timeout_ms), (5, 0));
        assert_eq!(d.ws_sockets_per_object_max, 32768);
        let c = run(&["--ws-sockets-per-object-max", "2"], &[]).unwrap();
        assert_eq!(c.ws_sockets_per_object_max, 2);
    }

    #[test]
    fn bad_command_lines_say_what_is_wrong() {
        check_err(&["--nope"], "unknown option --nope; see --help");
        check_err(
            &["serve"],
            "unexpected argument \"serve\"; options start with -- (see --help)",
        );
        check_err(&["--shards"], "--shards needs a value");
        check_err(
            &["--shards", "x"],
            "--shards: \"x\" is not valid; expected a non-negative integer",
        );
        check_err(
            &["--shards", "-1"],
            "--shards: \"-1\" is not valid; expected a non-negative integer",
        );
        check_err(
            &["--listen", "localhost"],
            "--listen: \"localhost\" is not valid; expected an address such as 127.0.0.1:8080",
        );
        check_err(
            &["--pin=maybe"],
            "--pin: \"maybe\" is not valid; expected 1 or 0",
        );
    }

    #[test]
    fn shard_count_is_accepted_at_its_limit_and_refused_past_it() {
        assert_eq!(run(&["--shards", "1024"], &[]).unwrap().shards, 1024);
        check_err(
            &["--shards", "1025"],
            "shards = 1025 is out of range; allowed 1..=1024",
        );
        check_err(
            &["--shards", "0"],
            "shards = 0 is out of range; allowed 1..=1024",
        );
    }

    #[test]
    fn help_and_version_win_over_everything_else() {
        let got = parse(["--shards", "2", "--help"].map(String::from), |_| None).unwrap();
        assert!(matches!(got, Command::Help(t) if t.contains("--data-dir <VALUE>")));
        let got = parse(["--version"].map(String::from), |_| None).unwrap();
        assert_eq!(got, Command::Version);
    }
}
