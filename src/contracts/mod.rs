//! Contract reconciliation (read-only): the company's contract data against one source server.
//!
//! A contract source — a CSV export ([`load_csv`], [`parse_csv`]) or an HTTP JSON endpoint
//! ([`fetch_json`], [`parse_json`]) — gives, per customer, an id, a name, contact e-mail(s), a
//! preferred language, a reseller, and the services (cPanel users and/or domains) with the
//! server each is on according to the contract. A [`ContractFields`] mapping says which source
//! column or JSON key holds what. Loading never stops at a bad row: whole-source problems (an
//! unreadable file, a missing required column, an HTTP error) are a [`ContractError`]; a bad
//! row (empty customer id, invalid e-mail, a service that is neither a cPanel user nor a domain,
//! a duplicate customer with conflicting data) is a [`RowIssue`] with its place, and loading
//! goes on.
//!
//! [`reconcile`] is a pure function: contracts + the inventory of one server ([`ServerInventory`],
//! a small shape of its own so this module does not depend on how the inventory is gathered) +
//! how contracts spell our servers' names ([`ServerNames`]) → a [`Reconciliation`] that puts every
//! account and every domain in exactly one [`Bucket`]. Nothing is ever written back to the
//! contract system: this module only reads.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use reqwest::Url;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::normalize_server;
pub use crate::config::{ContractFields, ContractSource, ContractsConfig, ServerNames};
use crate::names::{AccountName, DomainName};
use crate::secret::Secret;

mod reconcile;

pub use reconcile::*;

// ---------------------------------------------------------------------------------------------
// Loaded contracts.

/// Where in the source a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Place {
    /// A CSV record, by the 1-based line it starts on (the header is line 1).
    Line(u64),
    /// A JSON item, by its 1-based position in the array.
    Item(u64),
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Line(line) => write!(f, "{line}"),
            Place::Item(item) => write!(f, "item {item}"),
        }
    }
}

/// One customer of the contract system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    /// The customer id as the source gives it (trimmed).
    pub id: String,
    /// The customer's name (may be empty).
    pub name: String,
    /// The valid contact addresses, in source order, without duplicates.
    pub emails: Vec<String>,
    /// Addresses the source gave that are not valid.
    pub invalid_emails: Vec<String>,
    /// Preferred language, as given.
    pub language: Option<String>,
    /// The reseller, as given.
    pub reseller: Option<String>,
    /// Where the customer first appears.
    pub first_seen: Place,
    /// True when rows for this id disagree (see the [`IssueKind::DuplicateCustomer`] issues);
    /// the first row's data is kept.
    pub conflicting: bool,
}

/// What a contract service names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceTarget {
    /// A cPanel account.
    Account(AccountName),
    /// A domain.
    Domain(DomainName),
}

/// One service of a customer's contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// The customer it belongs to.
    pub customer_id: String,
    /// The account or domain.
    pub target: ServiceTarget,
    /// The server the contract says it is on, as spelled there; `None` when the row left it empty.
    pub server: Option<String>,
    /// Where it came from.
    pub place: Place,
}

/// What kind of problem a row had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IssueKind {
    /// The customer id is empty: the row could not be attached to a customer and is only kept here.
    EmptyCustomerId,
    /// An e-mail address is not valid; the customer is kept without it.
    InvalidEmail,
    /// A service is neither a valid cPanel user nor a valid domain; it is not used.
    InvalidService,
    /// The row names no service at all.
    NoService,
    /// The row names no server; its services match wherever they are found.
    MissingServer,
    /// The row has a different number of fields than the header: it is only kept here.
    WrongFieldCount,
    /// A JSON item is not an object, or a value is an object where text was expected.
    InvalidValue,
    /// The same customer id with conflicting data; the first is kept.
    DuplicateCustomer,
    /// The same service under another customer or server; the first is kept.
    DuplicateService,
}

/// A problem with one row (CSV record or JSON item). Loading went on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowIssue {
    /// The file or URL.
    pub origin: String,
    /// Where in it.
    pub place: Place,
    /// Our field name (`customer_id`, `email`, …).
    pub field: String,
    /// The source column or key that field is read from.
    pub column: String,
    /// What kind of problem.
    pub kind: IssueKind,
    /// What was wrong, with the offending value.
    pub message: String,
    /// The whole row, when it was not used at all (so nothing is lost).
    pub raw: Option<String>,
    /// The customer the row is about, when the row was attached to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
}

impl fmt::Display for RowIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let separator = match self.place {
            Place::Line(_) => ":",
            Place::Item(_) => " ",
        };
        write!(
            f,
            "{}{separator}{}: {} ({}): {}",
            self.origin, self.place, self.column, self.field, self.message
        )
    }
}

/// Everything a contract source gave, with the problems found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractSet {
    /// The file or URL (without query or credentials).
    pub origin: String,
    /// Customers by id.
    pub customers: BTreeMap<String, Customer>,
    /// Services in source order; a service appears once (duplicates are issues).
    pub services: Vec<Service>,
    /// Row-level problems, in source order.
    pub issues: Vec<RowIssue>,
}

/// A contract source that could not be used at all.
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    /// The file could not be read.
    #[error("{origin}: cannot read the contract file: {source}")]
    Read {
        /// The file.
        origin: String,
        /// Why.
        source: std::io::Error,
    },
    /// The source is not UTF-8.
    #[error("{origin}: expected UTF-8 text, but byte {offset} is not UTF-8 (save the export as UTF-8)")]
    NotUtf8 {
        /// The file or URL.
        origin: String,
        /// The first offending byte.
        offset: usize,
    },
    /// Required columns (or JSON keys) are missing.
    #[error("{origin}: missing required column(s) {}; the columns are: {}", .missing.join(", "), .found.join(", "))]
    MissingColumns {
        /// The file or URL.
        origin: String,
        /// Each missing one as `"column" (our field)`.
        missing: Vec<String>,
        /// The columns or keys that do exist, quoted.
        found: Vec<String>,
    },
    /// A quoted CSV field is never closed: everything after its opening quote would be read as
    /// one value and the rows there would be lost, so the whole file is refused.
    #[error(
        "{origin}:{line}:{column}: {}expected a closing quote (\") for the quoted value that opens here, but the file ends inside it; the rows after it would be lost, so the file is not used (close the quote; a quote inside a quoted value is written twice: \"\")",
        .field.as_deref().map(|f| format!("{f}: ")).unwrap_or_default()
    )]
    UnterminatedQuote {
        /// The file.
        origin: String,
        /// The 1-based line the quote opens on.
        line: u64,
        /// The 1-based column (in characters) of the opening quote.
        column: u64,
        /// The header column the quoted value is in, quoted (absent in the header line itself).
        field: Option<String>,
    },
    /// The CSV could not be read as CSV (an empty file, a broken header).
    #[error("{origin}: {message}")]
    Csv {
        /// The file.
        origin: String,
        /// What was wrong.
        message: String,
    },
    /// The HTTP request failed (connection, timeout, TLS).
    #[error("{origin}: request failed: {message}")]
    Http {
        /// The URL.
        origin: String,
        /// What failed.
        message: String,
        /// Whether trying again later may help.
        transient: bool,
    },
    /// The endpoint answered with an error status.
    #[error("{origin}: the contract endpoint answered HTTP {status}")]
    Status {
        /// The URL.
        origin: String,
        /// The status code.
        status: u16,
    },
    /// The answer is not JSON of the expected shape.
    #[error("{origin}: {message}")]
    BadJson {
        /// The URL.
        origin: String,
        /// What was wrong.
        message: String,
    },
}

