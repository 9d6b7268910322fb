//! One connection of the blocking PostgreSQL client, safe to drop anywhere.
//!
//! The client drives its connection on a small tokio runtime of its own,
//! and tokio refuses to run or drop a runtime on a thread that is driving
//! another one. Calls are made where blocking is allowed (the blocking
//! pool, or commands that run outside the runtime); the last drop may
//! happen anywhere, so it happens on a thread of its own.

use std::ops::{Deref, DerefMut};

pub(crate) struct Session(Option<postgres::Client>);

impl Session {
    pub(crate) fn new(client: postgres::Client) -> Self {
        Self(Some(client))
    }
}

impl Deref for Session {
    type Target = postgres::Client;

    fn deref(&self) -> &postgres::Client {
        self.0
            .as_ref()
            .expect("a session holds its client until dropped")
    }
}

impl DerefMut for Session {
    fn deref_mut(&mut self) -> &mut postgres::Client {
        self.0
            .as_mut()
            .expect("a session holds its client until dropped")
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            // Closing says goodbye to the server; a thread that cannot be
            // started leaves that to the server noticing the closed socket.
            if let Ok(closer) = std::thread::Builder::new()
                .name("postgres-close".into())
                .spawn(move || drop(client))
            {
                let _ = closer.join();
            }
        }
    }
}
