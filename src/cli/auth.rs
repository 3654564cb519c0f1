//! `hermes-gateway auth hash-password`: reads a password on stdin (without echo on a
//! terminal, asked twice there) and prints its argon2id hash for
//! `dashboard.basic_auth.password_hash` / `HERMES_DASHBOARD_BASIC_AUTH_PASSWORD_HASH`.

use std::io::{BufRead, IsTerminal, Read, Write};

/// Exit status of the command.
pub fn hash_password() -> i32 {
    let stdin = std::io::stdin();
    let password = if stdin.is_terminal() {
        let first = prompt("Password: ");
        let second = prompt("Repeat password: ");
        match (first, second) {
            (Ok(a), Ok(b)) if a == b => a,
            (Ok(_), Ok(_)) => {
                eprintln!("hermes-gateway: the passwords differ; nothing was hashed");
                return 1;
            }
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("hermes-gateway: cannot read the password: {e}");
                return 1;
            }
        }
    } else {
        let mut text = String::new();
        if let Err(e) = stdin.lock().read_to_string(&mut text) {
            eprintln!("hermes-gateway: cannot read standard input: {e}");
            return 1;
        }
        // One trailing line break is the pipe's, not the password's.
        text.strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(&text)
            .to_owned()
    };
    if password.is_empty() {
        eprintln!("hermes-gateway: the password is empty; nothing was hashed");
        return 1;
    }
    match crate::auth::password::hash_password(&password) {
        Ok(hash) => {
            println!("{hash}");
            0
        }
        Err(e) => {
            eprintln!("hermes-gateway: {e}");
            1
        }
    }
}

/// Reads one line from the terminal with echo off.
fn prompt(label: &str) -> std::io::Result<String> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    let stdin = std::io::stdin();
    eprint!("{label}");
    std::io::stderr().flush()?;
    let saved = tcgetattr(&stdin).map_err(std::io::Error::from)?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&stdin, SetArg::TCSANOW, &quiet).map_err(std::io::Error::from)?;
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    let _ = tcsetattr(&stdin, SetArg::TCSANOW, &saved);
    eprintln!();
    read?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}
