//! Contract sources for real: CSV files with awkward content written to disk, and a JSON
//! endpoint served over HTTP on loopback with a bearer token; then reconciliation of the loaded
//! contracts with a server's inventory, every bucket asserted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::IntoResponse;
use siirto::contracts::{
    Bucket, ContractError, ContractFields, ContractSource, ContractsConfig, EmailSource, InventoryAccount,
    IssueKind, MatchedVia, Place, Reconciliation, ServerInventory, ServerNames, ServiceTarget, load,
    reconcile,
};
use siirto::names::{AccountName, DomainName};
use siirto::secret::Secret;

fn user(name: &str) -> AccountName {
    AccountName::parse(name).expect("user")
}

fn domain(name: &str) -> DomainName {
    DomainName::parse(name).expect("domain")
}

/// The contract system's Finnish column names.
fn finnish_fields() -> ContractFields {
    ContractFields {
        customer_id: "asiakasnro".to_owned(),
        name: "nimi".to_owned(),
        email: "sähköposti".to_owned(),
        language: "kieli".to_owned(),
        user: "tunnus".to_owned(),
        domain: "verkkotunnus".to_owned(),
        service: "palvelu".to_owned(),
        server: "palvelin".to_owned(),
        reseller: "jälleenmyyjä".to_owned(),
    }
}

fn server_names() -> ServerNames {
    ServerNames::new(BTreeMap::from([
        ("old1".to_owned(), vec!["old1.example.fi".to_owned(), "cp1".to_owned()]),
        ("old2".to_owned(), vec!["old2.example.fi".to_owned()]),
    ]))
}

fn csv_config(path: &Path, delimiter: Option<u8>) -> ContractsConfig {
    ContractsConfig {
        source: ContractSource::Csv { path: path.to_path_buf(), delimiter },
        server_names: server_names(),
        fields: finnish_fields(),
    }
}

/// The awkward export: BOM, CRLF, `;` delimiter, header names in other case, quoted fields with
/// embedded `;`, `"` and a newline, UTF-8 names, several e-mails in one field, one row per
/// service with the customer columns repeated, a conflicting duplicate, an unknown server and
/// invalid e-mails.
const AWKWARD: &str = "\u{feff}Asiakasnro;Nimi;Sähköposti;Kieli;Tunnus;Verkkotunnus;Palvelu;Palvelin;Jälleenmyyjä\r\n\
1001;Äänekosken Kukka Oy;\"kukka@example.fi; toimisto@example.fi\";fi;kukka;;;old1.example.fi;\r\n\
1001;Äänekosken Kukka Oy;\"kukka@example.fi; toimisto@example.fi\";fi;;äänekoskenkukka.fi;;OLD1.example.fi;\r\n\
1002;\"Puu; Paja \"\"Oy\"\"\";puu@example.fi;sv;puu;;;cp1;Resell Oy\r\n\
1003;\"Monirivinen\r\nNimi Ab\";ei-osoite;fi;;;monirivi.fi;cp1;\r\n\
1004;Muualla Oy;muualla@example.fi;fi;muualla;;;old2.example.fi;\r\n\
1005;Tuntematon Oy;tuntematon@example.fi;en;;tuntematon.fi;;old9.example.fi;\r\n\
1006;Poissa Oy;poissa@example.fi;fi;poissa;poissa.fi;;cp1;Resell Oy\r\n\
1007;Ei Yhteyttä Oy;;fi;hiljainen;;;cp1;\r\n\
1008;WHM Yhteys Oy;;fi;;;whmyht;cp1;\r\n\
1002;Puu Paja Ab;puu@example.fi;sv;;puu.fi;;cp1;Resell Oy\r\n\
;Ei Numeroa;x@example.fi;fi;nonum;;;cp1;\r\n\
1009;Virheellinen;v@example.fi;fi;;;Ei/Kelpaa;cp1;\r\n";

