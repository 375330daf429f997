//! The `siirto` binary: parses the command line, starts logging, runs one library function.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = siirto::cli::Cli::parse();
    // The demo prints its own progress; its logs would only repeat it (RUST_LOG still wins).
    let default_filter = match cli.command {
        siirto::cli::Command::Demo(_) => "error",
        _ => "siirto=info,warn",
    };
    // Colours only for a person at a terminal: a log file or a journal gets plain text.
    let colours = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(colours)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .init();
    match siirto::cli::run(cli).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
