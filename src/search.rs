//! Customer service's search over every migration in the store: one search box that takes a
//! domain (or a `www.` name, a subdomain or a URL of it; IDNs in Unicode or punycode), a cPanel
//! user name, any word of a customer's name (a prefix of three characters or more), a contact
//! address, a contract id (`1234` or `customer-1234`) or a reseller, and answers with the
//! accounts it names.
//!
//! A query becomes a few probes ([`probes`], pure), each an exact or prefix lookup of the store's
//! search terms ([`Store::search_terms`], one indexed range each, never a scan), and the accounts
//! they hit are read by key in one more.
//!
//! A query of several words finds the accounts whose customer name has every one of them of
//! three characters or more (as word prefixes, in any order): "matti virt" and "virtanen matti"
//! find Matti Virtanen, not every Matti. They are looked up by a pair of words (one key range,
//! however common each word is); only when no pair matches, as when every word is cut short
//! ("mat virt"), by the intersection of a range per word. Shorter words are looked up only as part
//! of the whole name typed in order, which ranks "Kukka Oy" itself before every other Kukka.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context as _;

use crate::names::DomainName;
use crate::store::{
    AccountRow, Probe, ProbeKind, Store, TermField, TermHit, name_term, name_words, normalized_term,
};

/// The most probes a query makes, whatever it holds.
pub const MAX_PROBES: usize = 12;
/// The most hits a search returns; a larger `limit` is taken as this.
pub const MAX_LIMIT: usize = 200;
/// The most labels of a parent domain a domain query probes.
const MAX_PARENT_LABELS: usize = 5;
/// The most words of a query looked up in customer names.
const MAX_WORDS: usize = 4;
/// A word of a query is looked up as a name prefix from this many characters on: shorter ones
/// would each match thousands of names.
const MIN_WORD_CHARS: usize = 3;

/// An account a search found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Hit {
    /// The migration the account is in.
    pub migration_id: String,
    /// The cPanel user name.
    pub user: String,
    /// The account's main domain.
    pub main_domain: String,
    /// The contract's customer key (`customer-<id>`), or `contact-<address>` without a contract.
    pub customer_key: Option<String>,
    /// The customer's name from the contracts.
    pub customer_name: Option<String>,
    /// Where customer notices go.
    pub contact_email: Option<String>,
    /// The reseller the account belongs to.
    pub reseller: Option<String>,
    /// The account's state name (`pending`, `transferring`, `done`, `held`, …).
    pub state: String,
    /// What of the account the query matched.
    pub matched: Vec<Matched>,
}

/// One stored term a query matched.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, utoipa::ToSchema)]
pub struct Matched {
    /// Which field: `user`, `email`, `customer`, `contract`, `reseller` or `domain`.
    #[schema(value_type = String, example = "domain")]
    pub field: TermField,
    /// The term as stored (lowercase; a domain in punycode; a customer name's words).
    pub term: String,
}

