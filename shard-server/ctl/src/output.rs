//! What `vecshardctl` prints goes through `out!`: a reader that stops early (`| head`) ends
//! the program quietly, as Unix tools do, instead of the panic `println!` gives on a broken
//! pipe.

use std::io::Write;

/// `println!` to stdout; a closed pipe ends the program with status 0, another write error
/// with status 1.
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::line(format_args!($($arg)*)) };
}

pub fn line(args: std::fmt::Arguments) {
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_fmt(args)
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush());
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(1);
    }
}
