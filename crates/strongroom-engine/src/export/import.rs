//! Import: the sealed file opened and authenticated whole, its header's key
//! derivation bounded before anything is derived, the payload parsed, the
//! identity namespaces checked as an assignment, every value re-sealed under
//! a new KEK of this server, and the rows written in one transaction (see
//! the parent module).

use super::*;

impl Engine {
    /// Restores an export as a new tenant (platform operators): named as
    /// exported, or `name`. Refused (ALREADY_EXISTS) if the tenant's id or
    /// name, or one of its identity namespaces, is taken here; refused
    /// (INVALID_ARGUMENT) for a wrong passphrase or a file that fails
    /// authentication anywhere, before anything is written.
    pub async fn import_tenant(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        file: Vec<u8>,
        passphrase: SecretString,
        name: Option<TenantName>,
        progress: ProgressSink,
    ) -> Result<(Tenant, DataCounts)> {
        let scope = caller.platform_scope()?;
        if passphrase.expose_secret().is_empty() {
            return Err(Error::invalid("header.passphrase", "is required"));
        }
        if file.is_empty() {
            return Err(Error::invalid("chunk", "no export bytes were sent"));
        }
        // The key derivation's costs come from the unauthenticated header:
        // bounded before any work is spent on them.
        let header = strongroom_crypto::read_sealed_header(&file).map_err(|e| match e {
            CryptoError::Malformed(what) => Error::invalid(
                "chunk",
                format!("not a strongroom export this server reads ({what}); nothing was imported"),
            ),
            other => crypto_error(other),
        })?;
        check_import_kdf(&header.kdf, self.limits.export_kdf)?;
        let _transfer = self.transfers.begin(None)?;
        let file_sha256 = hex::encode(strongroom_crypto::export_digest(&file));
        progress(Progress {
            phase: Phase::Verifying,
            done: 0,
            total: file.len() as u64,
        });
        // The whole file is authenticated before any of it is parsed.
        let opened = tokio::task::spawn_blocking(move || {
            strongroom_crypto::open_sealed_file(&passphrase, &file)
        })
        .await
        .map_err(|_| Error::internal("the import task failed"))?
        .map_err(|e| match e {
            CryptoError::ExportPassphrase => Error::invalid(
                "header.passphrase",
                "does not open this export (wrong passphrase); nothing was imported",
            ),
            CryptoError::ExportAuthentication { chunk } => Error::invalid(
                "chunk",
                format!(
                    "the export fails authentication at chunk {chunk}: it was changed, \
                     truncated or reordered; nothing was imported"
                ),
            ),
            CryptoError::Malformed(what) => Error::invalid(
                "chunk",
                format!("not a strongroom export this server reads ({what}); nothing was imported"),
            ),
            CryptoError::Kdf(_) => Error::invalid(
                "chunk",
                "the export's key derivation parameters are not usable; nothing was imported",
            ),
            other => crypto_error(other),
        })?;
        let parsed = parse_payload(&opened.payload)?;
        drop(opened);
        let ParsedExport {
            tenant,
            mut rows,
            notifier_secret,
        } = parsed;
        if let Some(name) = &name {
            let t = rows
                .table_mut("tenants")
                .ok_or_else(|| bad_file("no tenants table"))?;
            let at = column(t, "name")?;
            t.rows[0][at] = Cell::Text(name.as_str().to_owned());
        }
        let name = tenant_name(&rows)?;
        TenantName::parse(&name, "header.tenant_name")?;
        self.check_imported_namespaces(&mut rows)?;

        // The tenant's new key, and every value sealed under it.
        let now = self.now();
        let kek = Kek::generate().map_err(crypto_error)?;
        let wrapped = self.keyring.wrap(tenant, 1, &kek)?;
        let environments = environments(&rows)?;
        {
            let t = rows
                .table_mut("tenants")
                .ok_or_else(|| bad_file("no tenants table"))?;
            let settings_at = column(t, "settings")?;
            let Cell::Text(text) = &t.rows[0][settings_at] else {
                return Err(bad_file("tenant settings"));
            };
            let mut settings: Value =
                serde_json::from_str(text).map_err(|_| bad_file("tenant settings"))?;
            match (
                &notifier_secret,
                settings.get("notifier").filter(|n| !n.is_null()),
            ) {
                (Some(secret), Some(_)) => {
                    settings["notifier"]["sealed_secret"] =
                        Value::String(crate::notify::seal_secret(&kek, 1, tenant, secret)?);
                }
                (None, None) => {}
                _ => return Err(bad_file("the notifier and its secret do not match")),
            }
            t.rows[0][settings_at] = Cell::Text(settings.to_string());
            insert_column(t, 3, "current_kek_version", ColumnKind::Int, |_| {
                Cell::Int(1)
            });
        }
        {
            let t = rows
                .table_mut("credential_versions")
                .ok_or_else(|| bad_file("no credential_versions table"))?;
            let (c, v, value) = (
                column(t, "credential_id")?,
                column(t, "version")?,
                column(t, "value")?,
            );
            t.columns[value].0 = "envelope".to_owned();
            let total = t.rows.len() as u64;
            for (done, row) in t.rows.iter_mut().enumerate() {
                if let Cell::Bytes(plain) = &row[value] {
                    let plain = Zeroizing::new(plain.clone());
                    // A value must be one this server can read back.
                    CredentialValue::from_plaintext(&plain)
                        .map_err(|_| bad_file("a credential value does not parse"))?;
                    let Cell::Uuid(credential) = row[c] else {
                        return Err(bad_file("a version's credential id"));
                    };
                    let version = version_of(&row[v])?;
                    let environment = environments
                        .get(&credential)
                        .ok_or_else(|| bad_file("a version of no credential"))?;
                    let envelope = kek
                        .seal(
                            1,
                            &value_aad(tenant, environment, credential, version),
                            &plain,
                        )
                        .map_err(crypto_error)?;
                    if let Cell::Bytes(old) = &mut row[value] {
                        zeroize::Zeroize::zeroize(old);
                    }
                    row[value] = Cell::Bytes(envelope.to_bytes());
                }
                if (done as u64 + 1).is_multiple_of(PROGRESS_EVERY) {
                    progress(Progress {
                        phase: Phase::Values,
                        done: done as u64 + 1,
                        total,
                    });
                }
            }
            insert_column(t, value + 1, "kek_version", ColumnKind::Int, |_| {
                Cell::Int(1)
            });
        }
        let counts = DataCounts::of(&rows);
        progress(Progress {
            phase: Phase::Writing,
            done: 0,
            total: 0,
        });
        let import = TenantImport {
            tenant,
            kek: WrappedKekRecord {
                tenant,
                version: 1,
                wrapped: wrapped.to_bytes(),
                created_at: now,
            },
            rows,
        };
        let mut tenant_event = self.platform_draft(&scope, ctx, Action::TenantImport);
        tenant_event.detail = Some(AuditDetail::TenantImport {
            name: name.clone(),
            file_sha256: file_sha256.clone(),
        });
        let mut platform_event = self.platform_draft(&scope, ctx, Action::TenantImport);
        platform_event.detail = Some(AuditDetail::TenantImport { name, file_sha256 });
        // Through `commit`: a restored tenant brings identities this
        // server may have cached as unknown.
        self.commit(tenant, tenant_event, |tenant_event| {
            self.store
                .import_rows(&scope, &import, tenant_event, platform_event)
        })
        .await?;
        let tenant = self.store.get_tenant(&scope, tenant).await?;
        Ok((tenant, counts))
    }
}

