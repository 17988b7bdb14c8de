//! The rollout controller: every tick it looks at each route with a `[routes.rollout]`,
//! analyses the gates once per `interval` over the window since its last conclusive analysis,
//! promotes a step that ran its duration with passing evidence, rolls back (and pauses) after
//! `failure_limit` failed analyses in a row, and applies operators' actions. Each change is saved
//! to the store, recorded in the audit trail, and applied by recompiling the route table with the
//! new [`Overlay`] (the request path never sees the controller: it serves the table).
//!
//! With a store shared by several replicas, only the replica that leads evaluates and writes;
//! the others load what the store holds when told of a change and apply it. Every replica
//! publishes its counters, and the leader's windows sum them (see [`super::replicas`]). A
//! replica that takes over continues from the stored state (the current step keeps its
//! `since`), so a handover neither skips nor repeats a step.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::gates::{analyse, Applicable, Measure};
use super::plan::{Placement, RolloutPlan};
use super::replicas::{self, ReplicaMeasures, RouteMeasures};
use super::state::{now_ms, overlay, Check, GateResult, HistoryEvent, Overlay, RolloutState, States, Verdict};
use super::store::{Leadership, RolloutStore};
use crate::reload::ConfigStore;
use crate::shadow::report::Count;
use crate::shadow::ShadowService;
use crate::stage::Stage;
use crate::table::{Route, RouteTable};

/// An operator's action on a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Stop automatic promotion and rollback where it stands.
    Pause,
    /// Continue (failed-check count cleared).
    Resume,
    /// Skip the rest of the current step.
    Promote,
    /// Roll back to legacy now, and pause.
    Abort,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "pause" => Some(Action::Pause),
            "resume" => Some(Action::Resume),
            "promote" => Some(Action::Promote),
            "abort" => Some(Action::Abort),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Promote => "promote",
            Action::Abort => "abort",
        }
    }
}

/// Why an action was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ActionError {
    #[error("route {0:?} has no rollout")]
    NoRollout(String),
    #[error("route {0:?} is at its last step")]
    AtLastStep(String),
    /// Several replicas share the rollouts and this one follows: act on the leader.
    #[error("this replica follows; the rollouts are led by {0}: send the action to the leader's admin API")]
    NotLeader(String),
    /// The shared store refused or could not be reached: nothing changed.
    #[error("the rollout state cannot be saved, nothing changed: {0}")]
    Store(String),
}

/// The measurement window of one route: every replica's counters at its start, and when it was
/// last analysed.
struct Window {
    start: ReplicaMeasures,
    analysed: Instant,
}

struct Inner {
    states: States,
    windows: HashMap<String, Window>,
    /// Whether this replica led at its last tick (a follower that starts leading loads the state
    /// the store holds first).
    leading: bool,
    /// The store's revision when this replica last loaded its state (followers).
    revision: u64,
    loaded: Instant,
    /// A write to the shared store failed: what memory holds may not be what the store holds.
    stale: bool,
}

/// How often an apply that failed is tried again.
const APPLY_RETRY: Duration = Duration::from_secs(5);

/// How often a follower re-reads the state even without a notification.
const FOLLOWER_RELOAD: Duration = Duration::from_secs(5);

/// Runs the rollouts of the serving route table.
pub struct Controller {
    config: Arc<ConfigStore>,
    shadow: Arc<ShadowService>,
    store: Box<dyn RolloutStore>,
    inner: Mutex<Inner>,
    client: reqwest::Client,
    /// The last failure to apply the positions and when (logged once until it changes or
    /// clears; retried at most every [`APPLY_RETRY`]: each try recompiles the whole table).
    apply_error: Mutex<Option<(String, Instant)>>,
}

/// An analysis to run outside the lock.
struct Job {
    route: String,
    plan: Arc<RolloutPlan>,
    /// The route's stage and weight in routes.toml: what the rollout may reach.
    cap: Placement,
    applicable: Applicable,
    window: Measure,
    now: ReplicaMeasures,
}

