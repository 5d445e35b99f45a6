//! A real PostgreSQL server for a test binary, started once on first use.
//!
//! initdb and postgres come from Debian's `postgresql` package (`scripts/setup` installs it).
//! PostgreSQL refuses to run as root, so under root both run as the `postgres` user, in a
//! temp dir of their own: the data dir, a unix socket dir and the TLS files (a CA and a
//! server certificate made here with openssl). The server listens on 127.0.0.1 on a free
//! port, with password (scram) logins over TCP and trust on its socket (for [`Postgres::psql`]).
//!
//! A small shell supervisor starts the server and waits on its stdin; this process holds the
//! write end of that pipe until it exits, so however the test binary ends, the supervisor sees
//! end of file, stops the server by its PID (from postmaster.pid) and removes the temp dir.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub const USER: &str = "phoenix";
pub const PASSWORD: &str = "phoenix-test-pw";
pub const DATABASE: &str = "phoenix";

pub struct Postgres {
    pub port: u16,
    pub dir: PathBuf,
    bin: PathBuf,
    /// The CA that signed the server's certificate.
    pub ca_file: PathBuf,
    /// A CA that signed nothing the server has.
    pub other_ca_file: PathBuf,
    // Held, never written: its end of file tells the supervisor to stop the server.
    _supervisor: Mutex<(Child, ChildStdin)>,
}

/// The server of this test binary, started on first use.
pub fn postgres() -> &'static Postgres {
    static PG: OnceLock<Postgres> = OnceLock::new();
    PG.get_or_init(start)
}

const SUPERVISOR: &str = r#"
set -u
dir=$1 port=$2 bin=$3 runas=$4
as() { if [ -n "$runas" ]; then runuser -u "$runas" -- "$@"; else "$@"; fi; }
as "$bin/postgres" -D "$dir/data" -p "$port" -k "$dir/sock" -c listen_addresses=127.0.0.1 \
    -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 \
    >"$dir/server.log" 2>&1 &
echo started
while read -r _; do :; done
pid=$(head -n 1 "$dir/data/postmaster.pid" 2>/dev/null)
if [ -n "$pid" ]; then kill -INT "$pid" 2>/dev/null; fi
wait
rm -rf "$dir"
"#;

fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PHOENIX_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists() && b.join("postgres").exists())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop().unwrap_or_else(|| {
        panic!(
            "PostgreSQL server binaries not found (initdb and postgres under \
             /usr/lib/postgresql/*/bin, or PHOENIX_PG_BIN): run scripts/setup, which installs \
             Debian's `postgresql` package"
        )
    })
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn is_root() -> bool {
    run(Command::new("id").arg("-u"), "id -u").trim() == "0"
}

fn make_certs(tls: &Path) {
    let openssl = |args: &[&str]| {
        run(
            Command::new("openssl").args(args).current_dir(tls),
            &format!("openssl {}", args.first().unwrap_or(&"")),
        );
    };
    std::fs::write(
        tls.join("ca.ext"),
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
    )
    .unwrap();
    std::fs::write(
        tls.join("server.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    for ca in ["ca", "other-ca"] {
        openssl(&[
            "ecparam",
            "-genkey",
            "-name",
            "prime256v1",
            "-noout",
            "-out",
            &format!("{ca}.key"),
        ]);
        openssl(&[
            "req",
            "-new",
            "-x509",
            "-key",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN=phoenix test {ca}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
    }
    openssl(&[
        "ecparam",
        "-genkey",
        "-name",
        "prime256v1",
        "-noout",
        "-out",
        "server.key",
    ]);
    openssl(&[
        "req",
        "-new",
        "-key",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
}

fn start() -> Postgres {
    let bin = bin_dir();
    let dir = std::env::temp_dir().join(format!("phoenix-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for sub in ["sock", "tls"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    make_certs(&dir.join("tls"));
    std::fs::write(dir.join("pwfile"), PASSWORD).unwrap();
    let runas = if is_root() { "postgres" } else { "" };
    if is_root() {
        run(
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir),
            "chown the postgres test dir",
        );
    }
    run(
        Command::new("chmod")
            .arg("0600")
            .arg(dir.join("tls/server.key")),
        "chmod server.key",
    );
    let as_user = |program: &Path| {
        let mut c = if runas.is_empty() {
            Command::new(program)
        } else {
            let mut c = Command::new("runuser");
            c.args(["-u", runas, "--"]).arg(program);
            c
        };
        c.env_remove("PGPASSWORD");
        c
    };
    run(
        as_user(&bin.join("initdb"))
            .arg("-D")
            .arg(dir.join("data"))
            .args([
                "-U",
                USER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
            ])
            .arg(format!("--pwfile={}", dir.join("pwfile").display()))
            .arg("--no-sync"),
        "initdb",
    );
    // In the config file, not on the command line, so a test can turn TLS off with ALTER SYSTEM.
    let conf = dir.join("data/postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str(&format!(
        "\nssl = on\nssl_cert_file = '{0}/tls/server.crt'\nssl_key_file = '{0}/tls/server.key'\n",
        dir.display()
    ));
    std::fs::write(&conf, text).unwrap();
    // A free port: bound and let go; the server binds it a moment later.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(SUPERVISOR)
        .arg("supervisor")
        .arg(&dir)
        .arg(port.to_string())
        .arg(&bin)
        .arg(runas)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the postgres supervisor");
    let stdin = child.stdin.take().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pg = Postgres {
        port,
        ca_file: dir.join("tls/ca.pem"),
        other_ca_file: dir.join("tls/other-ca.pem"),
        dir,
        bin,
        _supervisor: Mutex::new((child, stdin)),
    };
    let start = Instant::now();
    loop {
        let out = pg.psql_cmd("postgres", "SELECT 1").output().unwrap();
        if out.status.success() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "postgres did not come up: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(pg.dir.join("server.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    pg.psql_db("postgres", &format!("CREATE DATABASE {DATABASE}"));
    pg
}

impl Postgres {
    fn psql_cmd(&self, db: &str, sql: &str) -> Command {
        let mut c = Command::new(self.bin.join("psql"));
        c.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.dir.join("sock"))
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                USER,
                "-d",
                db,
                "-c",
                sql,
            ]);
        c
    }

    /// Run SQL as the superuser over the socket; returns the unaligned rows.
    pub fn psql_db(&self, db: &str, sql: &str) -> String {
        run(&mut self.psql_cmd(db, sql), &format!("psql {sql}"))
            .trim()
            .to_string()
    }

    pub fn psql(&self, sql: &str) -> String {
        self.psql_db(DATABASE, sql)
    }

    /// A URL for phoenix, without TLS, to database `db`.
    pub fn url_db(&self, db: &str) -> String {
        format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    pub fn url(&self) -> String {
        self.url_db(DATABASE)
    }

    /// The URL with other TLS options (`sslmode=...&...`).
    pub fn url_with(&self, options: &str) -> String {
        format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{DATABASE}?{options}",
            self.port
        )
    }
}
