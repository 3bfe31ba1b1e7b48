//! Shared helpers for integration tests: start the real `moldau` binary on a free 127.0.0.1
//! port with a temporary data directory, run real Kafka clients against it, and always stop it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A broker process started for a test; killed when dropped.
pub struct Broker {
    child: Option<Child>,
    /// host:port clients connect to.
    pub addr: String,
    /// The other listeners: name and host:port.
    pub listeners: Vec<(String, String)>,
    /// Data directory (kept across restarts of the same test).
    pub data_dir: PathBuf,
    /// Extra arguments it was started with.
    pub args: Vec<String>,
    /// What it was told to listen on (a port of 0 picks a free one at every start).
    pub listen: String,
    /// Where its log goes.
    pub log_path: PathBuf,
    /// Whether dropping this broker removes its data directory and log (when the test did not
    /// fail: a failed test leaves them for a look).
    owns_dir: bool,
}

/// A fresh directory under target/ (a real disk: O_DIRECT does not work on tmpfs). It stays
/// after the test; see [`TempDir`] for one that goes when the test passes.
pub fn temp_dir(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("it");
    std::fs::create_dir_all(&root).unwrap();
    tempfile::Builder::new().prefix(name).tempdir_in(root).unwrap().keep()
}

/// A fresh directory under target/ that is removed when dropped, unless the test is failing.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates it.
    pub fn new(name: &str) -> Self {
        Self(temp_dir(name))
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Broker {
    /// Starts a broker with a new data directory and `args` added to `serve`.
    pub fn start(name: &str, args: &[&str]) -> Self {
        let data_dir = temp_dir(name);
        let mut broker = Self::start_in(&data_dir, args.iter().map(|s| s.to_string()).collect());
        broker.owns_dir = true;
        broker
    }

    /// Starts a broker on an existing data directory (which it leaves in place).
    pub fn start_in(data_dir: &Path, args: Vec<String>) -> Self {
        Self::start_at(data_dir, "127.0.0.1:0", args)
    }

    /// Starts a broker listening on `listen` on an existing data directory.
    pub fn start_at(data_dir: &Path, listen: &str, args: Vec<String>) -> Self {
        let log_path = data_dir.with_extension(format!("log.{}", std::process::id()));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_moldau"))
            .arg("serve")
            .arg("--listen")
            .arg(listen)
            .arg("--data-dir")
            .arg(data_dir)
            .args(&args)
            .env("MOLDAU_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start moldau");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut listeners = Vec::new();
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                // "moldau listener NAME PROTOCOL on ADDR" lines come before the main one.
                if let Some(rest) = line.strip_prefix("moldau listener ") {
                    let mut words = rest.split_whitespace();
                    if let (Some(name), Some(addr)) = (words.next(), words.last()) {
                        listeners.push((name.to_owned(), addr.to_owned()));
                    }
                    continue;
                }
                let _ = tx.send((line, listeners));
                break;
            }
            for _ in lines {}
        });
        let (line, listeners) = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| {
            panic!("broker did not start; log:\n{}", std::fs::read_to_string(&log_path).unwrap_or_default())
        });
        let addr = line.strip_prefix("moldau listening on ").expect("listening line").trim().to_owned();
        Self {
            child: Some(child),
            addr,
            listeners,
            data_dir: data_dir.to_owned(),
            args,
            listen: listen.to_owned(),
            log_path,
            owns_dir: false,
        }
    }

    /// Stops with SIGTERM (clean shutdown) and waits.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    assert!(status.success(), "broker exited with {status} after SIGTERM; log:\n{}", self.log());
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("broker did not stop within 30 s of SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Kills with SIGKILL (a crash) and waits.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again on the same data directory (new port), after a SIGKILL.
    pub fn restart(&mut self) {
        self.kill();
        self.start_again();
    }

    /// Starts the broker again on the same data directory (new port), after a clean stop.
    pub fn restart_clean(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Starts the broker again on the same data directory (new port), after a stop or a kill.
    pub fn start_again(&mut self) {
        let owns_dir = std::mem::replace(&mut self.owns_dir, false);
        *self = Self::start_at(&self.data_dir.clone(), &self.listen.clone(), self.args.clone());
        self.owns_dir = owns_dir;
    }

    /// Whether the process runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// host:port of the listener named `name`.
    pub fn listener(&self, name: &str) -> String {
        if name == "PLAINTEXT" {
            return self.addr.clone();
        }
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a.clone())
            .unwrap_or_else(|| panic!("no {name} listener"))
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
        if self.owns_dir && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.data_dir);
            let _ = std::fs::remove_file(&self.log_path);
        }
    }
}

