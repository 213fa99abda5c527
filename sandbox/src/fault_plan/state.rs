//! The plan in force, its seeded generator and its counts, and the decision for each request:
//! a fixed number of draws per request, then what they make fire.

use std::time::Duration;

use http::StatusCode;

use super::{DRAWS_PER_REQUEST, FaultPlan, FaultStats, prob};

/// What the plan does to one request.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Decision {
    pub(crate) answer: Option<PlannedAnswer>,
    pub(crate) latency: Option<Duration>,
    pub(crate) revoke: bool,
}

/// The answer fault that replaces (or, for `ResetAfter`, follows) normal handling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PlannedAnswer {
    /// 500, 502, 503 or 504, with no effect.
    Status(StatusCode),
    /// 429 with this `Retry-After`, with no effect.
    TooManyRequests(Duration),
    ResetBefore,
    ResetAfter,
}

/// The active plan, its generator and its counts.
pub(crate) struct PlanState {
    plan: FaultPlan,
    rng: fastrand::Rng,
    stats: FaultStats,
}

// === impl Decision ===

impl Decision {
    /// How the journal names this decision: the answer fault, then `latency=…`, then `revoke`,
    /// joined with `+` (e.g. `503+latency=120ms`).
    pub(crate) fn label(&self) -> String {
        let mut parts = Vec::new();
        match self.answer {
            Some(PlannedAnswer::Status(s)) => parts.push(s.as_u16().to_string()),
            Some(PlannedAnswer::TooManyRequests(_)) => parts.push("429".to_owned()),
            Some(PlannedAnswer::ResetBefore) => parts.push("reset_before".to_owned()),
            Some(PlannedAnswer::ResetAfter) => parts.push("reset_after".to_owned()),
            None => {}
        }
        if let Some(d) = self.latency {
            parts.push(format!("latency={d:?}"));
        }
        if self.revoke {
            parts.push("revoke".to_owned());
        }
        parts.join("+")
    }

    fn is_empty(&self) -> bool {
        self.answer.is_none() && self.latency.is_none() && !self.revoke
    }
}

// === impl PlanState ===

impl PlanState {
    pub(crate) fn new(plan: FaultPlan) -> PlanState {
        PlanState {
            rng: fastrand::Rng::with_seed(plan.seed),
            plan,
            stats: FaultStats::default(),
        }
    }

    /// Replaces the plan, reseeding the generator and zeroing the counts.
    pub(crate) fn set(&mut self, plan: FaultPlan) {
        *self = PlanState::new(plan);
    }

    pub(crate) fn plan(&self) -> &FaultPlan {
        &self.plan
    }

    pub(crate) fn stats(&self) -> FaultStats {
        self.stats
    }

    /// Draws the faults for one request to `path`. Every request the plan applies to costs
    /// exactly [`DRAWS_PER_REQUEST`] draws, whatever fires, so one request's outcome never
    /// shifts the next one's. `claimed` (a scripted fault already owns the request) still draws,
    /// but nothing fires.
    pub(crate) fn decide(&mut self, path: &str, claimed: bool) -> Option<Decision> {
        if !self.plan.applies_to(path) {
            return None;
        }
        self.stats.requests_seen += 1;
        let plan = &self.plan;
        // All draws up front, so their number cannot depend on what fires.
        let u: [f64; DRAWS_PER_REQUEST] = std::array::from_fn(|_| self.rng.f64());
        let answer = answer_odds(plan)
            .into_iter()
            .zip(u)
            .find(|((_, p), u)| *u < prob(*p))
            .map(|((answer, _), _)| answer);
        let delayed = u[7] < prob(plan.latency);
        let within = u[8];
        let revoke = u[9] < prob(plan.revoke_tokens);

        if claimed {
            return None;
        }
        let decision = Decision {
            answer,
            latency: delayed.then(|| latency_at(plan, within)),
            revoke,
        };
        self.stats.count(&decision);
        (!decision.is_empty()).then_some(decision)
    }
}

/// The answer faults with their probabilities, in the order they are drawn (the order of the
/// plan's fields): the first whose draw hits wins.
fn answer_odds(plan: &FaultPlan) -> [(PlannedAnswer, f64); 7] {
    [
        (
            PlannedAnswer::Status(StatusCode::INTERNAL_SERVER_ERROR),
            plan.status_500,
        ),
        (
            PlannedAnswer::Status(StatusCode::BAD_GATEWAY),
            plan.status_502,
        ),
        (
            PlannedAnswer::Status(StatusCode::SERVICE_UNAVAILABLE),
            plan.status_503,
        ),
        (
            PlannedAnswer::Status(StatusCode::GATEWAY_TIMEOUT),
            plan.status_504,
        ),
        (
            PlannedAnswer::TooManyRequests(plan.retry_after),
            plan.status_429,
        ),
        (PlannedAnswer::ResetBefore, plan.reset_before),
        (PlannedAnswer::ResetAfter, plan.reset_after),
    ]
}

