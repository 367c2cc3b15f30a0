//! TLS and logins: the engine connects to Mosquitto over TLS (its CA, a client certificate) with a
//! password from a file or the environment; a wrong password or an untrusted certificate is named as
//! such and retried with backoff; the embedded broker can require a login; and no password ever
//! reaches the log, even at trace level.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rumqttc::QoS;

use crate::support::mosquitto::Mosquitto;
use crate::support::{Client, Process, Setup, count, eventually, free_port};

const WAIT: Duration = Duration::from_secs(30);
const PASSWORD: &str = "correct-horse-battery-staple";
const WRONG_PASSWORD: &str = "wrong-horse-0b5cure";

/// A CA and what it signed, written as PEM files.
struct Pki {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let ca_pem = params.self_signed(&key).unwrap().pem();
        Pki {
            issuer: Issuer::new(params, key),
            ca_pem,
        }
    }

    /// Writes `NAME.pem` and `NAME.key` (a v3 certificate for 127.0.0.1 and localhost) into `dir`.
    fn issue(&self, dir: &Path, name: &str) {
        let mut params = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
}

/// Mosquitto with a TLS listener that wants a client certificate and a login (returned port), next to
/// a plain anonymous listener (its `port`) through which the test publishes and probes.
async fn tls_broker(pki: &Pki) -> Option<(Mosquitto, u16)> {
    let tls_port = free_port();
    let broker = Mosquitto::start_custom(|port, dir| {
        std::fs::write(dir.join("ca.pem"), &pki.ca_pem).unwrap();
        pki.issue(dir, "server");
        let passwd = dir.join("passwd");
        let made = Command::new("mosquitto_passwd")
            .args(["-c", "-b"])
            .arg(&passwd)
            .args(["alice", PASSWORD])
            .output()
            .expect("run mosquitto_passwd (installed with mosquitto)");
        assert!(made.status.success(), "{made:?}");
        let d = dir.display();
        format!(
            "per_listener_settings true\n\
             listener {port} 127.0.0.1\nallow_anonymous true\n\
             listener {tls_port} 127.0.0.1\nallow_anonymous false\npassword_file {d}/passwd\n\
             cafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\nrequire_certificate true\n"
        )
    })
    .await?;
    Some((broker, tls_port))
}

/// An engine setup for the TLS listener; `ca` is the CA file it trusts, `password` what it logs in with.
fn tls_setup(broker: &Mosquitto, tls_port: u16, client: &Pki, ca_pem: &str, password: &str) -> Setup {
    let mut setup = Setup::external(tls_port);
    let dir = setup.dir.path();
    std::fs::write(dir.join("ca.pem"), ca_pem).unwrap();
    client.issue(dir, "client");
    std::fs::write(dir.join("mqtt.pass"), format!("{password}\n")).unwrap();
    setup.mqtt_options = "  username: alice\n  password_file: mqtt.pass\n  tls:\n    ca: ca.pem\n    cert: client.pem\n    key: client.key\n".into();
    setup.probe_port = Some(broker.port);
    // Everything every crate logs, so that a password in any of it would be seen.
    setup.log_level = Some("trace".into());
    setup
}

