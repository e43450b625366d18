//! Hostile input against the real decision code, in process: every case is
//! refused, and well-formed credentials are accepted (so refusals are not an
//! accident of a broken setup).

mod introspection;
mod jwt;
mod keys;
mod support;
