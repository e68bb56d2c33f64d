//! The `cairn-loadgen` binary: parses the command line, runs the load, and
//! prints a table or one JSON object. Exit codes: 0 done, 2 bad usage or
//! unreadable input, 3 the run failed or hit its hard time bound.

use std::process::ExitCode;

use cairn_loadgen::cli::{self, Command, USAGE};
use cairn_loadgen::report::{compare, comparison_table};
use cairn_loadgen::{Report, RunError, run_http, run_ws};

fn read_json(path: &str) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("{path} is not JSON: {e}"))
}

fn finish(result: Result<Report, RunError>, json: bool) -> ExitCode {
    match result {
        Ok(report) => {
            if json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.to_table());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cairn-loadgen: {e}");
            // Worker threads may still be stuck on a hung target; leave
            // without waiting for them.
            std::process::exit(3)
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match cli::parse(&args) {
        Ok(Command::Help) => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Command::Http { config, json }) => finish(run_http(*config), json),
        Ok(Command::Ws { config, json }) => finish(run_ws(*config), json),
        Ok(Command::Compare { a, b }) => match (read_json(&a), read_json(&b)) {
            (Ok(a), Ok(b)) => {
                print!("{}", comparison_table(&compare(&a, &b)));
                ExitCode::SUCCESS
            }
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("cairn-loadgen: {e}");
                ExitCode::from(2)
            }
        },
        Err(e) => {
            eprintln!("cairn-loadgen: {e}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