/// The source server old1: the accounts WHM lists.
fn inventory() -> ServerInventory {
    let account = |name: &str, domains: &[&str], contact: Option<&str>, owner: &str| InventoryAccount {
        user: user(name),
        main_domain: domain(domains[0]),
        domains: domains.iter().map(|d| domain(d)).collect(),
        contact_email: contact.map(str::to_owned),
        owner: Some(owner.to_owned()),
    };
    ServerInventory {
        accounts: vec![
            account("kukka", &["kukka.fi", "xn--nekoskenkukka-9eba.fi", "www2.kukka.fi"], None, "root"),
            account("puu", &["puu.fi", "puuseppa.fi"], Some("whm-puu@example.fi"), "resell"),
            account("monirivi", &["monirivi.fi"], Some("not an address"), "root"),
            account("muualla", &["muualla.fi"], None, "root"),
            account("vieras", &["vieras.fi", "tuntematon.fi"], Some("vieras@example.fi"), "root"),
            account("hiljainen", &["hiljainen.fi"], Some(""), "root"),
            account("whmyht", &["whmyht.fi"], Some("Yhteys <yhteys@example.fi>"), "root"),
            account("orpo", &["orpo.fi"], Some("orpo@example.fi"), "resell"),
        ],
    }
}

fn bucket_of_account<'a>(rec: &'a Reconciliation, name: &str) -> &'a Bucket {
    &rec.accounts.iter().find(|a| a.user.as_str() == name).unwrap_or_else(|| panic!("account {name}")).bucket
}

fn bucket_of_domain<'a>(rec: &'a Reconciliation, name: &str) -> &'a Bucket {
    &rec.domains.iter().find(|d| d.domain.as_str() == name).unwrap_or_else(|| panic!("domain {name}")).bucket
}

/// Every inventory account and domain appears exactly once, and the counts add up.
fn assert_exactly_one_bucket_each(rec: &Reconciliation, inventory: &ServerInventory) {
    let users: Vec<&AccountName> = rec.accounts.iter().map(|a| &a.user).collect();
    assert_eq!(users.iter().collect::<BTreeSet<_>>().len(), users.len(), "an account twice");
    let domains: Vec<&DomainName> = rec.domains.iter().map(|d| &d.domain).collect();
    assert_eq!(domains.iter().collect::<BTreeSet<_>>().len(), domains.len(), "a domain twice");
    for account in &inventory.accounts {
        assert!(users.contains(&&account.user), "{} missing from the report", account.user);
        for d in &account.domains {
            assert!(domains.contains(&d), "{d} missing from the report");
        }
    }
    assert_eq!(rec.account_counts.total(), rec.accounts.len());
    assert_eq!(rec.domain_counts.total(), rec.domains.len());
}

