//! Every generated request passes the gateway's own validation (`biglearn_gateway::requests::parse_request`).

use std::collections::{BTreeMap, VecDeque};

use biglearn_gateway::requests::{parse_request, Endpoint};
use biglearn_simulator::{Next, TutorRequest, Workload, WorkloadConfig, DAY, WEEK};

/// 2017-08-21, a Monday.
const START: i64 = 1_503_273_600_000_000;

#[test]
fn every_generated_request_passes_gateway_validation() {
    let mut config = WorkloadConfig::new(3, 8, 4, 17, START);
    config.cutoff_micros = Some(START + 2 * WEEK + 4 * DAY);
    let mut workload = Workload::new(config);
    let mut outstanding: VecDeque<TutorRequest> = VecDeque::new();
    let mut per_endpoint: BTreeMap<&str, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for _ in 0..1_000_000 {
        match workload.next_request() {
            Next::Request(request) => {
                *per_endpoint.entry(request.endpoint).or_default() += 1;
                match Endpoint::from_path(request.endpoint) {
                    Some(endpoint) => {
                        if let Err(errors) = parse_request(endpoint, &request.body) {
                            failures.push(format!("{}: {errors:?}", request.endpoint));
                        }
                    }
                    None => {
                        failures.push(format!("{} is not a gateway endpoint", request.endpoint))
                    }
                }
                if !request.is_write() {
                    outstanding.push_back(request);
                }
            }
            Next::AwaitingResponses => {
                let Some(read) = outstanding.pop_front() else {
                    break;
                };
                workload.on_response(&read, 200, &read.unready_answer());
            }
            Next::Finished => break,
        }
    }
    assert!(
        failures.is_empty(),
        "{} invalid, first: {:?}",
        failures.len(),
        failures.first()
    );
    assert_eq!(per_endpoint.len(), 15, "{per_endpoint:?}");
}
