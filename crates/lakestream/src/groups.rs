//! `lakestream groups`: list, describe, reset the offsets of and delete consumer groups, like
//! Kafka's `kafka-consumer-groups`.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail};
use client::{
    Client, CommittedOffset, EARLIEST_TIMESTAMP, GroupDescription, GroupListing, GroupMember,
    LATEST_TIMESTAMP, Offset, PartitionId, ResponseError, STANDALONE_GENERATION, TimestampMs,
};

use crate::shared::{self, BootstrapArgs, explain, table};

#[derive(clap::Args, Debug, PartialEq)]
pub struct GroupsArgs {
    #[command(subcommand)]
    pub command: GroupsCommand,
    #[command(flatten)]
    pub bootstrap: BootstrapArgs,
}

#[derive(clap::Subcommand, Debug, PartialEq)]
pub enum GroupsCommand {
    /// List consumer groups with their state and protocol type.
    List,
    /// Show a group's members and, per partition, its committed offset, the log-end offset and
    /// the lag.
    Describe { group: String },
    /// Set a group's committed offsets for a topic; the group must have no members.
    ResetOffsets(ResetOffsetsArgs),
    /// Delete a group and its committed offsets; the group must have no members.
    Delete { group: String },
}

#[derive(clap::Args, Debug, PartialEq)]
#[command(group = clap::ArgGroup::new("target").required(true).multiple(false))]
pub struct ResetOffsetsArgs {
    pub group: String,
    /// The topic whose offsets to reset.
    #[arg(long)]
    pub topic: String,
    /// Reset only this partition (repeatable; default: every partition of the topic).
    #[arg(long = "partition", short, value_parser = clap::value_parser!(i32).range(0..))]
    pub partitions: Vec<PartitionId>,
    /// To the log start offset.
    #[arg(long, group = "target")]
    pub to_earliest: bool,
    /// To the end of the log (the high watermark): nothing left to consume.
    #[arg(long, group = "target")]
    pub to_latest: bool,
    /// To this offset, clamped to the partition's range.
    #[arg(long, group = "target", value_name = "OFFSET",
          value_parser = clap::value_parser!(i64).range(0..))]
    pub to_offset: Option<Offset>,
    /// To the first record at or after this time: RFC 3339 (2026-11-23T10:00:00Z,
    /// 2026-11-23T11:00:00.5+01:00) or milliseconds since the epoch; the end of the log when no
    /// record is that recent.
    #[arg(long, group = "target", value_name = "TIME", value_parser = parse_datetime)]
    pub to_datetime: Option<TimestampMs>,
    /// Print the new offsets without committing them.
    #[arg(long)]
    pub dry_run: bool,
}

/// Where `reset-offsets` moves each partition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ResetTarget {
    Earliest,
    Latest,
    Offset(Offset),
    Time(TimestampMs),
}

impl ResetOffsetsArgs {
    pub fn target(&self) -> ResetTarget {
        match (
            self.to_earliest,
            self.to_latest,
            self.to_offset,
            self.to_datetime,
        ) {
            (true, ..) => ResetTarget::Earliest,
            (_, true, ..) => ResetTarget::Latest,
            (_, _, Some(offset), _) => ResetTarget::Offset(offset),
            (_, _, _, Some(time)) => ResetTarget::Time(time),
            // clap's required "target" group guarantees one of them.
            _ => unreachable!("reset-offsets without a target"),
        }
    }
}

pub fn run(args: GroupsArgs) -> anyhow::Result<()> {
    shared::runtime()?.block_on(async {
        let mut client = shared::connect(&args.bootstrap).await?;
        match args.command {
            GroupsCommand::List => {
                let groups = client.list_groups().await?;
                print!("{}", format_list(&groups));
            }
            GroupsCommand::Describe { group } => {
                let text = describe(&mut client, &group).await?;
                print!("{text}");
            }
            GroupsCommand::ResetOffsets(reset) => {
                let text = reset_offsets(&mut client, &reset).await?;
                print!("{text}");
                if reset.dry_run {
                    eprintln!("dry run: nothing was committed; run without --dry-run to commit");
                }
            }
            GroupsCommand::Delete { group } => {
                client
                    .delete_groups(&[&group])
                    .await
                    .map_err(|e| explain_group(e, &group))?;
                println!("deleted group {group}");
            }
        }
        Ok(())
    })
}

