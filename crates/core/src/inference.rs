//! Inference jobs (issue 13): the models the network lists (their prices, author and royalty, and how large a proof
//! of one of their runs may be), a request's escrow and price, the cheap checks of an answer, and the proof's round
//! trip. A delivered inference result is not checked at once: the core first draws a challenge seed — only now,
//! after the node has committed to its root — and asks the node to open its proof ([`ToNode::Open`]); when the node
//! says the opening is stored ([`neurolov_protocol::FromNode::Opened`]), its check goes out like any other
//! ([`crate::Verification`]), run by the shell's [`ProofChecker`], which holds the models' weights the core has not.
//!
//! Money: the client pays the listed price for the tokens it used — input tokens at the input price, generated ones at
//! the output price, rounded up — out of an escrow of the request's maximum. Of that price the model's author gets
//! its royalty share and the treasury the protocol fee; the provider the rest. The escrow's remainder is refunded.

use neurolov_protocol::Id;
use neurolov_protocol::inference::{Answer, Finish, InferOutput, InferRequest};
use neurolov_protocol::messages::{ErrorCode, ToNode, Work};
use neurolov_scheduler::Features;

use crate::jobs::{JobSpec, SubmitError};
use crate::taskbook::Purpose;
use crate::{BPS, Blobs, Config, Core, Effect, JobId, TaskId, Verdict, Verification, economy};

/// Most models a network lists: each has a scheduler feature bit.
pub const MAX_LISTED_MODELS: usize = 48;
/// The scheduler bit of the first listed model (bits below are WebGPU features; the top bit is WGSL).
const FIRST_MODEL_BIT: usize = 8;

/// What a model computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    Embeddings,
    Chat,
}

impl ModelKind {
    /// The word the API and the store use.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Embeddings => "embeddings",
            ModelKind::Chat => "chat",
        }
    }
}

/// A model the network serves, as the core needs to know it.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelListing {
    /// The name clients ask for and nodes claim.
    pub name: String,
    pub kind: ModelKind,
    /// What a client pays per 1,000 input tokens (texts, prompt) and per 1,000 generated tokens, in nano-NLOV.
    pub price_in_nano_per_1k: u64,
    pub price_out_nano_per_1k: u64,
    /// Who is paid the royalty (`None`: nobody — the open models the network lists from genesis).
    pub author: Option<Id>,
    /// The author's share of each verified request's price (basis points).
    pub royalty_bps: u64,
    /// Floats per embedding (0 for chat): bounds what a node may upload as the answer.
    pub width: u32,
    /// Most positions one request may run through the model (all texts together; prompt plus generated tokens).
    pub max_positions: u32,
    /// An opening's largest size: this, plus `opening_bytes_per_position` for each position run. The core refuses a
    /// bigger one before anything reads it.
    pub opening_fixed_bytes: u64,
    pub opening_bytes_per_position: u64,
    /// About 2 × the parameters: the work of a position, for deadlines and measured throughput.
    pub mflop_per_token: u64,
}

impl ModelListing {
    /// What a client pays for `input` and `output` tokens, rounded up; `None` beyond the supply.
    pub fn price_nano(&self, input: usize, output: usize) -> Option<u64> {
        let p = (input as u128 * u128::from(self.price_in_nano_per_1k)
            + output as u128 * u128::from(self.price_out_nano_per_1k))
        .div_ceil(1000);
        u64::try_from(p).ok().filter(|&p| p <= neurolov_ledger::TOTAL_SUPPLY_NANO)
    }

    /// The largest opening of a run of `positions` positions.
    pub fn max_opening_bytes(&self, positions: usize) -> u64 {
        self.opening_fixed_bytes.saturating_add(self.opening_bytes_per_position.saturating_mul(positions as u64))
    }
}

/// How a verified request's price is shared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split {
    pub provider_nano: u64,
    pub royalty_nano: u64,
    pub fee_nano: u64,
}

