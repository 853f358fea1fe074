import OffloadCrypto
import OffloadIPsec
import OffloadWire
import Testing

@testable import OffloadIKE

/// Known answers for IKEv2's key derivation, so that a bug both engines share (they derive with
/// the same code) cannot hide behind their agreement.
///
/// The expected values were computed outside this code base, by a few lines of Python written from
/// RFC 7296's text (hmac and hashlib only): prf+ as §2.13 (T1 = prf(K, S | 0x01), Tn = prf(K,
/// Tn-1 | S | n)), SKEYSEED = prf(Ni | Nr, g^ir) and {SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi |
/// SK_pr} = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr) as §2.14 (with an AEAD SK_ai and SK_ar are empty,
/// SK_e is key ‖ 4-byte salt, RFC 5282), KEYMAT = prf+(SK_d, Ni | Nr) as §2.17 (initiator to
/// responder first), and a rekeyed IKE SA's SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr) as §2.18.
/// Inputs: Ni = 00..1f, Nr = 80..9f, g^ir[i] = 7i + 3, SPIi = 0123456789abcdef, SPIr = fedcba9876543210;
/// for the rekey Ni = 40..5f, Nr = c0..df, g^ir[i] = 11i + 5, SPIi = 1111222233334444, SPIr = 5555666677778888.
@Suite("IKEv2 key derivation: known answers (RFC 7296 §2.13, §2.14, §2.17, §2.18)")
struct IKEKeyDerivationTests {
    static let ni = [UInt8](0x00...0x1f), nr = [UInt8](0x80...0x9f)
    static let gir = (0..<32).map { UInt8(truncatingIfNeeded: 7 * $0 + 3) }
    static let spii: UInt64 = 0x0123_4567_89ab_cdef, spir: UInt64 = 0xfedc_ba98_7654_3210

    static func hex(_ s: String) -> [UInt8] {
        var out: [UInt8] = []
        var i = s.startIndex
        while i < s.endIndex {
            let j = s.index(i, offsetBy: 2)
            out.append(UInt8(s[i..<j], radix: 16)!)
            i = j
        }
        return out
    }

    /// An IKE SA of an engine, its keys derived from the vector's inputs (the caller keeps the
    /// engine alive: an SA holds it unowned).
    func derived(prf: IKEPRF, aead: ESPAlgorithm) throws -> (engine: IKEEngine, sa: IKESA) {
        let engine = IKEEngine(connections: try IKEConfig.parse(IKEWire.config(me: 1)))
        let sa = IKESA(engine: engine, originalInitiator: true, localSPI: Self.spii,
                       path: IKEPath(localPort: 4500, remote: IKEWire.addressB, remotePort: 4500), now: 0)
        sa.remoteSPI = Self.spir
        sa.connection = engine.connections[0]
        (sa.prf, sa.aead, sa.ni, sa.nr) = (prf, aead, Self.ni, Self.nr)
        sa.deriveKeys(skeyseed: IKESA.skeyseed(prf, ni: Self.ni, nr: Self.nr, shared: SecretBytes(Self.gir)))
        engine.sas[sa.localSPI] = sa
        return (engine, sa)
    }

    @Test("prf+ (HMAC-SHA-256) over several blocks, cut to 100 bytes")
    func prfPlus() {
        let out = IKEPRF.hmacSHA256.plus(Array("key".utf8), Array("seed".utf8), count: 100)
        #expect(out.plain == Self.hex("a2392e429a99b173341b368bb5ce320bfd483d89567c14ec187c2d77e3c0a208ba45d21d42611712996c0cd4b329ac8681e093a8a5bbbbf0fb8c9d1cf674f7423fe3d2fbd6641ff544749daa37804f04be0b1beba59ddc3867c3016209779fa74e8b8654"))
    }