/// The probes for a query: none for an empty one, at most [`MAX_PROBES`].
///
/// The query is trimmed and lowercased, and a `mailto:`, `http://` or `https://` in front, a
/// path, query or port after a host name, and a trailing dot are taken off. Then:
/// - a domain name (a non-ASCII one converted to punycode) probes itself and each of its parents
///   of two labels or more, exactly, so `www.shop.example.fi` finds the account owning
///   `shop.example.fi` and the one owning `example.fi`;
/// - an address with `@` probes the contact addresses exactly (its domain in both forms when it
///   is an IDN);
/// - `customer-…`, or one token with a digit in it, probes the contract keys exactly;
/// - every query probes the user names and resellers exactly;
/// - a query that is neither a domain nor an address probes customer names by prefix: all its
///   words together when it has several (the name typed in order), the pair of its first and last
///   word of three characters or more in both orders, and each such word (the first few).
pub fn probes(query: &str) -> Vec<Probe> {
    let query = normalized_query(query);
    if query.is_empty() {
        return Vec::new();
    }
    let mut probes = Vec::new();
    let domain = domain_of(&query);
    if let Some(domain) = &domain {
        // The name itself and its parents of at most MAX_PARENT_LABELS labels: a customer's
        // domain is rarely deeper, and a name of many labels must not crowd out the rest.
        let labels: Vec<&str> = domain.split('.').collect();
        for start in 0..labels.len().saturating_sub(1) {
            if start == 0 || labels.len() - start <= MAX_PARENT_LABELS {
                probes.push(Probe::exact(TermField::Domain, labels[start..].join(".")));
            }
        }
    }
    let email = is_email(&query);
    if email {
        probes.push(Probe::exact(TermField::Email, query.clone()));
        if let Some((local, host)) = query.rsplit_once('@') {
            if let Ok(ascii) = idna::domain_to_ascii(host) {
                probes.push(Probe::exact(TermField::Email, format!("{local}@{ascii}")));
            }
            if let (unicode, Ok(())) = idna::domain_to_unicode(host) {
                probes.push(Probe::exact(TermField::Email, format!("{local}@{unicode}")));
            }
        }
    }
    if let Some(key) = contract_key(&query) {
        probes.push(Probe::exact(TermField::Contract, key));
    }
    probes.push(Probe::exact(TermField::User, query.clone()));
    probes.push(Probe::exact(TermField::Reseller, query.clone()));
    if domain.is_none() && !email {
        let words = name_words(&query);
        if words.len() >= 2 {
            probes.push(Probe::prefix(TermField::Customer, name_term(&query)));
        }
        let mut looked_up: Vec<&str> = Vec::new();
        for word in words.iter().filter(|w| w.chars().count() >= MIN_WORD_CHARS) {
            if looked_up.len() < MAX_WORDS && !looked_up.contains(&word.as_str()) {
                looked_up.push(word);
            }
        }
        // The first and the last word, either of which may be the one still being typed.
        if let [first, .., last] = looked_up[..] {
            probes.push(Probe::prefix(TermField::NamePair, format!("{first} {last}")));
            probes.push(Probe::prefix(TermField::NamePair, format!("{last} {first}")));
        }
        for word in looked_up {
            probes.push(Probe::prefix(TermField::Customer, word));
        }
    }
    let mut seen = BTreeSet::new();
    probes
        .retain(|p| !p.term.is_empty() && seen.insert((p.field, p.term.clone(), p.kind == ProbeKind::Exact)));
    probes.truncate(MAX_PROBES);
    probes
}

/// The query as the terms are spelled: no control characters, trimmed, lowercase, at most
/// [`crate::store::MAX_TERM_CHARS`] characters; without a `mailto:`, `http://` or `https://` in
/// front, the path, query and port after a host name, and trailing dots.
fn normalized_query(query: &str) -> String {
    let cleaned: String = query.chars().filter(|c| !c.is_control()).collect();
    let mut query = normalized_term(&cleaned);
    for scheme in ["mailto:", "http://", "https://"] {
        if let Some(rest) = query.strip_prefix(scheme) {
            query = rest.trim_start().to_owned();
        }
    }
    if !query.contains(char::is_whitespace) {
        // `example.fi/path?x#y` and `example.fi:8080`: the host name is what is stored. A token
        // without a dot before the cut is left whole, as it is no host name.
        let host_end = query.find(['/', '?', '#']).unwrap_or(query.len());
        if query[..host_end].contains('.') && !query[..host_end].contains('@') {
            query.truncate(host_end);
            if let Some((host, port)) = query.rsplit_once(':')
                && port.bytes().all(|b| b.is_ascii_digit())
            {
                query = host.to_owned();
            }
        }
    }
    query.trim_end_matches('.').trim().to_owned()
}

/// The query as a stored domain (ASCII, IDNs in punycode) if it is a domain name.
fn domain_of(query: &str) -> Option<String> {
    if !query.contains('.') || query.contains('@') || query.contains(char::is_whitespace) {
        return None;
    }
    let ascii = if query.is_ascii() { query.to_owned() } else { idna::domain_to_ascii(query).ok()? };
    DomainName::parse(&ascii).ok().map(|d| d.as_str().to_owned())
}

/// True for something shaped like a mail address: one token, text on both sides of its last `@`.
fn is_email(query: &str) -> bool {
    !query.contains(char::is_whitespace)
        && query.rsplit_once('@').is_some_and(|(local, host)| !local.is_empty() && !host.is_empty())
}

