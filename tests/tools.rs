//! The load and soak tools and the tuning scripts, run as a user would.

mod common;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Broker, TempDir, moldau, run, run_ok, stdout};

const LIMIT: Duration = Duration::from_secs(300);

#[test]
fn bench_writes_json_hgrm_and_a_plot() {
    let broker = Broker::start("bench", &["--flush", "always"]);
    let out_dir = TempDir::new("bench-out");
    let json = out_dir.join("run.json");
    let plot = out_dir.join("run.svg");
    let output = run_ok(
        &mut moldau(&[
            "bench",
            "--bootstrap",
            &broker.addr,
            "--duration",
            "3",
            "--warmup",
            "1",
            "--partitions",
            "4",
            "--message-size",
            "512",
            "--rate",
            "2000",
            "--keys",
            "50",
            "--json",
            json.to_str().unwrap(),
            "--plot",
            plot.to_str().unwrap(),
        ]),
        "moldau bench",
        LIMIT,
    );
    let summary = stdout(&output);
    assert!(summary.contains("publish latency") && summary.contains("end-to-end latency"), "{summary}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let produced = report["produced"]["messages"].as_u64().unwrap();
    // 2000 msg/s for 3 s: the fixed rate holds (give or take scheduling).
    assert!((5000..=7000).contains(&produced), "produced {produced}");
    assert!(report["consumed"]["messages"].as_u64().unwrap() > 0);
    assert!(report["publish_latency"]["count"].as_u64().unwrap() > 0);
    assert!(report["end_to_end_latency"]["p99_us"].as_u64().unwrap() > 0);
    assert_eq!(report["errors"].as_u64(), Some(0));
    for name in ["run-publish.hgrm", "run-e2e.hgrm"] {
        let hgrm = std::fs::read_to_string(out_dir.join(name)).unwrap();
        assert!(hgrm.contains("Percentile") && hgrm.contains("#[Max"), "{name}");
    }
    assert!(std::fs::read_to_string(&plot).unwrap().contains("<polyline"));
}

#[test]
fn bench_with_a_workload_file_against_the_discarding_sink() {
    // The sink measures the tool's own ceiling; here it proves the workload file is honoured.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut sink = moldau(&["bench-sink", "--listen", &format!("127.0.0.1:{port}"), "--partitions", "8"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(sink.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("moldau bench-sink listening on"), "{line}");
    let dir = TempDir::new("workload");
    let file = dir.join("w.toml");
    std::fs::write(&file, "name = \"sink-check\"\nproducers = 2\nconsumer_groups = 0\nmessage_size = 100\nwarmup_secs = 1\nduration_secs = 2\n").unwrap();
    let json = dir.join("sink.json");
    let output = run(
        &mut moldau(&[
            "bench",
            "--bootstrap",
            &format!("127.0.0.1:{port}"),
            "--workload",
            file.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ]),
        LIMIT,
    );
    let _ = sink.kill();
    let _ = sink.wait();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["workload"]["name"], "sink-check");
    assert_eq!(report["workload"]["producers"], 2);
    assert!(report["produced"]["messages"].as_u64().unwrap() > 1000);
}

#[test]
fn bad_flags_get_a_clear_error() {
    for (args, expect) in [
        (vec!["bench", "--rate", "fast"], "rate \"fast\""),
        (vec!["bench", "--compression", "brotli"], "compression"),
        (vec!["bench", "--workload", "/no/such/file.toml"], "/no/such/file.toml"),
        (vec!["soak", "--kill-every", "5-15"], "--spawn-broker"),
        (vec!["soak", "--nodes", "3"], "--spawn-broker"),
        (vec!["soak", "--message-size", "4"], "message-size"),
        (vec!["bench", "--partitions", "lots"], "invalid value"),
    ] {
        let output = run(&mut moldau(&args), Duration::from_secs(30));
        assert!(!output.status.success(), "{args:?} should fail");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
    }
}

fn soak(args: &[&str], json: &std::path::Path) -> (std::process::Output, serde_json::Value) {
    let mut full = vec!["soak", "--spawn-broker", "--json", json.to_str().unwrap()];
    full.extend_from_slice(args);
    let output = run(&mut moldau(&full), LIMIT);
    let report = serde_json::from_str(
        &std::fs::read_to_string(json)
            .unwrap_or_else(|_| panic!("no report; stderr:\n{}", String::from_utf8_lossy(&output.stderr))),
    )
    .unwrap();
    (output, report)
}