impl Controller {
    /// A controller over `config`, with the state `store` holds (which the caller already used
    /// to open `config`, see [`Controller::load_overlay`]).
    pub fn new(config: Arc<ConfigStore>, shadow: Arc<ShadowService>, store: Box<dyn RolloutStore>) -> Arc<Self> {
        let states = store.load().unwrap_or_else(|e| {
            tracing::error!("cannot read the rollout state ({e}); starting from what the routes serve");
            States::new()
        });
        let client = reqwest::Client::builder().no_proxy().build().unwrap_or_default();
        let (leading, revision) = (!store.shared(), store.revision());
        let me = Arc::new(Controller {
            config,
            shadow,
            store,
            inner: Mutex::new(Inner {
                leading,
                revision,
                loaded: Instant::now(),
                stale: false,
                states,
                windows: HashMap::new(),
            }),
            client,
            apply_error: Mutex::new(None),
        });
        let weak = Arc::downgrade(&me);
        me.config.on_reload(Box::new(move |old, new, trigger| {
            if let Some(c) = weak.upgrade() {
                c.record_reload(old, new, trigger);
            }
        }));
        me
    }

    /// The overlay saved in `store` (to open the config with, so a restart serves where the
    /// rollouts stood).
    pub fn load_overlay(store: &dyn RolloutStore) -> Overlay {
        store.load().map(|s| overlay(&s)).unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs forever: a tick every 200 ms.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.tick().await;
        }
    }

    fn measure(&self, route: &Route) -> Measure {
        let (legacy, extracted) = route.metrics.snapshot();
        let (compared, matched) =
            self.shadow.report(&route.name).map_or((0, 0), |r| (r.get(Count::Compared), r.get(Count::Matched)));
        Measure { legacy, extracted, compared, matched }
    }

    /// A follower: loads the state when the store says it changed (or every 5 s, in case a
    /// notification was lost) and applies it.
    fn follow(&self) {
        let revision = self.store.revision();
        {
            let inner = self.lock();
            if !inner.leading && !inner.stale && inner.revision == revision && inner.loaded.elapsed() < FOLLOWER_RELOAD
            {
                return;
            }
        }
        // no lock held while the store answers
        match self.store.load() {
            Ok(states) => {
                let mut inner = self.lock();
                if inner.leading {
                    tracing::warn!("this replica no longer leads the rollouts; following the store");
                }
                inner.states = states;
                inner.windows.clear();
                inner.leading = false;
                inner.stale = false;
                inner.revision = revision;
                inner.loaded = Instant::now();
                self.apply(&inner);
            }
            Err(e) => {
                // try again when the store reconnects (the revision moves) or in 5 s, not every
                // tick: the background thread has other work than waiting for a database
                tracing::warn!("cannot read the rollout state from the store: {e}");
                let mut inner = self.lock();
                inner.leading = false;
                inner.stale = false;
                inner.revision = revision;
                inner.loaded = Instant::now();
            }
        }
    }

    /// This replica just took the lead (or must re-read after a failed write): continue from
    /// the stored state, with fresh windows. False when the store cannot be read (no lead then).
    fn take_over(&self) -> bool {
        let revision = self.store.revision();
        match self.store.load() {
            Ok(states) => {
                let mut inner = self.lock();
                if !inner.leading {
                    tracing::info!(replica = %self.store.replica(), "leading the rollouts from the stored state");
                }
                inner.states = states;
                inner.windows.clear();
                inner.leading = true;
                inner.stale = false;
                inner.revision = revision;
                inner.loaded = Instant::now();
                self.apply(&inner);
                true
            }
            Err(e) => {
                tracing::warn!("cannot read the rollout state to lead from it: {e}");
                false
            }
        }
    }

    /// One pass over every rolling-out route.
    pub async fn tick(&self) {
        let table = self.config.current();
        // every replica's counters go to the store, for the leader's gates
        let local: RouteMeasures = table.routes_with_rollout().map(|r| (r.name.clone(), self.measure(r))).collect();
        if self.store.shared() {
            self.store.publish(local.clone());
            if let Leadership::Follower { .. } = self.store.leadership() {
                return self.follow();
            }
            let fresh = {
                let inner = self.lock();
                inner.leading && !inner.stale
            };
            if !fresh && !self.take_over() {
                return;
            }
        }
        let others = self.store.measures();
        let mut events = Vec::new();
        let mut jobs = Vec::new();
        let removed;
        {
            let mut inner = self.lock();
            let Inner { states, windows, .. } = &mut *inner;
            // a route whose rollout was removed (or the route itself) keeps no state; saved and
            // applied below, so neither the store nor the overlay keeps where it stood (a
            // rollout added again later would start there)
            let gone: Vec<String> =
                states.keys().filter(|n| table.route(n).is_none_or(|r| r.rollout.is_none())).cloned().collect();
            removed = !gone.is_empty();
            for name in gone {
                states.remove(&name);
                windows.remove(&name);
            }
            for route in table.routes_with_rollout() {
                let plan = route.rollout.clone().expect("filtered");
                let mine = local.get(&route.name).cloned().unwrap_or_default();
                let now = replicas::of_route(&others, self.store.replica(), &route.name, mine);
                let served = Placement { stage: route.stage, weight_bp: route.canary.weight_bp };
                let st = states.entry(route.name.clone()).or_insert_with(|| {
                    let position = (0..=plan.last_position()).find(|p| plan.placement(*p) == served).unwrap_or(0);
                    events.push(event(
                        &route.name,
                        "start",
                        served,
                        plan.placement(position),
                        "controller",
                        "rollout found in routes.toml",
                        vec![],
                    ));
                    new_state(&plan, position)
                });
                if st.steps != plan.steps_fingerprint() {
                    if let Some(e) = reconcile(&route.name, st, &plan) {
                        events.push(e);
                        windows.remove(&route.name);
                    }
                }
                let w = windows
                    .entry(route.name.clone())
                    .or_insert_with(|| Window { start: now.clone(), analysed: Instant::now() });
                if st.paused || w.analysed.elapsed() < plan.interval {
                    continue;
                }
                w.analysed = Instant::now();
                let placement = plan.placement(st.position).narrowed_by(route.plan);
                let applicable = Applicable {
                    shadowing: route.shadow.is_some(),
                    both_sides: placement.stage == Stage::Canary
                        && placement.weight_bp > 0
                        && placement.weight_bp < 10_000,
                };
                jobs.push(Job {
                    route: route.name.clone(),
                    plan,
                    cap: route.plan,
                    applicable,
                    window: replicas::window(&now, &w.start),
                    now,
                });
            }
        }
        // the analyses may fetch (CDC, Prometheus): no lock held
        let mut results = Vec::new();
        for job in jobs {
            let (verdict, gates) = analyse(&job.plan.gates, job.applicable, &job.window, &self.client).await;
            results.push((job, verdict, gates));
        }
        let mut changed = removed || !events.is_empty();
        {
            let mut guard = self.lock();
            let inner = &mut *guard;
            let Inner { states, windows, .. } = inner;
            for (job, verdict, gates) in results {
                let (Some(st), Some(w)) = (states.get_mut(&job.route), windows.get_mut(&job.route)) else { continue };
                if st.paused {
                    continue; // paused by an operator meanwhile
                }
                let at = now_ms();
                st.last_check = Some(Check { at_unix_ms: at, verdict, gates: gates.clone() });
                changed = true;
                match verdict {
                    // not enough data: the window keeps growing
                    Verdict::Inconclusive => {}
                    Verdict::Pass => {
                        st.failures = 0;
                        let due = match job.position_duration(st.position) {
                            Some(d) => at.saturating_sub(st.since_unix_ms) >= d.as_millis() as u64,
                            None => st.position == 0,
                        };
                        w.start = job.now;
                        // held at the cap: the next step would serve what this one does, so the
                        // state stays here (it would run ahead of what is served, and a raised cap
                        // would then jump straight to where it got); it moves once the cap is raised
                        let capped = |p: usize| job.plan.placement(p).narrowed_by(job.cap);
                        if due
                            && st.position < job.plan.last_position()
                            && capped(st.position + 1) != capped(st.position)
                        {
                            let from = job.plan.placement(st.position);
                            move_to(st, &job.plan, st.position + 1);
                            let why = format!("step passed its gates for its whole duration ({})", summary(&gates));
                            events.push(event(
                                &job.route,
                                "promote",
                                from,
                                job.plan.placement(st.position),
                                "controller",
                                &why,
                                gates,
                            ));
                        }
                    }
                    Verdict::Fail => {
                        w.start = job.now;
                        st.failures += 1;
                        if st.failures >= job.plan.failure_limit {
                            let from = job.plan.placement(st.position);
                            let back = st.position.saturating_sub(1);
                            move_to(st, &job.plan, back);
                            let failing: Vec<&str> =
                                gates.iter().filter(|g| g.verdict == Verdict::Fail).map(|g| g.gate.as_str()).collect();
                            let why = format!(
                                "{} failed {} analyses in a row: {}",
                                failing.join(", "),
                                job.plan.failure_limit,
                                summary(&gates)
                            );
                            st.paused = true;
                            st.paused_reason = Some(format!("rolled back: {why}"));
                            events.push(event(
                                &job.route,
                                "rollback",
                                from,
                                job.plan.placement(back),
                                "controller",
                                &why,
                                gates,
                            ));
                        }
                    }
                }
            }
            // applied on every tick, not only after a change: an apply that failed (a secret or
            // certificate file missing mid-rotation) is tried again, even for a route that a
            // rollback paused and that no analysis will move again
            if !changed || self.persist(inner, &events).is_ok() {
                self.apply(inner);
            }
        }
    }

    /// Saves the state and records `events` (one commit), under the lock that changed them (so
    /// `status` never shows a move the history does not have yet). With a store of its own, a
    /// failure is logged and memory is kept (and served); with a shared store nothing is applied
    /// and the next tick re-reads what the store holds, so the replicas never diverge.
    fn persist(&self, inner: &mut Inner, events: &[HistoryEvent]) -> Result<(), String> {
        match self.store.commit(&inner.states, events) {
            Ok(()) => {
                for e in events {
                    tracing::info!(route = %e.route, kind = %e.kind, from = %e.from, to = %e.to, who = %e.who, "rollout: {}", e.why);
                }
                Ok(())
            }
            Err(e) if self.store.shared() => {
                tracing::error!("cannot save the rollout state ({e}); re-reading what the store holds");
                inner.stale = true;
                Err(e.to_string())
            }
            Err(e) => {
                tracing::error!("cannot save the rollout state: {e}");
                Ok(())
            }
        }
    }

    /// Recompiles the table when the rollouts' placements differ from what it serves, or the
    /// overlay from the one it was compiled with (a removed rollout's entry must go, though its
    /// route serves the file's placement already). Called under the controller's lock, so
    /// `status` never shows a step the table does not serve yet (a reload never takes that lock:
    /// no deadlock).
    fn apply(&self, inner: &Inner) {
        let target = overlay(&inner.states);
        let table = self.config.current();
        let serving: Overlay = table
            .routes
            .iter()
            .filter(|r| r.rollout.is_some())
            .map(|r| (r.name.clone(), Placement { stage: r.stage, weight_bp: r.canary.weight_bp }))
            .collect();
        let wanted: Overlay = target
            .iter()
            .filter_map(|(n, p)| {
                let r = table.route(n).map(|r| r.plan)?;
                Some((n.clone(), p.narrowed_by(r)))
            })
            .collect();
        if wanted != serving || target != self.config.overlay() {
            let mut last = self.apply_error.lock().unwrap_or_else(|p| p.into_inner());
            if last.as_ref().is_some_and(|(_, at)| at.elapsed() < APPLY_RETRY) {
                return;
            }
            match self.config.set_overlay(target) {
                Ok(()) => {
                    if last.take().is_some() {
                        tracing::info!("the rollout positions are applied again");
                    }
                }
                Err(e) => {
                    let e = e.to_string();
                    if last.as_ref().is_none_or(|(l, _)| *l != e) {
                        tracing::error!(
                            "cannot apply the rollout positions; the serving table stays (tried again every {}s):\n{e}",
                            APPLY_RETRY.as_secs()
                        );
                    }
                    *last = Some((e, Instant::now()));
                }
            }
        }
    }

    /// Applies an operator's action now.
    pub fn act(&self, route: &str, action: Action, who: &str) -> Result<Value, ActionError> {
        let table = self.config.current();
        let plan = table
            .route(route)
            .and_then(|r| r.rollout.clone())
            .ok_or_else(|| ActionError::NoRollout(route.to_string()))?;
        if let Leadership::Follower { leader } = self.store.leadership() {
            return Err(ActionError::NotLeader(
                leader.unwrap_or_else(|| "no replica known (is the rollout store reachable?)".into()),
            ));
        }
        if self.store.shared() {
            // just took the lead, or a write failed: act on what the store holds
            let fresh = {
                let inner = self.lock();
                inner.leading && !inner.stale
            };
            if !fresh && !self.take_over() {
                return Err(ActionError::Store("the stored rollout state cannot be read; retry in a moment".into()));
            }
        }
        {
            let mut guard = self.lock();
            let inner = &mut *guard;
            let Inner { states, windows, .. } = inner;
            let st = states.entry(route.to_string()).or_insert_with(|| new_state(&plan, 0));
            let from = plan.placement(st.position);
            match action {
                Action::Pause => {
                    st.paused = true;
                    st.paused_reason = Some(format!("paused by {who}"));
                }
                Action::Resume => {
                    st.paused = false;
                    st.paused_reason = None;
                    st.failures = 0;
                    windows.remove(route);
                }
                Action::Promote => {
                    if st.position >= plan.last_position() {
                        return Err(ActionError::AtLastStep(route.to_string()));
                    }
                    let next = st.position + 1;
                    move_to(st, &plan, next);
                    windows.remove(route);
                }
                Action::Abort => {
                    move_to(st, &plan, 0);
                    st.paused = true;
                    st.paused_reason = Some(format!("aborted by {who}"));
                    windows.remove(route);
                }
            }
            let e = event(
                route,
                action.as_str(),
                from,
                plan.placement(st.position),
                who,
                &format!("{} by {who}", action.as_str()),
                vec![],
            );
            self.persist(inner, &[e]).map_err(ActionError::Store)?;
            self.apply(inner);
        }
        Ok(self.status(Some(route)))
    }

    /// Every rollout (or one route's) as JSON, for the admin API.
    pub fn status(&self, route: Option<&str>) -> Value {
        let leading = self.store.leadership() == Leadership::Leader;
        let replica = self.store.replica();
        // the table is read under the lock `apply` swaps it under: read before, it could be the
        // one a step was just moved past (the new step shown with the old serving stage)
        let inner = self.lock();
        let table = self.config.current();
        let one = |r: &Route| -> Option<Value> {
            let plan = r.rollout.as_ref()?;
            let st = inner.states.get(&r.name);
            let position = st.map_or(0, |s| s.position);
            let next = (position < plan.last_position()).then(|| plan.placement(position + 1).label());
            let remaining = st.and_then(|s| {
                let d = plan.steps.get(position.checked_sub(1)?)?.duration?;
                Some((d.as_millis() as u64).saturating_sub(now_ms().saturating_sub(s.since_unix_ms)))
            });
            Some(json!({
                "route": r.name,
                "position": position,
                "steps": plan.steps.len(),
                "step": plan.placement(position).label(),
                "step_stage": plan.placement(position).stage.as_str(),
                "step_weight": plan.placement(position).weight_bp as f64 / 100.0,
                "serving": Placement { stage: r.stage, weight_bp: r.canary.weight_bp }.label(),
                "plan": r.plan.label(),
                "next": next,
                "step_remaining_ms": remaining,
                "since_unix_ms": st.map(|s| s.since_unix_ms),
                "paused": st.is_some_and(|s| s.paused),
                "paused_reason": st.and_then(|s| s.paused_reason.clone()),
                "failures": st.map_or(0, |s| s.failures),
                "failure_limit": plan.failure_limit,
                "interval_ms": plan.interval.as_millis() as u64,
                "last_check": st.and_then(|s| s.last_check.clone()),
                "replica": replica,
                "leading": leading,
            }))
        };
        match route {
            Some(name) => table.route(name).and_then(one).unwrap_or(Value::Null),
            None => json!({"rollouts": table.routes.iter().filter_map(one).collect::<Vec<_>>()}),
        }
    }

    /// The audit trail (oldest first).
    pub fn history(&self, route: Option<&str>, limit: usize) -> Vec<HistoryEvent> {
        self.store.history(route, limit).unwrap_or_else(|e| {
            tracing::error!("cannot read the rollout history: {e}");
            Vec::new()
        })
    }

    /// Records what a reload changed in each route's effective stage or weight.
    fn record_reload(&self, old: &RouteTable, new: &RouteTable, trigger: &str) {
        for (before, after) in diff(old, new) {
            let e = HistoryEvent {
                at_unix_ms: now_ms(),
                route: after.0.clone(),
                kind: "reload".into(),
                from: before.map_or("(absent)".into(), |p| p.label()),
                to: after.1.label(),
                // with several replicas each records its own reload
                who: if self.store.shared() {
                    format!("reload:{trigger}@{}", self.store.replica())
                } else {
                    format!("reload:{trigger}")
                },
                why: "routes.toml changed".into(),
                gates: vec![],
            };
            if let Err(err) = self.store.append(&e) {
                tracing::error!("cannot record the rollout history: {err}");
            }
        }
    }
}