#[tokio::test]
async fn awkward_csv_loads_and_reconciles_into_every_bucket() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sopimukset.csv");
    std::fs::write(&path, AWKWARD).expect("write csv");
    let origin = path.display().to_string();

    // Detected and configured delimiter give the same result.
    let set = load(&csv_config(&path, None)).await.expect("load");
    assert_eq!(load(&csv_config(&path, Some(b';'))).await.expect("load ;"), set);
    assert_eq!(set.origin, origin);

    // Customers: UTF-8 names, the embedded delimiter, quotes and newline kept.
    let kukka = &set.customers["1001"];
    assert_eq!(kukka.name, "Äänekosken Kukka Oy");
    assert_eq!(kukka.emails, vec!["kukka@example.fi", "toimisto@example.fi"]);
    assert_eq!(kukka.language.as_deref(), Some("fi"));
    assert!(!kukka.conflicting);
    let puu = &set.customers["1002"];
    assert_eq!(puu.name, "Puu; Paja \"Oy\"");
    assert_eq!(puu.reseller.as_deref(), Some("Resell Oy"));
    assert!(puu.conflicting, "the second 1002 row has another name");
    assert_eq!(set.customers["1003"].name, "Monirivinen\r\nNimi Ab");
    assert_eq!(set.customers["1003"].invalid_emails, vec!["ei-osoite"]);
    assert_eq!(set.customers.len(), 9, "{:?}", set.customers.keys().collect::<Vec<_>>());

    // The IDN domain is stored in punycode; services keep the server as spelled.
    assert!(
        set.services.iter().any(|s| s.target == ServiceTarget::Domain(domain("xn--nekoskenkukka-9eba.fi"))
            && s.server.as_deref() == Some("OLD1.example.fi"))
    );

    // Row issues: file, line (counting the embedded newline), field, and loading went on.
    let issues: Vec<(Place, IssueKind, &str, &str)> =
        set.issues.iter().map(|i| (i.place, i.kind, i.field.as_str(), i.column.as_str())).collect();
    assert_eq!(
        issues,
        vec![
            (Place::Line(5), IssueKind::InvalidEmail, "email", "sähköposti"),
            (Place::Line(12), IssueKind::DuplicateCustomer, "name", "nimi"),
            (Place::Line(13), IssueKind::EmptyCustomerId, "customer_id", "asiakasnro"),
            (Place::Line(14), IssueKind::InvalidService, "service", "palvelu"),
        ]
    );
    let shown: Vec<String> = set.issues.iter().map(ToString::to_string).collect();
    assert!(
        shown[0].starts_with(&format!("{origin}:5: sähköposti (email): expected an e-mail")),
        "{}",
        shown[0]
    );
    assert!(
        shown[1].contains("\"Puu; Paja \\\"Oy\\\"\" there, \"Puu Paja Ab\" here (first at 4)"),
        "{}",
        shown[1]
    );
    assert!(set.issues[2].raw.as_deref().is_some_and(|raw| raw.contains("Ei Numeroa")), "nothing lost");
    assert!(shown[3].contains("neither a valid cPanel user"), "{}", shown[3]);

    let inventory = inventory();
    let rec = reconcile(&set, &inventory, "old1", &server_names());
    assert_exactly_one_bucket_each(&rec, &inventory);

    // Matched through the user, contract e-mails; domains through the account or their own service.
    let matched_kukka = Bucket::Matched {
        customer_id: "1001".to_owned(),
        name: "Äänekosken Kukka Oy".to_owned(),
        language: Some("fi".to_owned()),
        emails: vec!["kukka@example.fi".to_owned(), "toimisto@example.fi".to_owned()],
        email_source: EmailSource::Contract,
        via: MatchedVia::User,
        reseller: None,
    };
    assert_eq!(*bucket_of_account(&rec, "kukka"), matched_kukka);
    assert!(matches!(
        bucket_of_domain(&rec, "www2.kukka.fi"),
        Bucket::Matched { via: MatchedVia::Account(a), .. } if a.as_str() == "kukka"
    ));
    assert!(matches!(
        bucket_of_domain(&rec, "xn--nekoskenkukka-9eba.fi"),
        Bucket::Matched { via: MatchedVia::Domain(_), .. }
    ));
    // Matched via the server's other spelling ("cp1"), with the reseller.
    assert!(matches!(
        bucket_of_account(&rec, "puu"),
        Bucket::Matched { customer_id, reseller: Some(r), email_source: EmailSource::Contract, .. }
            if customer_id == "1002" && r == "Resell Oy"
    ));
    // No contract e-mail: WHM's contact is used when valid…
    assert!(matches!(
        bucket_of_account(&rec, "whmyht"),
        Bucket::Matched { emails, email_source: EmailSource::Whm, via: MatchedVia::User, .. }
            if *emails == ["yhteys@example.fi"]
    ));
    // …else flagged: invalid contract e-mail + invalid WHM contact; no e-mail + empty WHM contact.
    let Bucket::ContactMissingOrInvalid { reason, via, .. } = bucket_of_account(&rec, "monirivi") else {
        panic!("monirivi: {:?}", bucket_of_account(&rec, "monirivi"));
    };
    assert_eq!(*via, MatchedVia::Domain(domain("monirivi.fi")));
    assert_eq!(
        reason,
        "the contract's e-mail \"ei-osoite\" is invalid and the account's WHM contact \"not an address\" is invalid"
    );
    assert!(matches!(bucket_of_account(&rec, "hiljainen"), Bucket::ContactMissingOrInvalid { reason, .. }
        if reason == "the contract has no e-mail and the account has no WHM contact e-mail"));
    assert!(matches!(bucket_of_domain(&rec, "hiljainen.fi"), Bucket::ContactMissingOrInvalid { .. }));
    // Another of our servers, and an unknown server for one domain of an account without contract.
    assert!(matches!(
        bucket_of_account(&rec, "muualla"),
        Bucket::ContractNamesAnotherServer { server, host: Some(h), .. } if server == "old2.example.fi" && h == "old2"
    ));
    assert!(matches!(bucket_of_domain(&rec, "muualla.fi"), Bucket::ContractNamesAnotherServer { .. }));
    assert!(matches!(
        bucket_of_domain(&rec, "tuntematon.fi"),
        Bucket::ContractNamesAnotherServer { server, host: None, customer_id, .. }
            if server == "old9.example.fi" && customer_id == "1005"
    ));
    // "vieras" holds tuntematon.fi but its main domain has no contract: the account matched
    // through tuntematon.fi, whose contract names another (unknown) server.
    assert!(matches!(
        bucket_of_account(&rec, "vieras"),
        Bucket::ContractNamesAnotherServer { host: None, .. }
    ));
    assert_eq!(
        *bucket_of_domain(&rec, "vieras.fi"),
        via_account(bucket_of_account(&rec, "vieras"), "vieras")
    );
    // On the server without any contract.
    assert_eq!(*bucket_of_account(&rec, "orpo"), Bucket::OnServerNoContract);
    assert_eq!(*bucket_of_domain(&rec, "orpo.fi"), Bucket::OnServerNoContract);
    assert_eq!(*bucket_of_domain(&rec, "puuseppa.fi"), via_account(bucket_of_account(&rec, "puu"), "puu"));
    // The contract says poissa and poissa.fi are here; they are not.
    let missing = rec.accounts.iter().find(|a| a.user.as_str() == "poissa").expect("poissa listed");
    assert!(!missing.on_server);
    assert!(matches!(&missing.bucket, Bucket::ContractNamesThisServerButMissing { customer_id, server, .. }
        if customer_id == "1006" && server == "cp1"));
    let missing_domain =
        rec.domains.iter().find(|d| d.domain.as_str() == "poissa.fi").expect("poissa.fi listed");
    assert_eq!(missing_domain.account, None);
    assert!(matches!(missing_domain.bucket, Bucket::ContractNamesThisServerButMissing { .. }));

    // Counts per bucket, and per reseller (the contract's, else the WHM owner).
    let counts = rec.account_counts;
    assert_eq!(
        (
            counts.matched,
            counts.on_server_no_contract,
            counts.contract_names_this_server_but_missing,
            counts.contract_names_another_server,
            counts.contact_missing_or_invalid
        ),
        (3, 1, 1, 2, 2),
        "{:#?}",
        rec.accounts
    );
    let groups: Vec<(&str, Vec<&str>)> = rec
        .resellers
        .iter()
        .map(|g| (g.reseller.as_str(), g.accounts.iter().map(AccountName::as_str).collect()))
        .collect();
    assert_eq!(groups, vec![("Resell Oy", vec!["poissa", "puu"]), ("resell", vec!["orpo"])]);
    // The issues travel with the report, and it is JSON for the plan.
    assert_eq!(rec.issues, set.issues);
    let json = serde_json::to_string(&rec).expect("json");
    assert!(json.contains("\"bucket\":\"contract_names_this_server_but_missing\""));
    assert_eq!(serde_json::from_str::<Reconciliation>(&json).expect("parse back"), rec);
}

