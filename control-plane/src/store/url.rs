//! Database URLs (credentials never shown) and the backend they name.

use std::{fmt, str::FromStr};

/// A database URL whose password never reaches logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn backend(&self) -> Option<Backend> {
        if self.0.starts_with("postgres://") || self.0.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else if self.0.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else {
            None
        }
    }

    /// A SQLite database in `dir`, created if missing.
    pub fn sqlite_in(dir: &std::path::Path) -> Self {
        Self(format!(
            "sqlite://{}?mode=rwc",
            dir.join("gatehouse.db").display()
        ))
    }
}

impl FromStr for DatabaseUrl {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for DatabaseUrl {
    /// Shows scheme, host and path with any credentials replaced.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.split_once("://") {
            Some((scheme, rest)) => {
                let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
                let rest = rest.split_once('?').map_or(rest, |(path, _)| path);
                write!(f, "{scheme}://{rest}")
            }
            None => f.write_str("<database url>"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_hides_credentials() {
        let url: DatabaseUrl = "postgres://gate:s3cret@db.internal:5432/gatehouse?sslmode=require"
            .parse()
            .expect("infallible");
        assert_eq!(url.to_string(), "postgres://db.internal:5432/gatehouse");
        assert!(!format!("{url:?}").contains("s3cret"));
        assert_eq!(url.backend(), Some(Backend::Postgres));
    }
}
