//! `kiln login` / `kiln logout`: credentials in the docker-style auth file.

use crate::flags::{LoginFlags, LogoutFlags};
use kiln_oci::registry::{verify_credentials, AuthFile, Credentials, Reference};
use miette::{miette, Result};
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

/// `index.docker.io` and friends are docker.io; anything else as given.
fn registry_name(input: &str) -> Result<String> {
    let host = input
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let host = host.split('/').next().unwrap_or(host);
    // Reuse reference parsing to validate and normalise the host.
    let r = Reference::parse(&format!("{host}/kiln-login-check"))
        .map_err(|_| miette!("invalid registry {input:?}: expected host[:port]"))?;
    if !host.contains('.') && !host.contains(':') && host != "localhost" {
        return Err(miette!("invalid registry {input:?}: expected host[:port]"));
    }
    Ok(r.registry)
}

pub fn login(flags: LoginFlags) -> Result<ExitCode> {
    let registry = registry_name(&flags.registry)?;
    let stdin = std::io::stdin();
    let username = match flags.username {
        Some(u) => u,
        None => {
            if flags.password_stdin || !stdin.is_terminal() {
                return Err(miette!(
                    "give the user name with -u when the password comes from standard input"
                ));
            }
            eprint!("Username: ");
            std::io::stderr().flush().ok();
            let mut u = String::new();
            stdin
                .lock()
                .read_line(&mut u)
                .map_err(|e| miette!("reading the user name: {e}"))?;
            u.trim().to_string()
        }
    };
    let mut password = String::new();
    if flags.password_stdin {
        stdin
            .lock()
            .read_line(&mut password)
            .map_err(|e| miette!("reading the password: {e}"))?;
    } else if stdin.is_terminal() {
        password = prompt_hidden("Password: ")?;
    } else {
        return Err(miette!(
            "standard input is not a terminal: give the password there with --password-stdin"
        ));
    }
    let password = password.trim_end_matches(['\n', '\r']).to_string();
    if username.is_empty() || password.is_empty() {
        return Err(miette!("user name and password must not be empty"));
    }
    let creds = Credentials { username, password };
    let auth = AuthFile::locate(flags.authfile.authfile.as_deref());
    if !flags.no_verify {
        verify_credentials(&registry, &creds).map_err(|e| miette!("login {e}"))?;
    }
    auth.store(&registry, &creds).map_err(|e| miette!("{e}"))?;
    println!("Login Succeeded");
    Ok(ExitCode::SUCCESS)
}

pub fn logout(flags: LogoutFlags) -> Result<ExitCode> {
    let registry = registry_name(&flags.registry)?;
    let auth = AuthFile::locate(flags.authfile.authfile.as_deref());
    auth.remove(&registry).map_err(|e| miette!("{e}"))?;
    println!("Removed login credentials for {registry}");
    Ok(ExitCode::SUCCESS)
}

/// Read a line from the terminal on standard input without echoing it.
fn prompt_hidden(prompt: &str) -> Result<String> {
    use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
    let stdin = std::io::stdin();
    eprint!("{prompt}");
    std::io::stderr().flush().ok();
    let saved = tcgetattr(&stdin).map_err(|e| miette!("reading terminal settings: {e}"))?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    tcsetattr(&stdin, OptionalActions::Now, &quiet)
        .map_err(|e| miette!("turning off terminal echo: {e}"))?;
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    // Restore echo whatever happened.
    let _ = tcsetattr(&stdin, OptionalActions::Now, &saved);
    eprintln!();
    read.map_err(|e| miette!("reading the password: {e}"))?;
    Ok(line)
}
