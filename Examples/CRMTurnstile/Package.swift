// swift-tools-version:6.0
import PackageDescription

// A team's own Turnstile: its handlers, built with every turnstile command into one binary.
let package = Package(
    name: "CRMTurnstile",
    products: [
        .executable(name: "crm-turnstile", targets: ["crm-turnstile"]),
    ],
    dependencies: [
        // A real team depends on a released version; the example uses the checkout it ships in.
        .package(name: "Turnstile", path: "../.."),
    ],
    targets: [
        .target(name: "CRMHandlers", dependencies: [.product(name: "Turnstile", package: "Turnstile")]),
        .executableTarget(name: "crm-turnstile", dependencies: [
            "CRMHandlers",
            .product(name: "TurnstileCLI", package: "Turnstile"),
        ]),
        .testTarget(name: "CRMTurnstileTests", dependencies: [
            "CRMHandlers",
            "crm-turnstile",
            .product(name: "Turnstile", package: "Turnstile"),
            .product(name: "TurnstileTesting", package: "Turnstile"),
            .product(name: "TurnstileHTTP", package: "Turnstile"),
        ]),
    ],
    swiftLanguageModes: [.v6]
)