/// `price` shared between the author (`royalty_bps`), the treasury (`fee_bps`) and the provider (the rest).
pub fn split(price: u64, royalty_bps: u64, fee_bps: u64) -> Split {
    let royalty_nano = economy::share_nano(price, royalty_bps.min(BPS));
    let fee_nano = economy::share_nano(price, fee_bps.min(BPS - royalty_bps.min(BPS)));
    let provider_nano = price - royalty_nano - fee_nano;
    debug_assert_eq!(provider_nano + royalty_nano + fee_nano, price, "a split shares out exactly the price");
    Split { provider_nano, royalty_nano, fee_nano }
}

/// The scheduler's bit for a node that fetches a model it does not hold when given a task for it
/// (`ClaimedHardware::fetches_models`): an inference task goes to such a node only when no holder can take it.
/// Below `RUNS_WGSL` (bit 63), above the model bits.
pub(crate) const FETCHES_MODELS: Features = Features(1 << 62);
const _: () = assert!(FIRST_MODEL_BIT + MAX_LISTED_MODELS <= 62, "the model bits stay below FETCHES_MODELS");

/// The scheduler bits of the listed models among `names` (unknown names are ignored).
pub(crate) fn model_bits(cfg: &Config, names: &[String]) -> Features {
    Features(names.iter().filter_map(|n| model_bit(cfg, n)).fold(0, |acc, f| acc | f.0))
}

fn model_bit(cfg: &Config, name: &str) -> Option<Features> {
    let i = cfg.models.iter().take(MAX_LISTED_MODELS).position(|m| m.name == name)?;
    Some(Features(1 << (FIRST_MODEL_BIT + i)))
}

/// The listing of `model`, or why a request for it is refused.
pub(crate) fn listing<'c>(cfg: &'c Config, model: &str) -> Result<&'c ModelListing, SubmitError> {
    cfg.models.iter().find(|m| m.name == model).ok_or_else(|| SubmitError::UnknownModel(model.to_string()))
}

/// An inference request's cheap checks against its model; the escrow it needs (its largest price) and its work.
pub(crate) fn infer_plan(cfg: &Config, model: &str, request: &InferRequest) -> Result<(u64, u64), SubmitError> {
    let m = listing(cfg, model)?;
    request.check().map_err(SubmitError::BadRequest)?;
    let kind = match request {
        InferRequest::Embed { .. } => ModelKind::Embeddings,
        InferRequest::Chat { .. } => ModelKind::Chat,
    };
    if kind != m.kind {
        return Err(SubmitError::BadRequest(format!("{model} is a {} model", m.kind.name())));
    }
    let positions = match request {
        InferRequest::Embed { texts } => texts.iter().map(Vec::len).max().unwrap_or(0),
        InferRequest::Chat { .. } => request.input_tokens() + request.max_output_tokens(),
    };
    if positions > m.max_positions as usize {
        return Err(SubmitError::BadRequest(format!("{model} takes at most {} tokens", m.max_positions)));
    }
    let escrow = m.price_nano(request.input_tokens(), request.max_output_tokens()).ok_or(SubmitError::PriceTooHigh)?;
    let tokens = (request.input_tokens() + request.max_output_tokens()) as u64;
    Ok((escrow, m.mflop_per_token.saturating_mul(tokens).max(1)))
}

