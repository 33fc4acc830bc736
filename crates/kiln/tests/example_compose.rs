//! The Compose example as a test: `examples/compose` (the TypeScript API of
//! `examples/api` and a Vite/React front end from `examples/web` served by
//! busybox httpd; `.env` interpolation, a `target`, and a `service:api`
//! additional context) builds with `kiln compose build`, both services at the
//! same time, and a second run runs nothing. Then the front end is served with
//! `kiln run` and hands out the API's package.json it was built with. Needs root
//! (mmdebstrap, the sandbox) and the npm registry, as `example_api` does.

use crate::util::{kiln, make_base_images};
use kiln_testkit::http::{self, free_port};
use kiln_testkit::Kiln;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    kiln_testkit::repo_root().canonicalize().unwrap()
}

/// kiln with the store at `root`, without the variables of the environment the
/// tests run in that the example's compose.yaml reads.
fn kiln_at(root: &Path) -> Kiln {
    let mut c = kiln();
    c.root(root);
    for v in [
        "COMPOSE_PROJECT_NAME",
        "COMPOSE_FILE",
        "COMPOSE_PROFILES",
        "TAG",
        "REGISTRY",
    ] {
        c.env_remove(v);
    }
    c
}

fn compose(root: &Path, args: &[&str]) -> Output {
    kiln_at(root)
        .arg("compose")
        .arg("-f")
        .arg(repo().join("examples/compose/compose.yaml"))
        .args(args)
        .output()
}

/// The rawjson events of a run.
fn events(out: &Output) -> Vec<Value> {
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kiln compose build failed:\n{log}");
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("event").is_some())
        .collect()
}

fn of<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

/// Start and end (ms) of every step that ran, by its name.
fn intervals(events: &[Value]) -> Vec<(String, u64, u64)> {
    let mut started: HashMap<u64, (String, u64)> = HashMap::new();
    let mut out = Vec::new();
    for e in events {
        let step = e["step"].as_u64();
        match e["event"].as_str() {
            Some("step_started") => {
                started.insert(
                    step.unwrap(),
                    (
                        e["name"].as_str().unwrap().to_string(),
                        e["at_ms"].as_u64().unwrap(),
                    ),
                );
            }
            Some("step_finished") => {
                let (name, at) = started[&step.unwrap()].clone();
                out.push((name, at, e["at_ms"].as_u64().unwrap()));
            }
            _ => {}
        }
    }
    out
}