impl ContractError {
    /// Whether trying again later may help (network trouble, a 5xx or 429 answer).
    pub fn is_transient(&self) -> bool {
        match self {
            ContractError::Http { transient, .. } => *transient,
            ContractError::Status { status, .. } => *status >= 500 || *status == 429,
            ContractError::Read { .. }
            | ContractError::NotUtf8 { .. }
            | ContractError::MissingColumns { .. }
            | ContractError::UnterminatedQuote { .. }
            | ContractError::Csv { .. }
            | ContractError::BadJson { .. } => false,
        }
    }

    /// Whether the source is broken in a way that silently loses rows if read on: planning on
    /// it would move accounts on a wrong reading of the contracts, so it must stop instead.
    pub fn is_corrupt(&self) -> bool {
        match self {
            ContractError::UnterminatedQuote { .. } => true,
            ContractError::Read { .. }
            | ContractError::NotUtf8 { .. }
            | ContractError::MissingColumns { .. }
            | ContractError::Csv { .. }
            | ContractError::Http { .. }
            | ContractError::Status { .. }
            | ContractError::BadJson { .. } => false,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fields of a record, shared by CSV and JSON.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    CustomerId,
    Name,
    Email,
    Language,
    User,
    Domain,
    Service,
    Server,
    Reseller,
}

impl Field {
    const ALL: [Field; 9] = [
        Field::CustomerId,
        Field::Name,
        Field::Email,
        Field::Language,
        Field::User,
        Field::Domain,
        Field::Service,
        Field::Server,
        Field::Reseller,
    ];
    const REQUIRED: [Field; 4] = [Field::CustomerId, Field::Name, Field::Email, Field::Server];
    const SERVICES: [Field; 3] = [Field::User, Field::Domain, Field::Service];

    fn ours(self) -> &'static str {
        match self {
            Field::CustomerId => "customer_id",
            Field::Name => "name",
            Field::Email => "email",
            Field::Language => "language",
            Field::User => "user",
            Field::Domain => "domain",
            Field::Service => "service",
            Field::Server => "server",
            Field::Reseller => "reseller",
        }
    }

    fn column(self, fields: &ContractFields) -> &str {
        match self {
            Field::CustomerId => &fields.customer_id,
            Field::Name => &fields.name,
            Field::Email => &fields.email,
            Field::Language => &fields.language,
            Field::User => &fields.user,
            Field::Domain => &fields.domain,
            Field::Service => &fields.service,
            Field::Server => &fields.server,
            Field::Reseller => &fields.reseller,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The values of one record, per field (CSV: zero or one; JSON: arrays give several).
struct Record {
    place: Place,
    values: [Vec<String>; 9],
    raw: String,
}

impl Record {
    fn get(&self, field: Field) -> &[String] {
        &self.values[field.index()]
    }

    /// The first non-empty value, trimmed.
    fn first(&self, field: Field) -> Option<&str> {
        self.get(field).iter().map(|v| v.trim()).find(|v| !v.is_empty())
    }
}

/// Checks that the required columns exist; `has` says whether a column or key exists.
fn check_columns(
    origin: &str,
    fields: &ContractFields,
    found: Vec<String>,
    has: impl Fn(&str) -> bool,
) -> Result<(), ContractError> {
    let describe = |field: Field| format!("{:?} ({})", field.column(fields), field.ours());
    let mut missing: Vec<String> =
        Field::REQUIRED.iter().filter(|f| !has(f.column(fields))).map(|f| describe(*f)).collect();
    if !Field::SERVICES.iter().any(|f| has(f.column(fields))) {
        missing.push(format!(
            "one of {} ({})",
            Field::SERVICES.iter().map(|f| format!("{:?}", f.column(fields))).collect::<Vec<_>>().join(", "),
            "user, domain or service"
        ));
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(ContractError::MissingColumns {
        origin: origin.to_owned(),
        missing,
        found: found.iter().map(|c| format!("{c:?}")).collect(),
    })
}

/// Collects records into a [`ContractSet`].
struct Builder<'a> {
    fields: &'a ContractFields,
    set: ContractSet,
    /// The first claim of each service: (customer id, server, place).
    claims: HashMap<ServiceTarget, (String, Option<String>, Place)>,
}

impl<'a> Builder<'a> {
    fn new(origin: &str, fields: &'a ContractFields) -> Self {
        Self {
            fields,
            set: ContractSet { origin: origin.to_owned(), ..ContractSet::default() },
            claims: HashMap::new(),
        }
    }

    fn issue(&mut self, place: Place, field: Field, kind: IssueKind, message: String, raw: Option<String>) {
        self.set.issues.push(RowIssue {
            origin: self.set.origin.clone(),
            place,
            field: field.ours().to_owned(),
            column: field.column(self.fields).to_owned(),
            kind,
            message,
            raw,
            customer_id: None,
        });
    }

    /// An issue of a row that was attached to customer `customer_id`.
    fn customer_issue(
        &mut self,
        customer_id: &str,
        place: Place,
        field: Field,
        kind: IssueKind,
        message: String,
    ) {
        self.issue(place, field, kind, message, None);
        if let Some(issue) = self.set.issues.last_mut() {
            issue.customer_id = Some(customer_id.to_owned());
        }
    }

    fn add(&mut self, record: Record) {
        let place = record.place;
        let Some(id) = record.first(Field::CustomerId).map(str::to_owned) else {
            self.issue(
                place,
                Field::CustomerId,
                IssueKind::EmptyCustomerId,
                "expected a customer id, but it is empty; the row is not used".to_owned(),
                Some(record.raw.clone()),
            );
            return;
        };
        let name = record.get(Field::Name).iter().map(|v| v.trim()).collect::<Vec<_>>().join(" ");
        let name = name.trim().to_owned();
        let language = record.first(Field::Language).map(str::to_owned);
        let reseller = record.first(Field::Reseller).map(str::to_owned);
        let mut emails = Vec::new();
        let mut invalid_emails = Vec::new();
        for value in record.get(Field::Email) {
            for piece in value.split([',', ';']).map(str::trim).filter(|p| !p.is_empty()) {
                match valid_email(piece) {
                    Some(email) => {
                        if !emails.iter().any(|e: &String| e.eq_ignore_ascii_case(&email)) {
                            emails.push(email);
                        }
                    }
                    None => {
                        self.customer_issue(
                            &id,
                            place,
                            Field::Email,
                            IssueKind::InvalidEmail,
                            format!("expected an e-mail address like \"name@example.fi\", got {piece:?}"),
                        );
                        invalid_emails.push(piece.to_owned());
                    }
                }
            }
        }
        self.merge_customer(Customer {
            id: id.clone(),
            name,
            emails,
            invalid_emails,
            language,
            reseller,
            first_seen: place,
            conflicting: false,
        });

        let server = record.first(Field::Server).map(str::to_owned);
        let mut targets = Vec::new();
        for field in Field::SERVICES {
            for value in record.get(field) {
                for piece in value.split([',', ';', ' ', '\t', '\n', '\r']).filter(|p| !p.is_empty()) {
                    match parse_service(field, piece) {
                        Ok(target) => targets.push(target),
                        Err(reason) => self.customer_issue(
                            &id,
                            place,
                            field,
                            IssueKind::InvalidService,
                            format!("{piece:?} is not used: {reason}"),
                        ),
                    }
                }
            }
        }
        if targets.is_empty() {
            let had_any = Field::SERVICES.iter().any(|f| record.first(*f).is_some());
            if !had_any {
                self.customer_issue(
                    &id,
                    place,
                    Field::User,
                    IssueKind::NoService,
                    "expected a service (a cPanel user or a domain), but the row names none".to_owned(),
                );
            }
            return;
        }
        if server.is_none() {
            self.customer_issue(
                &id,
                place,
                Field::Server,
                IssueKind::MissingServer,
                "expected the server the contract says the service is on, but it is empty; the services match wherever they are found".to_owned(),
            );
        }
        for target in targets {
            self.add_service(&id, target, server.clone(), place);
        }
    }

    fn merge_customer(&mut self, new: Customer) {
        let Some(existing) = self.set.customers.get_mut(&new.id) else {
            self.set.customers.insert(new.id.clone(), new);
            return;
        };
        let mut conflicts = Vec::new();
        let mut check = |field: Field, old: &str, new: &str| {
            if !old.is_empty() && !new.is_empty() && old != new {
                conflicts.push((field, format!("{old:?} there, {new:?} here")));
            }
        };
        check(Field::Name, &existing.name, &new.name);
        check(
            Field::Language,
            existing.language.as_deref().unwrap_or(""),
            new.language.as_deref().unwrap_or(""),
        );
        check(
            Field::Reseller,
            existing.reseller.as_deref().unwrap_or(""),
            new.reseller.as_deref().unwrap_or(""),
        );
        let lower = |emails: &[String]| emails.iter().map(|e| e.to_lowercase()).collect::<BTreeSet<_>>();
        if !existing.emails.is_empty()
            && !new.emails.is_empty()
            && lower(&existing.emails) != lower(&new.emails)
        {
            conflicts.push((
                Field::Email,
                format!("{:?} there, {:?} here", existing.emails.join(", "), new.emails.join(", ")),
            ));
        }
        // Fill what the first row left empty; otherwise the first row wins.
        if existing.name.is_empty() {
            existing.name = new.name;
        }
        if existing.language.is_none() {
            existing.language = new.language;
        }
        if existing.reseller.is_none() {
            existing.reseller = new.reseller;
        }
        if existing.emails.is_empty() {
            existing.emails = new.emails;
        }
        for invalid in new.invalid_emails {
            if !existing.invalid_emails.contains(&invalid) {
                existing.invalid_emails.push(invalid);
            }
        }
        if conflicts.is_empty() {
            return;
        }
        existing.conflicting = true;
        let first = existing.first_seen;
        let id = existing.id.clone();
        for (field, detail) in conflicts {
            self.customer_issue(
                &id,
                new.first_seen,
                field,
                IssueKind::DuplicateCustomer,
                format!(
                    "customer {id:?} appears again with a different {}: {detail} (first at {first}); the first is kept",
                    field.ours()
                ),
            );
        }
    }

    fn add_service(
        &mut self,
        customer_id: &str,
        target: ServiceTarget,
        server: Option<String>,
        place: Place,
    ) {
        if let Some((first_customer, first_server, first_place)) = self.claims.get(&target) {
            let same_server =
                first_server.as_deref().map(normalize_server) == server.as_deref().map(normalize_server);
            if first_customer == customer_id && same_server {
                return;
            }
            let message = format!(
                "{} is already claimed by customer {first_customer:?} on server {:?} (at {first_place}); this claim by customer {customer_id:?} on server {:?} is not used",
                describe_target(&target),
                first_server.as_deref().unwrap_or(""),
                server.as_deref().unwrap_or(""),
            );
            let field = match target {
                ServiceTarget::Account(_) => Field::User,
                ServiceTarget::Domain(_) => Field::Domain,
            };
            self.customer_issue(customer_id, place, field, IssueKind::DuplicateService, message);
            return;
        }
        self.claims.insert(target.clone(), (customer_id.to_owned(), server.clone(), place));
        self.set.services.push(Service { customer_id: customer_id.to_owned(), target, server, place });
    }
}

fn describe_target(target: &ServiceTarget) -> String {
    match target {
        ServiceTarget::Account(user) => format!("cPanel user {user}"),
        ServiceTarget::Domain(domain) => format!("domain {domain}"),
    }
}

/// A service value as a cPanel user or a domain, depending on the column it came from.
fn parse_service(field: Field, value: &str) -> Result<ServiceTarget, String> {
    match field {
        Field::User => {
            AccountName::parse(&value.to_lowercase()).map(ServiceTarget::Account).map_err(|e| e.to_string())
        }
        Field::Domain => parse_domain(value).map(ServiceTarget::Domain),
        _ => {
            let user = AccountName::parse(&value.to_lowercase());
            if let Ok(user) = user {
                return Ok(ServiceTarget::Account(user));
            }
            parse_domain(value).map(ServiceTarget::Domain).map_err(|domain_err| {
                let user_err = user.map_or_else(|e| e.reason, |_| "");
                format!("it is neither a valid cPanel user ({user_err}) nor a valid domain ({domain_err})")
            })
        }
    }
}

/// A domain; a Unicode name ("äänekoskenkukka.fi") is taken in its punycode form.
fn parse_domain(value: &str) -> Result<DomainName, String> {
    if value.is_ascii() {
        return DomainName::parse(value).map_err(|e| e.to_string());
    }
    // The URL parser applies IDNA (UTS #46), which is what browsers and resolvers do.
    let ascii = Url::parse(&format!("http://{value}/"))
        .ok()
        .and_then(|url| url.host_str().map(str::to_owned))
        .ok_or_else(|| {
            format!("domain {value:?} is not valid: it is not a valid international domain name")
        })?;
    DomainName::parse(&ascii).map_err(|e| e.to_string())
}

/// A usable e-mail address (an addr-spec, or a mailbox `Name <addr>` reduced to its address) whose
/// domain is a dotted name, or `None`.
pub fn valid_email(value: &str) -> Option<String> {
    let mailbox = lettre::message::Mailbox::from_str(value.trim()).ok()?;
    let address = mailbox.email;
    let domain = address.domain();
    // A customer's address must be routable: no bare host names or address literals.
    if !domain.contains('.') || domain.starts_with('[') || domain.ends_with('.') {
        return None;
    }
    Some(address.to_string())
}

// ---------------------------------------------------------------------------------------------
// CSV.

/// Reads a CSV contract file (see [`parse_csv`]).
pub fn load_csv(
    path: &Path,
    delimiter: Option<u8>,
    fields: &ContractFields,
) -> Result<ContractSet, ContractError> {
    let origin = path.display().to_string();
    let bytes =
        std::fs::read(path).map_err(|source| ContractError::Read { origin: origin.clone(), source })?;
    parse_csv(&bytes, &origin, delimiter, fields)
}

/// Parses CSV contract text: UTF-8 with or without a BOM, CRLF or LF, quoted fields with
/// embedded delimiters, quotes and newlines; one row per service (customer columns repeated) and
/// several e-mails in one field separated by `,` or `;`. The delimiter (`,` or `;`) is detected
/// from the header line unless given. Header names are matched case-insensitively after trimming.
pub fn parse_csv(
    bytes: &[u8],
    origin: &str,
    delimiter: Option<u8>,
    fields: &ContractFields,
) -> Result<ContractSet, ContractError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes)
        .map_err(|e| ContractError::NotUtf8 { origin: origin.to_owned(), offset: e.valid_up_to() })?;
    let delimiter = delimiter.unwrap_or_else(|| detect_delimiter(text));
    let open_quote = unterminated_quote(text, delimiter);
    let refuse = |quote: &OpenQuote, headers: Option<&[String]>| ContractError::UnterminatedQuote {
        origin: origin.to_owned(),
        line: quote.line,
        column: quote.column,
        field: headers.and_then(|h| h.get(quote.field_index)).map(|name| format!("{name:?}")),
    };
    if let Some(quote) = open_quote.as_ref().filter(|q| q.line == 1) {
        return Err(refuse(quote, None));
    }
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .flexible(true)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| ContractError::Csv {
            origin: origin.to_owned(),
            message: format!("cannot read the header: {e}"),
        })?
        .iter()
        .map(|h| h.trim().to_owned())
        .collect();
    if headers.iter().all(String::is_empty) {
        return Err(ContractError::Csv {
            origin: origin.to_owned(),
            message: "expected a header line naming the columns, but the file is empty".to_owned(),
        });
    }
    if let Some(quote) = &open_quote {
        return Err(refuse(quote, Some(&headers)));
    }
    let lowered: Vec<String> = headers.iter().map(|h| h.to_lowercase()).collect();
    let column_of = |name: &str| lowered.iter().position(|h| *h == name.trim().to_lowercase());
    check_columns(origin, fields, headers.clone(), |name| column_of(name).is_some())?;
    let indices: Vec<Option<usize>> = Field::ALL.iter().map(|f| column_of(f.column(fields))).collect();

    let separator = char::from(delimiter).to_string();
    let mut builder = Builder::new(origin, fields);
    for result in reader.records() {
        let record = match result {
            Ok(record) => record,
            Err(err) => {
                let line = err.position().map_or(0, |p| line_at(text, p));
                builder.issue(
                    Place::Line(line),
                    Field::CustomerId,
                    IssueKind::InvalidValue,
                    format!("the row cannot be read as CSV: {err}"),
                    None,
                );
                if err.position().is_none() {
                    break;
                }
                continue;
            }
        };
        let line = record.position().map_or(0, |p| line_at(text, p));
        let raw = record.iter().collect::<Vec<_>>().join(&separator);
        if record.iter().all(|v| v.trim().is_empty()) {
            continue;
        }
        if record.len() != headers.len() {
            builder.issue(
                Place::Line(line),
                Field::CustomerId,
                IssueKind::WrongFieldCount,
                format!(
                    "expected {} fields like the header, got {} (an unquoted {:?} in a value?); the row is not used",
                    headers.len(),
                    record.len(),
                    separator
                ),
                Some(raw),
            );
            continue;
        }
        let values = std::array::from_fn(|i| {
            indices[i].and_then(|col| record.get(col)).map(|v| vec![v.to_owned()]).unwrap_or_default()
        });
        builder.add(Record { place: Place::Line(line), values, raw });
    }
    Ok(builder.set)
}

/// The 1-based line a record starts on. With CRLF line ends the csv crate ends a record at the
/// CR and reports the next one from the LF, so its own line count is one short: skip the line
/// end, then count the newlines before the record.
fn line_at(text: &str, position: &csv::Position) -> u64 {
    let bytes = text.as_bytes();
    let mut offset = usize::try_from(position.byte()).unwrap_or(usize::MAX).min(bytes.len());
    while offset < bytes.len() && matches!(bytes[offset], b'\r' | b'\n') {
        offset += 1;
    }
    let newlines = text.as_bytes()[..offset].iter().filter(|b| **b == b'\n').count();
    u64::try_from(newlines).unwrap_or(u64::MAX).saturating_add(1)
}

/// Where a quoted CSV value opens that is never closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OpenQuote {
    /// 1-based line.
    line: u64,
    /// 1-based column, in characters.
    column: u64,
    /// 0-based field of its record.
    field_index: usize,
}

