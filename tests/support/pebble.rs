//! A real ACME CA for the certificate tests: Debian's `pebble`, on loopback,
//! with a TLS certificate from a CA made here (so phoenix verifies it).
//!
//! [`shared()`] is one pebble per test binary that accepts every challenge
//! (`PEBBLE_VA_ALWAYS_VALID=1`): for tests about what phoenix does with
//! certificates. [`Pebble::validating`] starts one that really validates
//! http-01: it resolves every name through `pebble-challtestsrv` to 127.0.0.1
//! and fetches the token from the port the test serves the gateway's webroot on.
//!
//! Each runs under `sh` reading this process's pipe: when the test binary
//! exits, the pipe closes and the shell stops its server.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub struct Pebble {
    /// `https://127.0.0.1:PORT/dir`.
    pub directory: String,
    /// The root that signs pebble's TLS certificate (`PHOENIX_ACME_CA_FILE`).
    pub ca_file: PathBuf,
    /// `https://127.0.0.1:PORT`, pebble's management interface (its roots and intermediates).
    pub management: String,
    _dir: tempfile::TempDir,
    _children: Vec<Child>,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for(port: u16, what: &str) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what} did not listen on 127.0.0.1:{port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `sh -c 'PROG ARGS & read; kill'` with our pipe on stdin.
fn spawn_tied(argv: &[String], envs: &[(&str, &str)], log: &Path) -> Child {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#""$@" & pid=$!; cat >/dev/null; kill "$pid" 2>/dev/null; wait "$pid""#)
        .arg("pebble-tied")
        .args(argv)
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(log).unwrap())
        .stderr(std::fs::File::create(log.with_extension("err")).unwrap());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/setup: it installs pebble)", argv[0]))
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The pebble that accepts every challenge, shared by the tests of this binary.
pub fn shared() -> &'static Pebble {
    static PEBBLE: OnceLock<Pebble> = OnceLock::new();
    PEBBLE.get_or_init(|| Pebble::start(None))
}

impl Pebble {
    /// A pebble that validates for real: http-01 against `127.0.0.1:http_port` (every name
    /// resolved there by pebble-challtestsrv), or, given `dns`, dns-01 by asking that server.
    pub fn validating(http_port: u16, dns: Option<u16>) -> Pebble {
        Pebble::start(Some((http_port, dns)))
    }

    fn start(validate: Option<(u16, Option<u16>)>) -> Pebble {
        let validate_on = validate.map(|v| v.0);
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=phoenix test ACME TLS root",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        openssl(
            d,
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
            ],
        );
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                "server.pem",
                "-extfile",
                "ext.cnf",
            ],
        );
        let (acme, mgmt) = (free_port(), free_port());
        let mut children = Vec::new();
        let mut args = vec![
            "pebble".to_string(),
            "-config".into(),
            d.join("pebble.json").display().to_string(),
        ];
        let http_port = validate_on.unwrap_or(5002);
        if let Some((_, Some(dns))) = validate {
            args.extend(["-dnsserver".into(), format!("127.0.0.1:{dns}")]);
        } else if validate_on.is_some() {
            let (dns, dns_mgmt) = (free_port(), free_port());
            children.push(spawn_tied(
                &[
                    "pebble-challtestsrv".into(),
                    "-dns01".into(),
                    format!("127.0.0.1:{dns}"),
                    "-http01".into(),
                    "".into(),
                    "-https01".into(),
                    "".into(),
                    "-tlsalpn01".into(),
                    "".into(),
                    "-management".into(),
                    format!("127.0.0.1:{dns_mgmt}"),
                    "-defaultIPv4".into(),
                    "127.0.0.1".into(),
                    "-defaultIPv6".into(),
                    "".into(),
                ],
                &[],
                &d.join("challtestsrv.log"),
            ));
            wait_for(dns_mgmt, "pebble-challtestsrv");
            args.extend(["-dnsserver".into(), format!("127.0.0.1:{dns}")]);
        }
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{acme}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt}"),
            "certificate": d.join("server.pem"),
            "privateKey": d.join("server.key"),
            "httpPort": http_port,
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false
        }});
        std::fs::write(d.join("pebble.json"), config.to_string()).unwrap();
        let mut envs = vec![("PEBBLE_VA_NOSLEEP", "1"), ("PEBBLE_WFE_NONCEREJECT", "0")];
        if validate_on.is_none() {
            envs.push(("PEBBLE_VA_ALWAYS_VALID", "1"));
        }
        children.push(spawn_tied(&args, &envs, &d.join("pebble.log")));
        wait_for(acme, "pebble");
        wait_for(mgmt, "pebble's management interface");
        Pebble {
            directory: format!("https://127.0.0.1:{acme}/dir"),
            ca_file: d.join("ca.pem"),
            management: format!("https://127.0.0.1:{mgmt}"),
            _dir: dir,
            _children: children,
        }
    }

    /// What phoenix needs to use this CA.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("PHOENIX_ACME_DIRECTORY".into(), self.directory.clone()),
            (
                "PHOENIX_ACME_CA_FILE".into(),
                self.ca_file.display().to_string(),
            ),
        ]
    }

    /// The common name of the intermediate that signs what this pebble issues.
    pub fn intermediate_cn(&self) -> String {
        let out = Command::new("curl")
            .args(["-sS", "--cacert"])
            .arg(&self.ca_file)
            .arg(format!("{}/intermediates/0", self.management))
            .output()
            .expect("curl");
        let pem = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut child = Command::new("openssl")
            .args(["x509", "-noout", "-subject", "-nameopt", "multiline"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(pem.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("commonName")
                    .map(|v| v.trim_start_matches([' ', '=']).trim().to_string())
            })
            .unwrap_or_else(|| panic!("no CN in pebble's intermediate: {text} {pem}"))
    }
}
