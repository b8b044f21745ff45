// swift-tools-version:6.0
import PackageDescription

/// Settings every Swift target shares; system-library targets take none.
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "Turnstile",
    products: [
        .library(name: "Turnstile", targets: ["Turnstile"]),
        .library(name: "TurnstileCore", targets: ["TurnstileCore"]),
        .library(name: "TurnstileIngest", targets: ["TurnstileIngest"]),
        .library(name: "TurnstilePipeline", targets: ["TurnstilePipeline"]),
        .library(name: "TurnstileSQLite", targets: ["TurnstileSQLite"]),
        .library(name: "TurnstilePostgres", targets: ["TurnstilePostgres"]),
        .library(name: "TurnstileHandlers", targets: ["TurnstileHandlers"]),
        .library(name: "TurnstileHTTP", targets: ["TurnstileHTTP"]),
        .library(name: "TurnstileServer", targets: ["TurnstileServer"]),
        .library(name: "TurnstileCLI", targets: ["TurnstileCLI"]),
        .library(name: "TurnstileTesting", targets: ["TurnstileTesting"]),
        .executable(name: "turnstile", targets: ["turnstile"]),
    ],
    targets: [
        // C libraries, each wrapped by exactly one Swift module.
        .systemLibrary(name: "CCrypto", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        .systemLibrary(name: "CLibPQ", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),

        // A lock ThreadSanitizer understands (`Locked<Value>` over pthread_mutex), for every module.
        .target(name: "TurnstileSync"),
        // The only importer of CCrypto: HMAC, Ed25519, SHA-256, constant-time compare, strict decoding.
        .target(name: "TurnstileCrypto", dependencies: ["CCrypto", "TurnstileSync"]),
        // Pure Swift values: JSON, time, config, deliveries, outcomes, schema checks.
        .target(name: "TurnstileCore", dependencies: ["TurnstileSync"]),
        // Signature schemes and the verifier (stage 1 of the pipeline).
        .target(name: "TurnstileIngest", dependencies: ["TurnstileCore", "TurnstileCrypto"]),
        // The embedded store: the only importer of CSQLite.
        .target(name: "TurnstileSQLite", dependencies: ["TurnstileCore", "TurnstileSync", "CSQLite"]),
        // The shared store: the only importer of CLibPQ.
        .target(name: "TurnstilePostgres", dependencies: ["TurnstileCore", "TurnstileSync", "CLibPQ"]),
        // Dedup and dispatch: the pipeline, typed events, handlers and workers. Knows no SQL and no C.
        .target(name: "TurnstilePipeline", dependencies: ["TurnstileCore", "TurnstileIngest", "TurnstileCrypto", "TurnstileSync"]),
        // epoll, eventfd and socket set-up, which Swift's Glibc module does not expose.
        .target(name: "CTurnstileLinux", cSettings: [.define("_GNU_SOURCE")]),
        // Our HTTP/1.1 server: knows nothing of webhooks.
        .target(name: "TurnstileHTTP", dependencies: ["CTurnstileLinux", "TurnstileSync"]),
        // The built-in handlers that reach outside the process: `http` (Standard Webhooks-signed POSTs) and
        // `exec` (a command per event), and the registry a config describes.
        .target(name: "TurnstileHandlers", dependencies: ["TurnstileCore", "TurnstilePipeline", "TurnstileIngest", "TurnstileHTTP", "TurnstileSync",
                                                          "CTurnstileLinux"]),
        // The library front: a config file wired into a receiver (`receive` from any web framework).
        .target(name: "Turnstile", dependencies: ["TurnstileCore", "TurnstileIngest", "TurnstilePipeline", "TurnstileSQLite", "TurnstilePostgres",
                                                  "TurnstileHandlers"]),
        // `serve` as a library: the HTTP routes over a receiver, run with its services in one service group.
        .target(name: "TurnstileServer", dependencies: ["Turnstile", "TurnstileHTTP", "TurnstileSync"]),
        // Command types and `TurnstileMain`; the `turnstile` executable, and a team's own plugin binary, only call into this.
        .target(name: "TurnstileCLI", dependencies: ["Turnstile", "TurnstileServer", "TurnstileCrypto", "TurnstileSQLite", "TurnstileHTTP", "TurnstileSync"]),
        .executableTarget(name: "turnstile", dependencies: ["TurnstileCLI"]),
        // For a team's tests of its handlers: a manual clock, fixtures as typed events, a registry run without a server.
        .target(name: "TurnstileTesting", dependencies: ["Turnstile", "TurnstileSQLite", "TurnstileSync"]),
        // Fuzz targets (arbitrary bytes in, invariants checked) and the binary libFuzzer drives
        // (`Tests/Fuzz/run.sh` builds it with -sanitize=fuzzer,address -DFUZZING); not part of any product.
        .target(name: "TurnstileFuzz", dependencies: ["TurnstileCore", "TurnstileIngest", "TurnstileHTTP"]),
        .executableTarget(name: "turnstile-fuzz", dependencies: ["TurnstileFuzz"]),

        .testTarget(name: "TurnstileCryptoTests", dependencies: ["TurnstileCrypto"]),
        .testTarget(name: "TurnstileCoreTests", dependencies: ["TurnstileCore", "TurnstileSync"]),
        .testTarget(name: "TurnstileIngestTests", dependencies: ["TurnstileIngest", "TurnstileCore", "TurnstileCrypto"]),
        // Test helpers (a raw HTTP client over TCP) shared by the test targets; not part of any product.
        .target(name: "TurnstileTestSupport", path: "Tests/TurnstileTestSupport"),
        .testTarget(name: "TurnstileCLITests", dependencies: ["TurnstileCLI", "TurnstileServer", "TurnstilePostgres", "TurnstileCore", "TurnstileIngest", "TurnstileTestSupport", "TurnstileSync"]),
        .testTarget(name: "TurnstileTests", dependencies: ["Turnstile", "TurnstileSync"]),
        .testTarget(name: "TurnstileHTTPTests", dependencies: ["TurnstileHTTP", "TurnstileTestSupport", "TurnstileSync"]),
        // One conformance suite that every store passes: SQLite on a file, SQLite in memory, PostgreSQL.
        .testTarget(name: "TurnstileStoreTests", dependencies: ["TurnstileCore", "TurnstileSQLite", "TurnstilePostgres", "TurnstileSync", "TurnstileTestSupport"]),
        .testTarget(name: "TurnstileFuzzTests", dependencies: ["TurnstileFuzz"]),
        .testTarget(name: "TurnstilePipelineTests", dependencies: ["TurnstilePipeline", "TurnstileHandlers", "TurnstileTesting", "TurnstileHTTP", "TurnstileSQLite", "TurnstileIngest", "TurnstileCore", "TurnstileSync"]),
    ],
    swiftLanguageModes: [.v6]
)

for target in package.targets where target.type != .system {
    target.swiftSettings = (target.swiftSettings ?? []) + swiftSettings
}