fn read_log(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

async fn log_line(log: &Path, what: &str) -> String {
    eventually(&format!("`{what}` in the log"), WAIT, || async {
        read_log(log)
            .lines()
            .find(|l| l.contains(what))
            .map(str::to_string)
    })
    .await
}

fn assert_no_password(log: &Path) {
    let text = read_log(log);
    for secret in [PASSWORD, WRONG_PASSWORD] {
        assert!(!text.contains(secret), "the log shows a password");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_client_certificate_and_a_password_file_stores_messages() {
    let pki = Pki::new("home CA");
    let Some((broker, tls_port)) = tls_broker(&pki).await else {
        return;
    };
    let setup = tls_setup(&broker, tls_port, &pki, &pki.ca_pem, PASSWORD);
    let log = setup.dir.path().join("engine.log");
    let engine = Process::start_logged(&setup, &log).await;
    let client = Client::connect(broker.port, "plain").await;
    client.publish("secure/in", "1", QoS::AtLeastOnce, false).await;
    let db = setup.db_path();
    eventually("the message stored", WAIT, || async {
        (count(&db, "SELECT count(*) FROM messages WHERE topic = 'secure/in'").await == 1).then_some(())
    })
    .await;
    engine.signal("TERM");
    assert_eq!(engine.wait().await, Some(0));
    assert!(read_log(&log).contains("ingest connection up"));
    assert_no_password(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_from_the_environment_is_named_retried_and_never_logged() {
    let pki = Pki::new("home CA");
    let Some((broker, tls_port)) = tls_broker(&pki).await else {
        return;
    };
    let mut setup = tls_setup(&broker, tls_port, &pki, &pki.ca_pem, PASSWORD);
    setup.mqtt_options = setup
        .mqtt_options
        .replace("password_file: mqtt.pass", "password_env: HW_TEST_MQTT_PASSWORD");
    setup.env = vec![("HW_TEST_MQTT_PASSWORD".into(), WRONG_PASSWORD.into())];
    let log = setup.dir.path().join("engine.log");
    let engine = Process::spawn(&setup, Some(&log));
    // Found by its advice: at trace level other lines say "refused" too (the outbox_refused table's SQL).
    let refused = log_line(&log, "check mqtt.username").await;
    eprintln!("wrong password: {refused}");
    assert!(refused.contains("refused"), "{refused}");
    // Retried with backoff: the same failure again, logged at debug level only.
    log_line(&log, "retrying in 1s").await;
    engine.signal("TERM");
    assert_eq!(engine.wait().await, Some(0));
    let text = read_log(&log);
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("WARN") && l.contains("ingest connection"))
            .count(),
        1,
        "the failure is logged once:\n{text}"
    );
    assert_no_password(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_broker_certificate_is_named_and_retried() {
    let pki = Pki::new("home CA");
    let Some((broker, tls_port)) = tls_broker(&pki).await else {
        return;
    };
    let stranger = Pki::new("some other CA");
    let setup = tls_setup(&broker, tls_port, &pki, &stranger.ca_pem, PASSWORD);
    let log = setup.dir.path().join("engine.log");
    let engine = Process::spawn(&setup, Some(&log));
    let untrusted = log_line(&log, "is not trusted").await;
    eprintln!("untrusted certificate: {untrusted}");
    assert!(untrusted.contains("mqtt.tls.ca"), "{untrusted}");
    log_line(&log, "retrying in 1s").await;
    engine.signal("TERM");
    assert_eq!(engine.wait().await, Some(0));
    assert_no_password(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_broker_requires_the_configured_login() {
    let mut setup = Setup::embedded();
    std::fs::write(setup.dir.path().join("mqtt.pass"), PASSWORD).unwrap();
    setup.mqtt_options = "  username: alice\n  password_file: mqtt.pass\n".into();
    setup.probe_login = Some(("alice".into(), PASSWORD.into()));
    setup.log_level = Some("trace".into());
    let log = setup.dir.path().join("engine.log");
    let engine = Process::start_logged(&setup, &log).await;

    let intruder = Client::connect_with(setup.port, "intruder", Some(("alice", WRONG_PASSWORD))).await;
    intruder
        .publish("door/unlock", "intruder", QoS::AtLeastOnce, false)
        .await;
    let anonymous = Client::connect(setup.port, "anonymous").await;
    anonymous
        .publish("door/unlock", "anonymous", QoS::AtLeastOnce, false)
        .await;
    let owner = Client::connect_with(setup.port, "owner", Some(("alice", PASSWORD))).await;
    owner
        .publish("door/unlock", "owner", QoS::AtLeastOnce, false)
        .await;
    let db = setup.db_path();
    eventually("the owner's message stored", WAIT, || async {
        (count(&db, "SELECT count(*) FROM messages WHERE topic = 'door/unlock'").await >= 1).then_some(())
    })
    .await;
    // The refused clients keep retrying in the background; by now they have tried more than once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    engine.signal("TERM");
    assert_eq!(engine.wait().await, Some(0));
    let stored = crate::support::query(&db, "SELECT payload FROM messages WHERE topic = 'door/unlock'").await;
    assert_eq!(stored.rows.len(), 1, "only the owner got in: {stored:?}");
    assert_no_password(&log);
}

/// The embedded broker answers a wrong password with a CONNACK that says so, and the engine says what to
/// check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_for_the_embedded_broker_is_reported_as_a_login_problem() {
    let mut home = Setup::embedded();
    std::fs::write(home.dir.path().join("mqtt.pass"), PASSWORD).unwrap();
    home.mqtt_options = "  username: alice\n  password_file: mqtt.pass\n".into();
    home.probe_login = Some(("alice".into(), PASSWORD.into()));
    let home_log = home.dir.path().join("engine.log");
    let broker = Process::start_logged(&home, &home_log).await;

    let mut guest = Setup::external(home.port);
    guest.client_id = "guest".into();
    guest.mqtt_options = "  username: alice\n  password_env: HW_TEST_GUEST_PASSWORD\n".into();
    guest.env = vec![("HW_TEST_GUEST_PASSWORD".into(), WRONG_PASSWORD.into())];
    guest.log_level = Some("trace".into());
    let log = guest.dir.path().join("engine.log");
    let engine = Process::spawn(&guest, Some(&log));
    let refused = log_line(&log, "refused our username or password").await;
    assert!(
        refused.contains("check mqtt.username and mqtt.password"),
        "{refused}"
    );
    engine.signal("TERM");
    assert_eq!(engine.wait().await, Some(0));
    broker.signal("TERM");
    assert_eq!(broker.wait().await, Some(0));
    assert_no_password(&log);
    assert_no_password(&home_log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_on_one_side_only_is_named_as_such() {
    let pki = Pki::new("home CA");
    let Some((broker, tls_port)) = tls_broker(&pki).await else {
        return;
    };
    // TLS configured, but the port is the broker's plain listener.
    let to_plain = tls_setup(&broker, broker.port, &pki, &pki.ca_pem, PASSWORD);
    let log = to_plain.dir.path().join("engine.log");
    let engine = Process::spawn(&to_plain, Some(&log));
    let said = log_line(&log, "TLS is on one side only").await;
    eprintln!("TLS to a plain port: {said}");
    assert!(said.contains("mqtt.port") && said.contains("mqtt.tls"), "{said}");
    engine.signal("TERM");
    assert_eq!(engine.wait().await, Some(0));

    // No TLS configured, but the port is the broker's TLS listener.
    let mut to_tls = Setup::external(tls_port);
    to_tls.log_level = Some("debug".into());
    let log = to_tls.dir.path().join("engine.log");
    let engine = Process::spawn(&to_tls, Some(&log));
    let said = log_line(&log, "TLS is on one side only").await;
    eprintln!("plain MQTT to a TLS port: {said}");
    assert!(said.contains("mqtt.tls") && said.contains("mqtt.port"), "{said}");
    engine.signal("TERM");
    assert_eq!(engine.wait().await, Some(0));
}

#[test]
fn tls_settings_are_checked_when_the_config_is_loaded() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), "not a certificate").unwrap();
    std::fs::write(dir.path().join("client.pem"), Pki::new("x").ca_pem).unwrap();
    let config = dir.path().join("homewright.yaml");
    std::fs::write(
        &config,
        "broker: { embedded: false }\nmqtt:\n  tls:\n    ca: ca.pem\n    cert: client.pem\n",
    )
    .unwrap();
    let error = homewright::config::load(&config).unwrap_err().to_string();
    assert!(
        error.contains("mqtt.tls.ca:") && error.contains("holds no PEM `CERTIFICATE` block"),
        "{error}"
    );
    assert!(error.contains("mqtt.tls.key: missing"), "{error}");
}

/// A config holding the password that every user can read is named in the log with the fix. The
/// history the engine creates is readable by owner and group only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readable_password_is_warned_about_and_the_history_is_created_0640() {
    use std::os::unix::fs::PermissionsExt;

    let mut setup = Setup::embedded();
    setup.mqtt_options = format!("  username: alice\n  password: {PASSWORD}\n");
    setup.probe_login = Some(("alice".into(), PASSWORD.into()));
    let config = setup.write_config();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let log = setup.dir.path().join("engine.log");
    let engine = Process::start_logged(&setup, &log).await;
    engine.signal("TERM");
    assert_eq!(engine.wait().await, Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(
            "holds the MQTT password and every user of this machine can read it (mode 644): run `chmod o-r"
        ),
        "{text}"
    );
    assert_no_password(&log);
    let mode = std::fs::metadata(setup.db_path()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o640, "history.db mode {:o}", mode & 0o777);
}
