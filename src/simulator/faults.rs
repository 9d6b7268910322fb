//! Failures the simulated operator can be told to produce, and the queue
//! that hands them out to requests.

use std::collections::VecDeque;
use std::time::Duration;

/// One deliberate misbehaviour, applied to one request (or to every request
/// with [`super::SimulatedOperator::inject_always`]).
///
/// `Status`, `Delay` and `DropConnection` act like a failing network or load
/// balancer: they apply whatever the request holds. The others change a
/// successful answer only; a request that would get an error anyway (401,
/// 400, …) gets that error and the fault is spent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status instead: plain-text body with the reason
    /// phrase, except 429 which has no body. With `retry_after`, a
    /// `Retry-After` header in whole seconds (rounded up).
    Status {
        code: u16,
        retry_after: Option<Duration>,
    },
    /// Wait this long before handling the request, then answer normally.
    Delay(Duration),
    /// Read the whole request, then close the connection without answering.
    DropConnection,
    /// Send the full `Content-Length` header but only about half the body,
    /// then close the connection.
    TruncatedBody,
    /// A 200 whose envelope has one byte of the GCM tag flipped.
    CorruptTag,
    /// A 200, correctly encrypted, echoing a nonce other than the request's.
    WrongNonce,
    /// A 200, correctly encrypted, whose payload is not JSON.
    BadJson,
    /// A 200, correctly encrypted, whose payload is
    /// `{"status":"client_error","message":…}`.
    ClientErrorStatus,
    /// A 200, correctly encrypted, with one row's `last_updated` set to
    /// `"not-a-date"`. An answer with no rows gets one such row added.
    /// Buckets endpoint only: a map answer is left as it is.
    UnparsableLastUpdated,
    /// Identity map only: a 200, correctly encrypted, missing one answer.
    /// v3: the first non-empty array loses its last element; v2: the last
    /// `mapped` entry (else the last `unmapped` one) is left out. An answer
    /// for no identities is left as it is.
    ShortArray,
    /// Identity map only: a 200, correctly encrypted, where the first mapped
    /// identity's raw UID2 (`u` in v3, `advertising_id` in v2) is the base64
    /// of 31 bytes instead of 32. An answer with nothing mapped is left as it is.
    MalformedUid,
}

impl Fault {
    /// Whether the fault only reshapes a successful (200) answer.
    pub(crate) fn shapes_success(&self) -> bool {
        matches!(
            self,
            Fault::TruncatedBody
                | Fault::CorruptTag
                | Fault::WrongNonce
                | Fault::BadJson
                | Fault::ClientErrorStatus
                | Fault::UnparsableLastUpdated
                | Fault::ShortArray
                | Fault::MalformedUid
        )
    }
}

/// Queued one-shot faults, consumed in order, and an optional standing one.
/// A queued fault takes precedence over the standing one.
#[derive(Debug, Default)]
pub(crate) struct FaultQueue {
    queued: VecDeque<Fault>,
    always: Option<Fault>,
}

impl FaultQueue {
    pub(crate) fn push(&mut self, fault: Fault) {
        self.queued.push_back(fault);
    }

    pub(crate) fn set_always(&mut self, fault: Fault) {
        self.always = Some(fault);
    }

    pub(crate) fn clear(&mut self) {
        self.queued.clear();
        self.always = None;
    }

    pub(crate) fn pending(&self) -> usize {
        self.queued.len()
    }

    /// The fault the next request must suffer, if any.
    pub(crate) fn next(&mut self) -> Option<Fault> {
        self.queued.pop_front().or_else(|| self.always.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_faults_come_out_in_order_then_the_standing_one_repeats() {
        let mut queue = FaultQueue::default();
        assert_eq!(queue.next(), None);
        queue.set_always(Fault::BadJson);
        queue.push(Fault::CorruptTag);
        queue.push(Fault::DropConnection);
        assert_eq!(queue.pending(), 2);
        assert_eq!(queue.next(), Some(Fault::CorruptTag));
        assert_eq!(queue.next(), Some(Fault::DropConnection));
        assert_eq!(queue.next(), Some(Fault::BadJson));
        assert_eq!(queue.next(), Some(Fault::BadJson));
        queue.clear();
        assert_eq!(queue.next(), None);
    }
}
