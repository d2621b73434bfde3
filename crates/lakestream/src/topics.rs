//! `lakestream topics`: create, list, describe, alter, delete topics and add partitions.

use anyhow::Context;
use client::{
    Client, ConfigEntry, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, Offset, PartitionId, TopicMetadata,
};

use crate::http::TopicInfo;
use crate::shared::{self, BootstrapArgs, explain, parse_key_value, table};

#[derive(clap::Args, Debug, PartialEq)]
pub struct TopicsArgs {
    #[command(subcommand)]
    pub command: TopicsCommand,
    #[command(flatten)]
    pub bootstrap: BootstrapArgs,
}

#[derive(clap::Subcommand, Debug, PartialEq)]
pub enum TopicsCommand {
    /// Create a topic.
    Create {
        topic: String,
        /// How many partitions.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..))]
        partitions: i32,
        /// Copies of each partition; lakestream is a single node, so 1.
        #[arg(long, default_value_t = 1)]
        replication_factor: i16,
        /// A topic config, e.g. retention.ms=86400000; repeatable.
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
    },
    /// List topics and their partition counts.
    List,
    /// Show a topic's partitions, offsets, hot and cold storage, and configs.
    Describe {
        topic: String,
        /// The broker's HTTP endpoint, for the hot/cold storage table.
        #[arg(
            long,
            env = "LAKESTREAM_HTTP_ADDR",
            default_value = "127.0.0.1:8080",
            value_name = "HOST:PORT"
        )]
        http_addr: String,
    },
    /// Set or reset topic configs.
    #[command(group = clap::ArgGroup::new("change").required(true).multiple(true))]
    Alter {
        topic: String,
        /// Set a config, e.g. retention.ms=1000; repeatable.
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value, group = "change")]
        configs: Vec<(String, String)>,
        /// Return a config to its default; repeatable.
        #[arg(long = "delete-config", value_name = "KEY", group = "change")]
        delete_configs: Vec<String>,
    },
    /// Delete a topic and its data.
    Delete { topic: String },
    /// Grow a topic to a total number of partitions.
    AddPartitions {
        topic: String,
        /// The partition count afterwards.
        #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
        total: i32,
    },
}

pub fn run(args: TopicsArgs) -> anyhow::Result<()> {
    shared::runtime()?.block_on(async {
        let mut client = shared::connect(&args.bootstrap).await?;
        match args.command {
            TopicsCommand::Create {
                topic,
                partitions,
                replication_factor,
                configs,
            } => {
                client
                    .create_topic_with_replication_factor(
                        &topic,
                        partitions,
                        replication_factor,
                        &configs,
                    )
                    .await
                    .map_err(|e| explain(e, &topic))?;
                println!("created topic {topic} with {partitions} partitions");
            }
            TopicsCommand::List => {
                let metadata = client.metadata(None).await?;
                print!("{}", format_list(&metadata.topics));
            }
            TopicsCommand::Describe { topic, http_addr } => {
                let mut text = describe(&mut client, &topic).await?;
                let url = format!("http://{http_addr}/v1/topics/{topic}");
                let storage = tokio::task::spawn_blocking(move || fetch_topic_info(&url)).await?;
                match storage {
                    Ok(info) => text.push_str(&format_storage(&info)),
                    Err(error) => text.push_str(&format!(
                        "\nStorage: unknown ({error:#}; pass --http-addr HOST:PORT)\n"
                    )),
                }
                print!("{text}");
            }
            TopicsCommand::Alter {
                topic,
                configs,
                delete_configs,
            } => {
                client
                    .incremental_alter_configs(&topic, &configs, &delete_configs)
                    .await
                    .map_err(|e| explain(e, &topic))?;
                println!("altered the configs of topic {topic}");
            }
            TopicsCommand::Delete { topic } => {
                client
                    .delete_topics(&[&topic])
                    .await
                    .map_err(|e| explain(e, &topic))?;
                println!("deleted topic {topic}");
            }
            TopicsCommand::AddPartitions { topic, total } => {
                client
                    .create_partitions(&topic, total)
                    .await
                    .map_err(|e| explain(e, &topic))?;
                println!("topic {topic} now has {total} partitions");
            }
        }
        Ok(())
    })
}