/// An account's bucket as a domain that matched through that account carries it.
fn via_account(bucket: &Bucket, account: &str) -> Bucket {
    let via = MatchedVia::Account(user(account));
    match bucket.clone() {
        Bucket::Matched { customer_id, name, language, emails, email_source, reseller, .. } => {
            Bucket::Matched { customer_id, name, language, emails, email_source, via, reseller }
        }
        Bucket::ContractNamesAnotherServer { customer_id, name, server, host, .. } => {
            Bucket::ContractNamesAnotherServer { customer_id, name, server, host, via }
        }
        Bucket::ContactMissingOrInvalid { customer_id, name, language, reseller, reason, .. } => {
            Bucket::ContactMissingOrInvalid { customer_id, name, language, via, reseller, reason }
        }
        other => other,
    }
}

#[tokio::test]
async fn comma_csv_with_lf_and_no_bom() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("contracts.csv");
    std::fs::write(
        &path,
        "customer_id,name,email,user,server\n\
         7,\"Kukka, Oy\",\"a@example.fi, b@example.fi\",kukka,old1\n\
         8,Puu,puu@example.fi,puu,old1\n",
    )
    .expect("write");
    let config = ContractsConfig {
        source: ContractSource::Csv { path: path.clone(), delimiter: None },
        server_names: server_names(),
        fields: ContractFields::default(),
    };
    let set = load(&config).await.expect("load");
    assert!(set.issues.is_empty(), "{:?}", set.issues);
    assert_eq!(set.customers["7"].name, "Kukka, Oy");
    assert_eq!(set.customers["7"].emails, vec!["a@example.fi", "b@example.fi"]);
    assert_eq!(set.services.len(), 2);
}