/// The delay at `within` (a draw in `[0, 1)`) of the way through the plan's latency range. A
/// plan built as a struct can have the bounds upside down; they are read the right way up.
fn latency_at(plan: &FaultPlan, within: f64) -> Duration {
    let (lo, hi) = if plan.latency_min <= plan.latency_max {
        (plan.latency_min, plan.latency_max)
    } else {
        (plan.latency_max, plan.latency_min)
    };
    let extra = Duration::try_from_secs_f64((hi - lo).as_secs_f64() * within)
        .unwrap_or(hi - lo)
        .min(hi - lo);
    lo + extra
}

#[cfg(test)]
mod tests {
    use super::super::spec::tests::{EXAMPLE, parse};
    use super::*;

    fn run(plan: &FaultPlan, n: usize) -> Vec<Option<Decision>> {
        let mut state = PlanState::new(plan.clone());
        (0..n).map(|_| state.decide("/cash-ins", false)).collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_faults() {
        let plan = parse(EXAMPLE);
        let a = run(&plan, 500);
        assert_eq!(a, run(&plan, 500));
        assert!(
            a.iter().flatten().count() > 100,
            "the example plan fires often"
        );
        let other = run(
            &FaultPlan {
                seed: 43,
                ..plan.clone()
            },
            500,
        );
        assert_ne!(a, other);

        // Setting a plan restarts its sequence; requests it does not apply to draw nothing.
        let mut state = PlanState::new(plan.clone());
        let mut b = Vec::new();
        for i in 0..500 {
            assert_eq!(state.decide("/auth/token", false), None);
            b.push(state.decide("/cash-ins", false));
            if i == 250 {
                assert_eq!(b, a[..=250]);
                state.set(plan.clone());
                b.clear();
            }
        }
        assert_eq!(b, a[..249]);
        assert_eq!(state.stats().requests_seen, 249);

        // A request a scripted fault claimed still advances the sequence.
        let mut state = PlanState::new(plan);
        assert_eq!(state.decide("/cash-ins", true), None);
        let rest: Vec<_> = (1..500).map(|_| state.decide("/cash-ins", false)).collect();
        assert_eq!(rest, a[1..]);
    }

    #[test]
    fn every_request_costs_the_same_draws() {
        for spec in [
            "none",
            "503=1",
            "seed=5,latency=1:1ms-9ms,revoke=1",
            EXAMPLE,
        ] {
            let plan = parse(spec);
            let mut state = PlanState::new(plan.clone());
            let mut reference = fastrand::Rng::with_seed(plan.seed);
            for _ in 0..50 {
                state.decide("/cash-ins", false);
                state.decide("/cash-ins", true);
                for _ in 0..2 * DRAWS_PER_REQUEST {
                    reference.f64();
                }
                assert_eq!(state.rng.get_seed(), reference.get_seed(), "{spec}");
            }
        }
    }

    #[test]
    fn rates_hold_and_only_one_answer_fires() {
        let plan = parse(
            "seed=9,500=0.05,502=0.05,503=0.1,504=0.02,429=0.05,reset_before=0.03,\
             reset_after=0.05,latency=0.1:50ms-300ms,revoke=0.01",
        );
        let n = 50_000;
        let mut state = PlanState::new(plan.clone());
        for _ in 0..n {
            if let Some(d) = state.decide("/cash-ins/ci_1", false)
                && let Some(latency) = d.latency
            {
                assert!((plan.latency_min..=plan.latency_max).contains(&latency));
            }
        }
        let stats = state.stats();
        assert_eq!(stats.requests_seen, n);
        // Answer faults are first-hit-wins, so each later one only gets the share that is left.
        let mut left = 1.0;
        let mut expected = Vec::new();
        for p in [0.05, 0.05, 0.1, 0.02, 0.05, 0.03, 0.05] {
            expected.push(left * p);
            left *= 1.0 - p;
        }
        expected.extend([0.1, 0.01]);
        let observed = [
            stats.status_500,
            stats.status_502,
            stats.status_503,
            stats.status_504,
            stats.status_429,
            stats.reset_before,
            stats.reset_after,
            stats.delayed,
            stats.revocations,
        ];
        for (observed, p) in observed.into_iter().zip(expected) {
            let mean = p * n as f64;
            let sd = (mean * (1.0 - p)).sqrt();
            assert!(
                (observed as f64 - mean).abs() < 5.0 * sd,
                "observed {observed}, expected about {mean:.0}: {stats:?}"
            );
        }
    }

    #[test]
    fn certain_and_impossible_faults() {
        let mut state = PlanState::new(parse("503=1,504=1,latency=1:7ms,paths=/"));
        for _ in 0..100 {
            let d = state.decide("/anything", false).expect("fires");
            assert_eq!(
                d.answer,
                Some(PlannedAnswer::Status(StatusCode::SERVICE_UNAVAILABLE))
            );
            assert_eq!(d.latency, Some(Duration::from_millis(7)));
            assert_eq!(d.label(), "503+latency=7ms");
        }
        let mut state = PlanState::new(FaultPlan {
            status_500: f64::NAN,
            status_502: -3.0,
            ..FaultPlan::default()
        });
        assert!((0..100).all(|_| state.decide("/cash-ins", false).is_none()));
        let mut state = PlanState::new(FaultPlan {
            revoke_tokens: 7.0,
            paths: Vec::new(),
            ..FaultPlan::default()
        });
        assert_eq!(state.decide("/cash-ins", false), None);
        assert_eq!(state.stats(), FaultStats::default());
    }
}