/// Runs a command with a time limit, returning its output; panics with the output on failure.
pub fn run_ok(command: &mut Command, what: &str, timeout: Duration) -> Output {
    let output = run(command, timeout);
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs a command with a time limit (killed past it).
pub fn run(command: &mut Command, timeout: Duration) -> Output {
    let child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if rx.recv_timeout(timeout).is_err() {
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    });
    let output = child.wait_with_output().expect("wait");
    let _ = tx.send(());
    output
}

/// The directory of the client scripts.
pub fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// `python3 tests/clients/<script> args...`
pub fn python(script: &str, args: &[&str]) -> Command {
    let mut command = Command::new("python3");
    command.arg(clients_dir().join(script)).args(args).env("PYTHONUNBUFFERED", "1");
    command
}

/// `node tests/clients/<script> args...`
pub fn node(script: &str, args: &[&str]) -> Command {
    let mut command = Command::new("node");
    command.arg(clients_dir().join(script)).args(args).env("KAFKAJS_NO_PARTITIONER_WARNING", "1");
    command
}

/// The `moldau` binary with tool arguments.
pub fn moldau(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_moldau"));
    command.args(args);
    command
}

/// A raw request frame: size, header v1 (correlation id 77, client id "test"; ApiVersions v3+
/// gets the flexible header's empty tag buffer), then `body`.
pub fn request_frame(api_key: i16, version: i16, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(14 + body.len());
    frame.extend_from_slice(&api_key.to_be_bytes());
    frame.extend_from_slice(&version.to_be_bytes());
    frame.extend_from_slice(&77i32.to_be_bytes());
    frame.extend_from_slice(&4i16.to_be_bytes());
    frame.extend_from_slice(b"test");
    if version >= 3 && api_key == 18 {
        frame.push(0);
    }
    frame.extend_from_slice(body);
    let mut out = (frame.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&frame);
    out
}

/// stdout as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A small ext4 filesystem in the file `image`, loop-mounted on `at` (root only; its
/// lost+found removed, so `at` starts empty): a disk that fills up. Unmounted when dropped, even
/// while something still uses it.
pub struct SmallDisk {
    pub at: PathBuf,
    image: PathBuf,
}

impl SmallDisk {
    /// The disk, or `None` (said on stderr, so the test can skip) where mounting one is not
    /// permitted (not root, or no loop devices).
    pub fn mount(image: PathBuf, at: &Path, mib: u64) -> Option<Self> {
        std::fs::create_dir_all(at).unwrap();
        std::fs::File::create(&image).unwrap().set_len(mib << 20).unwrap();
        let formatted = Command::new("mkfs.ext4").args(["-q", "-F", "-m", "0"]).arg(&image).status();
        assert!(formatted.as_ref().is_ok_and(|s| s.success()), "mkfs.ext4 (Debian e2fsprogs): {formatted:?}");
        let mounted = Command::new("mount").args(["-o", "loop"]).arg(&image).arg(at).output();
        match mounted {
            Ok(out) if out.status.success() => {}
            other => {
                let _ = std::fs::remove_file(&image);
                eprintln!("SKIPPED: cannot loop-mount a small disk here (root and loop devices are needed): {other:?}");
                return None;
            }
        }
        let disk = Self { at: at.to_owned(), image };
        std::fs::remove_dir(at.join("lost+found")).unwrap();
        Some(disk)
    }