#[test]
fn compose_example_builds_both_services_at_once_then_runs_nothing_needs_root_and_npm() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    make_base_images(&root, None);

    // The model: .env interpolated, paths resolved, the target and the service: context.
    let config = compose(&root, &["config"]);
    let text = String::from_utf8_lossy(&config.stdout);
    assert!(
        config.status.success(),
        "{}",
        String::from_utf8_lossy(&config.stderr)
    );
    assert!(text.starts_with("name: kiln-example\n"), "{text}");
    for line in [
        "APP_TITLE: kiln example shop",
        "API_URL: /cgi-bin/api",
        "api: service:api",
        "target: serve",
        "target: runner",
        "image: localhost/kiln-example-api:dev",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
    let web_context = format!("context: {}", repo().join("examples/web").display());
    assert!(text.contains(&web_context), "{text}");

    // First build: everything runs, the two services at the same time.
    let first = events(&compose(&root, &["build", "--progress=rawjson"]));
    assert_eq!(of(&first, "build_started").len(), 2);
    let finished = of(&first, "build_finished");
    assert_eq!(finished.len(), 2);
    let api_done = finished
        .iter()
        .find(|e| e["summary"]["tags"][0] == "localhost/kiln-example-api:dev")
        .expect("the api image");
    assert!(
        finished
            .iter()
            .any(|e| e["summary"]["tags"][0] == "kiln-example-web:latest"),
        "{finished:?}"
    );
    for f in &finished {
        assert!(f["summary"]["steps_run"].as_u64().unwrap() > 0, "{f}");
    }
    let ran = intervals(&first);
    let api: Vec<_> = ran
        .iter()
        .filter(|(n, ..)| n.starts_with("[api "))
        .collect();
    let web: Vec<_> = ran
        .iter()
        .filter(|(n, ..)| n.starts_with("[web "))
        .collect();
    assert!(!api.is_empty() && !web.is_empty(), "{ran:?}");
    let runs = |steps: &[&(String, u64, u64)]| {
        steps
            .iter()
            .filter(|(n, ..)| n.contains("] RUN "))
            .map(|(_, a, b)| (*a, *b))
            .collect::<Vec<_>>()
    };
    let overlap = runs(&api)
        .iter()
        .any(|(a0, a1)| runs(&web).iter().any(|(w0, w1)| w0 < a1 && a0 < w1));
    assert!(
        overlap,
        "no api RUN step ran while a web RUN step ran: {ran:?}"
    );
    // The stage using service:api waited for the api image.
    let copy = web
        .iter()
        .find(|(n, ..)| n.contains("COPY --from=api"))
        .expect("web's COPY --from=api ran");
    assert!(
        copy.1 >= api_done["at_ms"].as_u64().unwrap(),
        "{copy:?} {api_done}"
    );

    // Second build: nothing runs (a FROM step is only the base image looked up).
    let second = events(&compose(&root, &["build", "--progress=rawjson"]));
    for s in of(&second, "step_started") {
        assert!(s["name"].as_str().unwrap().contains("] FROM "), "{s}");
    }
    let mut cached = 0;
    for f in of(&second, "build_finished") {
        assert_eq!(f["summary"]["steps_run"], 0, "{f}");
        cached += f["summary"]["steps_cached"].as_u64().unwrap();
    }
    assert!(cached > 0);
    assert_eq!(
        of(&second, "step_cached").len() as u64,
        cached,
        "{second:?}"
    );

    // The front end's image: its label from compose.yaml, and it serves the
    // app and the API's package.json.
    let inspect = kiln_at(&root)
        .args(["inspect", "kiln-example-web"])
        .output();
    let v: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(
        v[0]["Config"]["Labels"]["org.opencontainers.image.title"],
        "kiln example shop"
    );
    assert_eq!(v[0]["Config"]["User"], "nobody");
    // A port nothing listens on now (the machine may run other services).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let mut server = kiln_at(&root)
        .args(["run", "kiln-example-web", "httpd", "-f", "-p"])
        .arg(port.to_string())
        .args(["-h", "/www"])
        .command()
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut index = None;
    while Instant::now() < deadline {
        if let Some(r) = http::get(port, "/") {
            index = Some(r);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let api_package = http::get(port, "/api-package.json");
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let waited = Instant::now();
    while server.try_wait().unwrap().is_none() {
        if waited.elapsed() > Duration::from_secs(20) {
            let _ = server.kill();
            panic!("kiln run did not stop after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let index = index.expect("httpd answered");
    assert!(index.starts_with("HTTP/1.1 200"), "{index}");
    assert!(index.contains("<div id=\"root\"></div>"), "{index}");
    assert!(
        index.contains("/assets/index-"),
        "not the built page: {index}"
    );
    let api_package = api_package.expect("httpd answered");
    assert!(
        api_package.contains("\"name\": \"kiln-example-api\""),
        "{api_package}"
    );

    up_publishes_both_and_the_front_end_reaches_the_api_by_name(&root, None);
    run_publishes_the_api(&root);

    // Rootless: the same project built and run as the rootless user, in a
    // store of its own holding only the base images (saved from root's).
    let rootless = dir.path().join("rootless");
    std::fs::create_dir(&rootless).unwrap();
    let archive = rootless.join("bases.tar");
    let save = kiln()
        .root(&root)
        .args(["save", "-o"])
        .arg(&archive)
        .args(["node:20-bookworm-slim", "busybox:test"])
        .output();
    assert!(
        save.status.success(),
        "{}",
        String::from_utf8_lossy(&save.stderr)
    );
    up_publishes_both_and_the_front_end_reaches_the_api_by_name(
        &rootless.join("store"),
        Some(&archive),
    );
}

/// Runs a closure when dropped (also when a test panics).
struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

const ROOTLESS_USER: &str = "kiln-rootless";

/// `kiln compose up -d` of the example: the API and the front end published
/// on host ports of their own, the front end's container asking the API by
/// its service name (its CGI script behind /cgi-bin/api/), `ps` showing the
/// API healthy, and `kiln compose down` leaving no container, process,
/// bridge or address behind. With `load`, as the rootless user in a store of
/// its own that the archive (the base images) is loaded into, where
/// `kiln compose build` first builds both services and a second build runs
/// nothing.
fn up_publishes_both_and_the_front_end_reaches_the_api_by_name(root: &Path, load: Option<&Path>) {
    // The example's layout (compose/ next to api/ and web/), copied.
    let work = root.parent().unwrap().join("compose");
    std::fs::create_dir_all(&work).unwrap();
    for f in ["compose.yaml", ".env"] {
        std::fs::copy(repo().join("examples/compose").join(f), work.join(f)).unwrap();
    }
    for d in ["api", "web"] {
        let ok = Command::new("cp")
            .arg("-r")
            .arg(repo().join("examples").join(d))
            .arg(root.parent().unwrap())
            .status()
            .unwrap();
        assert!(ok.success(), "cp -r examples/{d}");
    }
    let exe = root.parent().unwrap().join("kiln-for-compose");
    crate::util::copy_kiln_exe(&exe);
    if load.is_some() {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(root).unwrap();
        let ok = Command::new("chown")
            .args(["-R", &format!("{ROOTLESS_USER}:")])
            .arg(root.parent().unwrap())
            .status()
            .unwrap();
        assert!(
            ok.success(),
            "run scripts/setup-test-env first (the rootless user)"
        );
        let mut d = root.parent().unwrap().to_path_buf();
        while d != Path::new("/") && d.starts_with(std::env::temp_dir()) {
            let mode = std::fs::metadata(&d).unwrap().permissions().mode();
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode | 0o711)).unwrap();
            d.pop();
        }
    }
    let (api_port, web_port) = (free_port(), free_port());
    let run = |args: &[&str]| -> Output {
        let mut c = match load {
            Some(_) => {
                let mut c = Command::new("runuser");
                c.args(["-u", ROOTLESS_USER, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        c.arg("--root")
            .arg(root)
            .current_dir(&work)
            .stdin(Stdio::null());
        for v in [
            "COMPOSE_PROJECT_NAME",
            "COMPOSE_FILE",
            "COMPOSE_PROFILES",
            "TAG",
            "REGISTRY",
        ] {
            c.env_remove(v);
        }
        c.env("API_PORT", api_port.to_string())
            .env("WEB_PORT", web_port.to_string())
            .args(args)
            .output()
            .unwrap()
    };
    let ok = |args: &[&str]| -> String {
        let out = run(args);
        let all = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "kiln {args:?}: {all}");
        all
    };
    if let Some(archive) = load {
        ok(&["load", "-i", archive.to_str().unwrap()]);
        let built = |what: &str| -> Vec<Value> {
            let out = run(&["compose", "build", "--progress=rawjson"]);
            let all = events(&out);
            let finished: Vec<Value> = of(&all, "build_finished").into_iter().cloned().collect();
            assert_eq!(finished.len(), 2, "{what}: {all:?}");
            finished
        };
        for f in built("the first rootless build") {
            assert!(f["summary"]["steps_run"].as_u64().unwrap() > 0, "{f}");
        }
        for f in built("the second rootless build") {
            assert_eq!(f["summary"]["steps_run"], 0, "{f}");
        }
    }
    // However this test ends, the project does not keep running.
    let _down = OnDrop(|| {
        let _ = run(&["compose", "down"]);
    });
    let up = ok(&["compose", "up", "-d"]);
    assert!(up.contains("Container kiln-example-web-1 started"), "{up}");
    // web waited for api to be healthy, so both answer now.
    let api = http::wait_for_200(api_port, "/", Duration::from_secs(60));
    assert!(api.contains("\"service\":\"kiln-example-api\""), "{api}");
    assert!(api.contains("\"uid\":1001"), "{api}");
    let index = http::wait_for_200(web_port, "/", Duration::from_secs(60));
    assert!(index.contains("<div id=\"root\"></div>"), "{index}");
    let through = http::wait_for_200(web_port, "/cgi-bin/api/health", Duration::from_secs(60));
    assert!(
        through.ends_with("ok\n"),
        "the front end did not reach api by name: {through}"
    );
    let through = http::wait_for_200(web_port, "/cgi-bin/api", Duration::from_secs(60));
    assert!(through.contains("\"path\":\"/\""), "{through}");
    let ps = ok(&["compose", "ps"]);
    assert!(
        ps.contains("kiln-example-api-1") && ps.contains("(healthy)"),
        "{ps}"
    );
    assert!(
        ps.contains(&format!("0.0.0.0:{web_port}->8080/tcp")),
        "{ps}"
    );
    let logs = ok(&["compose", "logs", "api"]);
    assert!(
        logs.contains("kiln-example-api-1 | listening on :8000"),
        "{logs}"
    );

    // Rootless, slirp4netns's API socket is named after the first container.
    let ids: Vec<String> = ok(&["compose", "ps", "-q"])
        .split_whitespace()
        .filter(|i| i.len() == 64)
        .map(|i| i[..16].to_string())
        .collect();
    // api ends on SIGTERM (it handles it), web is killed after its
    // stop_grace_period of 1 s: well within the default 10 s.
    let asked = Instant::now();
    let down = ok(&["compose", "down"]);
    assert!(asked.elapsed() < Duration::from_secs(8), "{down}");
    assert!(
        down.contains("Container kiln-example-api-1 removed"),
        "{down}"
    );
    assert!(
        http::get(api_port, "/").is_none(),
        "api still answers after down"
    );
    assert!(
        http::get(web_port, "/").is_none(),
        "web still answers after down"
    );
    assert_eq!(ok(&["compose", "ps", "-a", "-q"]).trim(), "");
    let left: Vec<_> = std::fs::read_dir(root.join("containers"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().len() == 64)
        .collect();
    assert!(left.is_empty(), "containers left: {left:?}");
    // No process of this kiln copy (supervisor, namespace holder, sandbox
    // helper, slirp4netns naming the store).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut procs = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let pid = e.file_name().to_string_lossy().into_owned();
            if pid.parse::<u32>().is_err() {
                continue;
            }
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat
                .rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
            {
                continue;
            }
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| p == exe)
                || cmdline.contains(root.to_str().unwrap())
                || ids
                    .iter()
                    .any(|id| cmdline.contains(&format!("kiln-slirp-{id}")))
            {
                procs.push(format!("{pid} {cmdline}"));
            }
        }
        if procs.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "processes left: {procs:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mountinfo.contains(root.to_str().unwrap()),
        "a mount under the store is left:\n{mountinfo}"
    );
    // Root: netavark's bridge and addresses of the project network are gone.
    let ipam = std::fs::read_to_string("/run/kiln/netavark/ipam.json").unwrap_or_default();
    assert!(!ipam.contains("\"kiln-example_default\""), "{ipam}");
    let sum = Command::new("sh")
        .args(["-c", "printf %s kiln-example_default | sha256sum"])
        .output()
        .unwrap();
    let bridge = format!("kiln{}", &String::from_utf8_lossy(&sum.stdout)[..8]);
    let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(!links.contains(&bridge), "bridge {bridge} left:\n{links}");
}

/// `kiln run -p HOST:8000` of the API image answers on 127.0.0.1:HOST.
fn run_publishes_the_api(root: &Path) {
    let port = free_port();
    // However this test ends, the container does not keep running.
    let _rm = OnDrop(|| {
        let _ = kiln()
            .root(root)
            .args(["rm", "-f", "api-published"])
            .output();
    });
    let out = kiln()
        .root(root)
        .args(["run", "-d", "--name", "api-published", "-p"])
        .arg(format!("{port}:8000"))
        .arg("localhost/kiln-example-api:dev")
        .output();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = http::wait_for_200(port, "/", Duration::from_secs(60));
    assert!(r.contains("\"service\":\"kiln-example-api\""), "{r}");
    let rm = kiln()
        .root(root)
        .args(["rm", "-f", "api-published"])
        .output();
    assert!(
        rm.status.success(),
        "{}",
        String::from_utf8_lossy(&rm.stderr)
    );
    assert!(http::get(port, "/").is_none(), "still answers after rm -f");
}
