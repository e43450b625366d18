//! Test certificates made by `openssl` in a scratch directory: CAs and
//! leaf certificates they sign, with the SANs and key usage a test needs.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// The path of a file of `tests/fixtures/tls` (the fixed test CA, its
/// `localhost` certificate and key, an expired one).
pub fn tls_fixture(name: &str) -> String {
    crate::workspace_root()
        .join("tests/fixtures/tls")
        .join(name)
        .display()
        .to_string()
}

/// A directory of keys and certificates.
pub struct Pki {
    pub dir: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success(), "openssl {args:?}");
}

impl Pki {
    pub fn new(dir: PathBuf) -> Self {
        std::fs::create_dir_all(&dir).expect("pki dir");
        Self { dir }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    pub fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.path(file)).expect("pem")
    }

    /// A self-signed CA: `<name>.crt` and `<name>.key`.
    pub fn ca(&self, name: &str) {
        openssl(
            &self.dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.crt"),
            ],
        );
    }

    /// `<name>.crt` and `<name>.key` signed by `ca`, with `extensions`
    /// (openssl's extension lines, e.g. `subjectAltName=DNS:a.test`).
    pub fn leaf(&self, ca: &str, name: &str, extensions: &str) {
        std::fs::write(self.path(&format!("{name}.ext")), extensions).expect("ext");
        openssl(
            &self.dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ],
        );
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &format!("{ca}.crt"),
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.crt"),
            ],
        );
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn server(&self, ca: &str, name: &str, names: &[&str]) {
        let sans: Vec<String> = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(_) => format!("IP:{n}"),
                Err(_) => format!("DNS:{n}"),
            })
            .collect();
        self.leaf(
            ca,
            name,
            &format!(
                "subjectAltName={}\nextendedKeyUsage=serverAuth\n",
                sans.join(",")
            ),
        );
    }
}
