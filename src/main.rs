//! The `oms-gateway` binary: parse configuration, start the gateway (or the sandbox alone), wait
//! for SIGINT or SIGTERM, shut down. No business logic lives here.

use oms_gateway::config::{
    Cli, Command, LogFormat, LogSettings, SandboxCommandSettings, TelemetrySettings,
};
use oms_gateway::{otlp, server};
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

/// Installs the log subscriber and, with `--otlp-endpoint`, the span exporter (returned, to be
/// flushed on exit). The log filter applies to the log lines only: the exporter takes the
/// gateway's info spans whatever the log level.
fn init_logging(
    log: &LogSettings,
    telemetry: &TelemetrySettings,
) -> Result<Option<otlp::Exporter>, String> {
    let filter = EnvFilter::try_new(&log.level).unwrap_or_else(|err| {
        eprintln!("invalid --log-level `{}` ({err}); using `info`", log.level);
        EnvFilter::new("info")
    });
    let (export, exporter) = match telemetry.otlp_endpoint.as_deref() {
        Some(endpoint) => {
            let (layer, exporter) = otlp::layer(endpoint)?;
            (Some(layer), Some(exporter))
        }
        None => (None, None),
    };
    let lines = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let lines = match log.format {
        LogFormat::Json => lines.json().boxed(),
        LogFormat::Text => lines.boxed(),
    };
    tracing_subscriber::registry()
        .with(lines.with_filter(filter))
        .with(export)
        .init();
    Ok(exporter)
}

/// Resolves on SIGINT or SIGTERM, with the exit status a process killed by it has (128 + its
/// number: 130, 143).
async fn shutdown_signal() -> u8 {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => 130,
        () = term => 143,
    }
}

/// The first SIGINT or SIGTERM drains and stops the gateway (the drain delay, then the grace
/// period); a second one during that exits at once, as an impatient operator asks.
async fn run_until_signalled(gateway: server::RunningGateway) {
    shutdown_signal().await;
    tracing::info!("shutting down; a second SIGINT or SIGTERM exits at once");
    tokio::select! {
        () = gateway.shutdown() => {}
        code = shutdown_signal() => {
            tracing::warn!("second signal: exiting without waiting for the drain");
            std::process::exit(i32::from(code));
        }
    }
}

async fn run_sandbox(args: SandboxCommandSettings) -> ExitCode {
    let config = args
        .options
        .sandbox_config(args.listen, &args.api_key, &args.api_secret);
    match oms_sandbox::start(config).await {
        Ok(handle) => {
            println!(
                "OMS sandbox listening on {} (API key {}); try: curl -s -X POST {}/auth/token -H 'content-type: application/json' -d '{{\"apiKey\":\"{}\",\"apiSecret\":\"<your --api-secret>\"}}'",
                handle.base_url(),
                args.api_key,
                handle.base_url(),
                args.api_key
            );
            let _ = shutdown_signal().await;
            handle.shutdown().await;
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!(
                "oms-gateway sandbox: cannot listen on {}: {err}",
                args.listen
            );
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let loaded = Cli::load();
    let runtime = match server::runtime(&loaded.cli.gateway.runtime) {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("oms-gateway: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(loaded))
}

async fn run(loaded: oms_gateway::config::LoadedCli) -> ExitCode {
    if loaded.cli.config_file.print_config {
        print!("{}", loaded.effective);
        return ExitCode::SUCCESS;
    }
    if loaded.cli.config_file.check_config {
        let report = server::check_config(&loaded);
        if !report.passed() {
            eprint!("{report}");
            return ExitCode::FAILURE;
        }
        print!("{report}{}", loaded.effective);
        return ExitCode::SUCCESS;
    }
    let cli = loaded.cli;
    let exporter = match init_logging(&cli.log, &cli.telemetry) {
        Ok(exporter) => exporter,
        Err(err) => {
            eprintln!("oms-gateway: {err}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(Command::Sandbox(args)) = cli.command {
        return run_sandbox(args).await;
    }
    let grpcurl = match (
        &cli.gateway.security.tls_cert,
        &cli.gateway.security.tls_client_ca,
    ) {
        (None, _) => "grpcurl -plaintext".to_owned(),
        (Some(_), None) => "grpcurl -cacert <CA of --tls-cert>".to_owned(),
        (Some(_), Some(_)) => {
            "grpcurl -cacert <CA of --tls-cert> -cert <client cert> -key <client key>".to_owned()
        }
    };
    let gateway = match server::start(cli.gateway).await {
        Ok(gateway) => gateway,
        Err(err) => {
            eprintln!("oms-gateway: {err}");
            return ExitCode::FAILURE;
        }
    };
    let addr = gateway.addr();
    match gateway.sandbox() {
        Some(sandbox) => println!(
            "oms-gateway serving gRPC on {addr} against the embedded OMS sandbox at {} (no OMS credentials set); try: {grpcurl} {addr} list",
            sandbox.base_url()
        ),
        None => println!(
            "oms-gateway serving gRPC on {addr} against OMS at {}; try: {grpcurl} {addr} list",
            gateway.upstream_url()
        ),
    }
    run_until_signalled(gateway).await;
    if let Some(exporter) = exporter {
        // Sends the spans still batched; blocks until done (bounded by the export timeout).
        let _ = tokio::task::spawn_blocking(move || exporter.shutdown()).await;
    }
    ExitCode::SUCCESS
}