#[tokio::test]
async fn missing_columns_and_unreadable_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("vajaa.csv");
    std::fs::write(&path, "\u{feff}Asiakasnro;Nimi;Tunnus;Palvelin\r\n1;A;a;cp1\r\n").expect("write");
    let err = load(&csv_config(&path, None)).await.expect_err("missing column");
    assert!(!err.is_transient());
    assert_eq!(
        err.to_string(),
        format!(
            "{}: missing required column(s) \"sähköposti\" (email); the columns are: \"Asiakasnro\", \"Nimi\", \"Tunnus\", \"Palvelin\"",
            path.display()
        )
    );
    let nowhere = dir.path().join("ei-ole.csv");
    let err = load(&csv_config(&nowhere, None)).await.expect_err("no file");
    assert!(matches!(err, ContractError::Read { .. }));
    assert!(
        err.to_string().starts_with(&format!("{}: cannot read the contract file", nowhere.display())),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// HTTP JSON.

const TOKEN: &str = "sopimus-token-123";

#[derive(Clone)]
struct Endpoint {
    /// The JSON file served.
    body: Arc<std::path::PathBuf>,
    /// Methods and whether the token was right, per request.
    seen: Arc<Mutex<Vec<(Method, bool)>>>,
}

async fn serve_contracts(
    State(endpoint): State<Endpoint>,
    method: Method,
    headers: HeaderMap,
) -> impl IntoResponse {
    let authorized =
        headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"));
    endpoint.seen.lock().expect("lock").push((method, authorized));
    if !authorized {
        return (StatusCode::UNAUTHORIZED, "no".to_owned()).into_response();
    }
    match std::fs::read_to_string(endpoint.body.as_ref()) {
        Ok(body) => ([("content-type", "application/json")], body).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// A JSON-over-HTTP contract endpoint on 127.0.0.1:0 serving `file`; stops when dropped.
struct JsonServer {
    url: reqwest::Url,
    seen: Arc<Mutex<Vec<(Method, bool)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for JsonServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start_json_server(file: &Path) -> JsonServer {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let endpoint = Endpoint { body: Arc::new(file.to_path_buf()), seen: seen.clone() };
    let app = axum::Router::new()
        .route("/api/v1/hosting-contracts", axum::routing::any(serve_contracts))
        .with_state(endpoint);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let url = reqwest::Url::parse(&format!("http://{addr}/api/v1/hosting-contracts?asiakkaat=kaikki"))
        .expect("url");
    JsonServer { url, seen, task }
}

const CONTRACTS_JSON: &str = r#"{
  "items": [
    {"asiakas": {"nro": 2001, "nimi": "Äänekosken Kukka Oy"}, "sahkopostit": ["kukka@example.fi", "Toimisto <toimisto@example.fi>"],
     "kieli": "fi", "tunnus": "kukka", "verkkotunnukset": ["kukka.fi", "äänekoskenkukka.fi"], "palvelin": "cp1", "jm": null},
    {"asiakas": {"nro": 2002, "nimi": "Muualla Oy"}, "sahkopostit": "muualla@example.fi", "kieli": "sv",
     "tunnus": "muualla", "palvelin": "old2.example.fi"},
    {"asiakas": {"nro": 2003, "nimi": "Poissa Oy"}, "sahkopostit": [], "tunnus": "poissa", "palvelin": "old1.example.fi", "jm": "Resell Oy"},
    {"asiakas": {"nro": 2004, "nimi": "Huono Osoite"}, "sahkopostit": "huono@", "tunnus": "huono", "palvelin": "cp1"},
    {"asiakas": {"nro": 2005, "nimi": "Tuntematon"}, "sahkopostit": "t@example.fi", "verkkotunnukset": "tuntematon.fi", "palvelin": "old7"},
    {"asiakas": {"nro": 2001, "nimi": "Äänekosken Kukka Oy"}, "sahkopostit": "kukka@example.fi", "tunnus": "kukka", "palvelin": "cp1"},
    {"asiakas": {"nro": "", "nimi": "Ei numeroa"}, "tunnus": "nonum", "palvelin": "cp1"},
    42
  ]
}"#;

fn json_fields() -> ContractFields {
    ContractFields {
        customer_id: "asiakas.nro".to_owned(),
        name: "asiakas.nimi".to_owned(),
        email: "sahkopostit".to_owned(),
        language: "kieli".to_owned(),
        user: "tunnus".to_owned(),
        domain: "verkkotunnukset".to_owned(),
        service: "palvelu".to_owned(),
        server: "palvelin".to_owned(),
        reseller: "jm".to_owned(),
    }
}

#[tokio::test]
async fn http_json_source_with_a_bearer_token_from_the_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("contracts.json");
    std::fs::write(&file, CONTRACTS_JSON).expect("write json");
    let server = start_json_server(&file).await;

    // The token comes from a file the config names, like every secret.
    std::fs::create_dir(dir.path().join("secrets")).expect("secrets");
    for (name, value) in [("pdns.key", "k"), ("contracts.token", &format!("{TOKEN}\n"))] {
        std::fs::write(dir.path().join("secrets").join(name), value).expect("secret");
    }
    let config_text = format!(
        r#"database = "sqlite:s.db"

[hosts.old1]
whm_url = "https://old1.example.net:2087"
token_file = "secrets/pdns.key"
ip = "198.51.100.10"

[hosts.old2]
whm_url = "https://old2.example.net:2087"
token_file = "secrets/pdns.key"
ip = "198.51.100.11"

[dns]
provider = "powerdns"
api_url = "http://127.0.0.1:8081"
api_key_file = "secrets/pdns.key"
nameservers = ["127.0.0.1:5300"]

[mail]
from = "support@example.fi"
channel = "directory"
path = "outbox"

[contracts]
source = "http"
url = "{url}"
token_file = "secrets/contracts.token"
server_names = {{ old1 = ["old1.example.fi", "cp1"], old2 = ["old2.example.fi"] }}

[contracts.fields]
customer_id = "asiakas.nro"
name = "asiakas.nimi"
email = "sahkopostit"
language = "kieli"
user = "tunnus"
domain = "verkkotunnukset"
server = "palvelin"
reseller = "jm"
"#,
        url = server.url
    );
    let config = siirto::config::Config::parse(&config_text, "siirto.toml", dir.path()).expect("config");
    let contracts_config = config.contracts.expect("contracts");
    assert!(!format!("{contracts_config:?}").contains(TOKEN), "the token leaked into Debug");
    assert_eq!(contracts_config.fields, ContractFields { service: "service".to_owned(), ..json_fields() });

    let set = load(&contracts_config).await.expect("load over http");
    // The origin shown in messages has no query string.
    assert_eq!(set.origin, server.url.as_str().split('?').next().expect("url").to_owned());
    assert_eq!(set.customers["2001"].emails, vec!["kukka@example.fi", "toimisto@example.fi"]);
    assert_eq!(set.customers["2001"].name, "Äänekosken Kukka Oy");
    assert!(set.customers["2001"].conflicting, "item 6 gives 2001 other e-mails");
    let issues: Vec<(Place, IssueKind)> = set.issues.iter().map(|i| (i.place, i.kind)).collect();
    assert_eq!(
        issues,
        vec![
            (Place::Item(4), IssueKind::InvalidEmail),
            (Place::Item(6), IssueKind::DuplicateCustomer),
            (Place::Item(7), IssueKind::EmptyCustomerId),
            (Place::Item(8), IssueKind::InvalidValue),
        ]
    );
    assert!(set.issues[1].message.contains("e-mail") || set.issues[1].field == "email", "{}", set.issues[1]);

    let inventory = ServerInventory {
        accounts: vec![
            InventoryAccount {
                user: user("kukka"),
                main_domain: domain("kukka.fi"),
                domains: vec![
                    domain("kukka.fi"),
                    domain("xn--nekoskenkukka-9eba.fi"),
                    domain("blogi.kukka.fi"),
                ],
                contact_email: None,
                owner: Some("root".to_owned()),
            },
            InventoryAccount {
                user: user("muualla"),
                main_domain: domain("muualla.fi"),
                domains: vec![domain("muualla.fi"), domain("tuntematon.fi")],
                contact_email: None,
                owner: Some("root".to_owned()),
            },
            InventoryAccount {
                user: user("huono"),
                main_domain: domain("huono.fi"),
                domains: vec![domain("huono.fi")],
                contact_email: Some("huono@example".to_owned()),
                owner: Some("root".to_owned()),
            },
            InventoryAccount {
                user: user("ilman"),
                main_domain: domain("ilman.fi"),
                domains: vec![domain("ilman.fi")],
                contact_email: Some("ilman@example.fi".to_owned()),
                owner: Some("root".to_owned()),
            },
        ],
    };
    let rec = reconcile(&set, &inventory, "old1", &contracts_config.server_names);
    assert_exactly_one_bucket_each(&rec, &inventory);
    let accounts: Vec<(&str, &str)> =
        rec.accounts.iter().map(|a| (a.user.as_str(), a.bucket.name())).collect();
    assert_eq!(
        accounts,
        vec![
            ("huono", "contact_missing_or_invalid"),
            ("ilman", "on_server_no_contract"),
            ("kukka", "matched"),
            ("muualla", "contract_names_another_server"),
            ("poissa", "contract_names_this_server_but_missing"),
        ]
    );
    let domains: Vec<(&str, &str)> =
        rec.domains.iter().map(|d| (d.domain.as_str(), d.bucket.name())).collect();
    assert_eq!(
        domains,
        vec![
            ("blogi.kukka.fi", "matched"),
            ("huono.fi", "contact_missing_or_invalid"),
            ("ilman.fi", "on_server_no_contract"),
            ("kukka.fi", "matched"),
            ("muualla.fi", "contract_names_another_server"),
            ("tuntematon.fi", "contract_names_another_server"),
            ("xn--nekoskenkukka-9eba.fi", "matched"),
        ]
    );
    assert!(
        matches!(bucket_of_domain(&rec, "tuntematon.fi"), Bucket::ContractNamesAnotherServer { server, host: None, .. } if server == "old7")
    );
    assert_eq!(rec.resellers.iter().map(|g| g.reseller.as_str()).collect::<Vec<_>>(), vec!["Resell Oy"]);

    // Read-only: every request the endpoint saw was a GET with the right token.
    let seen = server.seen.lock().expect("lock").clone();
    assert_eq!(seen, vec![(Method::GET, true)]);
}

#[tokio::test]
async fn http_json_source_refuses_a_wrong_token_and_bad_answers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("contracts.json");
    std::fs::write(&file, CONTRACTS_JSON).expect("write json");
    let server = start_json_server(&file).await;
    let config = |token: Option<&str>| ContractsConfig {
        source: ContractSource::Http { url: server.url.clone(), token: token.map(Secret::new) },
        server_names: server_names(),
        fields: json_fields(),
    };

    for token in [None, Some("wrong-token")] {
        let err = load(&config(token)).await.expect_err("refused");
        assert!(matches!(err, ContractError::Status { status: 401, .. }), "{err}");
        assert!(!err.is_transient());
        assert!(!err.to_string().contains("asiakkaat"), "the query stays out of messages: {err}");
    }
    assert_eq!(*server.seen.lock().expect("lock"), vec![(Method::GET, false), (Method::GET, false)]);

    // Not the expected shape, not JSON, a missing mapped key: clear errors.
    std::fs::write(&file, r#"{"data": []}"#).expect("write");
    let err = load(&config(Some(TOKEN))).await.expect_err("shape");
    assert!(
        err.to_string()
            .contains("expected an array of contract objects or an object with an \"items\" array"),
        "{err}"
    );
    std::fs::write(&file, "<html>").expect("write");
    assert!(matches!(load(&config(Some(TOKEN))).await, Err(ContractError::BadJson { .. })));
    std::fs::write(
        &file,
        r#"[{"asiakas": {"nro": 1}, "tunnus": "a", "palvelin": "cp1", "sahkopostit": "a@example.fi"}]"#,
    )
    .expect("write");
    let err = load(&config(Some(TOKEN))).await.expect_err("missing key").to_string();
    assert!(err.contains("missing required column(s) \"asiakas.nimi\" (name)"), "{err}");
    // A bare array works as well as {"items": [...]}.
    std::fs::write(
        &file,
        r#"[{"asiakas": {"nro": 1, "nimi": "A"}, "tunnus": "a", "palvelin": "cp1", "sahkopostit": "a@example.fi"}]"#,
    )
    .expect("write");
    let set = load(&config(Some(TOKEN))).await.expect("array");
    assert_eq!(set.services.len(), 1);

    // Nobody listening: a transient error.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let gone = ContractsConfig {
        source: ContractSource::Http {
            url: reqwest::Url::parse(&format!("http://{closed}/c")).expect("url"),
            token: None,
        },
        ..config(None)
    };
    let err = load(&gone).await.expect_err("connection refused");
    assert!(err.is_transient(), "{err}");
}