    /// Fills it with a file until about `leave` bytes are left; returns the file.
    pub fn fill_leaving(&self, leave: u64) -> PathBuf {
        use std::io::Write;
        let filler = self.at.join(format!("filler-{}", std::process::id()));
        let free = moldau::io::fs::space(&self.at).unwrap().1;
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0xabu8; 1 << 20];
        let mut left = free.saturating_sub(leave);
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            if file.write_all(&chunk[..n]).is_err() {
                break;
            }
            left -= n as u64;
        }
        let _ = file.sync_all();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
        let _ = std::fs::remove_file(&self.image);
    }
}

/// A test CA, a broker certificate for 127.0.0.1 (and any other addresses asked for), and a
/// client certificate, made by `openssl` (Debian's, installed by tests/run-all.sh).
pub struct TestCa {
    /// Where its files are.
    pub dir: PathBuf,
}

pub fn openssl(dir: &Path, args: &[&str]) {
    run_ok(
        Command::new("openssl").args(args).current_dir(dir),
        &format!("openssl {}", args[0]),
        Duration::from_secs(60),
    );
}

impl TestCa {
    /// A CA in `dir` whose broker certificate is for 127.0.0.1 and localhost (as a server, and
    /// as a client: brokers present it to each other's controller listeners).
    pub fn new(dir: &Path) -> Self {
        Self::for_addresses(dir, &[])
    }

    /// [`TestCa::new`], the broker certificate also naming `ips` (one certificate all the
    /// nodes of a test cluster share).
    pub fn for_addresses(dir: &Path, ips: &[&str]) -> Self {
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        let ca = [
            &["req", "-x509"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=Moldau Test CA"],
        ]
        .concat();
        openssl(dir, &ca);
        std::fs::write(
            dir.join("broker.ext"),
            format!(
                "subjectAltName=IP:127.0.0.1,DNS:localhost{}\nextendedKeyUsage=serverAuth,clientAuth\n",
                ips.iter().map(|ip| format!(",IP:{ip}")).collect::<String>()
            ),
        )
        .unwrap();
        std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        let ca = Self { dir: dir.to_owned() };
        ca.issue("broker", "/CN=localhost", "broker.ext");
        ca.issue("client", "/O=Moldau Test/OU=eng/CN=alice", "client.ext");
        ca.keystore("broker");
        ca
    }

    /// A key and a certificate signed by the CA: NAME.key, NAME.pem.
    pub fn issue(&self, name: &str, subject: &str, ext: &str) {
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        let (key, csr, pem) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"));
        openssl(&self.dir, &[&["req"][..], &ec, &["-keyout", &key, "-out", &csr, "-subj", subject]].concat());
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                ext,
            ],
        );
    }

    /// NAME-keystore.pem: the key and the certificate, as Kafka's PEM key store holds them.
    pub fn keystore(&self, name: &str) {
        let key = std::fs::read_to_string(self.dir.join(format!("{name}.key"))).unwrap();
        let pem = std::fs::read_to_string(self.dir.join(format!("{name}.pem"))).unwrap();
        std::fs::write(self.dir.join(format!("{name}-keystore.pem")), format!("{key}{pem}")).unwrap();
    }

    pub fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }
}

/// The body of an HTTP GET of `path` from `addr` (the broker's metrics listener).
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned()
}

/// `name` summed over the shards of the broker whose metrics listener is `metrics`.
pub fn shard_counter(metrics: &str, name: &str) -> u64 {
    let shards: serde_json::Value = serde_json::from_str(&http_get(metrics, "/v1/shards")).unwrap();
    shards.as_array().unwrap().iter().map(|s| s[name].as_u64().unwrap()).sum()
}