impl Job {
    fn position_duration(&self, position: usize) -> Option<Duration> {
        self.plan.steps.get(position.checked_sub(1)?)?.duration
    }
}

/// What changed between two tables, per route: (placement before, (name, placement after)).
pub fn diff(old: &RouteTable, new: &RouteTable) -> Vec<(Option<Placement>, (String, Placement))> {
    let place = |r: &Route| Placement { stage: r.stage, weight_bp: r.canary.weight_bp };
    new.routes
        .iter()
        .filter_map(|r| {
            let before = old.route(&r.name).map(place);
            (before != Some(place(r))).then(|| (before, (r.name.clone(), place(r))))
        })
        .collect()
}

fn new_state(plan: &RolloutPlan, position: usize) -> RolloutState {
    RolloutState {
        position,
        since_unix_ms: now_ms(),
        paused: false,
        paused_reason: None,
        failures: 0,
        last_check: None,
        steps: plan.steps_fingerprint(),
        placement: plan.placement(position).into(),
    }
}

fn move_to(st: &mut RolloutState, plan: &RolloutPlan, position: usize) {
    st.position = position;
    st.since_unix_ms = now_ms();
    st.failures = 0;
    st.placement = plan.placement(position).into();
}

/// The plan's steps changed: keep the position where the same placement still exists (same
/// step, time kept), otherwise restart at the furthest step not beyond where the route was.
fn reconcile(route: &str, st: &mut RolloutState, plan: &RolloutPlan) -> Option<HistoryEvent> {
    let at: Placement = st.placement.into();
    st.steps = plan.steps_fingerprint();
    if let Some(p) = (0..=plan.last_position()).find(|p| plan.placement(*p) == at) {
        st.position = p;
        return None;
    }
    let p = (0..=plan.last_position()).filter(|p| plan.placement(*p).rank() <= at.rank()).max().unwrap_or(0);
    move_to(st, plan, p);
    Some(event(
        route,
        "plan_changed",
        at,
        plan.placement(p),
        "controller",
        "the rollout's steps changed: step restarted",
        vec![],
    ))
}

fn event(
    route: &str,
    kind: &str,
    from: Placement,
    to: Placement,
    who: &str,
    why: &str,
    gates: Vec<GateResult>,
) -> HistoryEvent {
    HistoryEvent {
        at_unix_ms: now_ms(),
        route: route.to_string(),
        kind: kind.to_string(),
        from: from.label(),
        to: to.label(),
        who: who.to_string(),
        why: why.to_string(),
        gates,
    }
}

fn summary(gates: &[GateResult]) -> String {
    if gates.is_empty() {
        return "no gates".into();
    }
    gates.iter().map(|g| format!("{}: {}", g.gate, g.detail)).collect::<Vec<_>>().join("; ")
}
