/// Where the fields of an ESP packet (RFC 4303) are, with an 8-byte IV (AES-GCM, RFC 4106;
/// ChaCha20-Poly1305, RFC 7634) and a 16-byte ICV, as carried in UDP (RFC 3948):
///
/// ```text
///  0       4        8                16                              end-16      end
///  | SPI  | seq    | IV (8)          | ciphertext: inner ‖ pad ‖ pad length ‖ next header | ICV (16) |
/// ```
/// The only code that knows these offsets; ``ESPPacket``, ``ESPHeader``, ``ESPTrailer`` and
/// ``ESPPayload`` read and write them.
public enum ESPFormat {
    /// Security Parameters Index (32 bits).
    @inlinable public static var spi: Int { 0 }
    /// Sequence number (32 bits; the low half with ESN).
    @inlinable public static var sequence: Int { 4 }
    /// The IV (64 bits).
    @inlinable public static var iv: Int { 8 }
    /// The IV's length.
    @inlinable public static var ivLength: Int { 8 }
    /// Where the ciphertext starts.
    @inlinable public static var headerLength: Int { 16 }
    /// The ICV's length.
    @inlinable public static var icvLength: Int { 16 }
    /// Pad length and next header, the last two plaintext bytes.
    @inlinable public static var trailerLength: Int { 2 }
    /// The shortest valid ESP packet: header, trailer, ICV.
    @inlinable public static var minimumLength: Int { headerLength + trailerLength + icvLength }

    /// Next header: IPv4 inside (tunnel mode).
    @inlinable public static var nextHeaderIPv4: UInt8 { 4 }
    /// Next header: IPv6 inside (tunnel mode).
    @inlinable public static var nextHeaderIPv6: UInt8 { 41 }
    /// Next header: no next header, a dummy packet to be dropped quietly (RFC 4303 §2.6).
    @inlinable public static var nextHeaderDummy: UInt8 { 59 }

    /// The UDP port of ESP-in-UDP and IKE behind NAT (RFC 3948).
    @inlinable public static var udpPort: UInt16 { 4500 }
    /// A NAT keepalive: one byte, 0xFF (RFC 3948 §2.3).
    @inlinable public static var natKeepalive: UInt8 { 0xFF }
    /// The non-ESP marker's length: four zero bytes where an SPI would be (IKE on port 4500).
    @inlinable public static var nonESPMarkerLength: Int { 4 }

    /// Padding that makes `length` plaintext bytes plus the trailer a multiple of 4 (RFC 4303
    /// §2.4; the AEADs here need no block alignment).
    @inlinable public static func padding(for length: Int) -> Int { (4 - (length + trailerLength) % 4) % 4 }
}