    @Test("SKEYSEED and SK_* for AES-GCM-16-128 with PRF_HMAC_SHA2_256: SK_d 32, SK_e 16 + 4 salt, SK_p 32")
    func sha256GCM128() throws {
        #expect(IKESA.skeyseed(.hmacSHA256, ni: Self.ni, nr: Self.nr, shared: SecretBytes(Self.gir)).plain
            == Self.hex("d843cd15196090a67c430351e2b0ed26bf2267c115e0d851a7f6edd94ffcd3a9"))
        let (engine, sa) = try derived(prf: .hmacSHA256, aead: .aesGCM128)
        defer { withExtendedLifetime(engine) {} }
        let k = try #require(sa.keys)
        #expect(k.d.plain == Self.hex("8b39728e242f2136dbbf6cfa9895640b18c559ec02db511aa013e3a0e04c90b2"))
        #expect(k.ei.plain == Self.hex("ff63f2ca533360d307e6ff16950f11e3932ae8ab"))
        #expect(k.er.plain == Self.hex("ffd53d7bba305c0aeb3504fdbeeead017972c7ee"))
        #expect(k.pi.plain == Self.hex("b2bc4ee368a163408981a0a68d6344340faec9d6cbe852d05fd83060acd80259"))
        #expect(k.pr.plain == Self.hex("dc7fe013e79f49b7195fba59851992d166880444a83c30f030570451d61d0fce"))
    }

    @Test("SKEYSEED and SK_* for AES-GCM-16-256 with PRF_HMAC_SHA2_384: SK_d 48, SK_e 32 + 4 salt, SK_p 48")
    func sha384GCM256() throws {
        #expect(IKESA.skeyseed(.hmacSHA384, ni: Self.ni, nr: Self.nr, shared: SecretBytes(Self.gir)).plain
            == Self.hex("203bcffcea86a773127e522d50d9bf21acdbd7ba801ddd79dbe65d198e2ce7d5da3ef3fee79cfb77970caeb13193bcaf"))
        let (engine, sa) = try derived(prf: .hmacSHA384, aead: .aesGCM256)
        defer { withExtendedLifetime(engine) {} }
        let k = try #require(sa.keys)
        #expect(k.d.plain == Self.hex("a654acff6063252406bc022c0d2735d68c3aa210f60863e8eeecec9a0745bb752764460f0e7cfcffbbde27c76f08bbfe"))
        #expect(k.ei.plain == Self.hex("47d5d6900d064de21c5536cde1c05890ec993d9de47004d0b329705cd19680af6fb2de74"))
        #expect(k.er.plain == Self.hex("6a1df9c878872c1076170b3b05a91a7efc021ddb8495021868ef2a465f56d5a0d548e4a1"))
        #expect(k.pi.plain == Self.hex("6faafea60398838458f7172b337aec58cee0f5d82156ed523889c0faa1ea5ba51018a9c6ef19240d50534adb6620639d"))
        #expect(k.pr.plain == Self.hex("3bea05903bc30126e9b412a705e9dc89ea840f7d0b342c10ef36500703bb1c085ef48d884a46a747f049593162c55f73"))
    }

    @Test("KEYMAT of an ESP AES-GCM-128 CHILD_SA: initiator to responder first, each key ‖ salt")
    func childKeymat() throws {
        let (engine, sa) = try derived(prf: .hmacSHA256, aead: .aesGCM128)
        defer { withExtendedLifetime(engine) {} }
        let (i2r, r2i) = sa.keymat(.aesGCM128, nonces: (Self.ni, Self.nr))
        #expect(i2r.plain == Self.hex("b57a94141306e4ef85b609a164ae9066c58f19c8"))
        #expect(r2i.plain == Self.hex("82640cc6dc9480cb45b6583e92bb771a18851ce5"))
    }

    @Test("a rekeyed IKE SA: SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr), then its SK_* with the new SPIs")
    func rekey() throws {
        let (engine, old) = try derived(prf: .hmacSHA256, aead: .aesGCM128)
        defer { withExtendedLifetime(engine) {} }
        let next = old.successor(initiator: true, localSPI: 0x1111_2222_3333_4444, remoteSPI: 0x5555_6666_7777_8888,
                                 choice: (.aesGCM128, .hmacSHA256, .curve25519),
                                 shared: SecretBytes((0..<32).map { UInt8(truncatingIfNeeded: 11 * $0 + 5) }), ni: [UInt8](0x40...0x5f),
                                 nr: [UInt8](0xc0...0xdf), now: 0)
        // SKEYSEED(rekey) = 829f3cc0...d23c8d53; its prf+ gives:
        let k = try #require(next.keys)
        #expect(k.d.plain == Self.hex("69aefb7287c7e660b4331238be313cd3bd365484b94962eddd084d406a85a421"))
        #expect(k.ei.plain == Self.hex("8194302583dab36468dc9131b1cac908b08d1b36"))
        #expect(IKEPRF.hmacSHA256(old.keys!.d, (0..<32).map { UInt8(truncatingIfNeeded: 11 * $0 + 5) } + [UInt8](0x40...0x5f) + [UInt8](0xc0...0xdf))
            == Self.hex("829f3cc02ef38c6679d8d8215218f5479ae6de8e00d71ed3b65318d4d23c8d53"))
    }
}

extension SecretBytes {
    /// The bytes, for comparing with a known answer (tests only).
    var plain: [UInt8] { withTemporaryArray { $0 } }
}
