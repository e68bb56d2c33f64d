//! Embedding `cairn-engine`: a program with its own object class, `visits`,
//! served over HTTP next to the built-in classes and called in-process.
//!
//! Run: `cargo run -p cairn-engine --example embed -- [--listen 127.0.0.1:8081]`
//! (any `cairn` option works). It makes a few in-process calls, prints the
//! answers, then serves `GET /visits/{name}` until its stdin closes (Ctrl-D)
//! or, with `--once`, exits at once. See `docs/EMBEDDING.md`.

use std::sync::{Arc, Mutex};

use cairn_engine::config::{self, Command};
use cairn_engine::context::Context;
use cairn_engine::host::Target;
use cairn_engine::id::id_from_name;
use cairn_engine::object::{Classes, LocalFuture, Object, Request, Response};
use cairn_engine::shard::{self, Shard, ShardTask};
use cairn_engine::{builtins, http};

/// Counts visits per name. The count is durable; `n` is its in-memory copy,
/// loaded by `init` before the first event of each fresh instance (after
/// activation, eviction or a panic), so `fetch` never sees it unloaded.
struct Visits {
    n: u64,
}

impl Object for Visits {
    fn init<'a>(
        &'a mut self,
        ctx: &'a Context,
    ) -> LocalFuture<'a, Result<(), Box<dyn std::error::Error>>> {
        Box::pin(async move {
            self.n = ctx
                .storage()
                .get(b"n")
                .await?
                .and_then(|v| <[u8; 8]>::try_from(&v[..]).ok())
                .map_or(0, u64::from_be_bytes);
            Ok(())
        })
    }

    fn fetch<'a>(&'a mut self, ctx: &'a Context, _req: Request) -> LocalFuture<'a, Response> {
        Box::pin(async move {
            let n = self.n + 1;
            if ctx.storage().put(b"n", &n.to_be_bytes()).is_err() {
                return Response::new(500, "storage refused the write");
            }
            self.n = n;
            // Released only once the put is durable (the output gate).
            Response::json(
                200,
                format!(r#"{{"visits":{n},"shard":{}}}"#, ctx.shard_id()),
            )
        })
    }

    fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
    }
}

fn main() -> std::process::ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let once = args.iter().any(|a| a == "--once");
    args.retain(|a| a != "--once");
    let cfg = match config::parse(args, |k| std::env::var(k).ok()) {
        Ok(Command::Run(cfg)) => *cfg,
        Ok(Command::Help(text)) => {
            println!(
                "{text}  --once                                 exit after the in-process calls"
            );
            return std::process::ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("embed {}", env!("CARGO_PKG_VERSION"));
            return std::process::ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("embed: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let mut classes = Classes::new();
    builtins::register(&mut classes);
    classes.register("visits", || Visits { n: 0 });

    // In-process calls from shard 0: objects on every shard answer.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let tx = Arc::new(Mutex::new(Some(tx))); // start-up only, never on the request path
    let calls: ShardTask = Arc::new(move |s: Shard| {
        let tx = if s.id == 0 {
            tx.lock().ok().and_then(|mut t| t.take())
        } else {
            None
        };
        Box::pin(async move {
            let Some(tx) = tx else { return };
            for name in ["ada", "grace", "ada"] {
                let target = Target {
                    class: "visits".into(),
                    id: id_from_name("visits", name.as_bytes()),
                    name: Some(name.as_bytes().to_vec()),
                };
                let r = s.host.call(target, Request::new("GET", "/")).await;
                let _ = tx.send(format!(
                    "{name}: {} {}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                ));
            }
        })
    });
    let serve: ShardTask = Arc::new(|s| Box::pin(http::serve(s)));
    let listen = cfg.listen;
    let server = match shard::start(cfg, classes, vec![calls, serve]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("embed: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    for line in rx.iter().take(3) {
        println!("{line}");
    }
    if !once {
        println!("serving on http://{listen}/visits/{{name}}; Ctrl-C stops");
        let stop = server.stop_flag();
        // The example keeps signal handling minimal: poll stdin closing as the stop.
        let _ = std::io::Read::read(&mut std::io::stdin(), &mut [0u8; 1]);
        stop.store(true, std::sync::atomic::Ordering::Release);
    } else {
        server.stop();
    }
    match server.join() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("embed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
