//! `floe policy`: the least-privilege access policy for the configured resources, built from
//! the action lists the backends themselves keep ([`crate::catalog::s3tables::ACTIONS`],
//! [`crate::catalog::rest::ACTIONS`], [`crate::stage::S3_ACTIONS`]), so the policy grants
//! exactly what the code calls.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::catalog::{rest, s3_storage, s3tables};
use crate::config::{CatalogConfig, Config, RestAuth, StagingConfig};
use crate::stage;

/// One `Allow` statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub sid: &'static str,
    pub actions: Vec<String>,
    pub resources: Vec<String>,
}

/// The staging bucket's expiration rule, for the Terraform output.
#[derive(Debug, Clone)]
pub struct StagingBucket {
    pub bucket: String,
    pub prefix: String,
    pub expire_after_days: u32,
}

#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub statements: Vec<Statement>,
    /// What the policy does not cover, for the reader (printed on stderr).
    pub notes: Vec<String>,
    pub staging: Option<StagingBucket>,
}

/// The policy `config` needs; `drop_and_recreate` adds the permission to delete tables.
pub fn policy(config: &Config, drop_and_recreate: bool) -> Policy {
    let mut policy = Policy::default();
    let mut partition = "aws".to_string();
    let keep = |action: &&str| drop_and_recreate || *action != s3tables::DROP_ACTION;
    let keep = &keep;
    match &config.catalog {
        CatalogConfig::S3Tables(c) => {
            partition = c.table_bucket.partition.clone();
            policy.statements.push(Statement {
                sid: "FloeTableBucket",
                actions: sorted(s3tables::ACTIONS.iter().copied().filter(keep)),
                resources: vec![
                    c.table_bucket.arn.clone(),
                    format!("{}/table/*", c.table_bucket.arn),
                ],
            });
        }
        CatalogConfig::Rest(c) => {
            let catalog_actions = rest::ACTIONS
                .iter()
                .flat_map(|(_, actions)| actions.iter().copied())
                .filter(keep);
            match (&c.auth, c.warehouse.as_deref()) {
                (RestAuth::Sigv4 { .. }, Some(arn)) if arn.starts_with("arn:") => {
                    // The S3 Tables Iceberg endpoint: table files are read through S3 Tables.
                    partition = arn.split(':').nth(1).unwrap_or("aws").to_string();
                    policy.statements.push(Statement {
                        sid: "FloeTableBucket",
                        actions: sorted(
                            catalog_actions.chain(s3tables::DATA_ACTIONS.iter().copied()),
                        ),
                        resources: vec![arn.to_string(), format!("{arn}/table/*")],
                    });
                }
                (RestAuth::Sigv4 { .. }, Some(warehouse)) => {
                    // MinIO AIStor Tables: warehouse-scoped actions, files in its bucket.
                    let bucket = warehouse.trim_start_matches("s3://").trim_end_matches('/');
                    policy.statements.push(Statement {
                        sid: "FloeWarehouse",
                        actions: sorted(catalog_actions),
                        resources: vec![
                            format!("arn:aws:s3tables:::bucket/{bucket}"),
                            format!("arn:aws:s3tables:::bucket/{bucket}/table/*"),
                        ],
                    });
                    // Expiring snapshots deletes their files; `floe maintain` lists orphans.
                    let deletes = c.expire_snapshots.then_some("s3:DeleteObject");
                    policy.statements.push(Statement {
                        sid: "FloeWarehouseData",
                        actions: sorted(s3_storage::DATA_ACTIONS.iter().copied().chain(deletes)),
                        resources: vec![format!("arn:aws:s3:::{bucket}/*")],
                    });
                    if c.expire_snapshots {
                        policy.statements.push(Statement {
                            sid: "FloeWarehouseList",
                            actions: vec!["s3:ListBucket".to_string()],
                            resources: vec![format!("arn:aws:s3:::{bucket}")],
                        });
                    }
                }
                _ => policy.notes.push(format!(
                    "catalog {}: it authorizes Floe by its own credentials (auth is not sigv4 with \
                     a warehouse), so no IAM statement is printed for it",
                    c.uri
                )),
            }
        }
        CatalogConfig::Local(c) => policy.notes.push(format!(
            "catalog local ({}): a directory, no IAM statement",
            c.path.display()
        )),
    }
    match &config.staging {
        StagingConfig::S3(s3) => {
            let bucket_arn = format!("arn:{partition}:s3:::{}", s3.bucket);
            let objects = if s3.prefix.is_empty() {
                format!("{bucket_arn}/*")
            } else {
                format!("{bucket_arn}/{}/*", s3.prefix.trim_end_matches('/'))
            };
            let object_level = ["s3:PutObject", "s3:GetObject", "s3:DeleteObject"];
            let actions = stage::S3_ACTIONS.iter().map(|(_, a)| *a);
            policy.statements.push(Statement {
                sid: "FloeStagingObjects",
                actions: sorted(actions.clone().filter(|a| object_level.contains(a))),
                resources: vec![objects],
            });
            policy.statements.push(Statement {
                sid: "FloeStagingBucket",
                actions: sorted(actions.filter(|a| {
                    !object_level.contains(a)
                        && (s3.manage_lifecycle || *a != stage::MANAGE_LIFECYCLE_ACTION)
                })),
                resources: vec![bucket_arn],
            });
            if let Some(key) = &s3.kms_key_arn {
                policy.statements.push(Statement {
                    sid: "FloeStagingKms",
                    actions: sorted(stage::KMS_ACTIONS.iter().copied()),
                    resources: vec![key.clone()],
                });
            }
            policy.staging = Some(StagingBucket {
                bucket: s3.bucket.clone(),
                prefix: s3.prefix.clone(),
                expire_after_days: s3.expire_after_days,
            });
        }
        StagingConfig::Local { directory } => policy.notes.push(format!(
            "staging in the local directory {}: no IAM statement",
            directory.display()
        )),
    }
    policy
}

