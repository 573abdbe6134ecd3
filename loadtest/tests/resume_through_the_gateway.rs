//! `tickgate-loadtest run --resume-share` against the real gateway: clients dropped during the
//! window come back with `resume`, and every resumed stream goes on with no seq missing or
//! repeated (or an announced gap); the table, the sentence and the JSON say how the resumes went.

use std::process::Command;

use tickgate_testkit::start_gateway;

const BIN: &str = env!("CARGO_BIN_EXE_tickgate-loadtest");

#[test]
fn clients_dropped_in_the_window_resume_and_the_run_passes() {
    let gateway = start_gateway(|c| {
        c.sim.rate = 400.0;
        c.sim.activity = tickgate_feed::sim::Activity::Uniform;
        c.server.reactors = 2;
    });
    let out = std::env::temp_dir().join(format!("tickgate-loadtest-resume-{}", std::process::id()));
    let output = Command::new(BIN)
        .args(["run", "--addr", &gateway.local_addr().to_string(), "-n", "20", "-k", "5", "-s", "50"])
        .args(["--warmup", "1", "--duration", "3", "--drain", "3", "--quiet", "--p99-bound-ms", "5000"])
        .args(["--resume-share", "0.2", "--resume-every", "0.5", "--name", "resume", "--out"])
        .arg(&out)
        .output()
        .expect("tickgate-loadtest runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(text.contains("resumed w/g/f"), "{text}");
    assert!(text.contains("verdict: PASSED.") && text.contains(" reconnects resumed "), "{text}");

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("resume.json")).unwrap()).unwrap();
    let resume = &json["steps"][0]["result"]["resume"];
    let n = |key: &str| resume[key].as_u64().unwrap_or_else(|| panic!("{key} in {resume}"));
    // Rounds at 0.5 s to 3 s of the window, 4 clients each, 5 symbols each.
    assert!(n("reconnects") >= 20, "{resume}");
    assert_eq!(n("asked") + n("fresh"), 5 * n("reconnects"), "{resume}");
    assert!(n("asked") > 0, "{resume}");
    assert_eq!(n("whole") + n("with_gap"), n("asked"), "{resume}");
    assert_eq!((n("failed"), n("reconnect_failed")), (0, 0), "{resume}");
    // 400 ticks/s over 50 symbols and a reconnect of milliseconds: the history holds them.
    assert_eq!(n("with_gap"), 0, "{resume}");
    let _ = std::fs::remove_dir_all(&out);
    gateway.shutdown();
}
