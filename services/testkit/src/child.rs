//! A `biglearn` child process in a test: where it listens, read from the line it prints
//! once it does ("biglearn listening on URL").

use std::io::{BufRead, BufReader};
use std::process::Child;

/// Reads `child`'s stdout (piped) until it says where it listens and returns that base URL;
/// the rest of its stdout is drained on a thread, so that the child never blocks on a full
/// pipe. Panics if stdout ends first (the child exited) or was not piped.
pub fn listening_address(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("the child's stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let base = loop {
        let line = lines
            .next()
            .expect("biglearn prints its address before its stdout ends")
            .expect("readable stdout");
        if let Some(url) = line.strip_prefix("biglearn listening on ") {
            break url.trim().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines.by_ref() {});
    base
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[test]
    fn the_address_is_the_listening_line_whatever_comes_before_and_after() {
        let mut child = Command::new("sh")
            .args([
                "-c",
                "echo starting; echo 'biglearn listening on http://127.0.0.1:4242 '; echo more",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        assert_eq!(listening_address(&mut child), "http://127.0.0.1:4242");
        child.wait().unwrap();
    }

    #[test]
    #[should_panic(expected = "prints its address")]
    fn a_child_that_exits_silently_is_a_failure() {
        let mut child = Command::new("true").stdout(Stdio::piped()).spawn().unwrap();
        listening_address(&mut child);
    }
}
