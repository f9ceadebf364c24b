//! The RPCs the gateway serves, as metric labels. A request's path names one of them or counts
//! as `unknown`: no client can add a series or choose the text of a label, whatever path it
//! sends. Depends on nothing; a test holds the table to the services' descriptors.

/// The `rpc` label of a request: the method name of a known RPC, or `unknown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rpc(&'static str);

/// Every service the server routes to, with its methods.
const SERVICES: &[(&str, &[&str])] = &[
    (
        "rxgate.v1.PrescriptionService",
        &[
            "RegisterPrescription",
            "CancelPrescription",
            "GetPrescriptionStatus",
            "SearchPrescriptions",
            "CheckPrescription",
        ],
    ),
    (
        "rxgate.v1.DispensingService",
        &[
            "LookupPrescription",
            "ReceivePrescription",
            "ReturnPrescription",
            "RecordDispensing",
            "CheckDispensing",
        ],
    ),
    ("rxgate.v1.EventService", &["WatchEvents"]),
    ("rxgate.v1.ManagementIntake", &["DeliverDispensingRecord"]),
    (
        "rxgate.v1.AdminService",
        &[
            "ExportAudit",
            "ExportAuditCheckpoints",
            "ImportMaster",
            "ListStuckPrescriptions",
            "ListLockouts",
            "Unlock",
            "ConfirmClock",
            "Backup",
        ],
    ),
    ("grpc.health.v1.Health", &["Check", "Watch"]),
    (
        "grpc.reflection.v1.ServerReflection",
        &["ServerReflectionInfo"],
    ),
    (
        "grpc.reflection.v1alpha.ServerReflection",
        &["ServerReflectionInfo"],
    ),
];

impl Rpc {
    /// Every path that is not one of the known RPCs.
    pub const UNKNOWN: Rpc = Rpc("unknown");

    /// The RPC a request path (`/package.Service/Method`) names.
    pub fn of_path(path: &str) -> Rpc {
        let Some((service, method)) = path.strip_prefix('/').and_then(|p| p.split_once('/')) else {
            return Rpc::UNKNOWN;
        };
        SERVICES
            .iter()
            .find(|(name, _)| *name == service)
            .and_then(|(_, methods)| methods.iter().find(|m| **m == method))
            .map_or(Rpc::UNKNOWN, |m| Rpc(m))
    }

    /// The label's text.
    pub fn as_str(self) -> &'static str {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use prost_reflect::DescriptorPool;

    use super::*;

    #[test]
    fn known_paths_are_their_method_and_everything_else_is_unknown() {
        let cases = [
            (
                "/rxgate.v1.PrescriptionService/RegisterPrescription",
                "RegisterPrescription",
            ),
            ("/grpc.health.v1.Health/Watch", "Watch"),
            ("/rxgate.v1.PrescriptionService/RecordDispensing", "unknown"),
            ("/rxgate.v1.PrescriptionService/", "unknown"),
            ("/x/a\"b", "unknown"),
            ("/1310000001", "unknown"),
            ("", "unknown"),
            ("rxgate.v1.EventService/WatchEvents", "unknown"),
            ("/rxgate.v1.EventService/WatchEvents/", "unknown"),
        ];
        for (path, label) in cases {
            assert_eq!(Rpc::of_path(path).as_str(), label, "{path:?}");
        }
    }

    /// `/service/method` of every method of every service in the encoded descriptor sets.
    fn described(sets: &[&[u8]]) -> BTreeSet<String> {
        let mut paths = BTreeSet::new();
        for set in sets {
            let pool = DescriptorPool::decode(*set).unwrap();
            for service in pool.services() {
                for method in service.methods() {
                    paths.insert(format!("/{}/{}", service.full_name(), method.name()));
                }
            }
        }
        paths
    }

    #[test]
    fn the_table_is_every_method_the_server_routes_to() {
        let served = described(&[
            crate::wire::proto::DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ]);
        let table: BTreeSet<String> = SERVICES
            .iter()
            .flat_map(|(service, methods)| methods.iter().map(move |m| format!("/{service}/{m}")))
            .collect();
        assert_eq!(table, served);
    }
}
