//! One PostgreSQL connection on its own thread.
//!
//! The `postgres` client is blocking and drives a small tokio runtime of its own, which must
//! never be entered, nor dropped, on one of the daemon's async workers. So each connection lives
//! on a dedicated thread and callers send it closures: the store trait stays synchronous (as
//! with SQLite), and every call is bounded by a timeout so a database that stopped answering
//! cannot hold a caller for ever. A broken connection is dropped and opened again on the next
//! call: a PostgreSQL restart costs the calls made while it was down, nothing more.

use std::sync::mpsc;
use std::time::Duration;

use postgres::{Client, Config, NoTls};

use crate::store::StoreError;

type Job = Box<dyn FnOnce(&mut Result<Client, String>) + Send>;

/// A handle to the connection's thread; the thread ends (and closes the connection) when the
/// handle is dropped.
pub struct Conn {
    jobs: mpsc::Sender<Job>,
    timeout: Duration,
}

/// The URL carries the password: errors name neither, only what failed.
fn describe(e: &postgres::Error) -> String {
    crate::redact::text(&e.to_string())
}

impl Conn {
    /// Starts the thread; the first connection is made on the first call.
    pub fn open(name: &str, config: Config, timeout: Duration) -> Result<Conn, StoreError> {
        let (jobs, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name(format!("pg-{name}"))
            .spawn(move || {
                let mut client: Result<Client, String> = Err("not connected yet".into());
                for job in rx {
                    if client.as_ref().map_or(true, Client::is_closed) {
                        client = config.connect(NoTls).map_err(|e| describe(&e));
                    }
                    job(&mut client);
                }
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start a database thread: {e}")))?;
        Ok(Conn { jobs, timeout })
    }

    /// Runs `f` on the connection and waits for its answer, at most the call timeout.
    pub fn call<T: Send + 'static>(
        &self,
        context: &'static str,
        f: impl FnOnce(&mut Client) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |client| {
            let answer = match client {
                Ok(c) => f(c),
                Err(e) => Err(StoreError::Unavailable(format!(
                    "{context}: cannot connect: {e}"
                ))),
            };
            let _ = tx.send(answer);
        });
        self.jobs
            .send(job)
            .map_err(|_| StoreError::Unavailable(format!("{context}: database thread ended")))?;
        match rx.recv_timeout(self.timeout) {
            Ok(answer) => answer,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(StoreError::Unavailable(format!(
                "{context}: no answer from PostgreSQL within {:?}",
                self.timeout
            ))),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(StoreError::Unavailable(format!(
                "{context}: database thread ended"
            ))),
        }
    }
}

/// Maps a client error to the store's, with what was being done.
pub fn unavailable(context: &'static str) -> impl Fn(postgres::Error) -> StoreError {
    move |e| StoreError::Unavailable(format!("{context}: {}", describe(&e)))
}
