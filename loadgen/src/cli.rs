//! The command line: options in, a [`Command`] out. Hand-written (the
//! option set is small) so the binary pulls in no argument-parsing crate.

use std::time::Duration;

use crate::error::ConfigError;
use crate::http_run::{HttpConfig, Pinning};
use crate::workload::{RequestSpec, Scheme, Template, Url, Workload, preset};
use crate::ws_run::WsConfig;

/// The usage text printed by `--help`.
pub const USAGE: &str = "\
cairn-loadgen: HTTP/1.1 and WebSocket load generator (closed and open loop)

USAGE:
  cairn-loadgen --url URL [OPTIONS]            HTTP load
  cairn-loadgen ws --url ws://HOST:PORT/PATH [OPTIONS]   WebSocket fan-out
  cairn-loadgen compare A.json B.json          ratio B/A per metric

HTTP OPTIONS:
  --url URL             http://host[:port]/path; {key} is replaced by a key
  -c, --connections N   keep-alive connections in total          [10]
  -t, --threads N       worker threads, one event loop each        [1]
  --cores LIST          pin worker i to CPU LIST[i] (e.g. 1 or 2,3); sets --threads
  --pipeline N          requests in flight per connection          [1]
  --think-time T        closed loop with a pause of T after each response
                        before the connection's next request (wrk's delay())
  --rate R              open loop: R requests/s in total, latency from the
                        intended send time (closed loop when absent)
  -d, --duration T      measured time (e.g. 5s, 500ms)              [10s]
  --warmup T            run before measuring, not recorded          [1s]
  --grace T             past warm-up + duration, give up and exit 3 [2s]
  --keys K              key space: {key} is in 0..K                [1000]
  --zipf THETA          Zipfian keys (key 0 hottest); uniform when absent
  --method M            method of the single request              [GET]
  --body TEMPLATE       body of the single request ({key} allowed)
  --request LINE        \"WEIGHT METHOD PATH [BODY]\", repeatable: a weighted
                        mix; PATH is appended to the URL's path
  --preset NAME         counter | kv | ratelimit | events (Cairn's routes)
  -H, --header 'N: V'   extra request header, repeatable
  --seed S              seed of key and mix choice                  [1]
  --json                print one JSON object instead of the table

WEBSOCKET OPTIONS (after `ws`):
  --url URL             ws://host:port/path; {room} is replaced by the room number
  --rooms R             rooms                                       [1]
  --members M           members per room (each one connection)     [10]
  --send-rate X         messages per second each member sends      [1]
  --spin                poll without sleeping (a core per worker; keeps the
                        server's sends from paying for waking the load generator)
  -t, --threads, --cores, -d, --duration, --warmup, --grace, --json as above
";

/// What the user asked for.
#[derive(Debug, Clone)]
pub enum Command {
    /// Print the usage.
    Help,
    /// Run an HTTP load.
    Http {
        /// The run.
        config: Box<HttpConfig>,
        /// Print JSON instead of the table.
        json: bool,
    },
    /// Run a WebSocket fan-out load.
    Ws {
        /// The run.
        config: Box<WsConfig>,
        /// Print JSON instead of the table.
        json: bool,
    },
    /// Compare two JSON reports.
    Compare {
        /// The baseline report's path.
        a: String,
        /// The other report's path.
        b: String,
    },
}

/// Parses a duration such as `5s`, `500ms`, `2m`, `1.5s` or `100us`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let n: f64 = number.parse().ok()?;
    let scale = match unit {
        "us" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(n * scale).ok()
}

fn bad(option: &str, value: &str, expected: &'static str) -> ConfigError {
    ConfigError::BadValue {
        option: option.to_string(),
        value: value.to_string(),
        expected,
    }
}

fn number<T: std::str::FromStr>(
    option: &str,
    value: &str,
    expected: &'static str,
) -> Result<T, ConfigError> {
    value.parse().map_err(|_| bad(option, value, expected))
}

fn duration(option: &str, value: &str) -> Result<Duration, ConfigError> {
    parse_duration(value).ok_or_else(|| bad(option, value, "a duration such as 5s or 500ms"))
}

/// Options shared by the HTTP and WebSocket modes, as parsed.
#[derive(Debug, Default)]
struct Options {
    url: Option<String>,
    connections: Option<u64>,
    threads: Option<u64>,
    cores: Option<Vec<usize>>,
    pipeline: Option<u64>,
    rate: Option<f64>,
    think_time: Option<Duration>,
    duration: Option<Duration>,
    warmup: Option<Duration>,
    grace: Option<Duration>,
    keys: Option<u64>,
    zipf: Option<f64>,
    method: Option<String>,
    body: Option<String>,
    requests: Vec<String>,
    preset: Option<String>,
    headers: Vec<(String, String)>,
    seed: Option<u64>,
    rooms: Option<u64>,
    members: Option<u64>,
    send_rate: Option<f64>,
    json: bool,
    spin: bool,
}

fn parse_options(args: &[String]) -> Result<Options, ConfigError> {
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let flag = flag.as_str();
        if flag == "--json" {
            o.json = true;
            continue;
        }
        if flag == "--spin" {
            o.spin = true;
            continue;
        }
        let value = it
            .next()
            .ok_or_else(|| ConfigError::MissingValue(flag.to_string()))?;
        let v = value.as_str();
        match flag {
            "--url" => o.url = Some(v.to_string()),
            "-c" | "--connections" => o.connections = Some(number(flag, v, "a count")?),
            "-t" | "--threads" => o.threads = Some(number(flag, v, "a count")?),
            "--cores" => {
                let cores: Result<Vec<usize>, _> = v.split(',').map(|c| c.trim().parse()).collect();
                o.cores = Some(cores.map_err(|_| bad(flag, v, "CPU numbers such as 1 or 2,3"))?);
            }
            "--pipeline" => o.pipeline = Some(number(flag, v, "a count")?),
            "--rate" => o.rate = Some(number(flag, v, "requests per second")?),
            "--think-time" => o.think_time = Some(duration(flag, v)?),
            "-d" | "--duration" => o.duration = Some(duration(flag, v)?),
            "--warmup" => o.warmup = Some(duration(flag, v)?),
            "--grace" => o.grace = Some(duration(flag, v)?),
            "--keys" => o.keys = Some(number(flag, v, "a count")?),
            "--zipf" => o.zipf = Some(number(flag, v, "a theta such as 0.99")?),
            "--method" => o.method = Some(v.to_string()),
            "--body" => o.body = Some(v.to_string()),
            "--request" => o.requests.push(v.to_string()),
            "--preset" => o.preset = Some(v.to_string()),
            "-H" | "--header" => {
                let (name, value) = v
                    .split_once(':')
                    .ok_or_else(|| bad(flag, v, "Name: value"))?;
                o.headers
                    .push((name.trim().to_string(), value.trim().to_string()));
            }
            "--seed" => o.seed = Some(number(flag, v, "an integer")?),
            "--rooms" => o.rooms = Some(number(flag, v, "a count")?),
            "--members" => o.members = Some(number(flag, v, "a count")?),
            "--send-rate" => o.send_rate = Some(number(flag, v, "messages per second")?),
            _ => return Err(ConfigError::UnknownOption(flag.to_string())),
        }
    }
    Ok(o)
}

/// Workers and their placement: `--cores` decides both when given.
fn placement(o: &Options) -> Result<(u64, Pinning), ConfigError> {
    match (&o.cores, o.threads) {
        (Some(cores), threads) => {
            if cores.is_empty() || threads.is_some_and(|t| t != cores.len() as u64) {
                return Err(ConfigError::Conflict(
                    "--threads must equal the number of --cores",
                ));
            }
            Ok((cores.len() as u64, Pinning::Cpus(cores.clone())))
        }
        (None, t) => {
            let t = t.unwrap_or(1);
            if t == 0 {
                return Err(ConfigError::Conflict("--threads must be at least 1"));
            }
            Ok((t, Pinning::Unbound))
        }
    }
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command, ConfigError> {
    match args.first().map(String::as_str) {
        None | Some("-h" | "--help" | "help") => Ok(Command::Help),
        Some("compare") => match args {
            [_, a, b] => Ok(Command::Compare {
                a: a.clone(),
                b: b.clone(),
            }),
            _ => Err(ConfigError::Conflict(
                "usage: cairn-loadgen compare A.json B.json",
            )),
        },
        Some("ws") if matches!(args.get(1).map(String::as_str), Some("-h" | "--help")) => {
            Ok(Command::Help)
        }
        Some("ws") => parse_ws(parse_options(&args[1..])?),
        Some(_) => parse_http(parse_options(args)?),
    }
}

fn parse_http(o: Options) -> Result<Command, ConfigError> {
    let url_text = o.url.clone().ok_or(ConfigError::MissingUrl)?;
    let url = Url::parse(&url_text)?;
    if url.scheme != Scheme::Http {
        return Err(ConfigError::BadUrl(url_text));
    }
    let (workers, pinning) = placement(&o)?;
    let connections = o.connections.unwrap_or(10);
    if connections < workers {
        return Err(ConfigError::Conflict(
            "--connections must be at least the number of workers",
        ));
    }
    let pipeline = o.pipeline.unwrap_or(1);
    if pipeline == 0 {
        return Err(ConfigError::Conflict("--pipeline must be at least 1"));
    }
    if o.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err(ConfigError::Conflict("--rate must be a positive number"));
    }
    if o.rate.is_some() && o.think_time.is_some() {
        return Err(ConfigError::Conflict(
            "--think-time is for closed loop; give --rate or --think-time, not both",
        ));
    }
    let prefix = url.path.trim_end_matches('/');
    let lines: Vec<String> = match (&o.preset, o.requests.is_empty()) {
        (Some(_), false) => {
            return Err(ConfigError::Conflict(
                "give --preset or --request, not both",
            ));
        }
        (Some(name), true) => preset(name)
            .ok_or_else(|| ConfigError::UnknownPreset(name.clone()))?
            .iter()
            .map(|s| s.to_string())
            .collect(),
        (None, false) => o.requests.clone(),
        (None, true) => Vec::new(),
    };
    let specs = if lines.is_empty() {
        vec![RequestSpec {
            weight: 1,
            method: o.method.clone().unwrap_or_else(|| "GET".into()),
            path: Template::new(&url.path),
            body: Template::new(o.body.as_deref().unwrap_or("")),
        }]
    } else {
        lines
            .iter()
            .map(|l| RequestSpec::parse(l, prefix))
            .collect::<Result<_, _>>()?
    };
    let workload = Workload::new(specs, o.keys.unwrap_or(1000), o.zipf)?;
    // Catch a template that cannot form a request now, not mid-run.
    for spec in workload.specs() {
        let (mut out, mut target) = (Vec::new(), Vec::new());
        spec.path.render(0, &mut target);
        let headers: Vec<(&str, &[u8])> = o
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes()))
            .collect();
        if crate::http_codec::write_request(&mut out, &spec.method, &target, &headers, b"").is_err()
        {
            return Err(ConfigError::Conflict(
                "a request's method, path or header has bytes HTTP does not allow",
            ));
        }
    }
    let config = HttpConfig {
        url_text,
        url,
        workload,
        headers: o.headers,
        connections,
        workers,
        pinning,
        pipeline,
        rate_per_sec: o.rate,
        think_time: o.think_time,
        duration: o.duration.unwrap_or(Duration::from_secs(10)),
        warmup: o.warmup.unwrap_or(Duration::from_secs(1)),
        grace: o.grace.unwrap_or(Duration::from_secs(2)),
        seed: o.seed.unwrap_or(1),
    };
    Ok(Command::Http {
        config: Box::new(config),
        json: o.json,
    })
}

