//! `nettingctl members list|remove`.

use std::io::Write;

use netting_proto::catalog::v1::{RemoveMemberRequest, StatusResponse};
use serde::Serialize;

use crate::ctl::args::MembersCommand;
use crate::ctl::client::Client;
use crate::ctl::error::CtlError;
use crate::ctl::output::{OutputFormat, Render, Table, emit, opt_cell};

/// One member as `members list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberRow {
    pub id: u64,
    pub address: String,
    /// `voter` or `learner`.
    pub role: String,
    /// Whether the answering replica believes this member leads.
    pub leader: bool,
    /// Highest log index the leader knows this member has; only a leader reports it.
    pub matched_index: Option<u64>,
}

/// The members, printed as one table or one JSON array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct MemberList(pub Vec<MemberRow>);

impl MemberList {
    /// The members one replica reports, sorted by id.
    pub fn from_status(status: &StatusResponse) -> Self {
        let mut rows: Vec<MemberRow> = status
            .members
            .iter()
            .map(|member| MemberRow {
                id: member.node_id,
                address: member.address.clone(),
                role: member.role.clone(),
                leader: status.leader_id == Some(member.node_id),
                matched_index: member.matched_index,
            })
            .collect();
        rows.sort_by_key(|row| row.id);
        Self(rows)
    }
}

impl Render for MemberList {
    fn to_table(&self) -> String {
        let mut table = Table::new(&["ID", "ADDRESS", "ROLE", "LEADER", "MATCHED"]);
        for row in &self.0 {
            table.row(vec![
                row.id.to_string(),
                row.address.clone(),
                row.role.clone(),
                if row.leader { "yes" } else { "no" }.to_owned(),
                opt_cell(row.matched_index),
            ]);
        }
        table.render()
    }
}

/// The outcome of `members remove`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Removed {
    pub removed: u64,
    /// The voters after the change.
    pub voters: Vec<u64>,
}

impl Render for Removed {
    fn to_table(&self) -> String {
        let voters: Vec<String> = self.voters.iter().map(u64::to_string).collect();
        format!(
            "removed node {}; voters now: {}\n",
            self.removed,
            voters.join(", ")
        )
    }
}

pub async fn run<W: Write>(
    client: &Client,
    command: MembersCommand,
    format: OutputFormat,
    out: &mut W,
) -> Result<(), CtlError> {
    match command {
        MembersCommand::List => {
            let answer = client.first_status().await?;
            emit(out, format, &MemberList::from_status(&answer.value))
        }
        MembersCommand::Remove(args) => {
            let request = RemoveMemberRequest {
                node_id: args.node_id,
            };
            let answer = client.remove_member(request).await?;
            let mut voters = answer.value.voters;
            voters.sort_unstable();
            let removed = Removed {
                removed: args.node_id,
                voters,
            };
            emit(out, format, &removed)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use netting_proto::catalog::v1::Member;

    use super::*;

    /// Members are listed by id with the leader marked and matched indexes where known.
    #[test]
    fn member_list_marks_the_leader() {
        let status = StatusResponse {
            node_id: 1,
            leader_id: Some(2),
            members: vec![
                Member {
                    node_id: 3,
                    address: "c:7100".into(),
                    role: "learner".into(),
                    matched_index: None,
                },
                Member {
                    node_id: 2,
                    address: "b:7100".into(),
                    role: "voter".into(),
                    matched_index: Some(17),
                },
            ],
            ..StatusResponse::default()
        };
        let list = MemberList::from_status(&status);
        assert_eq!(
            list.to_table(),
            "ID  ADDRESS  ROLE     LEADER  MATCHED\n\
             2   b:7100   voter    yes     17\n\
             3   c:7100   learner  no      -\n"
        );
        let json = serde_json::to_value(&list).unwrap();
        assert_eq!(json[0]["leader"], true);
        assert_eq!(json[1]["matched_index"], serde_json::Value::Null);
    }

    /// Removal reports the node and the voters left.
    #[test]
    fn removal_reports_remaining_voters() {
        let removed = Removed {
            removed: 3,
            voters: vec![1, 2],
        };
        assert_eq!(removed.to_table(), "removed node 3; voters now: 1, 2\n");
    }
}
