//! Counter stores against the real decision code: every storage test runs on
//! the in-memory store and on a private Redis (`redis-server` on an
//! ephemeral port), then Redis faults: several instances sharing one Redis,
//! a flushed script cache, TTLs, Redis killed and hanging.

mod backends;
mod faults;
mod leases;
mod shared;
mod support;
