//! `cargo run -p book-runner -- [--open] [--no-book] [--port N] [--book-port N]
//! [--book-origin URL]… [--shared-target]`: starts the runner on
//! 127.0.0.1:3001 and, unless `--no-book`, `mdbook serve` on port 3000 as its
//! child; prints the address that opens the book with Run enabled, and with
//! `--open` opens it. Ctrl-C (or SIGTERM) ends the runner, `mdbook serve` and
//! every run still going.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use book_runner::catalog::Catalog;
use book_runner::limits::{self, Group};
use book_runner::run::{RunLimits, Runner, TargetMode};
use book_runner::server::{self, Access};

struct Options {
    port: u16,
    book_port: u16,
    origins: Vec<String>,
    serve_book: bool,
    open: bool,
    shared_target: bool,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        port: 3001,
        book_port: 3000,
        origins: Vec::new(),
        serve_book: true,
        open: false,
        shared_target: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--port" => options.port = value("--port")?.parse().map_err(|e| format!("{e}"))?,
            "--book-port" => {
                options.book_port = value("--book-port")?.parse().map_err(|e| format!("{e}"))?
            }
            "--book-origin" => options.origins.push(value("--book-origin")?),
            "--no-book" => options.serve_book = false,
            "--open" => options.open = true,
            "--shared-target" => options.shared_target = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if options.origins.is_empty() {
        options.origins = Access::book_origins(options.book_port);
    }
    Ok(options)
}

fn book_root() -> PathBuf {
    book_tools::repo::root()
}

/// Opens `link` in the reader's browser through a file only the reader can
/// read, so that the secret never appears on a command line.
fn open_in_browser(link: &str, work: &Path) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = work.join("open");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| e.to_string())?;
    let file = dir.join("open-the-book.html");
    let escaped = link.replace('&', "&amp;").replace('"', "&quot;");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&file)
        .and_then(|mut f| {
            write!(
                f,
                "<!doctype html><meta charset=\"utf-8\"><title>Await Without Deadlock</title>\
                 <meta http-equiv=\"refresh\" content=\"0;url={escaped}\">\
                 <a href=\"{escaped}\">Open the book</a>"
            )
        })
        .map_err(|e| e.to_string())?;
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    std::process::Command::new(opener)
        .arg(&file)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(|_| ())
        .map_err(|e| format!("{opener}: {e}"))
}

/// Waits until something accepts connections on 127.0.0.1:`port`.
async fn wait_for_port(port: u16, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match options() {
        Ok(options) => options,
        Err(why) => {
            eprintln!("book-runner: {why}");
            eprintln!(
                "usage: cargo run -p book-runner -- [--open] [--no-book] [--port N] \
                 [--book-port N] [--book-origin URL]… [--shared-target]"
            );
            return ExitCode::from(2);
        }
    };
    let catalog = match Catalog::load(&book_root()) {
        Ok(catalog) => catalog,
        Err(why) => {
            eprintln!("book-runner: {why}");
            return ExitCode::FAILURE;
        }
    };
    let secret = match book_runner::new_secret() {
        Ok(secret) => secret,
        Err(e) => {
            eprintln!("book-runner: cannot make a secret: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match server::bind(options.port).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!(
                "book-runner: cannot listen on 127.0.0.1:{}: {e} (is a runner already going? \
                 `--port N` picks another port)",
                options.port
            );
            return ExitCode::FAILURE;
        }
    };
    let slots = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut runner = Runner::new(catalog, slots, RunLimits::default());
    if options.shared_target {
        runner.target_mode = TargetMode::Shared;
    }
    let work = runner.work.clone();
    let blocks = runner.catalog.blocks.len();
    let runner = Arc::new(runner);
    let access = Access {
        port: options.port,
        origins: options.origins.clone(),
        token: secret.clone(),
    };
    let book = options
        .origins
        .first()
        .cloned()
        .unwrap_or_else(|| format!("http://localhost:{}", options.book_port));
    let link = book_runner::book_link(&book, options.port, &secret);

    let mut book_server = None;
    if options.serve_book {
        let mut command = tokio::process::Command::new("mdbook");
        command
            .args(["serve", "--port", &options.book_port.to_string()])
            .current_dir(book_root())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        limits::isolate(&mut command, None);
        match command.spawn() {
            Ok(child) => {
                let group = Group::new(child.id().unwrap_or(0));
                book_server = Some((child, group));
            }
            Err(e) => {
                eprintln!(
                    "book-runner: cannot start `mdbook serve` ({e}); install it with the \
                     README's first command, or start the book yourself and pass --no-book"
                );
                return ExitCode::FAILURE;
            }
        }
    }
    println!(
        "book-runner: {blocks} blocks of the book can run; listening on http://127.0.0.1:{} \
         ({slots} build slots)",
        options.port
    );
    // A reader's first edit then rebuilds only its listing.
    tokio::spawn(Arc::clone(&runner).warm_up());
    let router = server::router(runner, access);
    let shutdown = async {
        shutdown_signal().await;
        // End every run (and the book's server) first, so that their
        // responses finish and the server can close.
        limits::kill_all();
    };
    let serving = tokio::spawn(server::serve(listener, router, shutdown));
    if options.serve_book {
        println!("book-runner: waiting for `mdbook serve` to build the book…");
        if !wait_for_port(options.book_port, Duration::from_secs(300)).await {
            eprintln!("book-runner: `mdbook serve` did not start within 300 s");
        }
    }
    println!("\nOpen the book with Run enabled (this address carries the runner's secret):\n\n    {link}\n");
    if options.open {
        if let Err(why) = open_in_browser(&link, &work) {
            eprintln!("book-runner: cannot open a browser ({why}); open the address above");
        }
    }
    println!(
        "Press Ctrl-C to stop the runner{}.",
        if options.serve_book {
            " and the book"
        } else {
            ""
        }
    );
    let result = serving.await;
    limits::kill_all();
    drop(book_server);
    let _ = std::fs::remove_dir_all(work.join("open"));
    match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("book-runner: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("book-runner: {e}");
            ExitCode::FAILURE
        }
    }
}
