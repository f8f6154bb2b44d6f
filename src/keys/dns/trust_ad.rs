//! `dns.mode = "trust-ad"`: the Postfix way. A local validating resolver
//! is asked with DO=1 and AD=1 and its AD bit is believed; the path to it
//! must be trusted (loopback). The resolvers are asked in order until one
//! answers; the bytes travel through [`super::wire`].

use std::net::SocketAddr;

use hickory_resolver::proto::op::{Edns, Message, Query, ResponseCode};
use hickory_resolver::proto::rr::{Name, Record, RecordType};

use super::records::soa_negative_ttl;
use super::wire::{UDP_PAYLOAD, exchange, rand_id};
use super::{Answer, Validation};
use crate::keys::FailReason;

/// Asks `servers` in order; the first answer that is not a failure wins.
pub(super) async fn query(servers: &[SocketAddr], name: &Name, rtype: RecordType) -> Answer {
    let mut last = Answer::Failed(FailReason::Network("no resolver answered".into()));
    for server in servers {
        match query_one(*server, name, rtype).await {
            // Another resolver may answer where this one failed.
            Answer::Failed(reason) => last = Answer::Failed(reason),
            other => return other,
        }
    }
    last
}

/// One query with DO=1 and AD=1 to one validating resolver.
async fn query_one(server: SocketAddr, name: &Name, rtype: RecordType) -> Answer {
    let id: u16 = rand_id();
    let mut msg = Message::query();
    msg.metadata.id = id;
    msg.metadata.recursion_desired = true;
    // RFC 6840 §5.7: AD=1 in a query asks for the AD bit in the answer.
    msg.metadata.authentic_data = true;
    msg.add_query(Query::query(name.clone(), rtype));
    let mut edns = Edns::new();
    edns.set_dnssec_ok(true);
    edns.set_max_payload(UDP_PAYLOAD);
    msg.set_edns(edns);
    let bytes = match msg.to_vec() {
        Ok(b) => b,
        Err(e) => return Answer::Failed(FailReason::Network(format!("encoding query: {e}"))),
    };
    match exchange(server, &bytes, id).await {
        Ok(r) => read_ad_response(&r, name, rtype),
        Err(reason) => Answer::Failed(reason),
    }
}

/// What a `trust-ad` resolver response says about `name`'s `rtype`.
pub(super) fn read_ad_response(r: &Message, name: &Name, rtype: RecordType) -> Answer {
    let validation = if r.metadata.authentic_data {
        Validation::Secure
    } else {
        Validation::Insecure
    };
    match r.metadata.response_code {
        ResponseCode::NoError => {
            let records: Vec<Record> = r
                .answers
                .iter()
                .filter(|a| a.record_type() == rtype)
                .cloned()
                .collect();
            if records.is_empty() {
                Answer::Empty {
                    validation,
                    negative_ttl: soa_negative_ttl(&r.authorities),
                }
            } else {
                Answer::Records {
                    records,
                    validation,
                }
            }
        }
        ResponseCode::NXDomain => Answer::Empty {
            validation,
            negative_ttl: soa_negative_ttl(&r.authorities),
        },
        // A validating resolver answers SERVFAIL for bogus data too; the
        // two cannot be told apart here, and neither is "no key".
        ResponseCode::ServFail => Answer::Failed(FailReason::ServFail),
        other => Answer::Failed(FailReason::Network(format!(
            "resolver answered {other} for {name}"
        ))),
    }
}
