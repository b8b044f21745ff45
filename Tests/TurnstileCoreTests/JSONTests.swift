import Testing
import TurnstileCore

@Suite struct JSONParserTests {
    /// Objects used to search their keys so far for every new key: 200,000 keys (a 3 MB body, which the Sync
    /// fallback parses before any signature matched) took minutes. Two sizes in one run: linear work grows
    /// about 4x for 4x the keys, the old search 16x.
    @Test func anObjectWithManyKeysParsesInLinearTime() throws {
        func seconds(keys: Int) throws -> Double {
            let text = "{" + (0..<keys).map { "\"k\($0)\":\($0)" }.joined(separator: ",") + ",\"k0\":-1}"
            let started = ContinuousClock.now
            let value = try JSONParser.parse(text)
            let elapsed = (ContinuousClock.now - started).components
            #expect(value.objectValue?.count == keys)
            #expect(value["k0"]?.numberValue?.text == "-1")
            #expect(value.objectValue?.keys.first == "k0")
            return Double(elapsed.seconds) + Double(elapsed.attoseconds) / 1e18
        }
        _ = try seconds(keys: 1_000)
        let small = try seconds(keys: 5_000)
        let large = try seconds(keys: 20_000)
        #expect(large / max(small, 1e-6) < 10, "5,000 keys took \(small) s, 20,000 keys \(large) s")
    }

    @Test func repeatedKeysCanBeRefused() throws {
        #expect(throws: JSONError.self) { try JSONParser.parse(Array(#"{"a":{"b":1,"b":2}}"#.utf8), repeatedKeys: .refuse) }
        #expect(try JSONParser.parse(Array(#"{"a":{"b":1,"b":2}}"#.utf8)).value(at: ["a", "b"])?.numberValue?.text == "2")
    }

