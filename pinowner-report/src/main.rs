//! `pinowner-report`: renders a JSON report written by `pinowner` (a
//! service's `to_json` output) as text, an SVG map of the arena, or a
//! flamegraph of the holders in the way. See `pinowner-report --help`.

use std::io::Write as _;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut stdout = std::io::stdout().lock();
    match pinowner_report::run(&args, &mut stdout) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ pinowner_report::CliError::Usage(_)) => {
            let _ = writeln!(std::io::stderr(), "pinowner-report: {e}\n\n{}", pinowner_report::USAGE);
            ExitCode::from(2)
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "pinowner-report: {e}");
            ExitCode::FAILURE
        }
    }
}