impl Engine {
    /// Checks the identity namespaces a file brings as an operator's
    /// assignment is checked (form, disjointness, depth, no platform
    /// operator covered), and marks every one derived: whoever exported
    /// the file knows its passphrase and can re-seal it with any rows, so
    /// the namespaces are listed for an operator's review
    /// (`strongroomd migrate`) until an operator assigns the tenant's
    /// namespaces. Overlaps with other tenants are refused by the store.
    fn check_imported_namespaces(&self, rows: &mut TenantRows) -> Result<()> {
        let t = rows
            .table_mut("identity_namespaces")
            .ok_or_else(|| bad_file("no identity_namespaces table"))?;
        let (kind, pattern, derived) = (
            column(t, "kind")?,
            column(t, "pattern")?,
            column(t, "derived")?,
        );
        let mut namespaces = Vec::with_capacity(t.rows.len());
        for row in &t.rows {
            let (Cell::Text(k), Cell::Text(p)) = (&row[kind], &row[pattern]) else {
                return Err(bad_file("an identity namespace"));
            };
            let text = match k.as_str() {
                "exact" => p.clone(),
                "prefix" => format!("{p}*"),
                _ => return Err(bad_file("an identity namespace's kind")),
            };
            let parsed = IdentityPattern::parse(&text, "identity_namespaces")?;
            if parsed
                != (if k == "exact" {
                    IdentityPattern::Exact(p.clone())
                } else {
                    IdentityPattern::Prefix(p.clone())
                })
            {
                return Err(bad_file("an identity namespace is not in its stored form"));
            }
            namespaces.push(parsed);
        }
        self.check_assignment(&namespaces)?;
        for row in &mut t.rows {
            row[derived] = Cell::Int(1);
        }
        Ok(())
    }
}