    @Test func keepsOrderAndNumberText() throws {
        let value = try JSONParser.parse(#"{"b":1,"a":10.0,"c":[true,null,"x"],"d":{"e":-0.5e3}}"#)
        #expect(value.objectValue?.keys == ["b", "a", "c", "d"])
        #expect(value["a"]?.numberValue?.text == "10.0")
        #expect(value.value(at: ["d", "e"])?.numberValue?.text == "-0.5e3")
    }

    @Test func decodesEscapes() throws {
        let value = try JSONParser.parse(#"["a\"b\\c\/d\u00e9\ud83d\ude00\n"]"#)
        #expect(value.arrayValue?.first?.stringValue == "a\"b\\c/dé😀\n")
    }

    @Test(arguments: [
        "", "{", "{\"a\":1,}", "[1,]", "01", "1.", "-", "{'a':1}", "{\"a\" 1}", "[1] 2", "\"\u{01}\"", "tru", "nul",
        "\"\\x\"", "\"\\ud800\"", "{\"a\":1 /* c */}", "\"abc",
    ])
    func refusesMalformedJSON(text: String) {
        #expect(throws: JSONError.self) { try JSONParser.parse(text) }
    }

    @Test func refusesInvalidUTF8() {
        #expect(throws: JSONError.self) { try JSONParser.parse([0x22, 0xff, 0x22]) }
    }

    @Test func boundsNesting() {
        let deep = String(repeating: "[", count: 300) + String(repeating: "]", count: 300)
        #expect(throws: JSONError.self) { try JSONParser.parse(deep) }
    }

    @Test func repeatedKeyKeepsFirstPositionAndLastValue() throws {
        let value = try JSONParser.parse(#"{"a":1,"b":2,"a":3}"#)
        #expect(value.objectValue?.keys == ["a", "b"])
        #expect(value["a"]?.numberValue?.text == "3")
    }
}

@Suite struct JSONScannerTests {
    private func fields(_ json: String, _ names: [String]) throws -> [JSONField?] {
        let bytes = Array(json.utf8)
        return try bytes.withBytes { raw throws(JSONError) in try JSONScanner.fields(names, in: raw) }
    }

    @Test func findsTopLevelMembersWithoutDecodingTheRest() throws {
        let found = try fields(#"{"id":"gen_1","skip":{"deep":["}",{"x":"\"]"}]},"status":"COMPLETED","n":42,"o":{"k":1}}"#,
                               ["status", "id", "n", "missing", "o"])
        #expect(found[0] == .string("COMPLETED"))
        #expect(found[1] == .string("gen_1"))
        #expect(found[2] == .number("42"))
        #expect(found[3] == nil)
        if case .object = found[4] {} else { Issue.record("expected an object") }
    }

    @Test func readsNestedPaths() throws {
        let bytes = Array(#"{"call":{"status":"completed","call_id":"c0ffee"},"call_id":"top"}"#.utf8)
        let nested = try bytes.withBytes { raw throws(JSONError) in try JSONScanner.field(at: ["call", "call_id"], in: raw) }
        #expect(nested == .string("c0ffee"))
    }

    @Test func matchesEscapedKeys() throws {
        #expect(try fields(#"{"call\u005fid":"x"}"#, ["call_id"])[0] == .string("x"))
    }

    @Test func refusesAnAmbiguousRepeatedKey() {
        #expect(throws: JSONError.self) { try fields(#"{"id":"a","id":"b"}"#, ["id"]) }
    }

    @Test(arguments: [#"[1,2]"#, #"{"a":1"#, #"{"a":"x}"#, #"{"a":[1,2}"#, "not json"])
    func refusesBrokenObjects(json: String) {
        #expect(throws: JSONError.self) { try fields(json, ["zzz"]) }
    }
}

@Suite struct JavaScriptStringifyTests {
    @Test(arguments: [
        ("10.0", "10"), ("10.5", "10.5"), ("0.1", "0.1"), ("1e21", "1e+21"), ("1e20", "100000000000000000000"),
        ("1E-7", "1e-7"), ("0.000001", "0.000001"), ("-0", "0"), ("-0.0", "0"), ("123456789012345678901", "123456789012345680000"),
        ("1.5e300", "1.5e+300"), ("5e-324", "5e-324"), ("2432232314", "2432232314"), ("1e400", "null"), ("-12.50", "-12.5"),
    ])
    func numbersAsJavaScriptWritesThem(text: String, expected: String) throws {
        #expect(try JSONParser.parse(text).serialized() == expected)
    }

    @Test func keepsKeyOrderButPutsIntegerKeysFirst() throws {
        let value = try JSONParser.parse(#"{"b":1,"2":0,"a":1,"1":0,"01":0,"4294967295":0}"#)
        #expect(value.serialized() == #"{"1":0,"2":0,"b":1,"a":1,"01":0,"4294967295":0}"#)
    }

    @Test func escapesOnlyWhatJavaScriptEscapes() throws {
        let value = try JSONParser.parse(#"{"u":"https:\/\/x.invalid\/d\u00e9j\u00e0 \u2028 \u001f \"q\" \\ \t"}"#)
        #expect(value.serialized() == "{\"u\":\"https://x.invalid/déjà \u{2028} \\u001f \\\"q\\\" \\\\ \\t\"}")
    }

    @Test func compactsWhitespace() throws {
        let value = try JSONParser.parse("{\n  \"a\": [ 1, { \"b\": null } ],\n  \"c\": false\n}")
        #expect(value.serialized() == #"{"a":[1,{"b":null}],"c":false}"#)
    }
}

/// The byte writer of the hot path writes exactly what the generic serialiser writes for the same object.
@Suite struct JSONWriterTests {
    @Test func theWriterMatchesTheGenericSerialiser() throws {
        let awkward = "quote \" backslash \\ newline \n tab \t nul \u{0} bell \u{7} é 日本 🎉 </script>"
        var line = JSONWriter()
        line.add("text", string: awkward)
        line.add("small", integer: -42)
        line.add("large", integer: Int64.max)
        line.add("exact", integer: 1 << 53 - 1)
        line.add("flag", bool: false)
        line.add("nested", .array([.null, .number(JSONNumber(1.5)), .object(JSONObject())]))
        line.add("raw", json: Array(#"{"a":[1,2]}"#.utf8))
        var object = JSONObject()
        object["text"] = .string(awkward)
        object["small"] = .number(JSONNumber(Int64(-42)))
        object["large"] = .number(JSONNumber(Int64.max))
        object["exact"] = .number(JSONNumber(Int64(1 << 53 - 1)))
        object["flag"] = .bool(false)
        object["nested"] = .array([.null, .number(JSONNumber(1.5)), .object(JSONObject())])
        object["raw"] = try JSONParser.parse(#"{"a":[1,2]}"#)
        #expect(String(decoding: line.finish(), as: UTF8.self) == JSONValue.object(object).serialized())
    }

    @Test func keysThatJavaScriptWouldReorderOrMergeAreSentToJSONObject() {
        #expect(!JSONWriter.keysNeedJSONObject(["ts", "level", "msg", "provider"]))
        #expect(JSONWriter.keysNeedJSONObject(["ts", "msg", "msg"]))
        #expect(JSONWriter.keysNeedJSONObject(["ts", "7"]))
    }
}

@Suite struct LineSeparatorTests {
    /// Raw U+2028/U+2029 inside strings are valid JSON, but line tools split on them: written lines escape them.
    @Test func writtenLinesEscapeU2028AndU2029() throws {
        var bytes = JSONValue.object(JSONObject(["text": .string("a\u{2028}b\u{2029}c é")])).serialized().utf8.map { $0 }
        #expect(bytes.contains(0xe2))
        JSONWriter.escapeLineSeparators(&bytes)
        let text = String(decoding: bytes, as: UTF8.self)
        #expect(text == #"{"text":"a\u2028b\u2029c é"}"#)
        #expect(text.split(whereSeparator: \.isNewline).count == 1)
        #expect(try JSONParser.parse(text)["text"]?.stringValue == "a\u{2028}b\u{2029}c é")
    }
}