/// Adds a hint to the group errors people can do something about.
fn explain_group(error: client::Error, group: &str) -> anyhow::Error {
    let hint = match error.kafka_error() {
        Some(ResponseError::NonEmptyGroup) => format!(
            "hint: group {group} still has members; stop its consumers first \
             (see them with `lakestream groups describe {group}`)."
        ),
        Some(ResponseError::GroupIdNotFound) => {
            "hint: see the groups with `lakestream groups list`.".to_owned()
        }
        // What the broker answers a standalone commit while the group has members.
        Some(
            ResponseError::UnknownMemberId
            | ResponseError::IllegalGeneration
            | ResponseError::RebalanceInProgress,
        ) => format!(
            "hint: group {group} has active members, and offsets can only be reset while a \
             group is empty; stop its consumers and try again."
        ),
        _ => return error.into(),
    };
    anyhow!("{error}\n{hint}")
}

/// `GROUP STATE PROTOCOL-TYPE`, one row per group.
pub fn format_list(groups: &[GroupListing]) -> String {
    let mut rows = vec![
        ["GROUP", "STATE", "PROTOCOL-TYPE"]
            .map(String::from)
            .to_vec(),
    ];
    for g in groups {
        rows.push(vec![
            g.group_id.clone(),
            g.state.clone().unwrap_or_else(|| "?".to_owned()),
            dash_if_empty(&g.protocol_type),
        ]);
    }
    table(&rows)
}

async fn describe(client: &mut Client, group: &str) -> anyhow::Result<String> {
    let description = client
        .describe_groups(&[group])
        .await
        .map_err(|e| explain_group(e, group))?
        .pop()
        .expect("describe_groups answers every group asked");
    let committed = client
        .offset_fetch(group, None)
        .await
        .map_err(|e| explain_group(e, group))?;
    if description.state == "Dead" && description.members.is_empty() && committed.is_empty() {
        bail!("group {group} does not exist\nhint: see the groups with `lakestream groups list`.");
    }
    let mut partitions: Vec<(String, PartitionId)> = committed
        .iter()
        .map(|c| (c.topic.clone(), c.partition))
        .collect();
    for member in &description.members {
        for tp in member.assignment.iter().flatten() {
            partitions.extend(tp.partitions.iter().map(|&p| (tp.topic.clone(), p)));
        }
    }
    partitions.sort();
    partitions.dedup();
    let mut ends = BTreeMap::new();
    for (topic, partition) in partitions {
        // A partition that cannot be looked up (its topic was deleted) shows "-" for its end.
        if let Ok((end, _)) = client
            .list_offsets(&topic, partition, LATEST_TIMESTAMP)
            .await
        {
            ends.insert((topic, partition), end);
        }
    }
    Ok(format_describe(&description, &committed, &ends))
}

/// How far a group is behind: end − committed; unknown when either is.
pub fn lag(committed: Option<Offset>, end: Option<Offset>) -> Option<i64> {
    Some(end? - committed?)
}

/// What `groups describe` knows of one partition besides its end offset.
#[derive(Default)]
struct PartitionRow<'a> {
    committed: Option<Offset>,
    owner: Option<&'a GroupMember>,
}

