//! Matching: the index's candidates filtered by their conditions, and the
//! same walk told as a story for `fanin explain`. Pure: no store, no clock.

use std::collections::HashMap;

use serde::Serialize;

pub mod index;

use crate::event::Event;
use crate::sop::Sop;
use index::{Index, TriggerRef};

/// A loaded SOP set with its index. Replaced whole on reload, never mutated.
#[derive(Debug)]
pub struct Catalog {
    pub sops: Vec<Sop>,
    pub index: Index,
    by_name: HashMap<String, usize>,
}

impl Catalog {
    pub fn new(sops: Vec<Sop>) -> Catalog {
        let index = Index::build(&sops);
        let by_name = sops.iter().enumerate().map(|(i, s)| (s.name.clone(), i)).collect();
        Catalog { sops, index, by_name }
    }

    pub fn get(&self, name: &str) -> Option<&Sop> {
        self.by_name.get(name).map(|&i| &self.sops[i])
    }

    pub fn sop(&self, r: TriggerRef) -> &Sop {
        &self.sops[r.sop as usize]
    }

    /// Appends the trigger that fires for each matching SOP: per SOP, the
    /// first of its candidate triggers whose condition holds. One event
    /// starts at most one run per SOP.
    pub fn matching(&self, event: &Event, out: &mut Vec<TriggerRef>) {
        let start = out.len();
        self.index.candidates(&self.sops, event, out);
        let mut kept = start;
        for i in start..out.len() {
            let r = out[i];
            let trigger = &self.sops[r.sop as usize].triggers[r.trigger as usize];
            let holds = trigger.condition.as_ref().is_none_or(|c| c.matches(&event.payload));
            let first_of_sop = kept == start || out[kept - 1].sop != r.sop;
            if holds && first_of_sop {
                out[kept] = r;
                kept += 1;
            }
        }
        out.truncate(kept);
    }

    /// Which triggers match `event`, and why the other candidates of the same
    /// source did not.
    pub fn explain(&self, event: &Event) -> Explanation {
        let mut candidates = Vec::new();
        self.index.candidates(&self.sops, event, &mut candidates);
        let mut explanation = Explanation::default();
        for r in candidates {
            let sop = self.sop(r);
            let trigger = &sop.triggers[r.trigger as usize];
            let verdict = match &trigger.condition {
                None => Ok(()),
                Some(c) => {
                    c.check(&event.payload).map_err(|miss| format!("condition `{}` is false: {miss}", c.source()))
                }
            };
            let (sop, trigger_index, trigger) = (sop.name.clone(), r.trigger, trigger.describe());
            match verdict {
                Ok(()) => explanation.matches.push(ExplainedMatch { sop, trigger_index, trigger }),
                Err(reason) => explanation.near_misses.push(NearMiss { sop, trigger_index, trigger, reason }),
            }
        }
        explanation
    }
}

#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Explanation {
    pub matches: Vec<ExplainedMatch>,
    pub near_misses: Vec<NearMiss>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct ExplainedMatch {
    pub sop: String,
    pub trigger: String,
    pub trigger_index: u32,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct NearMiss {
    pub sop: String,
    pub trigger: String,
    pub trigger_index: u32,
    pub reason: String,
}
