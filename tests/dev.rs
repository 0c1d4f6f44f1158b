//! `rowgate dev`, as the README's first command runs it: the real binary
//! starts a throwaway PostgreSQL and the proxy, and the psql commands it
//! prints show each demo user only their own rows.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn rowgate_dev_prints_commands_that_show_each_user_their_own_rows() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rowgate"))
        .args(["dev", "--port", "0", "--http-port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("rowgate dev starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut port = None;
    let mut commands = Vec::new();
    let mut example = None;
    while let Some(Ok(line)) = lines.next() {
        if let Some(rest) = line.strip_prefix("rowgate is running on 127.0.0.1:") {
            port = rest.split(',').next().and_then(|p| p.parse::<u16>().ok());
        }
        if line.trim_start().starts_with("PGPASSWORD=") {
            commands.push(line.trim().to_string());
        }
        if line.trim_start().starts_with("ROWGATE_HTTP=") {
            example = Some(line.trim().to_string());
        }
        if line.starts_with("Ctrl-C") {
            break;
        }
    }
    let port = port.expect("the address is printed");
    assert_eq!(commands.len(), 2, "one command per demo user");
    let mut outputs = Vec::new();
    for command in &commands {
        // PGPASSWORD='token' psql "conninfo" -c "sql"
        let token = command.split('\'').nth(1).unwrap();
        let conninfo = command.split('"').nth(1).unwrap();
        assert!(conninfo.contains(&format!("port={port}")));
        let sql = command.split('"').nth(3).unwrap();
        let out = support::psql(conninfo, token, sql);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        outputs.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    // The Drizzle example, as printed: both Neon driver modes, both users.
    let example = example.expect("the example command is printed");
    let root = env!("CARGO_MANIFEST_DIR");
    if !std::path::Path::new(root)
        .join("examples/nextjs-drizzle/node_modules/drizzle-orm")
        .is_dir()
    {
        panic!("examples/nextjs-drizzle has no node_modules: run scripts/ensure-deps.sh");
    }
    let run = Command::new("sh")
        .arg("-c")
        .arg(&example)
        .current_dir(root)
        .output()
        .expect("sh runs the example");
    let printed = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{printed}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        printed.contains("each user saw only their own quote, in both modes"),
        "{printed}"
    );
    assert!(!printed.contains("FAIL"), "{printed}");
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "rowgate dev exits cleanly on Ctrl-C: {status}"
    );
    assert_eq!(
        outputs[0],
        "user_alice|Hello from Alice\nuser_alice|Alice again"
    );
    assert_eq!(outputs[1], "user_bob|Hi, this is Bob");
}