/// What a committed answer must be for its request, whatever the proof says: one embedding of the model's width per
/// text; for chat no more tokens than asked, a stop token (and only then) when it stopped, none emitted.
pub(crate) fn check_answer(m: &ModelListing, request: &InferRequest, output: &InferOutput) -> Result<(), String> {
    match (request, &output.answer) {
        (InferRequest::Embed { texts }, Answer::Embeddings(vectors)) => {
            if vectors.len() != texts.len() || vectors.iter().any(|v| v.len() != m.width as usize) {
                return Err(format!("not one embedding of width {} per text", m.width));
            }
            if vectors.iter().flatten().any(|v| !v.is_finite()) {
                return Err("an embedding has a value that is not finite".into());
            }
            Ok(())
        }
        (InferRequest::Chat { max_tokens, stop, prompt, .. }, Answer::Chat { tokens, finish, stop_token }) => {
            if tokens.len() > *max_tokens as usize {
                return Err(format!("{} tokens generated, {max_tokens} asked at most", tokens.len()));
            }
            if tokens.iter().any(|t| stop.contains(t)) {
                return Err("a stop token among the generated ones".into());
            }
            let consistent = match finish {
                Finish::Stop => stop_token.is_some_and(|t| stop.contains(&t)),
                Finish::Length => stop_token.is_none() && tokens.len() == *max_tokens as usize,
                Finish::Context => stop_token.is_none() && prompt.len() + tokens.len() >= m.max_positions as usize,
            };
            if !consistent {
                return Err(format!("finish reason {finish:?} does not fit the tokens"));
            }
            Ok(())
        }
        _ => Err("the answer is not of the request's kind".into()),
    }
}

/// The shell's check of an inference's proof (it holds the models' weights and prepared verifiers; the core has
/// none). `seed` is the challenge the core drew after the node committed; `opening` the bytes the node uploaded.
pub trait ProofChecker: Send + Sync {
    fn check(&self, model: &str, request: &InferRequest, output: &InferOutput, opening: &[u8], seed: u64) -> Verdict;
}

/// An inference result's proof to check: what was asked, the challenge and the opening's blob.
#[derive(Clone, Debug)]
pub struct ProofCheck {
    pub listing: ModelListing,
    pub request: InferRequest,
    pub seed: u64,
    pub opening_hash: String,
}

impl ProofCheck {
    /// The verdict on a result's bytes: malformed or impossible answers are proven wrong here, the rest by `checker`.
    /// `Err` when the check cannot be made (no opening stored, no checker for the model): nobody is convicted.
    pub(crate) fn run(
        &self,
        bytes: &[u8],
        blobs: &dyn Blobs,
        checker: Option<&dyn ProofChecker>,
    ) -> Result<Verdict, String> {
        let output = match InferOutput::from_bytes(bytes) {
            Ok(o) => o,
            Err(e) => return Ok(Verdict::Wrong(format!("the committed answer is not an inference output: {e}"))),
        };
        if let Err(e) = check_answer(&self.listing, &self.request, &output) {
            return Ok(Verdict::Wrong(e));
        }
        let opening = blobs.get(&self.opening_hash).ok_or("the opening is not stored")?;
        let checker = checker.ok_or_else(|| format!("this coordinator cannot check {} proofs", self.listing.name))?;
        Ok(checker.check(&self.listing.name, &self.request, &output, &opening, self.seed))
    }
}

/// A model's verified use since the core started: what the marketplace shows its author.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelUsage {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Paid to the author.
    pub royalties_nano: u64,
}

/// Positions a request may run through its model: what its opening's size is bounded by.
fn positions(request: &InferRequest) -> usize {
    request.input_tokens() + request.max_output_tokens()
}

/// The largest opening an attempt of `work` may upload (`None` for work that is not an inference).
pub(crate) fn opening_limit(cfg: &Config, work: &Work) -> Option<u64> {
    let Work::Infer { model, request } = work else { return None };
    Some(cfg.models.iter().find(|m| &m.name == model)?.max_opening_bytes(positions(request)))
}

/// Where an inference attempt's proof stands, kept with the attempt. Until the opening is stored the attempt keeps its
/// node's slot (the node is still working on it) and its deadline.
#[derive(Clone, Debug)]
pub(crate) struct ProofState {
    /// The challenge's seed, drawn when the result was delivered.
    pub seed: u64,
    /// The result's bytes when they came inside the node's frame (else they are the committed blob).
    pub inline: Option<std::sync::Arc<[u8]>>,
    /// The opening's blob, once the node said it is stored.
    pub opening_hash: Option<String>,
    /// The one opening blob the node may upload for this attempt (see `Core::claim_upload`).
    pub uploaded: Option<String>,
}

