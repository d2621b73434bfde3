//! The `lakestream` binary: one process that serves everything, plus commands for people.

mod consume;
// `gen` is a reserved word in edition 2024.
#[path = "gen.rs"]
mod generate;
mod groups;
mod http;
mod limits;
mod produce;
mod serve;
mod shared;
mod sql_cli;
mod topics;

#[global_allocator]
static ALLOCATOR: broker::alloc::LazyLargeAllocator = broker::alloc::LazyLargeAllocator;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "lakestream",
    version,
    about = "A streaming data lake that speaks Kafka"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker (Kafka wire protocol) with its storage.
    Serve(Box<serve::ServeArgs>),
    /// Create, list, describe, alter and delete topics.
    Topics(topics::TopicsArgs),
    /// Write records to a topic, from flags or one per stdin line.
    Produce(produce::ProduceArgs),
    /// Print the records of a topic, one line each.
    Consume(consume::ConsumeArgs),
    /// List, describe, reset the offsets of and delete consumer groups.
    Groups(groups::GroupsArgs),
    /// Run a SQL statement on a running server; every topic is a table.
    Sql(sql_cli::SqlArgs),
    /// Generate sample data into a topic, e.g. `gen iot --topic iot --rate 1000`.
    Gen(generate::GenArgs),
}

fn main() -> anyhow::Result<()> {
    broker::alloc::configure();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve::run(*args),
        Command::Topics(args) => report(topics::run(args)),
        Command::Produce(args) => report(produce::run(args)),
        Command::Consume(args) => report(consume::run(args)),
        Command::Groups(args) => report(groups::run(args)),
        Command::Sql(args) => report(sql_cli::run(args)),
        Command::Gen(args) => report(generate::run(args)),
    }
}

