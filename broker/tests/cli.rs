//! The `hermod` binary refuses bad configuration with a message naming the
//! setting, and exits non-zero without starting.

use std::process::Command;

fn hermod() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hermod"))
}

#[test]
fn help_lists_the_commands() {
    let output = hermod().arg("--help").output().expect("hermod runs");
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    for command in ["serve", "pub", "sub", "topic", "subscription"] {
        assert!(
            text.contains(command),
            "--help does not mention {command}: {text}"
        );
    }
}

#[test]
fn a_bad_log_format_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = hermod()
        .args(["serve", "--log-format", "xml", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("hermod runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("log_format"), "stderr: {stderr}");
}

#[test]
fn an_unknown_config_key_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("hermod.toml");
    std::fs::write(&file, "listen_address = \"127.0.0.1:1\"\n").expect("config written");
    let output = hermod()
        .args(["serve", "--config"])
        .arg(&file)
        .output()
        .expect("hermod runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("listen_address"), "stderr: {stderr}");
}