impl Core {
    /// The models this network lists.
    pub fn models(&self) -> &[ModelListing] {
        &self.cfg.models
    }

    /// Lists a model published while the network runs, after those it started with (their scheduler bits do not
    /// move); nodes that already claim it are rescored, and requests may wait for it no longer.
    pub fn list_model(&mut self, now_ms: u64, listing: ModelListing) -> Result<Vec<Effect>, String> {
        self.advance(now_ms);
        if self.cfg.models.iter().any(|m| m.name == listing.name) {
            return Err(format!("a model named {} is listed", listing.name));
        }
        if self.cfg.models.len() >= MAX_LISTED_MODELS {
            return Err(format!("at most {MAX_LISTED_MODELS} models are listed"));
        }
        self.cfg.models.push(listing);
        for id in self.registry.ids() {
            self.sync_scheduler(id);
        }
        self.dispatch();
        Ok(self.take_effects())
    }

    /// `model`'s verified use since this core started.
    pub fn model_usage(&self, model: &str) -> ModelUsage {
        self.model_usage.get(model).cloned().unwrap_or_default()
    }

    fn usage_of_model(&mut self, model: &str, input: usize, output: usize, royalty_nano: u64) {
        let u = self.model_usage.entry(model.to_string()).or_default();
        u.requests += 1;
        u.input_tokens += input as u64;
        u.output_tokens += output as u64;
        u.royalties_nano += royalty_nano;
    }

    /// A delivered inference result: the node is asked to open its proof at a challenge drawn now.
    pub(crate) fn ask_to_open(
        &mut self,
        node: Id,
        (task_id, attempt): (TaskId, u32),
        inline: Option<std::sync::Arc<[u8]>>,
    ) {
        let seed = self.rng.u64(..);
        let conn = self.registry.get(&node).and_then(|n| n.conn);
        if let Ok(a) = self.assignment_mut(task_id, attempt, node) {
            a.proof = Some(ProofState { seed, inline, opening_hash: None, uploaded: None });
        }
        if let Some(conn) = conn {
            self.send(conn, ToNode::Open { task_id, attempt, seed });
        }
    }

    /// The node stored the opening it was asked for: its size is held to what the request can need before anything
    /// reads it, then its check goes out.
    pub(crate) fn opening_delivered(
        &mut self,
        node: Id,
        (task_id, attempt): (TaskId, u32),
        opening_hash: String,
        blobs: &dyn Blobs,
    ) -> Result<(), (ErrorCode, String)> {
        let (listing, request) = match self.tasks.get(&task_id).map(|t| &t.work) {
            Some(Work::Infer { model, request }) => (listing(&self.cfg, model).ok().cloned(), request.clone()),
            _ => return Err((ErrorCode::UnknownTask, format!("task {task_id} is not an inference"))),
        };
        let listing = listing.ok_or((ErrorCode::UnknownTask, "the model is no longer listed".to_string()))?;
        let limit = listing.max_opening_bytes(positions(&request));
        let size =
            blobs.size(&opening_hash).ok_or((ErrorCode::UnknownTask, "opening blob not uploaded".to_string()))?;
        if size > limit {
            return Err((
                ErrorCode::TooLarge,
                format!("the opening is {size} bytes, this request needs at most {limit}"),
            ));
        }
        let a = self.assignment_mut(task_id, attempt, node)?;
        let (Some(proof), Some((result_hash, _))) = (a.proof.as_mut(), a.commit.as_ref()) else {
            return Err((ErrorCode::Malformed, "no opening was asked for this attempt".into()));
        };
        if proof.opening_hash.is_some() {
            return Err((ErrorCode::Malformed, "the opening was already delivered".into()));
        }
        proof.opening_hash = Some(opening_hash.clone());
        let check = ProofCheck { listing, request, seed: proof.seed, opening_hash };
        let v = Verification::new(task_id, attempt, node, result_hash.clone(), proof.inline.clone(), None, 0)
            .with_proof(check);
        // Opened, the attempt frees the node's slot and its check goes out (its verdict is awaited from now on).
        self.tasks.begin_check(self.now_ms, task_id, attempt, node);
        self.vacate(task_id, attempt, node);
        self.effects.push(Effect::Verify(Box::new(v)));
        Ok(())
    }

