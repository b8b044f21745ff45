import Foundation
import Testing
import TurnstileFuzz

private let corpusRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fuzz/corpus").path

/// Every input kept in the fuzz corpora (the seeds, and each crash the fuzzer found once it was fixed) runs
/// through its target in the normal suite, so a fixed crash cannot come back unnoticed.
@Suite struct FuzzCorpusTests {
    @Test(arguments: FuzzTargets.names)
    func everyKeptInputPasses(target: String) throws {
        let folder = corpusRoot + "/" + target
        let files = try FileManager.default.contentsOfDirectory(atPath: folder).sorted()
        #expect(files.count >= 5, "the \(target) corpus has seeds")
        for file in files {
            let data = try #require(FileManager.default.contents(atPath: folder + "/" + file))
            FuzzTargets.run(target, [UInt8](data))
        }
    }
}
