//! The network's statistics over time, as the whitepaper means them: availability ("Network Uptime 99.99%") is the
//! share of observed time during which at least one attested node was active to take work, and utilization
//! ("Average Resource Utilization 78%") the share of active slot-time that was busy — averages, not the count of
//! seconds since genesis or the load of this instant. The core samples its nodes on every tick; the time up to the
//! next sample counts with what it saw.

/// What one tick saw.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Sample {
    pub active_nodes: u64,
    pub slots: u64,
    pub busy: u64,
}

/// Running sums of observed time.
#[derive(Clone, Debug, Default)]
pub(crate) struct Usage {
    /// The previous sample and when it was taken: the time since counts with it.
    last: Option<(u64, Sample)>,
    observed_ms: u64,
    available_ms: u64,
    slot_ms: u128,
    busy_slot_ms: u128,
}

impl Usage {
    pub(crate) fn sample(&mut self, now_ms: u64, seen: Sample) {
        if let Some((at, prev)) = self.last {
            let dt = now_ms.saturating_sub(at);
            self.observed_ms = self.observed_ms.saturating_add(dt);
            if prev.active_nodes > 0 {
                self.available_ms = self.available_ms.saturating_add(dt);
            }
            self.slot_ms += u128::from(dt) * u128::from(prev.slots);
            self.busy_slot_ms += u128::from(dt) * u128::from(prev.busy.min(prev.slots));
        }
        self.last = Some((now_ms, seen));
    }

    /// Share of observed time with an active node, in [0, 1] (0 before anything was observed).
    pub(crate) fn availability(&self) -> f64 {
        if self.observed_ms == 0 { 0.0 } else { self.available_ms as f64 / self.observed_ms as f64 }
    }

    /// Share of active slot-time that was busy, in [0, 1].
    pub(crate) fn utilization(&self) -> f64 {
        if self.slot_ms == 0 { 0.0 } else { self.busy_slot_ms as f64 / self.slot_ms as f64 }
    }
}

#[cfg(test)]
mod tests {
    use super::{Sample, Usage};

    #[test]
    fn averages_weigh_each_sample_by_the_time_it_stood() {
        let mut u = Usage::default();
        let s = |active_nodes, slots, busy| Sample { active_nodes, slots, busy };
        u.sample(0, s(1, 4, 4)); // fully busy for 1 s
        u.sample(1_000, s(0, 0, 0)); // nobody for 3 s
        u.sample(4_000, s(2, 8, 2)); // a quarter busy for 4 s
        u.sample(8_000, s(2, 8, 2));
        assert!((u.availability() - 5.0 / 8.0).abs() < 1e-12, "{}", u.availability());
        // Busy slot-time 4·1 + 2·4 = 12 of 4·1 + 8·4 = 36.
        assert!((u.utilization() - 12.0 / 36.0).abs() < 1e-12, "{}", u.utilization());
    }
}
