//! The gRPC methods the gateway serves, as metric labels: read once per process from the
//! descriptor sets it registers with reflection (its own, grpc.health.v1, reflection v1 and
//! v1alpha), so every label value is a `&'static str` and a new RPC needs no edit here. A path
//! that names no known method is counted under one `unknown` entry, so a caller cannot grow the
//! metrics with made-up paths.

use prost::Message as _;
use std::collections::HashMap;
use std::sync::OnceLock;

/// One method: its index in [`table`], its path and its labels.
#[derive(Debug)]
pub struct MethodInfo {
    /// Position in [`Table::methods`].
    pub index: usize,
    /// `package.Service/Method` (the path without its leading slash), as logs name it.
    pub name: &'static str,
    /// `grpc_service`: `package.Service`.
    pub service: &'static str,
    /// `grpc_method`.
    pub method: &'static str,
    /// `grpc_type`: `unary`, `client_stream`, `server_stream` or `bidi_stream`.
    pub kind: &'static str,
}

/// Every known method, and the `unknown` entry last.
#[derive(Debug)]
pub struct Table {
    /// By index.
    pub methods: Vec<MethodInfo>,
    by_path: HashMap<&'static str, usize>,
}

impl Table {
    /// The method of an HTTP/2 path (`/package.Service/Method`), or the `unknown` entry.
    pub fn lookup(&self, path: &str) -> &MethodInfo {
        let index = self
            .by_path
            .get(path)
            .copied()
            .unwrap_or(self.methods.len() - 1);
        &self.methods[index]
    }
}

/// The process's method table, built on first use.
pub fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(build)
}

fn leak(text: String) -> &'static str {
    // Once per method per process (the table is a process-wide OnceLock).
    Box::leak(text.into_boxed_str())
}

fn build() -> Table {
    let sets: [&[u8]; 4] = [
        crate::proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut methods = Vec::new();
    let mut by_path = HashMap::new();
    for set in sets {
        // These are compiled into the binary; one that does not decode contributes nothing
        // (its calls are counted as `unknown`), which the unit test below would catch.
        let Ok(set) = prost_types::FileDescriptorSet::decode(set) else {
            continue;
        };
        for file in &set.file {
            let package = file.package();
            for service in &file.service {
                let service_name = match package {
                    "" => service.name().to_owned(),
                    package => format!("{package}.{}", service.name()),
                };
                let service_name = leak(service_name);
                for method in &service.method {
                    let kind = match (method.client_streaming(), method.server_streaming()) {
                        (false, false) => "unary",
                        (true, false) => "client_stream",
                        (false, true) => "server_stream",
                        (true, true) => "bidi_stream",
                    };
                    let name = leak(format!("{service_name}/{}", method.name()));
                    let path = leak(format!("/{name}"));
                    if by_path.contains_key(path) {
                        continue;
                    }
                    by_path.insert(path, methods.len());
                    methods.push(MethodInfo {
                        index: methods.len(),
                        name,
                        service: service_name,
                        method: leak(method.name().to_owned()),
                        kind,
                    });
                }
            }
        }
    }
    methods.push(MethodInfo {
        index: methods.len(),
        name: "unknown",
        service: "unknown",
        method: "unknown",
        kind: "unknown",
    });
    Table { methods, by_path }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_method_is_known_with_its_type() {
        let table = table();
        let create = table.lookup("/polygon.oms.v1.CashInService/CreateCashIn");
        assert_eq!(
            (create.service, create.method, create.kind),
            ("polygon.oms.v1.CashInService", "CreateCashIn", "unary")
        );
        let watch = table.lookup("/polygon.oms.v1.CashInService/WatchCashIn");
        assert_eq!(watch.kind, "server_stream");
        assert_eq!(table.lookup("/grpc.health.v1.Health/Check").kind, "unary");
        assert_eq!(
            table
                .lookup("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
                .kind,
            "bidi_stream"
        );
        assert_eq!(table.lookup("/no.Such/Method").method, "unknown");
    }
}