/// The quote that opens a value and is never closed, read the way the csv crate reads (a quote
/// opens a quoted value only at the start of a field, `""` inside one is a quote, and a quote in
/// the middle of an unquoted value is just a character). The csv crate itself reads such a
/// value to the end of the file without complaint, which is why this is checked first.
fn unterminated_quote(text: &str, delimiter: u8) -> Option<OpenQuote> {
    #[derive(Clone, Copy)]
    enum State {
        FieldStart,
        Unquoted,
        Quoted,
        QuoteInQuoted,
    }
    let mut state = State::FieldStart;
    let mut field_index = 0usize;
    let mut opened = None;
    for (offset, byte) in text.bytes().enumerate() {
        state = match (state, byte) {
            (State::FieldStart, b'"') => {
                opened = Some((offset, field_index));
                State::Quoted
            }
            (State::FieldStart | State::Unquoted | State::QuoteInQuoted, b'\r' | b'\n') => {
                field_index = 0;
                State::FieldStart
            }
            (State::FieldStart | State::Unquoted | State::QuoteInQuoted, byte) if byte == delimiter => {
                field_index += 1;
                State::FieldStart
            }
            (State::FieldStart | State::Unquoted, _) => State::Unquoted,
            (State::Quoted, b'"') => State::QuoteInQuoted,
            (State::Quoted, _) => State::Quoted,
            (State::QuoteInQuoted, b'"') => State::Quoted,
            (State::QuoteInQuoted, _) => State::Unquoted,
        };
    }
    let State::Quoted = state else {
        return None;
    };
    let (offset, field_index) = opened?;
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    Some(OpenQuote {
        line: count(before.matches('\n').count()).saturating_add(1),
        column: count(before[line_start..].chars().count()).saturating_add(1),
        field_index,
    })
}