fn sorted<'a>(actions: impl Iterator<Item = &'a str>) -> Vec<String> {
    actions
        .map(str::to_string)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

impl Policy {
    /// Every action the policy grants.
    pub fn actions(&self) -> BTreeSet<String> {
        self.statements
            .iter()
            .flat_map(|s| s.actions.iter().cloned())
            .collect()
    }

    /// An IAM policy document.
    pub fn to_json(&self) -> Value {
        let statements: Vec<Value> = self
            .statements
            .iter()
            .map(|s| {
                json!({
                    "Sid": s.sid,
                    "Effect": "Allow",
                    "Action": s.actions,
                    "Resource": s.resources,
                })
            })
            .collect();
        json!({ "Version": "2012-10-17", "Statement": statements })
    }

    /// Terraform: the policy document, an IAM policy, and the staging bucket with its
    /// expiration rule.
    pub fn to_terraform(&self) -> String {
        let list = |items: &[String]| {
            let quoted: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
            format!("[{}]", quoted.join(", "))
        };
        let mut out = String::from("# Generated by `floe policy --format terraform`.\n\n");
        out.push_str("data \"aws_iam_policy_document\" \"floe\" {\n");
        for s in &self.statements {
            let _ = write!(
                out,
                "  statement {{\n    sid       = {:?}\n    effect    = \"Allow\"\n    actions   = {}\n    resources = {}\n  }}\n",
                s.sid,
                list(&s.actions),
                list(&s.resources)
            );
        }
        out.push_str("}\n\n");
        out.push_str(
            "resource \"aws_iam_policy\" \"floe\" {\n  name   = \"floe\"\n  policy = data.aws_iam_policy_document.floe.json\n}\n",
        );
        if let Some(staging) = &self.staging {
            let prefix = if staging.prefix.is_empty() {
                String::new()
            } else {
                format!("{}/", staging.prefix.trim_end_matches('/'))
            };
            let _ = write!(
                out,
                "\nresource \"aws_s3_bucket\" \"floe_staging\" {{\n  bucket = {:?}\n}}\n\n\
                 resource \"aws_s3_bucket_lifecycle_configuration\" \"floe_staging\" {{\n  \
                 bucket = aws_s3_bucket.floe_staging.id\n\n  rule {{\n    \
                 id     = \"floe-expire-staged-deltas\"\n    status = \"Enabled\"\n    \
                 filter {{\n      prefix = {:?}\n    }}\n    \
                 expiration {{\n      days = {}\n    }}\n    \
                 abort_incomplete_multipart_upload {{\n      days_after_initiation = 1\n    }}\n  }}\n}}\n",
                staging.bucket, prefix, staging.expire_after_days
            );
        }
        out
    }
}