/// Prints a people-facing command's error as `lakestream: what went wrong` (then any hint
/// lines) and exits with status 1.
fn report(result: anyhow::Result<()>) -> anyhow::Result<()> {
    if let Err(error) = result {
        eprintln!("lakestream: {error:#}");
        std::process::exit(1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("lakestream").chain(args.iter().copied()))
            .map(|cli| cli.command)
    }

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn topics_commands() {
        let Ok(Command::Topics(args)) = parse(&[
            "topics",
            "create",
            "orders",
            "--partitions",
            "3",
            "--config",
            "retention.ms=1000",
            "--config",
            "cleanup.policy=compact",
            "--bootstrap",
            "127.0.0.1:1234",
        ]) else {
            panic!("topics create did not parse");
        };
        assert_eq!(args.bootstrap.bootstrap, "127.0.0.1:1234");
        assert_eq!(
            args.command,
            topics::TopicsCommand::Create {
                topic: "orders".into(),
                partitions: 3,
                replication_factor: 1,
                configs: vec![
                    ("retention.ms".into(), "1000".into()),
                    ("cleanup.policy".into(), "compact".into())
                ],
            }
        );
        let Ok(Command::Topics(args)) = parse(&["topics", "--bootstrap", "h:1", "list"]) else {
            panic!("topics list did not parse");
        };
        assert_eq!(args.bootstrap.bootstrap, "h:1");
        let Ok(Command::Topics(args)) =
            parse(&["topics", "alter", "t", "--delete-config", "retention.ms"])
        else {
            panic!("topics alter did not parse");
        };
        assert!(matches!(
            args.command,
            topics::TopicsCommand::Alter { ref delete_configs, .. } if delete_configs == &["retention.ms"]
        ));
        let Ok(Command::Topics(args)) = parse(&["topics", "add-partitions", "t", "--total", "6"])
        else {
            panic!("topics add-partitions did not parse");
        };
        assert_eq!(
            args.command,
            topics::TopicsCommand::AddPartitions {
                topic: "t".into(),
                total: 6
            }
        );

        for bad in [
            &["topics", "alter", "t"][..],
            &["topics", "create", "t", "--partitions", "0"],
            &["topics", "create", "t", "--config", "novalue"],
            &["topics", "add-partitions", "t"],
            &["topics", "describe"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn produce_and_consume_flags() {
        let Ok(Command::Produce(args)) = parse(&[
            "produce",
            "t",
            "--key-separator",
            "\t",
            "--acks",
            "1",
            "--compression",
            "zstd",
            "-H",
            "a=b",
            "--partition",
            "2",
        ]) else {
            panic!("produce did not parse");
        };
        assert_eq!(args.key_separator.as_deref(), Some("\t"));
        assert_eq!(args.acks, client::Acks::Leader);
        assert_eq!(args.compression, produce::CompressionArg::Zstd);
        assert_eq!(args.headers, [("a".to_owned(), "b".to_owned())]);
        assert_eq!(args.partition, Some(2));
        assert!(parse(&["produce", "t", "--compression", "brotli"]).is_err());
        assert!(parse(&["produce", "t", "--acks", "2"]).is_err());

        let Ok(Command::Consume(args)) = parse(&["consume", "t"]) else {
            panic!("consume did not parse");
        };
        assert_eq!(args.from, consume::Start::Earliest);
        assert_eq!(
            args.format,
            consume::Format::parse(consume::DEFAULT_FORMAT).unwrap()
        );
        assert!(!args.exit);
        let Ok(Command::Consume(args)) = parse(&[
            "consume", "t", "--from", "@1000", "--count", "5", "--exit", "-p", "1",
        ]) else {
            panic!("consume with flags did not parse");
        };
        assert_eq!(args.from, consume::Start::Timestamp(1000));
        assert_eq!(
            (args.count, args.exit, args.partition),
            (Some(5), true, Some(1))
        );
        assert!(parse(&["consume", "t", "--format", "%z"]).is_err());
    }

    #[test]
    fn groups_commands() {
        let Ok(Command::Groups(args)) = parse(&["groups", "describe", "app", "--bootstrap", "h:1"])
        else {
            panic!("groups describe did not parse");
        };
        assert_eq!(args.bootstrap.bootstrap, "h:1");
        assert_eq!(
            args.command,
            groups::GroupsCommand::Describe {
                group: "app".into()
            }
        );
        let reset = |extra: &[&str]| {
            let mut argv = vec!["groups", "reset-offsets", "app", "--topic", "orders"];
            argv.extend_from_slice(extra);
            match parse(&argv) {
                Ok(Command::Groups(groups::GroupsArgs {
                    command: groups::GroupsCommand::ResetOffsets(reset),
                    ..
                })) => Ok(reset),
                Ok(_) => panic!("{argv:?} parsed as another command"),
                Err(e) => Err(e),
            }
        };
        let args = reset(&["--to-earliest"]).unwrap();
        assert_eq!(args.target(), groups::ResetTarget::Earliest);
        assert!(args.partitions.is_empty() && !args.dry_run);
        let args = reset(&[
            "--to-offset",
            "5",
            "-p",
            "0",
            "--partition",
            "2",
            "--dry-run",
        ])
        .unwrap();
        assert_eq!(args.target(), groups::ResetTarget::Offset(5));
        assert_eq!(
            (args.partitions.as_slice(), args.dry_run),
            (&[0, 2][..], true)
        );
        let args = reset(&["--to-datetime", "1970-01-01T00:00:01Z"]).unwrap();
        assert_eq!(args.target(), groups::ResetTarget::Time(1000));
        assert_eq!(
            reset(&["--to-latest"]).unwrap().target(),
            groups::ResetTarget::Latest
        );
        for bad in [
            &[][..],
            &["--to-earliest", "--to-latest"],
            &["--to-offset", "-1"],
            &["--to-datetime", "tomorrow"],
            &["--to-earliest", "--partition", "-1"],
        ] {
            assert!(reset(bad).is_err(), "{bad:?} should not parse");
        }
        assert!(parse(&["groups", "reset-offsets", "app", "--to-earliest"]).is_err());
        assert!(parse(&["groups", "delete"]).is_err());
        assert!(matches!(
            parse(&["groups", "list"]),
            Ok(Command::Groups(groups::GroupsArgs {
                command: groups::GroupsCommand::List,
                ..
            }))
        ));
    }
}
