//! `sluice serve` says what it is running on, and stops cleanly on SIGTERM.

mod support;

use support::Broker;

#[test]
fn banner_names_version_listener_data_reactors_and_backend() {
    let broker = Broker::start(&["sluice.reactors=2"]);
    let banner = broker.banner.join("\n");
    assert!(
        banner.contains(&format!("sluice {}", env!("CARGO_PKG_VERSION"))),
        "{banner}"
    );
    assert!(banner.contains("data directory:"), "{banner}");
    assert!(banner.contains("reactors:       2"), "{banner}");
    assert!(
        banner.contains("I/O backend:    io_uring")
            || banner.contains("I/O backend:    epoll fallback ("),
        "{banner}"
    );
    assert!(
        banner.contains(&format!("listening on:   {}", broker.address)),
        "{banner}"
    );
    let status = broker.stop();
    assert!(status.success(), "exit status {status}");
}

#[test]
fn help_describes_every_property() {
    let output = support::run(
        std::process::Command::new(env!("CARGO_BIN_EXE_sluice")).args(["serve", "--help"]),
    );
    let help = String::from_utf8_lossy(&output);
    for key in sluice_broker::config::KEYS {
        assert!(help.contains(key.name), "serve --help lacks {}", key.name);
    }
    for option in ["--config", "--override", "--log"] {
        assert!(help.contains(option), "serve --help lacks {option}");
    }
}