/// `;` when the header line has more semicolons than commas outside quotes, else `,`.
fn detect_delimiter(text: &str) -> u8 {
    let (mut commas, mut semicolons, mut quoted) = (0usize, 0usize, false);
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            '\n' if !quoted => break,
            ',' if !quoted => commas += 1,
            ';' if !quoted => semicolons += 1,
            _ => {}
        }
    }
    if semicolons > commas { b';' } else { b',' }
}

// ---------------------------------------------------------------------------------------------
// JSON over HTTP.

/// How long the contract endpoint may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(60);

/// GETs the contracts from an HTTP(S) endpoint (TLS verified against the web PKI) with an
/// optional bearer token, and parses them with [`parse_json`]. Read-only: only GET is ever sent.
#[tracing::instrument(skip_all, fields(url = %crate::secret::shown_url(url)))]
pub async fn fetch_json(
    url: &Url,
    token: Option<&Secret>,
    fields: &ContractFields,
) -> Result<ContractSet, ContractError> {
    let origin = crate::secret::shown_url(url);
    let http_error = |err: reqwest::Error| {
        let transient = err.is_timeout() || err.is_connect() || err.is_request() || err.is_body();
        ContractError::Http { origin: origin.clone(), message: err.without_url().to_string(), transient }
    };
    let client = reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("siirto/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ContractError::Http {
            origin: origin.clone(),
            message: e.to_string(),
            transient: false,
        })?;
    let mut request = client.get(url.clone()).header(reqwest::header::ACCEPT, "application/json");
    if let Some(token) = token {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
            ContractError::Http {
                origin: origin.clone(),
                message: "the bearer token contains characters not allowed in a header".to_owned(),
                transient: false,
            }
        })?;
        value.set_sensitive(true);
        request = request.header(AUTHORIZATION, value);
    }
    let response = request.send().await.map_err(http_error)?;
    let status = response.status();
    if !status.is_success() {
        tracing::warn!(status = status.as_u16(), "contract endpoint refused");
        return Err(ContractError::Status { origin, status: status.as_u16() });
    }
    let body = response.bytes().await.map_err(http_error)?;
    parse_json(&body, &origin, fields)
}