/// Checks the key derivation parameters of an import's header, which no
/// one has authenticated yet: Argon2id 1.3 with costs this server would
/// spend, each refused naming its header field.
pub(super) fn check_import_kdf(kdf: &strongroom_crypto::ExportKdf, ours: ExportKdf) -> Result<()> {
    if kdf.algorithm != "argon2id" {
        return Err(Error::invalid("header.kdf.algorithm", "must be argon2id"));
    }
    if kdf.version != 0x13 {
        return Err(Error::invalid(
            "header.kdf.version",
            "must be 19 (Argon2 1.3)",
        ));
    }
    let max_memory = IMPORT_KDF_MAX_MEMORY_KIB.max(ours.memory_kib);
    if !(8..=max_memory).contains(&kdf.m_cost_kib) {
        return Err(Error::invalid(
            "header.kdf.m_cost_kib",
            format!("must be 8 to {max_memory} (KiB)"),
        ));
    }
    if !IMPORT_KDF_PASSES.contains(&kdf.t_cost) {
        return Err(Error::invalid(
            "header.kdf.t_cost",
            format!(
                "must be {} to {}",
                IMPORT_KDF_PASSES.start(),
                IMPORT_KDF_PASSES.end()
            ),
        ));
    }
    if !IMPORT_KDF_PARALLELISM.contains(&kdf.p_cost) {
        return Err(Error::invalid(
            "header.kdf.p_cost",
            format!(
                "must be {} to {}",
                IMPORT_KDF_PARALLELISM.start(),
                IMPORT_KDF_PARALLELISM.end()
            ),
        ));
    }
    let salt = kdf.salt.len() / 2;
    if !kdf.salt.len().is_multiple_of(2)
        || !kdf.salt.bytes().all(|b| b.is_ascii_hexdigit())
        || !IMPORT_KDF_SALT_BYTES.contains(&salt)
    {
        return Err(Error::invalid(
            "header.kdf.salt",
            format!(
                "must be {} to {} bytes, hex",
                IMPORT_KDF_SALT_BYTES.start(),
                IMPORT_KDF_SALT_BYTES.end()
            ),
        ));
    }
    Ok(())
}

/// An opened export's contents.
struct ParsedExport {
    tenant: TenantId,
    rows: TenantRows,
    notifier_secret: Option<Zeroizing<Vec<u8>>>,
}

/// Parses the JSON lines of an opened payload.
fn parse_payload(payload: &[u8]) -> Result<ParsedExport> {
    let mut lines = payload.split(|b| *b == b'\n');
    let first: Value = lines
        .next()
        .and_then(|l| serde_json::from_slice(l).ok())
        .ok_or_else(|| bad_file("the first record"))?;
    if first["record"] != "export" {
        return Err(bad_file("the first record is not the export record"));
    }
    if first["payload_format"] != PAYLOAD_FORMAT {
        return Err(bad_file("unknown payload format"));
    }
    let tenant = first["tenant"]
        .as_str()
        .and_then(|t| uuid::Uuid::parse_str(t).ok())
        .map(TenantId::from_uuid)
        .ok_or_else(|| bad_file("the tenant id"))?;
    let mut rows = TenantRows::default();
    let mut notifier_secret = None;
    let mut ended = false;
    while let Some(line) = lines.next() {
        if line.is_empty() {
            continue;
        }
        if ended {
            return Err(bad_file("records after the end record"));
        }
        let record: Value = serde_json::from_slice(line).map_err(|_| bad_file("a record"))?;
        match record["record"].as_str() {
            Some("table") => {
                let name = record["name"]
                    .as_str()
                    .ok_or_else(|| bad_file("a table's name"))?
                    .to_owned();
                let columns = record["columns"]
                    .as_array()
                    .ok_or_else(|| bad_file("a table's columns"))?
                    .iter()
                    .map(|c| {
                        let name = c[0].as_str().ok_or_else(|| bad_file("a column's name"))?;
                        let kind = c[1]
                            .as_str()
                            .and_then(ColumnKind::parse)
                            .ok_or_else(|| bad_file("a column's kind"))?;
                        Ok((name.to_owned(), kind))
                    })
                    .collect::<Result<Vec<_>>>()?;
                let count = record["rows"]
                    .as_u64()
                    .ok_or_else(|| bad_file("a table's row count"))?;
                let mut table = TableRows {
                    table: name,
                    columns,
                    rows: Vec::new(),
                };
                for _ in 0..count {
                    let line = lines.next().ok_or_else(|| bad_file("a table ends early"))?;
                    let parsed: Value =
                        serde_json::from_slice(line).map_err(|_| bad_file("a row"))?;
                    let cells = parsed.as_array().ok_or_else(|| bad_file("a row"))?;
                    if cells.len() != table.columns.len() {
                        return Err(bad_file("a row's length"));
                    }
                    let row = cells
                        .iter()
                        .zip(&table.columns)
                        .map(|(v, (_, k))| cell_of(v, *k))
                        .collect::<Result<Vec<_>>>()?;
                    // A row of values held plaintext (base64) in the tree.
                    zeroize_value(parsed);
                    table.rows.push(row);
                }
                rows.tables.push(table);
            }
            Some("notifier_secret") => {
                let value = record["value"]
                    .as_str()
                    .and_then(|v| B64.decode(v).ok())
                    .ok_or_else(|| bad_file("the notifier secret"))?;
                notifier_secret = Some(Zeroizing::new(value));
            }
            Some("end") => {
                if record["tables"].as_u64() != Some(rows.tables.len() as u64) {
                    return Err(bad_file("the end record's table count"));
                }
                ended = true;
            }
            _ => return Err(bad_file("an unknown record")),
        }
    }
    if !ended {
        return Err(bad_file("no end record"));
    }
    Ok(ParsedExport {
        tenant,
        rows,
        notifier_secret,
    })
}
