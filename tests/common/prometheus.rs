//! The gateway's `/metrics` as a test reads it: one scrape, and one reader of Prometheus text
//! samples by name and labels.

use super::TestGateway;
use std::time::Duration;

/// The Prometheus text the admin listener's `/metrics` serves.
pub async fn scrape(gateway: &TestGateway) -> String {
    let addr = gateway.gateway.admin_addr().expect("an admin listener");
    let response = reqwest::Client::new()
        .get(format!("http://{addr}/metrics"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("the admin listener answers");
    assert_eq!(response.status().as_u16(), 200);
    response.text().await.expect("a body")
}

/// The value of the sample `name` whose labels include every pair of `labels` (summed when
/// several match); 0 when none does, as a counter that never moved reads.
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, number) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let matches = metric == name
                && labels
                    .iter()
                    .all(|(key, want)| label_text.contains(&format!("{key}=\"{want}\"")));
            matches.then(|| number.parse::<f64>().expect("a sample value"))
        })
        .sum()
}