/// Parses a JSON contract answer: an array of objects, or `{"items": [...]}`. Each item is one
/// record with the same fields as a CSV row; a value may be a string, a number, null, or an
/// array of those (several e-mails or services). Keys are matched exactly, then as dotted paths.
pub fn parse_json(bytes: &[u8], origin: &str, fields: &ContractFields) -> Result<ContractSet, ContractError> {
    let bad = |message: String| ContractError::BadJson { origin: origin.to_owned(), message };
    let document: Value = serde_json::from_slice(bytes).map_err(|e| bad(format!("expected JSON: {e}")))?;
    let items = match document {
        Value::Array(items) => items,
        Value::Object(mut object) => match object.remove("items") {
            Some(Value::Array(items)) => items,
            _ => {
                return Err(bad(
                    "expected an array of contract objects or an object with an \"items\" array".to_owned(),
                ));
            }
        },
        _ => {
            return Err(bad(
                "expected an array of contract objects or an object with an \"items\" array".to_owned()
            ));
        }
    };
    // A key no item has is a mapping error, reported like a missing CSV column.
    if items.iter().any(Value::is_object) {
        let mut found = BTreeSet::new();
        for item in items.iter().filter_map(Value::as_object) {
            found.extend(item.keys().cloned());
        }
        let has = |key: &str| items.iter().any(|item| lookup(item, key).is_some());
        check_columns(origin, fields, found.into_iter().collect(), has)?;
    }

    let mut builder = Builder::new(origin, fields);
    for (index, item) in items.iter().enumerate() {
        let place = Place::Item(index as u64 + 1);
        let raw = item.to_string();
        if !item.is_object() {
            builder.issue(
                place,
                Field::CustomerId,
                IssueKind::InvalidValue,
                "expected an object, got something else; the item is not used".to_owned(),
                Some(raw),
            );
            continue;
        }
        let mut values: [Vec<String>; 9] = Default::default();
        for field in Field::ALL {
            let Some(value) = lookup(item, field.column(fields)) else {
                continue;
            };
            match texts(value) {
                Some(texts) => values[field.index()] = texts,
                None => builder.issue(
                    place,
                    field,
                    IssueKind::InvalidValue,
                    format!("expected text, a number or a list of them, got {value}"),
                    None,
                ),
            }
        }
        builder.add(Record { place, values, raw });
    }
    Ok(builder.set)
}

/// An item's value by key, or by dotted path into nested objects.
fn lookup<'v>(item: &'v Value, key: &str) -> Option<&'v Value> {
    let object = item.as_object()?;
    if let Some(value) = object.get(key) {
        return Some(value);
    }
    if !key.contains('.') {
        return None;
    }
    key.split('.').try_fold(item, |value, part| value.as_object()?.get(part))
}

/// A JSON value as texts: scalars give one, null none, arrays their elements; objects `None`.
fn texts(value: &Value) -> Option<Vec<String>> {
    match value {
        Value::Null => Some(Vec::new()),
        Value::String(s) => Some(vec![s.clone()]),
        Value::Number(n) => Some(vec![n.to_string()]),
        Value::Bool(b) => Some(vec![b.to_string()]),
        Value::Array(items) => {
            let mut out = Vec::new();
            for item in items {
                match item {
                    Value::Array(_) | Value::Object(_) => return None,
                    other => out.extend(texts(other)?),
                }
            }
            Some(out)
        }
        Value::Object(_) => None,
    }
}

