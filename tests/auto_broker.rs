//! `broker.embedded: auto`: the engine uses the broker that answers at `mqtt.host:mqtt.port`, starts its
//! own only when nothing listens there, and stops with the setting to change when what listens is not
//! an MQTT broker or refuses the engine's login.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::mosquitto::Mosquitto;
use crate::support::{Process, Setup, free_port, homewright_command};

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Runs `homewright run` on `setup`'s config to its end; returns its exit code and its log.
fn run_to_exit(setup: &Setup) -> (Option<i32>, String) {
    let config = setup.write_config();
    let output = homewright_command()
        .args(["run", "-c"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .output()
        .expect("run homewright");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_uses_a_broker_that_already_listens() {
    let Some(mosquitto) = Mosquitto::start().await else {
        return;
    };
    let setup = Setup::auto(mosquitto.port);
    let log = setup.dir.path().join("engine.log");
    // Ready means a message published to Mosquitto was stored.
    let engine = Process::start_logged(&setup, &log).await;
    let text = read(&log);
    let said = format!(
        "using the MQTT broker that answers at 127.0.0.1:{} (broker.embedded: auto)",
        mosquitto.port
    );
    assert_eq!(text.matches(&said).count(), 1, "{text}");
    assert!(!text.contains("embedded MQTT broker"), "{text}");
    assert!(
        !setup.dir.path().join("broker").exists(),
        "no embedded broker was started"
    );
    engine.signal("INT");
    assert_eq!(engine.wait().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_starts_the_embedded_broker_when_nothing_listens() {
    let port = free_port();
    let setup = Setup::auto(port);
    let log = setup.dir.path().join("engine.log");
    let engine = Process::start_logged(&setup, &log).await;
    let text = read(&log);
    assert!(
        text.contains(&format!(
            "nothing listens on 127.0.0.1:{port}: started the embedded MQTT broker on 127.0.0.1:{port}"
        )),
        "{text}"
    );
    engine.signal("INT");
    assert_eq!(engine.wait().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_stops_with_the_setting_to_change_when_what_listens_is_not_mqtt() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // A web server where the broker was expected.
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut request = [0u8; 256];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let setup = Setup::auto(port);
    let (code, log) = run_to_exit(&setup);
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains(&format!(
            "something that is not an MQTT broker listens on 127.0.0.1:{port} (mqtt.host, mqtt.port)"
        )) && log.contains("it answered an MQTT CONNECT with \"HTTP/1.1 400 Bad Request\""),
        "{log}"
    );
    assert!(!setup.db_path().exists(), "nothing started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_stops_with_the_setting_to_change_when_the_broker_refuses_our_login() {
    let Some(mosquitto) = Mosquitto::start_custom(|port, dir| {
        let passwd = dir.join("passwd");
        let made = Command::new("mosquitto_passwd")
            .args(["-c", "-b"])
            .arg(&passwd)
            .args(["alice", "right-password"])
            .output()
            .expect("run mosquitto_passwd (installed with mosquitto)");
        assert!(made.status.success(), "{made:?}");
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n",
            passwd.display()
        )
    })
    .await
    else {
        return;
    };
    let mut setup = Setup::auto(mosquitto.port);
    setup.mqtt_options = "  username: alice\n  password: wrong-password\n".into();
    let (code, log) = run_to_exit(&setup);
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains(&format!(
            "the MQTT broker at 127.0.0.1:{} refused our login (not authorized: a wrong username or password",
            mosquitto.port
        )) && log.contains("Set mqtt.username and a password"),
        "{log}"
    );
    assert!(!log.contains("wrong-password"), "the log shows the password");

    // With no login at all, the same refusal.
    setup.mqtt_options = String::new();
    let (code, log) = run_to_exit(&setup);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("refused our login (not authorized"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_does_not_open_an_embedded_broker_to_the_network_without_a_login() {
    let port = free_port();
    let setup = Setup::auto(port);
    let config = setup.write_config();
    let text = read(&config).replace(
        &format!("listen: 127.0.0.1:{port}"),
        &format!("listen: 0.0.0.0:{port}"),
    );
    std::fs::write(&config, text).unwrap();
    let output = homewright_command()
        .args(["run", "-c"])
        .arg(&config)
        .output()
        .expect("run homewright");
    let log = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{log}");
    assert!(
        log.contains(&format!(
            "the embedded broker would listen on 0.0.0.0:{port}, which other machines can reach, without a login: set mqtt.username and a password"
        )),
        "{log}"
    );
    assert!(
        std::net::TcpStream::connect_timeout(
            &format!("127.0.0.1:{port}").parse().unwrap(),
            Duration::from_millis(500)
        )
        .is_err(),
        "nothing listens"
    );
}
