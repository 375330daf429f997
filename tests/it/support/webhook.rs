//! A real HTTP endpoint on loopback receiving webhook notices, as a ticket system would: it
//! checks each request's HMAC signature with the shared secret (401 when it does not verify),
//! keeps what it accepted, and can be told to answer the next requests with an error, or to
//! answer each request it accepted only after a delay (as a slow ticket system does, which has
//! stored the ticket before it answers).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use siirto::notify::{IDEMPOTENCY_HEADER, SIGNATURE_HEADER, verify};
use siirto::secret::Secret;

/// One request the endpoint accepted (2xx).
#[derive(Debug, Clone)]
pub struct Received {
    /// The `Idempotency-Key` header.
    pub idempotency_key: String,
    /// The JSON body.
    pub json: serde_json::Value,
    /// When the endpoint stored it (before any answer delay), in seconds since the Unix epoch.
    pub received_at: f64,
}

#[derive(Default)]
struct Inner {
    accepted: Vec<Received>,
    /// Every request seen, accepted or not, by idempotency key.
    attempts: Vec<String>,
    refused_signatures: usize,
    /// Answer the next requests with these statuses, first first.
    fail_next: Vec<StatusCode>,
    /// Answer each accepted request after a delay drawn from this range (inclusive).
    answer_delay: Option<(Duration, Duration, StdRng)>,
    /// Requests accepted (stored) whose answer is not sent yet.
    holding: usize,
}

/// The endpoint; stopped when dropped.
pub struct WebhookReceiver {
    /// Where it listens.
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl WebhookReceiver {
    /// Listens on 127.0.0.1 at a free port, verifying with `secret`.
    pub async fn start(secret: &str) -> WebhookReceiver {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let state = (Arc::clone(&inner), Secret::new(secret));
        let app = axum::Router::new().route("/hook", post(receive)).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        WebhookReceiver { addr, inner, task }
    }

    /// The URL to post to.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Answers the next requests with `statuses`, in order, before accepting again.
    pub fn fail_next(&self, statuses: &[StatusCode]) {
        self.inner.lock().unwrap().fail_next.extend_from_slice(statuses);
    }

    /// From now on answers each request it accepts only after a delay between `min` and `max`
    /// (drawn from `seed`): the request is stored at once, the 2xx comes later.
    pub fn answer_after(&self, min: Duration, max: Duration, seed: u64) {
        assert!(min <= max, "{min:?} > {max:?}");
        self.inner.lock().unwrap().answer_delay = Some((min, max, StdRng::seed_from_u64(seed)));
    }

    /// How many accepted requests are waiting for their answer ([`WebhookReceiver::answer_after`]).
    pub fn holding(&self) -> usize {
        self.inner.lock().unwrap().holding
    }

    /// What it accepted, in order.
    pub fn accepted(&self) -> Vec<Received> {
        self.inner.lock().unwrap().accepted.clone()
    }

    /// Every request's idempotency key, accepted or not, in order.
    pub fn attempts(&self) -> Vec<String> {
        self.inner.lock().unwrap().attempts.clone()
    }

    /// How many requests carried a signature that did not verify.
    pub fn refused_signatures(&self) -> usize {
        self.inner.lock().unwrap().refused_signatures
    }

    /// Waits until `n` requests were accepted.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let accepted = self.accepted();
            if accepted.len() >= n {
                return accepted;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} webhook notices in {timeout:?}: {accepted:#?}",
                accepted.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    State((inner, secret)): State<(Arc<Mutex<Inner>>, Secret)>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let delay = {
        let mut guard = inner.lock().unwrap();
        let key = header(IDEMPOTENCY_HEADER);
        guard.attempts.push(key.clone());
        if !verify(&secret, &body, &header(SIGNATURE_HEADER)) {
            guard.refused_signatures += 1;
            return StatusCode::UNAUTHORIZED;
        }
        if !guard.fail_next.is_empty() {
            return guard.fail_next.remove(0);
        }
        let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        let received_at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
        guard.accepted.push(Received { idempotency_key: key, json, received_at });
        match &mut guard.answer_delay {
            Some((min, max, rng)) => {
                let delay = rng.gen_range(*min..=*max);
                guard.holding += 1;
                delay
            }
            None => return StatusCode::ACCEPTED,
        }
    };
    // Stored; the answer comes later. The count drops even when the client went away and the
    // server dropped this handler mid-wait.
    let _held = Holding(inner);
    tokio::time::sleep(delay).await;
    StatusCode::ACCEPTED
}

/// One accepted request waiting for its answer, counted in [`Inner::holding`] while it lives.
struct Holding(Arc<Mutex<Inner>>);

impl Drop for Holding {
    fn drop(&mut self) {
        self.0.lock().unwrap().holding -= 1;
    }
}