/// Every group of a soak report saw every acknowledged record, uncorrupted and in order.
fn every_group_saw_everything(report: &serde_json::Value) {
    for group in report["groups"].as_array().unwrap() {
        assert_eq!(group["lost"], 0, "{group}");
        assert_eq!(group["corrupted"], 0, "{group}");
        assert_eq!(group["out_of_order"], 0, "{group}");
    }
}

#[test]
fn soak_with_broker_restarts_loses_nothing() {
    let dir = TempDir::new("soak");
    let (output, report) = soak(
        &["--duration", "45", "--kill-every", "8-14", "--report-every", "15", "--rate", "3000"],
        &dir.join("soak.json"),
    );
    assert!(output.status.success(), "{}\n{}", stdout(&output), String::from_utf8_lossy(&output.stderr));
    assert_eq!(report["passed"], true);
    assert!(report["broker_kills"].as_u64().unwrap() >= 2, "{report}");
    assert!(report["acknowledged"].as_u64().unwrap() > 50_000, "{report}");
    every_group_saw_everything(&report);
}

#[test]
fn soak_on_three_nodes_with_leader_kills_loses_nothing() {
    let dir = TempDir::new("soak-cluster");
    let (output, report) = soak(
        &["--nodes", "3", "--duration", "20", "--kill-every", "4-6", "--report-every", "5", "--rate", "1000"],
        &dir.join("soak.json"),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{}\n{stderr}", stdout(&output));
    assert!(stderr.contains("3 nodes, replication factor 3"), "{stderr}");
    assert!(stderr.contains("(leader of partition"), "the soak kills partition leaders: {stderr}");
    assert_eq!(report["passed"], true);
    assert!(report["broker_kills"].as_u64().unwrap() >= 2, "{report}");
    assert!(report["acknowledged"].as_u64().unwrap() > 10_000, "{report}");
    every_group_saw_everything(&report);
}

#[test]
fn soak_detects_an_injected_loss_and_an_injected_duplicate() {
    let dir = TempDir::new("soak-inject");
    let (output, report) = soak(&["--duration", "5", "--inject-loss", "1"], &dir.join("loss.json"));
    assert_eq!(output.status.code(), Some(3), "a lost record fails the run");
    assert!(stdout(&output).contains("FAILED"));
    assert_eq!(report["passed"], false);
    assert!(report["groups"].as_array().unwrap().iter().all(|g| g["lost"] == 1), "{report}");

    let (output, report) = soak(&["--duration", "5", "--inject-duplicate", "2"], &dir.join("dup.json"));
    assert!(output.status.success(), "duplicates are reported, not fatal");
    assert!(report["groups"].as_array().unwrap().iter().all(|g| g["duplicated"] == 2), "{report}");
}

#[test]
fn tuning_check_reports_and_apply_only_prints_without_the_flag() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let check = run_ok(
        Command::new(root.join("tuning/check.sh")).args(["--data-dir", env!("CARGO_TARGET_TMPDIR")]),
        "check.sh",
        LIMIT,
    );
    let text = stdout(&check);
    for setting in [
        "vm.swappiness",
        "net.core.somaxconn",
        "cpu frequency governor",
        "disk scheduler",
        "transparent huge pages",
        "locked memory",
    ] {
        assert!(text.contains(setting), "check.sh reports {setting}:\n{text}");
    }
    assert!(
        text.lines()
            .skip(1)
            .filter(|l| !l.is_empty() && !l.starts_with("cores") && !l.contains("setting(s)"))
            .all(|l| { l.ends_with("ok") || l.ends_with("CHANGE") || l.contains("n/a") })
    );
    let before = std::fs::read_to_string("/proc/sys/vm/swappiness").unwrap();
    let dry = run_ok(
        Command::new(root.join("tuning/apply.sh")).args(["--data-dir", env!("CARGO_TARGET_TMPDIR")]),
        "apply.sh",
        LIMIT,
    );
    let text = stdout(&dry);
    assert!(text.contains("dry run") || text.contains("nothing to change"), "{text}");
    assert_eq!(std::fs::read_to_string("/proc/sys/vm/swappiness").unwrap(), before, "a dry run changes nothing");
    let bad = run(Command::new(root.join("tuning/apply.sh")).arg("--frobnicate"), LIMIT);
    assert_eq!(bad.status.code(), Some(2));
}