/// `name<TAB>partitions` per topic, sorted by name.
pub fn format_list(topics: &[TopicMetadata]) -> String {
    let mut topics: Vec<&TopicMetadata> = topics.iter().filter(|t| t.error_code == 0).collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    topics
        .iter()
        .map(|t| format!("{}\t{}\n", t.name, t.partitions.len()))
        .collect()
}

/// The offsets of one partition.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionOffsets {
    pub partition: PartitionId,
    pub log_start_offset: Offset,
    pub high_watermark: Offset,
}

async fn describe(client: &mut Client, topic: &str) -> anyhow::Result<String> {
    let metadata = client
        .topic_metadata(topic)
        .await
        .map_err(|e| explain(e, topic))?;
    let mut offsets = Vec::with_capacity(metadata.partitions.len());
    for partition in &metadata.partitions {
        let partition = partition.partition;
        let context = || format!("looking up the offsets of {topic} partition {partition}");
        let (log_start_offset, _) = client
            .list_offsets(topic, partition, EARLIEST_TIMESTAMP)
            .await
            .with_context(context)?;
        let (high_watermark, _) = client
            .list_offsets(topic, partition, LATEST_TIMESTAMP)
            .await
            .with_context(context)?;
        offsets.push(PartitionOffsets {
            partition,
            log_start_offset,
            high_watermark,
        });
    }
    let configs = client
        .describe_configs(topic)
        .await
        .map_err(|e| explain(e, topic))?;
    Ok(format_describe(&metadata, &offsets, &configs))
}

/// The `topics describe` report: a header line, a partition table, a config table.
pub fn format_describe(
    topic: &TopicMetadata,
    offsets: &[PartitionOffsets],
    configs: &[ConfigEntry],
) -> String {
    let replication_factor = topic.partitions.first().map_or(0, |p| p.replicas.len());
    let mut out = format!(
        "Topic: {}  Partitions: {}  ReplicationFactor: {}\n\n",
        topic.name,
        topic.partitions.len(),
        replication_factor
    );
    let mut partitions = topic.partitions.clone();
    partitions.sort_by_key(|p| p.partition);
    let mut rows = vec![
        [
            "Partition",
            "Leader",
            "Replicas",
            "LogStartOffset",
            "HighWatermark",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for p in &partitions {
        let found = offsets.iter().find(|o| o.partition == p.partition);
        let show = |offset: Option<Offset>| offset.map_or("?".to_owned(), |o| o.to_string());
        rows.push(vec![
            p.partition.to_string(),
            p.leader.to_string(),
            join(&p.replicas),
            show(found.map(|o| o.log_start_offset)),
            show(found.map(|o| o.high_watermark)),
        ]);
    }
    out.push_str(&table(&rows));
    out.push('\n');
    if configs.is_empty() {
        out.push_str("Configs: none\n");
        return out;
    }
    out.push_str("Configs:\n");
    let mut rows = vec![["Name", "Value", "Source"].map(String::from).to_vec()];
    for c in configs {
        let value = if c.is_sensitive {
            "(sensitive)".to_owned()
        } else {
            c.value.clone().unwrap_or_default()
        };
        rows.push(vec![c.name.clone(), value, c.source_name().to_owned()]);
    }
    out.push_str(&table(&rows));
    out
}

fn fetch_topic_info(url: &str) -> anyhow::Result<TopicInfo> {
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(10)))
        .build()
        .new_agent();
    let body = agent
        .get(url)
        .call()
        .with_context(|| format!("GET {url}"))?
        .body_mut()
        .read_to_string()
        .with_context(|| format!("reading {url}"))?;
    serde_json::from_str(&body).with_context(|| format!("{url} answered {body:?}"))
}

