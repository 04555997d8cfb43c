//! gRPC services and protobuf envelopes of sotto, generated at build time.

/// Online PSI (`sotto.psi.v1`).
pub mod psi {
    #![allow(missing_docs, clippy::all, clippy::pedantic, clippy::nursery)]
    tonic::include_proto!("sotto.psi.v1");
}

/// Secure aggregation (`sotto.agg.v1`).
pub mod agg {
    #![allow(missing_docs, clippy::all, clippy::pedantic, clippy::nursery)]
    tonic::include_proto!("sotto.agg.v1");
}

/// TEE registration center (`sotto.tee.v1`).
pub mod tee {
    #![allow(missing_docs, clippy::all, clippy::pedantic, clippy::nursery)]
    tonic::include_proto!("sotto.tee.v1");
}

/// Root key management service (`sotto.kms.v1`).
pub mod kms {
    #![allow(missing_docs, clippy::all, clippy::pedantic, clippy::nursery)]
    tonic::include_proto!("sotto.kms.v1");
}

/// The privacy ledger (`sotto.ledger.v1`).
pub mod ledger {
    #![allow(missing_docs, clippy::all, clippy::pedantic, clippy::nursery)]
    tonic::include_proto!("sotto.ledger.v1");
}

/// Privacy inference on secret shares (`sotto.share.v1`).
pub mod share {
    #![allow(missing_docs, clippy::all, clippy::pedantic, clippy::nursery)]
    tonic::include_proto!("sotto.share.v1");
}
