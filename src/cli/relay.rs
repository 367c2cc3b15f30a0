//! `homewright relay NAME on|off|toggle`: switches a relay through the running service, over MQTT, and
//! prints the state the service reports back on the relay's retained state topic, or why it refused.
//!
//! The command carries the time its sender stops waiting: a broker that keeps it for the service's
//! session while the service is down must not have it switch the relay hours after this command said
//! it failed.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::config::Config;

/// How long to wait for the service to report the relay's state.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// What to do with the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Command {
    On,
    Off,
    Toggle,
}

pub fn relay(config: &Config, name: &str, command: Command) -> anyhow::Result<ExitCode> {
    if config.gpio.relay(name).is_none() {
        let known: Vec<&str> = config.gpio.relays.iter().map(|r| r.name.as_str()).collect();
        anyhow::bail!(
            "there is no relay `{name}` in gpio.relays of {} (known: {})",
            config.source.display(),
            known.join(", ")
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(switch(config, name, command))
}

async fn switch(config: &Config, name: &str, command: Command) -> anyhow::Result<ExitCode> {
    let base = &config.mqtt.base_topic;
    let state_topic = format!("{base}/relay/{name}");
    let mut options = MqttOptions::new(
        format!("{}-cli-{}", config.mqtt.client_id, std::process::id()),
        config.mqtt.host.clone(),
        config.mqtt.port,
    );
    options.set_keep_alive(Duration::from_secs(10));
    if let Some(credentials) = &config.mqtt.credentials {
        options.set_credentials(credentials.username.clone(), credentials.password.expose());
    }
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    let op = match command {
        Command::On => "ON",
        Command::Off => "OFF",
        Command::Toggle => "TOGGLE",
    };
    let refused_topic = format!("{state_topic}/refused");
    let waiting = async {
        let mut sent = false;
        let mut subscribed = 0;
        loop {
            match eventloop.poll().await.with_context(|| {
                format!(
                    "cannot reach the broker at {}:{}",
                    config.mqtt.host, config.mqtt.port
                )
            })? {
                Event::Incoming(Packet::ConnAck(_)) => {
                    client.try_subscribe(&state_topic, QoS::AtLeastOnce)?;
                    client.try_subscribe(&refused_topic, QoS::AtLeastOnce)?;
                }
                // Retained state first, then our command: the answer is the next state after it.
                Event::Incoming(Packet::SubAck(_)) if !sent => {
                    subscribed += 1;
                    if subscribed < 2 {
                        continue;
                    }
                    let expires = crate::event::now_millis() + ANSWER_TIMEOUT.as_millis() as i64;
                    let payload = serde_json::json!({ "state": op, "expires": expires }).to_string();
                    client.try_publish(
                        format!("{base}/cli/relay/{name}/set"),
                        QoS::AtLeastOnce,
                        false,
                        payload,
                    )?;
                    sent = true;
                }
                Event::Incoming(Packet::Publish(p)) if sent && p.topic == refused_topic => {
                    return anyhow::Ok(Answer::Refused(String::from_utf8_lossy(&p.payload).into_owned()));
                }
                Event::Incoming(Packet::Publish(p)) if sent && p.topic == state_topic && !p.retain => {
                    return anyhow::Ok(Answer::State(String::from_utf8_lossy(&p.payload).into_owned()));
                }
                _ => {}
            }
        }
    };
    match tokio::time::timeout(ANSWER_TIMEOUT, waiting).await {
        Ok(answer) => match answer? {
            Answer::State(state) => {
                println!("{name} is {state}");
                Ok(ExitCode::SUCCESS)
            }
            Answer::Refused(why) => {
                eprintln!("error: {why}");
                Ok(ExitCode::FAILURE)
            }
        },
        Err(_) => {
            eprintln!(
                "error: no answer about {name} within {ANSWER_TIMEOUT:?}: is `homewright run` running? \
                 The command expires now, so {name} will not switch later."
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

/// What the service said about the command.
enum Answer {
    /// The relay's state after it (`ON`, `OFF`).
    State(String),
    /// Why it did not switch (an interlock).
    Refused(String),
}