/// The contract key a query names: `customer-…` as given, or `customer-<query>` for one token
/// with a digit in it (contract ids are numbers, or codes like `c1234`).
fn contract_key(query: &str) -> Option<String> {
    if query.contains(char::is_whitespace) {
        return None;
    }
    if query.strip_prefix("customer-").is_some_and(|id| !id.is_empty()) {
        return Some(query.to_owned());
    }
    let id_like = query.chars().any(|c| c.is_ascii_digit())
        && query.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '_')
        && query.chars().count() <= 64;
    id_like.then(|| normalized_term(&format!("customer-{query}")))
}

/// What the probes found of one account.
#[derive(Debug)]
struct Found {
    /// See [`rank_of`]: the best of its matches.
    rank: u8,
    /// Its customer name has the words of a query of several (by a pair of them, or all of them
    /// intersected): what matched is its name.
    by_words: bool,
    /// What matched.
    matched: BTreeSet<Matched>,
}

/// The accounts `query` finds in every migration of the store (see [`probes`]), at most `limit`
/// (and at most [`MAX_LIMIT`]): exact matches of the query first, then parent domains (the
/// nearest first), then prefix matches, each by migration and user; one hit per account,
/// listing what matched.
///
/// A query of several words is looked up by its whole name and its pairs of words with the other
/// probes ([`Store::search_terms`], one statement); when no name matches, by its words together
/// ([`Store::search_customer_words`]). The accounts found are read in one more statement.
pub async fn search(store: &Store, query: &str, limit: usize) -> anyhow::Result<Vec<Hit>> {
    let limit = limit.min(MAX_LIMIT);
    let probes = probes(query);
    if probes.is_empty() || limit == 0 {
        return Ok(Vec::new());
    }
    let is_word = |p: &Probe| p.field == TermField::Customer && !p.term.contains(' ');
    let words: Vec<String> = probes.iter().filter(|p| is_word(p)).map(|p| p.term.clone()).collect();
    let several_words = words.len() >= 2;
    // The single words of a query of several count only together: the pairs stand for them.
    let lookups: Vec<Probe> = probes.iter().filter(|p| !(several_words && is_word(p))).cloned().collect();
    // A prefix probe may match two terms of one account (its whole name and one of its words).
    let hits = store.search_terms(&lookups, 2 * limit).await.context("looking up the search terms")?;
    let named = hits.iter().any(|h| matches!(h.field, TermField::Customer | TermField::NamePair));
    let with_all_words = if several_words && !named {
        store.search_customer_words(&words, limit).await.context("looking up the words of names")?
    } else {
        Vec::new()
    };

    let mut found: BTreeMap<(String, String), Found> = BTreeMap::new();
    for hit in hits {
        let key = (hit.migration_id.clone(), hit.user.clone());
        if hit.field == TermField::NamePair {
            note(&mut found, key, PREFIX_RANK).by_words = true;
        } else {
            let rank = rank_of(&lookups, &lookups[hit.probe], &hit);
            note(&mut found, key, rank).matched.insert(Matched { field: hit.field, term: hit.term });
        }
    }
    for key in with_all_words {
        note(&mut found, key, PREFIX_RANK).by_words = true;
    }
    let mut ranked: Vec<((String, String), Found)> = found.into_iter().collect();
    ranked.sort_by(|(a_key, a), (b_key, b)| (a.rank, a_key).cmp(&(b.rank, b_key)));
    // A pair stands for two of the words: with more, the name is checked for the others once
    // read, so read more than are asked for.
    let checked = words.len() > 2;
    ranked.truncate(if checked { 2 * limit } else { limit });

    let keys: Vec<(String, String)> = ranked.iter().map(|(key, _)| key.clone()).collect();
    let rows = store.accounts_by_key(&keys).await.context("reading the accounts found")?;
    let mut accounts: BTreeMap<(String, String), AccountRow> =
        rows.into_iter().map(|row| ((row.migration_id.clone(), row.user.clone()), row)).collect();
    let mut hits = Vec::new();
    for (key, mut found) in ranked {
        // A term whose account is gone is skipped (the store deletes no accounts today).
        let Some(row) = accounts.remove(&key) else { continue };
        if found.by_words {
            let name = row.customer_name.as_deref().unwrap_or_default();
            if found.matched.is_empty() && checked && !has_words(name, &words) {
                continue;
            }
            found.matched.insert(Matched { field: TermField::Customer, term: name_term(name) });
        }
        hits.push(Hit {
            migration_id: row.migration_id,
            user: row.user,
            main_domain: row.main_domain,
            customer_key: row.customer_key,
            customer_name: row.customer_name,
            contact_email: row.contact_email,
            reseller: row.reseller,
            state: row.state,
            matched: found.matched.into_iter().collect(),
        });
        if hits.len() == limit {
            break;
        }
    }
    Ok(hits)
}

