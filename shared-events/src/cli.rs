//! Command lines a person can read: the check every binary's settings test makes, that
//! `--help` describes each option (a clap doc comment on every field).
#![cfg(feature = "kafka")]

/// Panics, naming them, when an option of `cmd` (or of one of its subcommands) has no
/// description, or when a command has no `about` line. Clap's built-in `help` and
/// `version` are skipped. Call it in a settings module's tests with
/// `Settings::command()` (`clap::CommandFactory`).
pub fn assert_every_option_is_described(cmd: clap::Command) {
    let mut missing = Vec::new();
    undescribed(&cmd, cmd.get_name(), &mut missing);
    assert!(
        missing.is_empty(),
        "`{} --help` leaves these undescribed (add a `///` doc comment): {}",
        cmd.get_name(),
        missing.join(", ")
    );
}

fn undescribed(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
    let described = |text: Option<&clap::builder::StyledStr>| {
        text.is_some_and(|text| !text.to_string().trim().is_empty())
    };
    if !described(cmd.get_about()) && !described(cmd.get_long_about()) {
        missing.push(format!("the `about` of `{path}`"));
    }
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if id == "help" || id == "version" {
            continue;
        }
        if !described(arg.get_help()) {
            let mut name = match arg.get_long() {
                Some(long) => format!("--{long}"),
                None => format!("<{id}>"),
            };
            if let Some(env) = arg.get_env() {
                name.push_str(&format!(" ({})", env.to_string_lossy()));
            }
            if path != cmd.get_name() {
                name = format!("{name} of `{path}`");
            }
            missing.push(name);
        }
    }
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        undescribed(sub, &format!("{path} {}", sub.get_name()), missing);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_described_command_passes() {
        let cmd = clap::Command::new("shop")
            .about("A shop.")
            .arg(
                clap::Arg::new("port")
                    .long("port")
                    .help("Port to listen on."),
            )
            .subcommand(
                clap::Command::new("list").about("Lists.").arg(
                    clap::Arg::new("limit")
                        .long("limit")
                        .help("At most this many."),
                ),
            );
        assert_every_option_is_described(cmd);
    }

    #[test]
    fn an_undescribed_option_is_named() {
        let cmd = clap::Command::new("shop")
            .about("A shop.")
            .arg(clap::Arg::new("host").long("host").help("Address."))
            .arg(clap::Arg::new("port").long("port").env("SHOP_PORT"));
        let failure = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            assert_every_option_is_described(cmd)
        }))
        .expect_err("--port has no description");
        let message = failure
            .downcast_ref::<String>()
            .expect("a formatted message");
        assert!(message.contains("--port (SHOP_PORT)"), "{message}");
        assert!(!message.contains("--host"), "{message}");
    }

    #[test]
    fn a_missing_about_and_a_subcommand_option_are_named() {
        let cmd = clap::Command::new("shop").subcommand(
            clap::Command::new("list")
                .about("Lists.")
                .arg(clap::Arg::new("limit").long("limit").help("   ")),
        );
        let failure = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            assert_every_option_is_described(cmd)
        }))
        .expect_err("no about, and --limit is blank");
        let message = failure
            .downcast_ref::<String>()
            .expect("a formatted message");
        assert!(message.contains("the `about` of `shop`"), "{message}");
        assert!(message.contains("--limit of `shop list`"), "{message}");
    }
}