    /// The listing of an inference job's model.
    fn job_listing(&self, job: JobId) -> Option<&ModelListing> {
        match &self.jobs.get(&job)?.spec {
            JobSpec::Infer { model, .. } => self.cfg.models.iter().find(|m| &m.name == model),
            _ => None,
        }
    }

    /// How `price` for `m` is shared: with no author to pay, no royalty is taken (the provider keeps it).
    fn shares(&self, m: &ModelListing, price: u64) -> Split {
        split(price, if m.author.is_some() { m.royalty_bps } else { 0 }, self.cfg.fee_bps)
    }

    /// The most an inference attempt's provider can be paid (reserved when the task is sent).
    pub(crate) fn inference_hold_price(&self, purpose: &Purpose) -> u64 {
        let Purpose::Job(job) = *purpose else { return 0 };
        let Some(JobSpec::Infer { request, .. }) = self.jobs.get(&job).map(|j| &j.spec) else { return 0 };
        let Some(m) = self.job_listing(job) else { return 0 };
        let price = m.price_nano(request.input_tokens(), request.max_output_tokens()).unwrap_or(0);
        self.shares(m, price).provider_nano
    }

    /// A node that fetched `model` on demand and answered with it, verified, holds it now: it is preferred for the
    /// model's next requests like a node that claimed it when it registered (until it registers again).
    fn now_holds(&mut self, node: Id, model: &str) {
        let Some(n) = self.registry.get_mut(&node) else { return };
        let held = &mut n.claimed.models;
        if held.iter().any(|m| m == model) || held.len() >= neurolov_protocol::inference::MAX_HELD_MODELS {
            return;
        }
        held.push(model.to_string());
        tracing::info!(%node, model, "node now holds the model");
        self.sync_scheduler(node);
    }

    /// Pays a verified inference from its job's escrow: the price of the tokens used, shared between the provider,
    /// the model's author and the treasury.
    pub(crate) fn pay_inference(&mut self, tid: TaskId, attempt: u32, node: Id, job: JobId, bytes: &[u8]) {
        let Some(operator) = self.registry.get(&node).map(|n| n.operator) else { return };
        let Some(JobSpec::Infer { request, .. }) = self.jobs.get(&job).map(|j| j.spec.clone()) else { return };
        let Some(m) = self.job_listing(job).cloned() else { return };
        let output_tokens = InferOutput::from_bytes(bytes).map_or(0, |o| o.output_tokens());
        let price = m.price_nano(request.input_tokens(), output_tokens).unwrap_or(0);
        let shares = self.shares(&m, price);
        let royalty = m.author.filter(|_| shares.royalty_nano > 0).map(|a| (a, shares.royalty_nano));
        if let Some((author, _)) = royalty {
            self.open_account(economy::wallet(&author), neurolov_ledger::Kind::User, &author.to_string());
        }
        let (paid_nano, fee_nano, royalty_nano) = self.pay_task_shares(tid, attempt, operator, shares, royalty);
        self.usage_of_model(&m.name, request.input_tokens(), output_tokens, royalty_nano);
        self.now_holds(node, &m.name);
        self.effects.push(Effect::Reward {
            job,
            task: tid,
            node,
            operator,
            work_mflop: self.tasks.get(&tid).map_or(0, |t| t.work_mflop),
            price_nano_per_gflop: 0,
            paid_nano,
            fee_nano,
            royalty_nano,
        });
    }
}
