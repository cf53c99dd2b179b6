//! A child process whose stdout is scanned for a ready line and whose output is kept for
//! failure messages. Killed (SIGKILL) on drop.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Process {
    pub name: String,
    child: Child,
    /// Everything the process printed so far (stdout and stderr, interleaved per line).
    log: Arc<Mutex<String>>,
    lines: mpsc::Receiver<String>,
}

impl Process {
    /// Spawns `command` and waits until a line of its output contains `ready`; returns the
    /// process and that line.
    pub fn spawn(
        name: &str,
        mut command: Command,
        ready: &str,
        timeout: Duration,
    ) -> (Process, String) {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let (log, tx) = (log.clone(), tx.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    log.lock().unwrap().push_str(&format!("{line}\n"));
                    let _ = tx.send(line);
                }
            });
        }
        let mut process = Process {
            name: name.to_string(),
            child,
            log,
            lines,
        };
        let line = process.wait_line(ready, timeout);
        (process, line)
    }

    /// Waits for a line containing `pattern`; panics with the log after `timeout`.
    pub fn wait_line(&mut self, pattern: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(pattern) => return line,
                Ok(_) => continue,
                Err(_) => panic!(
                    "{} did not print {pattern:?} within {timeout:?}; exit: {:?}; output:\n{}",
                    self.name,
                    self.child.try_wait().ok().flatten(),
                    self.log()
                ),
            }
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, as an operator's stop would.
    pub fn terminate(&self) {
        self.signal("-TERM");
    }

    /// SIGSTOP: the process freezes with its sockets open, as a long GC pause, a stalled
    /// VM or a swapped-out host would.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGHUP: reload the configuration.
    pub fn hangup(&self) {
        self.signal("-HUP");
    }

    /// SIGCONT after [`Process::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.pid().to_string();
        let status = Command::new("kill").args([signal, &pid]).status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "kill {signal} {pid} ({})",
            self.name
        );
    }

    /// True while the process has not exited.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("----- {} output -----\n{}", self.name, self.log());
        }
    }
}