/// The hot (local disk) and cold (object store) offset ranges of each partition.
pub fn format_storage(info: &TopicInfo) -> String {
    let mut rows = vec![
        [
            "Partition",
            "Hot",
            "LocalBytes",
            "Cold",
            "Objects",
            "ColdBytes",
            "ToRewrite",
        ]
        .map(String::from)
        .to_vec(),
    ];
    let range = |start: i64, end: i64| {
        if end > start {
            format!("{start}..{end}")
        } else {
            "-".to_owned()
        }
    };
    for p in &info.partitions {
        let cold = if p.cold.loaded {
            range(p.cold.start_offset, p.cold.end_offset)
        } else {
            "(not loaded)".to_owned()
        };
        rows.push(vec![
            p.partition.to_string(),
            range(p.local_start_offset, p.high_watermark),
            p.local_bytes.to_string(),
            cold,
            p.cold.objects.to_string(),
            p.cold.bytes.to_string(),
            p.cold.rewrite_pending.to_string(),
        ]);
    }
    format!(
        "\nStorage (hot: local disk, cold: Parquet in the object store; ranges are start..end):\n{}",
        table(&rows)
    )
}

fn join(nodes: &[i32]) -> String {
    nodes
        .iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use client::PartitionMetadata;

    fn topic(name: &str, partitions: i32) -> TopicMetadata {
        TopicMetadata {
            name: name.to_owned(),
            error_code: 0,
            is_internal: false,
            partitions: (0..partitions)
                .rev()
                .map(|partition| PartitionMetadata {
                    partition,
                    error_code: 0,
                    leader: 0,
                    replicas: vec![0],
                    in_sync_replicas: vec![0],
                })
                .collect(),
        }
    }

    #[test]
    fn list_is_sorted_and_skips_errors() {
        let mut broken = topic("broken", 1);
        broken.error_code = 3;
        let topics = [topic("orders", 3), broken, topic("clicks", 12)];
        assert_eq!(format_list(&topics), "clicks\t12\norders\t3\n");
        assert_eq!(format_list(&[]), "");
    }

    #[test]
    fn describe_shows_partitions_then_configs() {
        let offsets = [
            PartitionOffsets {
                partition: 0,
                log_start_offset: 0,
                high_watermark: 42,
            },
            PartitionOffsets {
                partition: 1,
                log_start_offset: 10,
                high_watermark: 1234,
            },
        ];
        let config = |name: &str, value: &str, source: i8| ConfigEntry {
            name: name.to_owned(),
            value: Some(value.to_owned()),
            read_only: false,
            is_sensitive: false,
            source,
        };
        let configs = [
            config("cleanup.policy", "delete", 5),
            config("retention.ms", "1000", 1),
        ];
        let expect = "\
Topic: orders  Partitions: 2  ReplicationFactor: 1

Partition  Leader  Replicas  LogStartOffset  HighWatermark
0          0       0         0               42
1          0       0         10              1234

Configs:
Name            Value   Source
cleanup.policy  delete  default
retention.ms    1000    topic
";
        assert_eq!(
            format_describe(&topic("orders", 2), &offsets, &configs),
            expect
        );
        let storage = TopicInfo {
            name: "orders".into(),
            id: "x".into(),
            partitions: vec![crate::http::PartitionInfo {
                partition: 0,
                log_start_offset: 0,
                local_start_offset: 900,
                high_watermark: 1000,
                local_bytes: 4096,
                cold: crate::http::ColdInfo {
                    loaded: true,
                    start_offset: 0,
                    end_offset: 950,
                    objects: 3,
                    bytes: 777,
                    log_bytes: 9000,
                    rewrite_pending: 1,
                },
            }],
        };
        let shown = format_storage(&storage);
        assert!(
            shown.ends_with(
                "Partition  Hot        LocalBytes  Cold    Objects  ColdBytes  ToRewrite\n\
                 0          900..1000  4096        0..950  3        777        1\n"
            ),
            "{shown}"
        );
        let missing_offsets = format_describe(&topic("t", 1), &[], &[]);
        assert!(missing_offsets.contains("0          0       0         ?               ?\n"));
        assert!(missing_offsets.ends_with("Configs: none\n"));
    }
}