/// Loads the contracts the config names (a CSV file or the HTTP endpoint).
pub async fn load(config: &ContractsConfig) -> Result<ContractSet, ContractError> {
    match &config.source {
        ContractSource::Csv { path, delimiter } => {
            let path = path.clone();
            let delimiter = *delimiter;
            let fields = config.fields.clone();
            // Reading and parsing a large file is blocking work.
            tokio::task::spawn_blocking(move || load_csv(&path, delimiter, &fields)).await.map_err(|e| {
                ContractError::Csv {
                    origin: "contracts".to_owned(),
                    message: format!("loader task failed: {e}"),
                }
            })?
        }
        ContractSource::Http { url, token } => fetch_json(url, token.as_ref(), &config.fields).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> AccountName {
        AccountName::parse(name).expect("user")
    }

    fn domain(name: &str) -> DomainName {
        DomainName::parse(name).expect("domain")
    }

    fn csv(text: &str) -> ContractSet {
        parse_csv(text.as_bytes(), "c.csv", None, &ContractFields::default()).expect("csv")
    }

    const HEADER: &str = "customer_id,name,email,language,user,domain,server,reseller\n";

    #[test]
    fn delimiter_detection() {
        assert_eq!(detect_delimiter("a;b;c\n1,2;3"), b';');
        assert_eq!(detect_delimiter("a,b,c\n1;2;3;4;5"), b',');
        assert_eq!(detect_delimiter("\"a;b\",c\n"), b',');
        assert_eq!(detect_delimiter("abc"), b',');
    }

    #[test]
    fn an_unterminated_quote_refuses_the_file_where_it_opens() {
        // Line 3 opens a quoted name that never closes: the csv crate would read lines 3-5 as
        // one value of one short row, and the rows 4 and 5 would be lost.
        let text = format!(
            "{HEADER}\
             c1,Kukka Oy,k@example.fi,fi,kukka,,old1,\n\
             c2,\"Puu Oy,p@example.fi,fi,puu,,old1,\n\
             c3,Lehti Oy,l@example.fi,fi,lehti,,old1,\n\
             c4,Oksa Oy,o@example.fi,fi,oksa,,old1,\n"
        );
        let err = parse_csv(text.as_bytes(), "c.csv", None, &ContractFields::default()).expect_err("refused");
        assert!(
            matches!(&err, ContractError::UnterminatedQuote { line: 3, column: 4, field: Some(f), .. } if f == "\"name\""),
            "{err:?}"
        );
        assert!(err.is_corrupt());
        let shown = err.to_string();
        assert!(shown.starts_with("c.csv:3:4: \"name\": expected a closing quote (\")"), "{shown}");
        assert!(!shown.contains("expected 8 fields"), "{shown}");

        // In the header line itself, with `;` and CRLF: no column to name.
        let err =
            parse_csv(b"customer_id;\"name;email\r\n1;a;b\r\n", "h.csv", None, &ContractFields::default())
                .expect_err("refused");
        assert!(err.to_string().starts_with("h.csv:1:13: expected a closing quote"), "{err}");
    }

    #[test]
    fn quotes_that_close_or_are_literal_are_not_unterminated() {
        let table: &[&str] = &[
            "a,b\n1,2\n",
            "a,b\n\"1, one\",\"2 \"\"two\"\"\"\n",
            // A newline inside a closed quoted value, at the very end of the file too.
            "a,b\n\"multi\nline\",2\n3,\"x\"",
            // A quote in the middle of an unquoted value is just a character.
            "a,b\n1 \"inch,2\n",
            // Text after the closing quote goes on unquoted, its quote is literal too.
            "a,b\n\"x\"y\"z,2\n",
        ];
        for text in table {
            assert_eq!(unterminated_quote(text, b','), None, "{text:?}");
        }
        assert_eq!(
            unterminated_quote("a;b\n1;\"x\"\"\n2;3\n", b';'),
            Some(OpenQuote { line: 2, column: 3, field_index: 1 }),
            "a doubled quote is a quote inside the value, not its end"
        );
        assert_eq!(
            unterminated_quote("a,b\nää,\"x", b','),
            Some(OpenQuote { line: 2, column: 4, field_index: 1 }),
            "columns count characters"
        );
    }

    #[test]
    fn emails() {
        let table: &[(&str, Option<&str>)] = &[
            ("matti@example.fi", Some("matti@example.fi")),
            ("Matti Meikäläinen <matti@example.fi>", Some("matti@example.fi")),
            ("  a.b+c@sub.example.fi ", Some("a.b+c@sub.example.fi")),
            ("matti(at)example.fi", None),
            ("matti@localhost", None),
            ("@example.fi", None),
            ("matti@", None),
            ("", None),
            ("a b@example.fi", None),
        ];
        for (input, expected) in table {
            assert_eq!(valid_email(input).as_deref(), *expected, "{input:?}");
        }
    }

    #[test]
    fn services_parse_as_users_or_domains() {
        assert_eq!(parse_service(Field::Service, "Kukka"), Ok(ServiceTarget::Account(user("kukka"))));
        assert_eq!(parse_service(Field::Service, "kukka.fi"), Ok(ServiceTarget::Domain(domain("kukka.fi"))));
        assert_eq!(
            parse_service(Field::Domain, "äänekoskenkukka.fi"),
            Ok(ServiceTarget::Domain(domain("xn--nekoskenkukka-9eba.fi")))
        );
        let err = parse_service(Field::Service, "no such/thing").expect_err("neither");
        assert!(err.contains("neither a valid cPanel user"), "{err}");
        assert!(parse_service(Field::User, "kukka.fi").is_err());
        assert!(parse_service(Field::Domain, "kukka").is_err());
    }

    #[test]
    fn rows_with_problems_become_issues_and_loading_goes_on() {
        let set = csv(&format!(
            "{HEADER}\
             ,Nobody,n@example.fi,fi,nobody,,old1,\n\
             c1,Kukka Oy,bad-address,fi,kukka,,old1,\n\
             c2,Puu Oy,p@example.fi,,bad/user,,old1,\n\
             c3,Tyhjä Oy,t@example.fi,,,,old1,\n\
             c4,Ei palvelinta,e@example.fi,,eipalv,,,\n\
             c5,Liikaa,x@example.fi,fi,liikaa,,old1,,extra\n"
        ));
        let kinds: Vec<(Place, IssueKind, &str)> =
            set.issues.iter().map(|i| (i.place, i.kind, i.field.as_str())).collect();
        assert_eq!(
            kinds,
            vec![
                (Place::Line(2), IssueKind::EmptyCustomerId, "customer_id"),
                (Place::Line(3), IssueKind::InvalidEmail, "email"),
                (Place::Line(4), IssueKind::InvalidService, "user"),
                (Place::Line(5), IssueKind::NoService, "user"),
                (Place::Line(6), IssueKind::MissingServer, "server"),
                (Place::Line(7), IssueKind::WrongFieldCount, "customer_id"),
            ]
        );
        assert!(set.issues[0].raw.as_deref().is_some_and(|r| r.contains("Nobody")));
        assert_eq!(set.customers.keys().collect::<Vec<_>>(), vec!["c1", "c2", "c3", "c4"]);
        assert_eq!(set.customers["c1"].invalid_emails, vec!["bad-address"]);
        assert!(set.customers["c1"].emails.is_empty());
        let targets: Vec<_> = set.services.iter().map(|s| (s.target.clone(), s.server.clone())).collect();
        assert_eq!(
            targets,
            vec![
                (ServiceTarget::Account(user("kukka")), Some("old1".to_owned())),
                (ServiceTarget::Account(user("eipalv")), None),
            ]
        );
        assert!(
            set.issues[1].to_string().starts_with("c.csv:3: email (email): expected an e-mail"),
            "{}",
            set.issues[1]
        );
    }

    #[test]
    fn duplicates_are_flagged_and_the_first_kept() {
        let set = csv(&format!(
            "{HEADER}\
             c1,Kukka Oy,k@example.fi,fi,kukka,,old1,\n\
             c1,Kukka Oy,k@example.fi,fi,,kukka.fi,old1,\n\
             c1,Kukka Ab,k@example.fi,sv,,kukka2.fi,old1,\n\
             c2,Puu Oy,p@example.fi,fi,kukka,,old2,\n\
             c1,Kukka Oy,k@example.fi,fi,kukka,,old1,\n"
        ));
        let kinds: Vec<(Place, IssueKind, &str)> =
            set.issues.iter().map(|i| (i.place, i.kind, i.field.as_str())).collect();
        assert_eq!(
            kinds,
            vec![
                (Place::Line(4), IssueKind::DuplicateCustomer, "name"),
                (Place::Line(4), IssueKind::DuplicateCustomer, "language"),
                (Place::Line(5), IssueKind::DuplicateService, "user"),
            ]
        );
        assert!(set.issues[0].message.contains("\"Kukka Oy\" there, \"Kukka Ab\" here (first at 2)"));
        let c1 = &set.customers["c1"];
        assert!(c1.conflicting);
        assert_eq!((c1.name.as_str(), c1.language.as_deref()), ("Kukka Oy", Some("fi")));
        assert_eq!(set.services.len(), 3);
    }

    #[test]
    fn several_emails_in_one_field() {
        let set =
            csv(&format!("{HEADER}c1,K,\"a@example.fi; b@example.fi, A@example.fi\",fi,kukka,,old1,\n"));
        assert_eq!(set.customers["c1"].emails, vec!["a@example.fi", "b@example.fi"]);
        assert!(set.issues.is_empty(), "{:?}", set.issues);
    }

    #[test]
    fn missing_columns_name_the_file_and_what_exists() {
        let fields = ContractFields { customer_id: "asiakasnro".to_owned(), ..ContractFields::default() };
        let err = parse_csv(b"id;name;email;user;server\n1;a;b;c;d\n", "x.csv", None, &fields)
            .expect_err("missing")
            .to_string();
        assert_eq!(
            err,
            "x.csv: missing required column(s) \"asiakasnro\" (customer_id); the columns are: \"id\", \"name\", \"email\", \"user\", \"server\""
        );
        let err = parse_csv(b"customer_id,name,email,server\n", "x.csv", None, &ContractFields::default())
            .expect_err("no service column")
            .to_string();
        assert!(err.contains("one of \"user\", \"domain\", \"service\""), "{err}");
        let err = parse_csv(b"", "x.csv", None, &ContractFields::default()).expect_err("empty").to_string();
        assert!(err.contains("the file is empty"), "{err}");
        let err = parse_csv(b"a,b\n\xff\n", "x.csv", None, &ContractFields::default()).expect_err("latin1");
        assert!(matches!(err, ContractError::NotUtf8 { offset: 4, .. }), "{err}");
    }

    #[test]
    fn json_shapes() {
        let fields = ContractFields {
            customer_id: "customer.id".to_owned(),
            name: "customer.name".to_owned(),
            email: "emails".to_owned(),
            ..ContractFields::default()
        };
        let body = br#"{"items": [
            {"customer": {"id": 17, "name": "Kukka Oy"}, "emails": ["k@example.fi", "bad"], "user": "kukka",
             "domain": ["kukka.fi", "kukka.com"], "server": "old1", "language": null},
            "not an object",
            {"customer": {"id": 18, "name": "Puu"}, "emails": "p@example.fi", "service": {"x": 1}, "server": "old1"}
        ]}"#;
        let set = parse_json(body, "http://h/c", &fields).expect("json");
        assert_eq!(set.customers["17"].emails, vec!["k@example.fi"]);
        assert_eq!(set.services.len(), 3);
        let kinds: Vec<(Place, IssueKind)> = set.issues.iter().map(|i| (i.place, i.kind)).collect();
        assert_eq!(
            kinds,
            vec![
                (Place::Item(1), IssueKind::InvalidEmail),
                (Place::Item(2), IssueKind::InvalidValue),
                (Place::Item(3), IssueKind::InvalidValue),
                (Place::Item(3), IssueKind::NoService),
            ]
        );
        assert!(
            set.issues[0].to_string().starts_with("http://h/c item 1: emails (email):"),
            "{}",
            set.issues[0]
        );
        let err =
            parse_json(br#"[{"id": 1}]"#, "u", &ContractFields::default()).expect_err("keys").to_string();
        assert!(err.starts_with("u: missing required column(s) \"customer_id\" (customer_id)"), "{err}");
        assert!(err.ends_with("the columns are: \"id\""), "{err}");
        assert!(parse_json(br#"{"data": []}"#, "u", &ContractFields::default()).is_err());
        assert!(parse_json(b"[]", "u", &ContractFields::default()).expect("empty").customers.is_empty());
    }

    #[test]
    fn server_names_are_case_insensitive() {
        let names = ServerNames::new(BTreeMap::from([
            ("old1".to_owned(), vec!["old1.example.fi".to_owned(), "CP1".to_owned()]),
            ("old2".to_owned(), vec!["old2.example.fi".to_owned()]),
        ]));
        assert_eq!(names.host_of("OLD1.example.fi."), Some("old1"));
        assert_eq!(names.host_of(" cp1 "), Some("old1"));
        assert_eq!(names.host_of("old2"), Some("old2"));
        assert_eq!(names.host_of("old9.example.fi"), None);
        assert_eq!(names.names_of("old1"), ["old1.example.fi", "cp1"]);
    }

    // --- reconciliation, table-driven ---

    fn account(name: &str, main: &str, others: &[&str], contact: Option<&str>) -> InventoryAccount {
        InventoryAccount {
            user: user(name),
            main_domain: domain(main),
            domains: std::iter::once(main).chain(others.iter().copied()).map(domain).collect(),
            contact_email: contact.map(str::to_owned),
            owner: Some("root".to_owned()),
        }
    }

    fn names() -> ServerNames {
        ServerNames::new(BTreeMap::from([
            ("old1".to_owned(), vec!["old1.example.fi".to_owned(), "cp1".to_owned()]),
            ("old2".to_owned(), vec!["old2.example.fi".to_owned()]),
        ]))
    }

    /// One contract row: (customer id, e-mail field, user, domain, server, reseller).
    type Row<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str, &'a str);

    fn contracts(rows: &[Row<'_>]) -> ContractSet {
        let mut text = "customer_id;name;email;language;user;domain;server;reseller\r\n".to_owned();
        for (id, email, user, domain, server, reseller) in rows {
            text.push_str(&format!("{id};Customer {id};{email};fi;{user};{domain};{server};{reseller}\r\n"));
        }
        csv(&text)
    }

    /// The bucket names of every account and domain, as `name=bucket` strings.
    fn buckets(rec: &Reconciliation) -> Vec<String> {
        rec.accounts
            .iter()
            .map(|a| format!("{}={}", a.user, a.bucket.name()))
            .chain(rec.domains.iter().map(|d| format!("{}={}", d.domain, d.bucket.name())))
            .collect()
    }

    #[test]
    fn every_item_lands_in_exactly_one_bucket() {
        struct Case<'a> {
            what: &'a str,
            rows: Vec<Row<'a>>,
            inventory: Vec<InventoryAccount>,
            expected: &'a [&'a str],
        }
        let cases = vec![
            Case {
                what: "matched through the user; domains through the account",
                rows: vec![("c1", "k@example.fi", "kukka", "", "old1.example.fi", "")],
                inventory: vec![account("kukka", "kukka.fi", &["www2.kukka.fi"], None)],
                expected: &["kukka=matched", "kukka.fi=matched", "www2.kukka.fi=matched"],
            },
            Case {
                what: "no contract",
                rows: vec![],
                inventory: vec![account("kukka", "kukka.fi", &[], Some("k@example.fi"))],
                expected: &["kukka=on_server_no_contract", "kukka.fi=on_server_no_contract"],
            },
            Case {
                what: "contract names this server, account and domain missing",
                rows: vec![("c1", "k@example.fi", "poissa", "poissa.fi", "CP1", "")],
                inventory: vec![],
                expected: &[
                    "poissa=contract_names_this_server_but_missing",
                    "poissa.fi=contract_names_this_server_but_missing",
                ],
            },
            Case {
                what: "contract names another of our servers, and an unknown one for a domain",
                rows: vec![
                    ("c1", "k@example.fi", "kukka", "", "old2.example.fi", ""),
                    ("c1", "k@example.fi", "", "kukka.com", "old9.example.fi", ""),
                ],
                inventory: vec![account("kukka", "kukka.fi", &["kukka.com"], None)],
                expected: &[
                    "kukka=contract_names_another_server",
                    "kukka.com=contract_names_another_server",
                    "kukka.fi=contract_names_another_server",
                ],
            },
            Case {
                what: "contract names another server: not listed as missing here",
                rows: vec![("c1", "k@example.fi", "muualla", "", "old2.example.fi", "")],
                inventory: vec![],
                expected: &[],
            },
            Case {
                what: "no contract e-mail, WHM contact valid: matched with the WHM address",
                rows: vec![("c1", "", "kukka", "", "old1", "")],
                inventory: vec![account("kukka", "kukka.fi", &[], Some("whm@example.fi"))],
                expected: &["kukka=matched", "kukka.fi=matched"],
            },
            Case {
                what: "invalid contract e-mail and invalid WHM contact",
                rows: vec![("c1", "not-an-address", "kukka", "", "old1", "")],
                inventory: vec![account("kukka", "kukka.fi", &[], Some("root@localhost"))],
                expected: &["kukka=contact_missing_or_invalid", "kukka.fi=contact_missing_or_invalid"],
            },
            Case {
                what: "account matched through its main domain; an addon has its own contract elsewhere",
                rows: vec![
                    ("c1", "k@example.fi", "", "kukka.fi", "old1", ""),
                    ("c2", "m@example.fi", "", "muu.fi", "old2", ""),
                ],
                inventory: vec![account("kukka", "kukka.fi", &["muu.fi", "kolmas.fi"], None)],
                expected: &[
                    "kukka=matched",
                    "kolmas.fi=matched",
                    "kukka.fi=matched",
                    "muu.fi=contract_names_another_server",
                ],
            },
            Case {
                what: "domain has its own contract, account none",
                rows: vec![("c1", "k@example.fi", "", "oma.fi", "old1", "")],
                inventory: vec![account("kukka", "kukka.fi", &["oma.fi"], None)],
                expected: &["kukka=matched", "kukka.fi=matched", "oma.fi=matched"],
            },
            Case {
                what: "no server on the row matches where found",
                rows: vec![("c1", "k@example.fi", "kukka", "", "", "")],
                inventory: vec![account("kukka", "kukka.fi", &[], None)],
                expected: &["kukka=matched", "kukka.fi=matched"],
            },
        ];
        for case in cases {
            let set = contracts(&case.rows);
            let rec =
                reconcile(&set, &ServerInventory { accounts: case.inventory.clone() }, "old1", &names());
            assert_eq!(buckets(&rec), case.expected, "{}", case.what);
            // Exactly one: every inventory account and domain appears once.
            let users: BTreeSet<_> = rec.accounts.iter().map(|a| &a.user).collect();
            assert_eq!(users.len(), rec.accounts.len(), "{}", case.what);
            for account in &case.inventory {
                assert!(users.contains(&account.user), "{}", case.what);
                for d in &account.domains {
                    assert_eq!(
                        rec.domains.iter().filter(|e| e.domain == *d).count(),
                        1,
                        "{}: {d}",
                        case.what
                    );
                }
            }
            assert_eq!(rec.account_counts.total(), rec.accounts.len(), "{}", case.what);
            assert_eq!(rec.domain_counts.total(), rec.domains.len(), "{}", case.what);
        }
    }

    #[test]
    fn details_of_the_buckets() {
        let set = contracts(&[
            ("c1", "", "kukka", "", "old1", "Resell Oy"),
            ("c2", "bad", "puu", "", "old1", ""),
            ("c3", "m@example.fi", "muu", "", "old2.example.fi", ""),
            ("c4", "x@example.fi", "", "outo.fi", "jossain.example", ""),
        ]);
        let mut owned = account("oma", "oma.fi", &[], None);
        owned.owner = Some("jalleen".to_owned());
        let inventory = ServerInventory {
            accounts: vec![
                account("kukka", "kukka.fi", &[], Some("whm@example.fi")),
                account("puu", "puu.fi", &[], None),
                account("muu", "muu.fi", &["outo.fi"], None),
                owned,
            ],
        };
        let rec = reconcile(&set, &inventory, "old1", &names());
        let kukka = &rec.accounts.iter().find(|a| a.user.as_str() == "kukka").expect("kukka").bucket;
        assert_eq!(
            *kukka,
            Bucket::Matched {
                customer_id: "c1".to_owned(),
                name: "Customer c1".to_owned(),
                language: Some("fi".to_owned()),
                emails: vec!["whm@example.fi".to_owned()],
                email_source: EmailSource::Whm,
                via: MatchedVia::User,
                reseller: Some("Resell Oy".to_owned()),
            }
        );
        let puu = &rec.accounts.iter().find(|a| a.user.as_str() == "puu").expect("puu").bucket;
        let Bucket::ContactMissingOrInvalid { reason, .. } = puu else { panic!("{puu:?}") };
        assert_eq!(
            reason,
            "the contract's e-mail \"bad\" is invalid and the account has no WHM contact e-mail"
        );
        let outo = &rec.domains.iter().find(|d| d.domain.as_str() == "outo.fi").expect("outo").bucket;
        assert_eq!(
            *outo,
            Bucket::ContractNamesAnotherServer {
                customer_id: "c4".to_owned(),
                name: "Customer c4".to_owned(),
                server: "jossain.example".to_owned(),
                host: None,
                via: MatchedVia::Domain(domain("outo.fi")),
            }
        );
        let muu = &rec.accounts.iter().find(|a| a.user.as_str() == "muu").expect("muu").bucket;
        assert!(matches!(muu, Bucket::ContractNamesAnotherServer { host: Some(h), .. } if h == "old2"));
        let groups: Vec<(&str, Vec<&str>)> = rec
            .resellers
            .iter()
            .map(|g| (g.reseller.as_str(), g.accounts.iter().map(AccountName::as_str).collect()))
            .collect();
        assert_eq!(groups, vec![("Resell Oy", vec!["kukka"]), ("jalleen", vec!["oma"])]);
        let json = serde_json::to_value(&rec).expect("json");
        assert_eq!(json["accounts"][0]["bucket"], "matched");
        assert_eq!(json["accounts"][0]["via"]["through"], "user");
        let back: Reconciliation = serde_json::from_value(json).expect("round trip");
        assert_eq!(back, rec);
    }
}
