//! pnfsctl: the management CLI of a pnfsd cluster (see `pnfsctl --help`).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut out = std::io::stdout().lock();
    match pnfsctl::run(&args, &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pnfsctl: {e}");
            ExitCode::from(match e {
                pnfsctl::Error::Usage(_) => 2,
                pnfsctl::Error::Failed(_) => 1,
            })
        }
    }
}