/// The `groups describe` report: a header line, then a row per partition the group has
/// committed or a member owns, then a row per member that owns nothing.
pub fn format_describe(
    group: &GroupDescription,
    committed: &[CommittedOffset],
    ends: &BTreeMap<(String, PartitionId), Offset>,
) -> String {
    let protocol = match (group.protocol_type.as_str(), group.protocol.as_str()) {
        ("", _) => "-".to_owned(),
        (kind, "") => kind.to_owned(),
        (kind, assignor) => format!("{kind} ({assignor})"),
    };
    let mut out = format!(
        "Group: {}  State: {}  Protocol: {}  Members: {}\n\n",
        group.group_id,
        group.state,
        protocol,
        group.members.len()
    );

    let mut partitions: BTreeMap<(String, PartitionId), PartitionRow> = BTreeMap::new();
    for c in committed {
        let row = PartitionRow {
            committed: c.offset,
            owner: None,
        };
        partitions.insert((c.topic.clone(), c.partition), row);
    }
    let mut idle_members = Vec::new();
    for member in &group.members {
        match &member.assignment {
            Some(assignment) if assignment.iter().any(|tp| !tp.partitions.is_empty()) => {
                for tp in assignment {
                    for &p in &tp.partitions {
                        partitions.entry((tp.topic.clone(), p)).or_default().owner = Some(member);
                    }
                }
            }
            Some(_) => idle_members.push((member, "-")),
            None => idle_members.push((member, "?")),
        }
    }
    if partitions.is_empty() && idle_members.is_empty() {
        out.push_str("no members and no committed offsets\n");
        return out;
    }

    let show = |value: Option<i64>| value.map_or("-".to_owned(), |v| v.to_string());
    let member_cells = |member: Option<&GroupMember>| match member {
        Some(m) => vec![
            m.member_id.clone(),
            dash_if_empty(&m.client_host),
            dash_if_empty(&m.client_id),
        ],
        None => vec!["-".to_owned(); 3],
    };
    let mut rows = vec![
        [
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "LOG-END-OFFSET",
            "LAG",
            "CONSUMER-ID",
            "HOST",
            "CLIENT-ID",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for ((topic, partition), PartitionRow { committed, owner }) in &partitions {
        let end = ends.get(&(topic.clone(), *partition)).copied();
        let mut row = vec![
            topic.clone(),
            partition.to_string(),
            show(*committed),
            show(end),
            show(lag(*committed, end)),
        ];
        row.extend(member_cells(*owner));
        rows.push(row);
    }
    // Members that own nothing ("-") or whose assignment is not a consumer one ("?").
    for (member, mark) in idle_members {
        let mut row = vec![mark.to_owned(), mark.to_owned()];
        row.extend(std::iter::repeat_n("-".to_owned(), 3));
        row.extend(member_cells(Some(member)));
        rows.push(row);
    }
    out.push_str(&table(&rows));
    out
}

fn dash_if_empty(s: &str) -> String {
    if s.is_empty() { "-" } else { s }.to_owned()
}

async fn reset_offsets(client: &mut Client, args: &ResetOffsetsArgs) -> anyhow::Result<String> {
    let group = args.group.as_str();
    let topic = args.topic.as_str();
    let description = client
        .describe_groups(&[group])
        .await
        .map_err(|e| explain_group(e, group))?
        .pop()
        .expect("describe_groups answers every group asked");
    if !description.members.is_empty() {
        bail!(
            "group {group} has {} active member(s) (state {}); offsets can only be reset while \
             a group is empty\nhint: stop its consumers first (see them with \
             `lakestream groups describe {group}`).",
            description.members.len(),
            description.state
        );
    }

    let mut partitions = args.partitions.clone();
    if partitions.is_empty() {
        let metadata = client
            .topic_metadata(topic)
            .await
            .map_err(|e| explain(e, topic))?;
        partitions = metadata.partitions.iter().map(|p| p.partition).collect();
    }
    partitions.sort_unstable();
    partitions.dedup();

    let target = args.target();
    let mut offsets = Vec::with_capacity(partitions.len());
    for &partition in &partitions {
        let mut look_up = async |timestamp| {
            client
                .list_offsets(topic, partition, timestamp)
                .await
                .map(|(offset, _)| offset)
                .map_err(|e| explain(e, topic))
        };
        let offset = match target {
            ResetTarget::Earliest => look_up(EARLIEST_TIMESTAMP).await?,
            ResetTarget::Latest => look_up(LATEST_TIMESTAMP).await?,
            ResetTarget::Offset(wanted) => {
                let earliest = look_up(EARLIEST_TIMESTAMP).await?;
                let latest = look_up(LATEST_TIMESTAMP).await?;
                let clamped = wanted.clamp(earliest, latest.max(earliest));
                if clamped != wanted {
                    eprintln!(
                        "warning: offset {wanted} is outside {topic} partition {partition}'s \
                         range {earliest}..={latest}; using {clamped}"
                    );
                }
                clamped
            }
            ResetTarget::Time(time) => match look_up(time).await? {
                // No record at or after that time: the end of the log.
                offset if offset < 0 => look_up(LATEST_TIMESTAMP).await?,
                offset => offset,
            },
        };
        offsets.push((topic.to_owned(), partition, offset));
    }

    if !args.dry_run {
        client
            .offset_commit(group, STANDALONE_GENERATION, "", &offsets)
            .await
            .map_err(|e| match e.kafka_error() {
                Some(ResponseError::UnknownTopicOrPartition) => explain(e, topic),
                _ => explain_group(e, group),
            })?;
    }
    Ok(format_new_offsets(group, &offsets))
}

/// `GROUP TOPIC PARTITION NEW-OFFSET`, one row per partition.
pub fn format_new_offsets(group: &str, offsets: &[(String, PartitionId, Offset)]) -> String {
    let mut rows = vec![
        ["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"]
            .map(String::from)
            .to_vec(),
    ];
    for (topic, partition, offset) in offsets {
        rows.push(vec![
            group.to_owned(),
            topic.clone(),
            partition.to_string(),
            offset.to_string(),
        ]);
    }
    table(&rows)
}

/// Parses `--to-datetime`: milliseconds since the epoch, or an RFC 3339 time with a zone
/// (`Z` or `±HH:MM`) and optional fractional seconds (kept to the millisecond).
pub fn parse_datetime(s: &str) -> Result<TimestampMs, String> {
    let expected = "expected an RFC 3339 time like 2026-11-23T10:00:00Z (or with an offset \
                    like +01:00) or milliseconds since the epoch";
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map_err(|_| format!("{expected}, got {s:?} (too large)"));
    }
    let ms = parse_rfc3339(s).ok_or_else(|| format!("{expected}, got {s:?}"))?;
    if ms < 0 {
        return Err(format!("{s:?} is before 1970-01-01T00:00:00Z"));
    }
    Ok(ms)
}

fn parse_rfc3339(s: &str) -> Option<TimestampMs> {
    let number = |from: usize, to: usize| -> Option<i64> {
        let digits = s.get(from..to)?;
        digits
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| digits.parse().ok())?
    };
    let at = |i: usize, allowed: &[u8]| s.as_bytes().get(i).is_some_and(|b| allowed.contains(b));
    if !(at(4, b"-") && at(7, b"-") && at(10, b"Tt ") && at(13, b":") && at(16, b":")) {
        return None;
    }
    let (year, month, day) = (number(0, 4)?, number(5, 7)?, number(8, 10)?);
    let (hour, minute, second) = (number(11, 13)?, number(14, 16)?, number(17, 19)?);
    let mut rest = s.get(19..)?;
    let mut millis = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        // Milliseconds: the first three digits, padded with zeros.
        let kept: String = fraction[..digits.min(3)].chars().collect();
        millis = format!("{kept:0<3}").parse::<i64>().ok()?;
        rest = &fraction[digits..];
    }
    let offset_minutes = match rest.as_bytes() {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let hours = rest[1..3].parse::<i64>().ok()?;
            let minutes = rest[4..6].parse::<i64>().ok()?;
            if !rest[1..3]
                .bytes()
                .chain(rest[4..6].bytes())
                .all(|b| b.is_ascii_digit())
                || hours > 23
                || minutes > 59
            {
                return None;
            }
            let total = hours * 60 + minutes;
            if *sign == b'-' { -total } else { total }
        }
        _ => return None,
    };
    let month_ok = (1..=12).contains(&month);
    if !month_ok || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let seconds = ((days * 24 + hour) * 60 + minute) * 60 + second - offset_minutes * 60;
    Some(seconds * 1000 + millis)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use client::TopicPartitions;

    #[test]
    fn datetimes() {
        let check = |input: &str, expect: Option<TimestampMs>| {
            assert_eq!(parse_datetime(input).ok(), expect, "{input}");
        };
        check("0", Some(0));
        check("1767225600000", Some(1_767_225_600_000));
        check("1970-01-01T00:00:00Z", Some(0));
        check("2026-01-01T00:00:00Z", Some(1_767_225_600_000));
        check("2026-11-23T10:00:00Z", Some(1_795_428_000_000));
        check("2026-11-23t10:00:00z", Some(1_795_428_000_000));
        check("2026-11-23 10:00:00Z", Some(1_795_428_000_000));
        check("2026-11-23T11:00:00+01:00", Some(1_795_428_000_000));
        check("2026-11-23T09:30:00-00:30", Some(1_795_428_000_000));
        check("2026-11-23T10:00:00.5Z", Some(1_795_428_000_500));
        check("2026-11-23T10:00:00.123456789Z", Some(1_795_428_000_123));
        check("2000-02-29T00:00:00Z", Some(951_782_400_000));
        check("2024-12-31T23:59:59.999Z", Some(1_735_689_599_999));
        for bad in [
            "",
            "yesterday",
            "-5",
            "2026-11-23",
            "2026-11-23T10:00:00",
            "2026-11-23T10:00Z",
            "2026-11-23T10:00:00.Z",
            "2026-11-23T10:00:00+0100",
            "2026-11-23T10:00:00+1:00",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-11-23T24:00:00Z",
            "2026-11-23T10:60:00Z",
            "2026-11-23T10:00:60Z",
            "2026-11-23T10:00:00+24:00",
            "1969-12-31T23:59:59Z",
            "+026-11-23T10:00:00Z",
            "99999999999999999999999",
        ] {
            check(bad, None);
        }
    }

    #[test]
    fn lags() {
        assert_eq!(lag(Some(3), Some(5)), Some(2));
        assert_eq!(lag(Some(5), Some(5)), Some(0));
        assert_eq!(lag(None, Some(5)), None);
        assert_eq!(lag(Some(3), None), None);
    }

    fn member(id: &str, assignment: Option<Vec<TopicPartitions>>) -> GroupMember {
        GroupMember {
            member_id: id.to_owned(),
            group_instance_id: None,
            client_id: format!("client-{id}"),
            client_host: "/127.0.0.1".to_owned(),
            assignment,
        }
    }

    fn committed(topic: &str, partition: PartitionId, offset: Option<Offset>) -> CommittedOffset {
        CommittedOffset {
            topic: topic.to_owned(),
            partition,
            offset,
            leader_epoch: -1,
            metadata: String::new(),
        }
    }

    #[test]
    fn describe_a_stable_group() {
        let owns = |topic: &str, partitions: &[PartitionId]| {
            Some(vec![TopicPartitions {
                topic: topic.to_owned(),
                partitions: partitions.to_vec(),
            }])
        };
        let group = GroupDescription {
            group_id: "app".to_owned(),
            state: "Stable".to_owned(),
            protocol_type: "consumer".to_owned(),
            protocol: "range".to_owned(),
            members: vec![
                member("m1", owns("orders", &[0, 1])),
                member("m2", Some(Vec::new())),
                member("m3", None),
            ],
        };
        let offsets = [
            committed("orders", 0, Some(3)),
            committed("orders", 2, Some(7)),
        ];
        let ends = BTreeMap::from([
            (("orders".to_owned(), 0), 5),
            (("orders".to_owned(), 1), 4),
            (("orders".to_owned(), 2), 7),
        ]);
        let expect = "\
Group: app  State: Stable  Protocol: consumer (range)  Members: 3

TOPIC   PARTITION  CURRENT-OFFSET  LOG-END-OFFSET  LAG  CONSUMER-ID  HOST        CLIENT-ID
orders  0          3               5               2    m1           /127.0.0.1  client-m1
orders  1          -               4               -    m1           /127.0.0.1  client-m1
orders  2          7               7               0    -            -           -
-       -          -               -               -    m2           /127.0.0.1  client-m2
?       ?          -               -               -    m3           /127.0.0.1  client-m3
";
        assert_eq!(format_describe(&group, &offsets, &ends), expect);
    }

    #[test]
    fn describe_an_empty_group() {
        let group = GroupDescription {
            group_id: "old".to_owned(),
            state: "Empty".to_owned(),
            protocol_type: "consumer".to_owned(),
            protocol: String::new(),
            members: Vec::new(),
        };
        // A deleted topic has no end offset.
        let offsets = [committed("gone", 0, Some(10))];
        let expect = "\
Group: old  State: Empty  Protocol: consumer  Members: 0

TOPIC  PARTITION  CURRENT-OFFSET  LOG-END-OFFSET  LAG  CONSUMER-ID  HOST  CLIENT-ID
gone   0          10              -               -    -            -     -
";
        assert_eq!(format_describe(&group, &offsets, &BTreeMap::new()), expect);
        assert!(
            format_describe(&group, &[], &BTreeMap::new())
                .ends_with("\n\nno members and no committed offsets\n")
        );
    }

    #[test]
    fn list_and_new_offsets_tables() {
        let groups = [
            GroupListing {
                group_id: "app".to_owned(),
                protocol_type: "consumer".to_owned(),
                state: Some("Stable".to_owned()),
            },
            GroupListing {
                group_id: "connect-x".to_owned(),
                protocol_type: String::new(),
                state: None,
            },
        ];
        assert_eq!(
            format_list(&groups),
            "GROUP      STATE   PROTOCOL-TYPE\n\
             app        Stable  consumer\n\
             connect-x  ?       -\n"
        );
        assert_eq!(format_list(&[]), "GROUP  STATE  PROTOCOL-TYPE\n");
        let offsets = [("orders".to_owned(), 0, 12), ("orders".to_owned(), 10, 0)];
        assert_eq!(
            format_new_offsets("app", &offsets),
            "GROUP  TOPIC   PARTITION  NEW-OFFSET\n\
             app    orders  0          12\n\
             app    orders  10         0\n"
        );
    }
}