/// True when every one of `words` starts a word of `name`.
fn has_words(name: &str, words: &[String]) -> bool {
    let name = name_words(name);
    words.iter().all(|word| name.iter().any(|n| n.starts_with(word.as_str())))
}

/// The account's entry in `found`, its rank made `rank` if that is better.
fn note(found: &mut BTreeMap<(String, String), Found>, key: (String, String), rank: u8) -> &mut Found {
    let entry = found.entry(key).or_insert_with(|| Found { rank, by_words: false, matched: BTreeSet::new() });
    entry.rank = entry.rank.min(rank);
    entry
}

/// The rank of a match of a prefix only (lower ranks come first).
const PREFIX_RANK: u8 = u8::MAX;

/// How good a hit is, the best first: 0 when it equals the query (for a domain, the query's own
/// name), 1 for the parent domain one label up, 2 for the next one up and so on, and
/// [`PREFIX_RANK`] for a prefix match, so `www.shop.example.fi` lists the owner of
/// `shop.example.fi` before the owner of `example.fi`.
fn rank_of(probes: &[Probe], probe: &Probe, hit: &TermHit) -> u8 {
    if hit.term != probe.term {
        return PREFIX_RANK;
    }
    let own_domain = probes.iter().find(|p| p.field == TermField::Domain);
    match own_domain {
        Some(own) if probe.field == TermField::Domain => {
            let up = own.term.matches('.').count().saturating_sub(probe.term.matches('.').count());
            u8::try_from(up).unwrap_or(PREFIX_RANK - 1).min(PREFIX_RANK - 1)
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The probes of a query as `(field, kind, term)`, `kind` "=" or "^".
    fn shown(query: &str) -> Vec<(&'static str, &'static str, String)> {
        probes(query)
            .into_iter()
            .map(|p| {
                let kind = match p.kind {
                    ProbeKind::Exact => "=",
                    ProbeKind::Prefix => "^",
                };
                (p.field.as_str(), kind, p.term)
            })
            .collect()
    }

    fn expected(rows: &[(&'static str, &'static str, &str)]) -> Vec<(&'static str, &'static str, String)> {
        rows.iter().map(|(f, k, t)| (*f, *k, (*t).to_owned())).collect()
    }

    #[test]
    fn a_www_name_probes_itself_and_its_parents() {
        assert_eq!(
            shown("  WWW.Shop.Example.FI. "),
            expected(&[
                ("domain", "=", "www.shop.example.fi"),
                ("domain", "=", "shop.example.fi"),
                ("domain", "=", "example.fi"),
                ("user", "=", "www.shop.example.fi"),
                ("reseller", "=", "www.shop.example.fi"),
            ])
        );
    }

    #[test]
    fn a_url_probes_its_host() {
        assert_eq!(shown("https://shop.example.fi:8443/cart?x=1"), shown("shop.example.fi"));
        assert_eq!(shown("http://example.fi/"), shown("example.fi"));
        assert_eq!(
            shown("example.fi"),
            expected(&[
                ("domain", "=", "example.fi"),
                ("user", "=", "example.fi"),
                ("reseller", "=", "example.fi"),
            ])
        );
    }

    #[test]
    fn an_idn_probes_punycode_whichever_way_it_is_typed() {
        let unicode = shown("www.Äiti.fi");
        assert_eq!(
            unicode[..2],
            expected(&[("domain", "=", "www.xn--iti-pla.fi"), ("domain", "=", "xn--iti-pla.fi")])
        );
        let punycode = shown("xn--iti-pla.fi");
        assert_eq!(punycode[0], ("domain", "=", "xn--iti-pla.fi".to_owned()));
        assert_eq!(shown("äiti.fi")[0], punycode[0]);
    }

    #[test]
    fn an_address_probes_the_contact_addresses_in_both_forms_of_an_idn() {
        assert_eq!(
            shown("mailto:Matti.Virtanen@Example.fi"),
            expected(&[
                ("email", "=", "matti.virtanen@example.fi"),
                ("user", "=", "matti.virtanen@example.fi"),
                ("reseller", "=", "matti.virtanen@example.fi"),
            ])
        );
        let idn = shown("matti@äiti.fi");
        assert_eq!(
            idn[..2],
            expected(&[("email", "=", "matti@äiti.fi"), ("email", "=", "matti@xn--iti-pla.fi")])
        );
        let punycode = shown("matti@xn--iti-pla.fi");
        assert_eq!(
            punycode[..2],
            expected(&[("email", "=", "matti@xn--iti-pla.fi"), ("email", "=", "matti@äiti.fi")])
        );
    }

    #[test]
    fn a_contract_id_probes_the_contract_key() {
        assert_eq!(
            shown("1234"),
            expected(&[
                ("contract", "=", "customer-1234"),
                ("user", "=", "1234"),
                ("reseller", "=", "1234"),
                ("customer", "^", "1234"),
            ])
        );
        assert_eq!(shown("Customer-1234")[0], ("contract", "=", "customer-1234".to_owned()));
        assert_eq!(shown("C1")[0], ("contract", "=", "customer-c1".to_owned()));
    }

    #[test]
    fn name_words_probe_customer_names_by_prefix() {
        assert_eq!(
            shown("virta"),
            expected(&[("user", "=", "virta"), ("reseller", "=", "virta"), ("customer", "^", "virta")])
        );
        assert_eq!(
            shown("Matti  Virtanen"),
            expected(&[
                ("user", "=", "matti  virtanen"),
                ("reseller", "=", "matti  virtanen"),
                ("customer", "^", "matti virtanen"),
                ("name_pair", "^", "matti virtanen"),
                ("name_pair", "^", "virtanen matti"),
                ("customer", "^", "matti"),
                ("customer", "^", "virtanen"),
            ])
        );
        // Two-letter words are no probe of their own; the first four words are.
        let many = shown("Oy a bbb ccc ddd eee fff");
        let words: Vec<&str> = many
            .iter()
            .filter(|(f, k, _)| *f == "customer" && *k == "^")
            .map(|(_, _, t)| t.as_str())
            .collect();
        assert_eq!(words, ["oy a bbb ccc ddd eee fff", "bbb", "ccc", "ddd", "eee"]);
        let pairs: Vec<&str> =
            many.iter().filter(|(f, _, _)| *f == "name_pair").map(|(_, _, t)| t.as_str()).collect();
        assert_eq!(pairs, ["bbb eee", "eee bbb"]);
    }

    #[test]
    fn junk_makes_only_harmless_probes() {
        assert_eq!(
            shown("' ; DROP TABLE accounts; --"),
            expected(&[
                ("user", "=", "' ; drop table accounts; --"),
                ("reseller", "=", "' ; drop table accounts; --"),
                ("customer", "^", "drop table accounts"),
                ("name_pair", "^", "drop accounts"),
                ("name_pair", "^", "accounts drop"),
                ("customer", "^", "drop"),
                ("customer", "^", "table"),
                ("customer", "^", "accounts"),
            ])
        );
        // Control characters (PostgreSQL refuses a NUL in text) are dropped; a query of
        // thousands of characters is cut; no query makes more than MAX_PROBES probes.
        assert_eq!(shown("kuk\0ka"), shown("kukka"));
        let long = "ab.".repeat(2000);
        let all = probes(&long);
        assert!(
            all.len() <= MAX_PROBES
                && all.iter().all(|p| p.term.chars().count() <= crate::store::MAX_TERM_CHARS)
        );
        assert!(probes(&"x y.z@w 1 ".repeat(100)).len() <= MAX_PROBES);
    }

    #[test]
    fn an_empty_query_makes_no_probes() {
        assert!(probes("").is_empty());
        assert!(probes("  \t ").is_empty());
        assert!(probes("https://").is_empty());
        assert!(probes("...").is_empty());
    }
}