fn parse_ws(o: Options) -> Result<Command, ConfigError> {
    let url_text = o.url.clone().ok_or(ConfigError::MissingUrl)?;
    let url = Url::parse(&url_text)?;
    if url.scheme != Scheme::Ws {
        return Err(ConfigError::BadUrl(url_text));
    }
    let (workers, pinning) = placement(&o)?;
    let rooms = o.rooms.unwrap_or(1);
    let members = o.members.unwrap_or(10);
    let send_rate = o.send_rate.unwrap_or(1.0);
    if rooms == 0 || members == 0 || !(send_rate > 0.0 && send_rate.is_finite()) {
        return Err(ConfigError::Conflict(
            "--rooms, --members and --send-rate must be positive",
        ));
    }
    let config = WsConfig {
        url_text,
        url,
        rooms,
        members,
        send_rate_per_sec: send_rate,
        workers,
        pinning,
        spin: o.spin,
        duration: o.duration.unwrap_or(Duration::from_secs(10)),
        warmup: o.warmup.unwrap_or(Duration::from_secs(1)),
        grace: o.grace.unwrap_or(Duration::from_secs(2)),
    };
    Ok(Command::Ws {
        config: Box::new(config),
        json: o.json,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    fn check_duration(text: &str, expected: Option<Duration>) {
        assert_eq!(parse_duration(text), expected, "{text}");
    }

    #[test]
    fn durations_parse_with_units() {
        check_duration("5s", Some(Duration::from_secs(5)));
        check_duration("500ms", Some(Duration::from_millis(500)));
        check_duration("1.5s", Some(Duration::from_millis(1500)));
        check_duration("2m", Some(Duration::from_secs(120)));
        check_duration("100us", Some(Duration::from_micros(100)));
        check_duration("5", None);
        check_duration("s", None);
        check_duration("5x", None);
        check_duration("-1s", None);
    }

    #[test]
    fn the_stable_script_interface_parses() {
        let cmd = parse(&args(
            "--url http://127.0.0.1:8080/ --connections 4 --duration 5s --json",
        ))
        .unwrap();
        let Command::Http { config, json } = cmd else {
            panic!("not an HTTP command")
        };
        assert!(json);
        assert_eq!(
            (config.connections, config.workers, config.pipeline),
            (4, 1, 1)
        );
        assert_eq!(config.duration, Duration::from_secs(5));
        assert_eq!(config.rate_per_sec, None);
        assert_eq!(config.pinning, Pinning::Unbound);
    }

    #[test]
    fn cores_set_the_worker_count_and_pin() {
        let cmd = parse(&args("--url http://h:1/ -c 8 --cores 2,3")).unwrap();
        let Command::Http { config, .. } = cmd else {
            panic!("not an HTTP command")
        };
        assert_eq!(config.workers, 2);
        assert_eq!(config.pinning, Pinning::Cpus(vec![2, 3]));
    }

    fn check_error(line: &str, expected: ConfigError) {
        assert_eq!(parse(&args(line)).err(), Some(expected), "{line}");
    }

    #[test]
    fn bad_command_lines_say_what_is_wrong() {
        check_error("--connections 4", ConfigError::MissingUrl);
        check_error("--url", ConfigError::MissingValue("--url".into()));
        check_error(
            "--url http://h/ --bogus 1",
            ConfigError::UnknownOption("--bogus".into()),
        );
        check_error("--url https://h/", ConfigError::BadUrl("https://h/".into()));
        check_error(
            "--url http://h/ --preset nope",
            ConfigError::UnknownPreset("nope".into()),
        );
        check_error(
            "--url http://h/ --duration 5",
            bad("--duration", "5", "a duration such as 5s or 500ms"),
        );
        check_error(
            "--url http://h/ -c 1 -t 2",
            ConfigError::Conflict("--connections must be at least the number of workers"),
        );
        check_error(
            "--url http://h/ --pipeline 0",
            ConfigError::Conflict("--pipeline must be at least 1"),
        );
        check_error(
            "--url http://h/ --rate 0",
            ConfigError::Conflict("--rate must be a positive number"),
        );
        check_error(
            "--url http://h/ --rate 100 --think-time 1ms",
            ConfigError::Conflict(
                "--think-time is for closed loop; give --rate or --think-time, not both",
            ),
        );
        check_error(
            "--url http://h/ --cores 1,2 -t 3",
            ConfigError::Conflict("--threads must equal the number of --cores"),
        );
        check_error(
            "compare a.json",
            ConfigError::Conflict("usage: cairn-loadgen compare A.json B.json"),
        );
    }

    #[test]
    fn presets_and_compare_and_ws_parse() {
        assert!(matches!(
            parse(&args("--url http://h:1 --preset kv")),
            Ok(Command::Http { .. })
        ));
        assert!(matches!(
            parse(&args("compare a.json b.json")),
            Ok(Command::Compare { .. })
        ));
        assert!(matches!(
            parse(&args("ws --url ws://h:1/room/{room} --rooms 2")),
            Ok(Command::Ws { .. })
        ));
        assert!(matches!(parse(&args("--help")), Ok(Command::Help)));
        assert!(matches!(parse(&args("ws --help")), Ok(Command::Help)));
    }
}
